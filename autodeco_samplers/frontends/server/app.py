"""The FastAPI application: OpenAI's endpoints over one engine worker.

Endpoints: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/completions``, ``POST /v1/chat/completions`` (both with ``"stream": true`` as
server-sent events ending in ``data: [DONE]``). What a request may hold is
:mod:`autodeco_samplers.frontends.server.schemas`; errors are :mod:`autodeco_samplers.frontends.server.errors`.

Rules of the answers:

* ``finish_reason`` is OpenAI's: ``"stop"`` for an end-of-generation token or a stop
  string, ``"length"`` for ``max_tokens`` or a full context (and for a generation the
  shutdown deadline cut); the engine's own reason (``eos``, ``stop``, ``length``) is in
  ``choices[i].autodeco.finish_reason`` when the trace is on;
* ``max_tokens`` defaults to 16 for completions (OpenAI's default) and to the rest of the
  context for chat; a request whose prompt fills the context is refused (400
  ``context_length_exceeded``), and ``max_tokens`` beyond the context is cut to what fits;
* ``n`` choices (and the prompts of a batch) are generated one after the other by the same
  worker; with a ``seed``, choice ``j`` of every prompt uses ``(seed + j) mod 2**64``
  (:func:`~autodeco_samplers.frontends.server.schemas.engine_seed`), so choice 0 of any request
  equals the same request with ``n = 1``;
* request bodies must be ``Content-Type: application/json`` (415 otherwise); chat message text
  is tokenized as plain text unless the server runs with ``parse_special_in_messages``
  (:mod:`autodeco_samplers.frontends.server.chat_tokens`); Host / Origin / CORS are checked in
  front of the app (:mod:`autodeco_samplers.frontends.server.guard`, added by :func:`serve`);
* ``"autodeco": {"trace": true}`` adds ``choices[i].autodeco = {"trace": [{"token_id",
  "T_pred", "P_pred", "T", "P"}, ...], "finish_reason"}`` (every generated token, an EOS
  included, as ``autodeco generate --json`` reports ``steps``) to the answer, and to every
  stream chunk the entries of the tokens it carries;
* log-probabilities (completions ``logprobs: k``, chat ``logprobs: true`` +
  ``top_logprobs: k``) are those of the canonical distribution each token was drawn from
  (:func:`autodeco_samplers.frontends.server.engines.canonical_logprobs`); an end-of-generation token
  is not listed, as it has no text.
"""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time
import asyncio
import dataclasses
import json
import time
import uuid
from typing import Any, AsyncIterator, Dict, List, Optional

from autodeco_samplers.core.errors import InvalidParameterError
from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.frontends.server.engines import Engine, SequenceEnd, SequenceJob, TokenOut
from autodeco_samplers.frontends.server.errors import APIError, bad_request, busy, error_body
from autodeco_samplers.frontends.server.page import add_page_routes
from autodeco_samplers.frontends.server.chat_tokens import encode_chat
from autodeco_samplers.frontends.server.schemas import ChatCompletionRequest, CompletionRequest, engine_seed, parse_request
from autodeco_samplers.frontends.server.worker import DONE, ChoiceEnd, Drain, EngineWorker, Job, JobFailed

__all__ = ["create_app", "DEFAULT_COMPLETION_TOKENS"]

DEFAULT_COMPLETION_TOKENS = 16
_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "length"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class _Choice:
    """What one choice collected: tokens and the end."""

    __slots__ = ("tokens", "end")

    def __init__(self) -> None:
        self.tokens: List[TokenOut] = []
        self.end: Optional[SequenceEnd] = None


