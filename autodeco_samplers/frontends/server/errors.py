"""OpenAI's error shape for every refused request, and its status codes.

Every error the server answers is ``{"error": {"message", "type", "param", "code"}}`` (the
shape OpenAI's API and its clients use; the ``openai`` Python client raises
``BadRequestError`` / ``NotFoundError`` / ... from it). Status codes:

* 400 ``invalid_request_error``: bad JSON, a body that is not an object, wrong types,
  out-of-range or non-finite numbers, unknown fields, a prompt longer than the context, a
  chat request to a model without a chat template, an unsupported option;
* 404 ``invalid_request_error`` with code ``model_not_found`` (unknown model) or
  ``not_found`` (unknown path);
* 405 for a wrong method on a known path;
* 415 ``invalid_request_error`` with code ``unsupported_media_type``: a body not sent as
  ``Content-Type: application/json``;
* 400 with code ``host_not_allowed`` (a ``Host`` header the server does not answer to) and
  403 with code ``origin_not_allowed`` (a cross-origin browser request), from
  :mod:`autodeco_samplers.frontends.server.guard`;
* 503 ``server_error`` with code ``server_busy`` (the queue is full; ``Retry-After: 1``) or
  ``shutting_down`` (after SIGTERM);
* 500 ``server_error``: a failure inside the engine (the server keeps serving).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["APIError", "error_body", "busy", "bad_request"]


def error_body(message: str, type_: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> Dict[str, Any]:
    """The JSON body of an error response, OpenAI's shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class APIError(Exception):
    """A request the server refuses: HTTP ``status`` plus OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, type_: Optional[str] = None, param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.type = type_ or ("invalid_request_error" if self.status < 500 else "server_error")
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> Dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def bad_request(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    """A 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


def busy(message: str, code: str = "server_busy") -> APIError:
    """A 503 ``server_error`` with ``Retry-After: 1``."""
    return APIError(503, message, code=code, headers={"Retry-After": "1"})
