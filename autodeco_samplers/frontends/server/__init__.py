"""``autodeco serve``: a local OpenAI-compatible server for the llama.cpp and transformers engines.

It answers ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (plain or streamed as
server-sent events) and ``/health`` like OpenAI's API, so any OpenAI client can point at it,
and adds what no other server returns: each token's predicted and used temperature and top-p
(``"autodeco": {"trace": true}``). Built on FastAPI/Starlette and uvicorn; needs the
``server`` extra (``pip install 'autodeco-samplers[server]'``). Guide: docs/server.md.

Pieces: :mod:`.schemas` (what a request may hold), :mod:`.errors` (OpenAI's error shape and
status codes), :mod:`.engines` (one sequence through an adapter), :mod:`.worker` (the bounded
FIFO queue and its thread), :mod:`.app` (the routes and the answers), :mod:`.guard` (Host,
Origin and CORS), :mod:`.chat_tokens` (message text as plain text), and :func:`serve`
(uvicorn on a socket, graceful SIGTERM).

Startup: the socket is bound and listening (``listen()``) before ``on_listening`` is told, so
a client that connects as soon as it reads the startup line is queued, never refused.

Shutdown (SIGTERM or Ctrl-C): the listening socket closes at once, idle connections are
closed, new requests on open connections get 503 ``shutting_down``; requests in flight run
on for up to ``shutdown_timeout`` seconds, then each running one stops at its next token and
its stream ends cleanly (a last chunk with ``finish_reason`` and ``data: [DONE]``); the
process then exits with status 0.
"""

from __future__ import annotations

import signal
import socket
from typing import Any, Callable, Optional, Sequence

from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.frontends.server.app import ServerState, create_app
from autodeco_samplers.frontends.server.engines import Engine, LlamaCppEngine, TransformersEngine
from autodeco_samplers.frontends.server.errors import APIError

__all__ = ["APIError", "Engine", "LlamaCppEngine", "ServerState", "TransformersEngine", "create_app", "serve"]

BACKLOG = 2048  # uvicorn's default listen backlog


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    engine: Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    policy: Optional[DecodingPolicy] = None,
    max_queue: int = 64,
    shutdown_timeout: float = 10.0,
    log_level: str = "warning",
    on_listening: Optional[Callable[[str, int], Any]] = None,
    allowed_hosts: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    parse_special_in_messages: bool = False,
) -> None:
    """Serve ``engine`` until SIGTERM / SIGINT (module docstring); ``port=0`` picks a free port,
    which ``on_listening(host, port)`` is told once the socket listens. ``allowed_hosts`` and
    ``cors_origins`` extend the guard's defaults (:mod:`.guard`); ``parse_special_in_messages``
    is :func:`create_app`'s."""
    import uvicorn

    from autodeco_samplers.frontends.server.guard import RequestGuard

    app = create_app(engine, policy=policy, max_queue=max_queue, shutdown_timeout=shutdown_timeout,
                     parse_special_in_messages=parse_special_in_messages)
    state: ServerState = app.state.autodeco
    guarded = RequestGuard(app, bound_host=host, allowed_hosts=allowed_hosts, cors_origins=cors_origins)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:  # runs in the main thread
            state.drain.begin()
            super().handle_exit(sig, frame)

    sock = _bind(host, port)
    sock.listen(BACKLOG)  # before the startup line: a client that reads it is queued, not refused
    config = uvicorn.Config(guarded, backlog=BACKLOG, log_level=log_level, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=int(shutdown_timeout) + 5)
    server = _Server(config)
    if on_listening is not None:
        on_listening(host, int(sock.getsockname()[1]))
    # uvicorn re-raises the signal it caught once it has shut down; with these no-op handlers
    # that re-raise is a no-op too and the process exits normally (status 0).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        state.worker.stop()
        sock.close()