class _Handler:
    """One validated request, turned into a job and then into OpenAI's answer."""

    def __init__(self, state: "ServerState", req: Any, chat: bool, prompt_ids: List[List[int]]) -> None:
        self.state = state
        self.engine = state.engine
        self.req = req
        self.chat = chat
        self.prompt_ids = prompt_ids
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.trace = req.trace
        self.logprobs = (req.top_logprobs or 0) if chat and req.logprobs else (None if chat else req.logprobs)
        try:
            policy = state.policy.for_request(req.temperature, req.top_p)
            if req.autodeco is not None and req.autodeco.fixed():  # static T / P (the page's compare view)
                policy = dataclasses.replace(policy, **req.autodeco.fixed())
        except InvalidParameterError as exc:
            raise bad_request(str(exc)) from None
        limit = req.token_limit if chat else req.max_tokens
        seqs = []
        for ids in prompt_ids:
            room = self.engine.n_ctx - len(ids)
            want = limit if limit is not None else (room if chat else DEFAULT_COMPLETION_TOKENS)
            for j in range(req.n):
                seed = engine_seed(req.seed, j)
                seqs.append(SequenceJob(ids, max(1, min(want, room)), req.stops, seed, policy, self.logprobs))
        self.sequences = seqs

    # --- pieces of the answer ------------------------------------------------------------
    def _finish(self, end: Optional[SequenceEnd]) -> str:
        return _FINISH.get(end.finish_reason if end is not None else "cancelled", "length")

    def _completion_logprobs(self, toks: List[TokenOut], offset: int) -> Dict[str, Any]:
        out: Dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for t in toks:
            if t.eog or t.logprob is None:
                continue
            text = self.engine.token_text(t.token_id)
            out["tokens"].append(text)
            out["token_logprobs"].append(t.logprob)
            out["top_logprobs"].append({self.engine.token_text(i): lp for i, lp in (t.top_logprobs or [])})
            out["text_offset"].append(offset)
            offset += len(text)
        return out

    def _chat_logprobs(self, toks: List[TokenOut]) -> Dict[str, Any]:
        content = []
        for t in toks:
            if t.eog or t.logprob is None:
                continue
            content.append({
                "token": self.engine.token_text(t.token_id),
                "logprob": t.logprob,
                "bytes": list(self.engine.token_bytes(t.token_id)),
                "top_logprobs": [{"token": self.engine.token_text(i), "logprob": lp,
                                  "bytes": list(self.engine.token_bytes(i))} for i, lp in (t.top_logprobs or [])],
            })
        return {"content": content, "refusal": None}

    def _usage(self, ends: List[Optional[SequenceEnd]]) -> Dict[str, int]:
        prompt = sum(len(ids) for ids in self.prompt_ids)
        completion = sum(e.n_tokens for e in ends if e is not None)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    # --- one answer ----------------------------------------------------------------------
    async def answer(self, job: Job) -> Dict[str, Any]:
        choices = [_Choice() for _ in self.sequences]
        while True:
            ev = await job.events.get()
            if ev is DONE:
                break
            if isinstance(ev, tuple):
                choices[ev[0]].tokens.append(ev[1])
            elif isinstance(ev, ChoiceEnd):
                choices[ev.choice].end = ev.end
            elif isinstance(ev, JobFailed):
                raise ev.error
        if job.cut and not job.started:
            raise busy("the server is shutting down", code="shutting_down")
        out = []
        for i, c in enumerate(choices):
            text = c.end.text if c.end is not None else ""
            entry: Dict[str, Any] = {"index": i}
            if self.chat:
                entry["message"] = {"role": "assistant", "content": text}
                entry["logprobs"] = self._chat_logprobs(c.tokens) if self.logprobs is not None else None
            else:
                entry["text"] = text
                entry["logprobs"] = self._completion_logprobs(c.tokens, 0) if self.logprobs is not None else None
            entry["finish_reason"] = self._finish(c.end)
            if self.trace:
                entry["autodeco"] = {"trace": [t.step() for t in c.tokens],
                                     "finish_reason": c.end.finish_reason if c.end is not None else "cancelled"}
            out.append(entry)
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.engine.model_name,
            "system_fingerprint": None,
            "choices": out,
            "usage": self._usage([c.end for c in choices]),
        }

    def _chunk(self, choices: List[Dict[str, Any]], usage: Optional[Dict[str, int]] = None) -> str:
        body: Dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.engine.model_name,
            "system_fingerprint": None,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return "data: " + _dumps(body) + "\n\n"

    def _token_choice(self, index: int, text: str, toks: List[TokenOut], offset: int,
                      finish: Optional[str] = None, end: Optional[SequenceEnd] = None) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"index": index}
        if self.chat:
            entry["delta"] = {"content": text} if (text or finish is None) else {}
            entry["logprobs"] = self._chat_logprobs(toks) if (self.logprobs is not None and toks) else None
        else:
            entry["text"] = text
            entry["logprobs"] = self._completion_logprobs(toks, offset) if (self.logprobs is not None and toks) else None
        entry["finish_reason"] = finish
        if self.trace:
            ad: Dict[str, Any] = {"trace": [t.step() for t in toks]}
            if finish is not None:
                ad["finish_reason"] = end.finish_reason if end is not None else "cancelled"
            entry["autodeco"] = ad
        return entry

    async def stream(self, job: Job) -> AsyncIterator[str]:
        """Server-sent events: one chunk per token that carries text, log-probabilities or
        trace entries, one chunk per choice with its ``finish_reason``, optionally the usage
        chunk, then ``data: [DONE]``. Leaving early (client gone) cancels the job."""
        completed = False
        n = len(self.sequences)
        ends: List[Optional[SequenceEnd]] = [None] * n
        offsets = [0] * n
        try:
            if self.chat:
                for i in range(n):
                    yield self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}])
            failed: Optional[APIError] = None
            while True:
                ev = await job.events.get()
                if ev is DONE:
                    break
                if isinstance(ev, tuple):
                    i, tok = ev
                    if not tok.text and not self.trace and (self.logprobs is None or tok.eog):
                        continue
                    yield self._chunk([self._token_choice(i, tok.text, [tok], offsets[i])])
                    if self.logprobs is not None and not tok.eog:
                        offsets[i] += len(self.engine.token_text(tok.token_id))
                elif isinstance(ev, ChoiceEnd):
                    ends[ev.choice] = ev.end
                    if ev.end.tail:
                        yield self._chunk([self._token_choice(ev.choice, ev.end.tail, [], offsets[ev.choice])])
                    yield self._chunk([self._token_choice(ev.choice, "", [], 0, self._finish(ev.end), ev.end)])
                elif isinstance(ev, JobFailed):
                    failed = ev.error
            if failed is not None:
                yield "data: " + _dumps(failed.body()) + "\n\n"
            elif job.cut and not job.started:
                yield "data: " + _dumps(busy("the server is shutting down", code="shutting_down").body()) + "\n\n"
            else:
                for i, end in enumerate(ends):  # choices the shutdown deadline cut before they began
                    if end is None:
                        yield self._chunk([self._token_choice(i, "", [], 0, "length", None)])
            if self.req.include_usage:
                yield self._chunk([], usage=self._usage(ends))
            yield "data: [DONE]\n\n"
            completed = True
        finally:
            if not completed:
                job.cancel.set()


