"""The server's guard against browsers: the Host and Origin checks and CORS (docs/server.md,
"Security defaults").

A local server is reachable from every web page the user opens: a page may send it
requests (a cross-site "simple" request needs no permission), and with DNS rebinding (the
page's own name re-pointed at 127.0.0.1) it may also read the answers. The rules, checked
for every request before any route runs:

* **Host**: the ``Host`` header's name (port dropped) must be an IP address, ``localhost``,
  the address the server listens on (``--host``), or a name given with ``--allowed-host``
  (``--allowed-host '*'`` accepts any). Anything else (a rebinding page's own name) is
  refused: 400, code ``host_not_allowed``.
* **Origin**: a request without ``Origin`` (curl, the ``openai`` client, any program) passes.
  A browser's request passes when its ``Origin`` is the server itself (``http://`` + the
  ``Host`` header: a page the server serves) or an origin named with ``--cors-origin``
  (``'*'``: any); any other origin is refused: 403, code ``origin_not_allowed``, before the
  request reaches the engine.
* **CORS**: answers to an origin named with ``--cors-origin`` carry
  ``Access-Control-Allow-Origin: ORIGIN`` (and ``Vary: Origin``); its preflight
  (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 with the allowed
  methods (``GET, POST, OPTIONS``) and the headers it asked for.

Errors are OpenAI's shape (:mod:`autodeco_samplers.frontends.server.errors`).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Tuple

from autodeco_samplers.frontends.server.errors import error_body

__all__ = ["RequestGuard", "host_name"]

ALLOWED_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE = "600"


def host_name(host_header: str) -> str:
    """The name of a ``Host`` header, lower-cased, port and IPv6 brackets dropped."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    """ASGI middleware applying the module's rules in front of ``app``."""

    def __init__(self, app: Any, *, bound_host: str, allowed_hosts: Iterable[str] = (),
                 cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        hosts = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.hosts = hosts | {"localhost", host_name(bound_host)}
        origins = [o.strip().rstrip("/") for o in cors_origins]
        self.any_origin = "*" in origins
        self.origins = {o.lower() for o in origins if o != "*"}

    def host_allowed(self, host: Optional[str]) -> bool:
        if host is None:
            return False
        name = host_name(host)
        return self.any_host or name in self.hosts or _is_ip(name)

    def cors_allowed(self, origin: str) -> bool:
        return self.any_origin or origin.lower().rstrip("/") in self.origins

    async def __call__(self, scope: Dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host")
        if not self.host_allowed(host):
            await _reply(send, 400, error_body(
                f"Host {host!r} is not allowed: this server answers requests to its own address, localhost or an "
                "IP address; start it with --allowed-host NAME to accept another name", code="host_not_allowed"))
            return
        origin = headers.get("origin")
        if origin is None or origin.lower().rstrip("/") == f"http://{host}".lower():
            await self.app(scope, receive, send)
            return
        if not self.cors_allowed(origin):
            await _reply(send, 403, error_body(
                f"Cross-origin request from {origin!r} refused: a web page of another origin may not use this "
                "server; start it with --cors-origin ORIGIN to allow that origin", code="origin_not_allowed"))
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if scope.get("method") == "OPTIONS" and "access-control-request-method" in headers:
            asked = headers.get("access-control-request-headers", "authorization, content-type")
            await _reply(send, 204, None, cors + [
                (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                (b"access-control-allow-headers", asked.encode("latin-1")),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode())])
            return

        async def send_with_cors(message: Dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + cors}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _reply(send: Callable[[Any], Awaitable[None]], status: int, body: Optional[Dict[str, Any]],
                 headers: Optional[List[Tuple[bytes, bytes]]] = None) -> None:
    raw = b"" if body is None else json.dumps(body).encode("utf-8")
    head = list(headers or [])
    if body is not None:
        head.append((b"content-type", b"application/json"))
    head.append((b"content-length", str(len(raw)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})
