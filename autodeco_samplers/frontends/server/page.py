"""The page ``autodeco serve`` answers at ``GET /``: AutoDeco at work, in the browser.

The page's files ship in the package (``static/``: ``index.html``, ``app.js``, ``style.css``;
plain HTML, CSS and JavaScript, no build step). It talks only to this server's own OpenAI
endpoints (``/v1/models``, ``/health``, ``/v1/completions``, ``/v1/chat/completions`` with
``"stream": true`` and ``"autodeco": {"trace": true}``), from the same origin; it loads
nothing from anywhere else, and the answers say so to the browser too (a
``Content-Security-Policy`` that allows only this origin). Guide: docs/server.md, "The page".

Routes: ``GET /`` (``index.html``) and ``GET /static/{name}`` for the files listed in
:data:`FILES`; any other name is a 404 (no path from the request ever reaches the file system).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Dict

__all__ = ["FILES", "add_page_routes", "read_static"]

# the shipped files and their media types; nothing else is served
FILES: Dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# only this origin: scripts, styles, fetch(); images may be data: or blob: URLs (none are loaded)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def read_static(name: str) -> bytes:
    """The bytes of one shipped file (``name`` must be a key of :data:`FILES`)."""
    if name not in FILES:
        raise KeyError(name)
    return resources.files("autodeco_samplers.frontends.server").joinpath("static", name).read_bytes()


def add_page_routes(app: Any) -> None:
    """Add ``GET /`` and ``GET /static/{name}`` to the FastAPI ``app``."""
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
               "Referrer-Policy": "no-referrer"}

    def _file(name: str) -> Response:
        if name not in FILES:
            raise StarletteHTTPException(status_code=404)
        return Response(read_static(name), media_type=FILES[name], headers=headers)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return _file("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return _file(name)