async def _watch_disconnect(request: Any, job: Job, every: float = 0.25) -> None:
    """For a plain (not streamed) answer: a client that goes away cancels its job (a waiting
    job is skipped, a running one stops at its next token). Streams need no watcher: Starlette
    cancels a stream whose client disconnected, and the stream cancels its job."""
    while not job.cancel.is_set():
        await asyncio.sleep(every)
        if await request.is_disconnected():
            job.cancel.set()
            return


class ServerState:
    """Everything the routes share: the engine, its worker, the server policy, the drain."""

    def __init__(self, engine: Engine, *, policy: Optional[DecodingPolicy] = None, max_queue: int = 64,
                 shutdown_timeout: float = 10.0, parse_special_in_messages: bool = False) -> None:
        self.engine = engine
        self.parse_special_in_messages = bool(parse_special_in_messages)
        self.policy = policy or DecodingPolicy()
        self.worker = EngineWorker(engine, max_queue=max_queue)
        self.drain = Drain(self.worker, shutdown_timeout)
        self.created = int(time.time())


def create_app(engine: Engine, *, policy: Optional[DecodingPolicy] = None, max_queue: int = 64,
               shutdown_timeout: float = 10.0, parse_special_in_messages: bool = False) -> Any:
    """The ASGI app serving ``engine`` (see the module docstring for the endpoints and rules).

    ``policy`` is the deployment's :class:`DecodingPolicy` (a request's ``temperature`` /
    ``top_p`` multiply its multipliers); ``max_queue`` bounds the waiting requests (503 past
    it); ``shutdown_timeout`` is how long requests in flight may run on after SIGTERM
    (``app.state.autodeco.drain.begin()``) before they are ended; ``parse_special_in_messages``
    parses special-token text in chat messages (default: plain text, module docstring).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    state = ServerState(engine, policy=policy, max_queue=max_queue, shutdown_timeout=shutdown_timeout,
                        parse_special_in_messages=parse_special_in_messages)
    app = FastAPI(title="autodeco serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.autodeco = state
    add_page_routes(app)  # GET /: the page (page.py, static/)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            body = error_body(f"Unknown path: {request.method} {request.url.path}", code="not_found")
        elif exc.status_code == 405:
            body = error_body(f"Method {request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        else:
            body = error_body(str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"), status_code=500)

    def _model_card() -> Dict[str, Any]:
        return {"id": engine.model_name, "object": "model", "created": state.created, "owned_by": "autodeco-samplers",
                "autodeco": engine.describe()}

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        return {"status": "draining" if state.drain.draining else "ok", **engine.describe(), **state.worker.stats()}

    @app.get("/v1/models")
    async def models() -> Dict[str, Any]:
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Dict[str, Any]:
        if model_id != engine.model_name:
            raise _unknown_model(model_id)
        return _model_card()

    async def _body(request: Request) -> Any:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise APIError(415, f"Unsupported Content-Type {media or '(none)'!r}: the body must be JSON sent with "
                           "Content-Type: application/json (curl: -H 'Content-Type: application/json')",
                           code="unsupported_media_type")
        raw = await request.body()
        try:
            return json.loads(raw)
        except RecursionError:
            raise bad_request("The JSON body of your request is nested too deeply.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"We could not parse the JSON body of your request ({exc}). The body must be one JSON "
                              "object, sent with Content-Type: application/json.") from None

    def _unknown_model(name: Any) -> APIError:
        return APIError(404, f"The model {name!r} does not exist; this server serves {engine.model_name!r} "
                        "(GET /v1/models)", param="model", code="model_not_found")

    def _check_ids(ids: List[int], param: str) -> List[int]:
        if not ids:
            raise bad_request("the prompt is empty (it encodes to no tokens)", param=param)
        bad = [t for t in ids if not 0 <= t < engine.n_vocab]
        if bad:
            raise bad_request(f"prompt token id {bad[0]} is outside the vocabulary [0, {engine.n_vocab})", param=param)
        if len(ids) >= engine.n_ctx:
            raise bad_request(f"This model's maximum context length is {engine.n_ctx} tokens; the prompt has "
                              f"{len(ids)} tokens, which leaves no room to generate.", param=param,
                              code="context_length_exceeded")
        return ids

    async def _serve(request: Request, chat: bool) -> Any:
        if state.drain.draining:
            raise busy("the server is shutting down", code="shutting_down")
        req = parse_request(ChatCompletionRequest if chat else CompletionRequest, await _body(request))
        if req.model != engine.model_name:
            raise _unknown_model(req.model)
        if chat:
            ids = await run_in_threadpool(lambda: encode_chat(engine, req.message_dicts(),
                                                              parse_special=state.parse_special_in_messages))
            prompts = [_check_ids(ids, "messages")]
        else:
            batch = req.prompts()
            if not batch:
                raise bad_request("'prompt' is empty", param="prompt")
            prompts = []
            for p in batch:
                ids = await run_in_threadpool(engine.encode, p) if isinstance(p, str) else list(p)
                prompts.append(_check_ids(ids, "prompt"))
        handler = _Handler(state, req, chat, prompts)
        job = Job(asyncio.get_running_loop(), handler.sequences)
        state.worker.submit(job)
        if req.stream:
            return StreamingResponse(handler.stream(job), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        watcher = asyncio.create_task(_watch_disconnect(request, job))
        try:
            return await handler.answer(job)
        except BaseException:
            job.cancel.set()
            raise
        finally:
            watcher.cancel()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _serve(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _serve(request, chat=True)

    return app

