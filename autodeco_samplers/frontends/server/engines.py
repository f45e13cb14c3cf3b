"""The server's engines: tokenization, and ``n`` sequence slots decoded together.

An engine encodes prompts and chat messages and opens :meth:`Engine.slots`: ``n`` sequence
slots decoded together, one step giving one token to every active sequence (continuous
batching, which the server's scheduler :mod:`autodeco_samplers.frontends.server.worker` drives;
``--parallel N`` of them, default :data:`DEFAULT_PARALLEL`; ``--parallel 1`` runs one sequence
at a time through the same slots):

* :class:`LlamaSlots`: :class:`autodeco_samplers.adapters.llama_cpp.batch.LlamaBatchDecoder`
  (one llama.cpp context, one KV stream per slot);
* :class:`autodeco_samplers.frontends.server.hf_batch.TransformersSlots`: a batched forward over
  the active requests with a left-padded key-value cache.

Both send each row through the core step with the request's own multipliers and generator and
never decide anything about sampling themselves; stop strings are held back and cut by
:mod:`autodeco_samplers.core.text_stream`.

Request knobs: the job's policy is ``server_policy.for_request(temperature, top_p)`` (the one
request-knob rule, :meth:`~autodeco_samplers.core.policy.DecodingPolicy.for_request`); temperature
0 is greedy.

Log-probabilities are those of the **canonical distribution** the token was drawn from
(docs/design.md section 3): :func:`canonical_logprobs` applies
:func:`autodeco_samplers.core.fast_nucleus.sparse_next_token_distribution` to the step's logits
with the step's used T and P. Tokens outside the nucleus have probability 0 and are never
listed; ``top_logprobs`` lists at most ``k`` kept tokens (most probable first, ties to the
lower id), fewer when the nucleus is smaller. A greedy step has one token of log-probability 0.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from autodeco_samplers.frontends.server.errors import APIError, bad_request
from autodeco_samplers.frontends.server.sequences import (  # noqa: F401 (FLOOR_LOGPROB re-exported)
    FLOOR_LOGPROB, Emit, SequenceEnd, SequenceJob, Slots, StepOut, TokenOut, canonical_logprobs,
)

__all__ = [
    "DEFAULT_PARALLEL",
    "Engine",
    "LlamaCppEngine",
    "LlamaSlots",
    "Slots",
    "SequenceEnd",
    "SequenceJob",
    "TokenOut",
    "TransformersEngine",
    "canonical_logprobs",
]

DEFAULT_PARALLEL = 4
"""Sequence slots of ``autodeco serve`` when ``--parallel`` is not given."""


class Engine:
    """What the server needs from an engine (one sequence at a time; see the module docstring)."""

    engine_name: str = ""
    model_name: str = ""
    n_ctx: int = 0
    n_vocab: int = 0
    chat_template: Optional[str] = None

    def encode(self, text: str) -> List[int]:
        """A completion prompt's ids, exactly as ``autodeco generate --prompt`` tokenizes."""
        raise NotImplementedError

    def encode_chat(self, messages: List[Dict[str, str]]) -> List[int]:
        """The messages rendered by the chat template, then tokenized (BOS added only when the
        vocabulary asks for one and the rendered text does not already begin with it)."""
        raise NotImplementedError

    def token_text(self, token_id: int) -> str:
        """One token's own text (for log-probabilities)."""
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:
        return self.token_text(token_id).encode("utf-8")

    parallel: int = DEFAULT_PARALLEL

    def slots(self, n: int) -> Slots:
        """``n`` sequence slots decoded together (:class:`Slots`)."""
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        return {"engine": self.engine_name, "model": self.model_name, "n_ctx": self.n_ctx,
                "chat_template": self.chat_template is not None, "parallel": self.parallel}


def check_parallel(parallel: Any) -> int:
    """``--parallel``: an integer >= 1 (:class:`AutoDecoError` otherwise)."""
    from autodeco_samplers.core.errors import InvalidParameterError

    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise InvalidParameterError(f"parallel must be an integer >= 1, got {parallel!r}")
    return parallel


def _no_template(name: str) -> APIError:
    return bad_request(
        f"the model {name!r} has no chat template; use /v1/completions, or start the server with "
        "--chat-template FILE (a Jinja template as in tokenizer_config.json)",
        param="messages", code="no_chat_template",
    )


class LlamaCppEngine(Engine):
    """llama.cpp through :class:`~autodeco_samplers.adapters.llama_cpp.AutoDecoLlama`.

    The chat template is ``--chat-template`` or the GGUF's ``tokenizer.chat_template``,
    rendered with llama-cpp-python's ``Jinja2ChatFormatter`` (``bos_token`` / ``eos_token``
    are the vocabulary's texts of those tokens).
    """

    engine_name = "llama-cpp"

    def __init__(self, model: str, heads: str, *, model_name: str, n_ctx: Optional[int] = None, f32_kv_cache: bool = False, n_threads: Optional[int] = None,
                 seed: Optional[int] = None, chat_template: Optional[str] = None, parallel: int = DEFAULT_PARALLEL) -> None:
        from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama

        self.parallel = check_parallel(parallel)
        threads = {} if n_threads is None else {"n_threads": int(n_threads)}
        self.gen = AutoDecoLlama(model, heads, seed=seed, n_ctx=n_ctx, f32_kv_cache=f32_kv_cache, **threads)
        self.model_name = model_name
        self.n_ctx = int(self.gen.llm.n_ctx())
        self.n_vocab = int(self.gen.n_vocab)
        self.chat_template = chat_template or self.gen.llm.metadata.get("tokenizer.chat_template") or None
        self._bos = self._special_text(self.gen.llm.token_bos())
        self._eos = self._special_text(self.gen.llm.token_eos())
        self._formatter = None

    def _special_text(self, token_id: int) -> str:
        if token_id is None or int(token_id) < 0:
            return ""
        return self.gen.llm.detokenize([int(token_id)], special=True).decode("utf-8", errors="replace")

    def encode(self, text: str) -> List[int]:
        return self.gen.tokenize(text)

    def encode_chat(self, messages: List[Dict[str, str]]) -> List[int]:
        if self.chat_template is None:
            raise _no_template(self.model_name)
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(self.chat_template, eos_token=self._eos, bos_token=self._bos,
                                                  add_generation_prompt=True)
        try:
            text = self._formatter(messages=messages).prompt
        except Exception as exc:  # jinja2 errors and the template's own raise_exception
            raise bad_request(f"the chat template could not render these messages: {exc}", param="messages") from None
        add_bos = not (self._bos and text.startswith(self._bos))
        return self.gen.tokenize(text, add_bos=add_bos)

    def token_text(self, token_id: int) -> str:
        return self.gen.token_bytes(int(token_id)).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.gen.token_bytes(int(token_id))

    def slots(self, n: int) -> "LlamaSlots":
        return LlamaSlots(self, n)


class LlamaSlots(Slots):
    """llama.cpp slots: :class:`~autodeco_samplers.adapters.llama_cpp.batch.LlamaBatchDecoder` on
    the engine's model (a context of ``n`` slots of ``n_ctx`` tokens each), its events turned
    into :class:`TokenOut` (canonical log-probabilities from the row's logits when asked)."""

    def __init__(self, engine: LlamaCppEngine, n: int) -> None:
        from autodeco_samplers.adapters.llama_cpp.batch import LlamaBatchDecoder

        self.engine = engine
        self.n_slots = int(n)
        self.decoder = LlamaBatchDecoder(engine.gen, self.n_slots, n_ctx=engine.n_ctx)
        self._jobs: Dict[int, SequenceJob] = {}

    def join(self, job: SequenceJob) -> int:
        from autodeco_samplers.core.errors import InvalidParameterError

        try:
            slot = self.decoder.start(job.prompt_ids, max_new_tokens=job.max_tokens, stop=job.stops or None,
                                      seed=job.seed, policy=job.policy, want_logits=job.logprobs is not None)
        except InvalidParameterError as exc:
            raise bad_request(str(exc)) from None
        self._jobs[slot] = job
        return slot

    def step(self) -> List[StepOut]:
        out: List[StepOut] = []
        for ev in self.decoder.step():
            job = self._jobs[ev.slot]
            if ev.error is not None:
                self._jobs.pop(ev.slot)
                out.append((ev.slot, None, None, bad_request(f"this request cannot be decoded: {ev.error}")))
                continue
            tok = ev.token
            lp = top = None
            if job.logprobs is not None and ev.logits is not None:
                lp, top = canonical_logprobs(ev.logits, tok.T, tok.P, tok.token_id, job.logprobs)
            token = TokenOut(tok.index, int(tok.token_id), tok.released, float(tok.T_pred), float(tok.P_pred),
                             float(tok.T), float(tok.P), eog=ev.eog, logprob=lp, top_logprobs=top)
            end = None
            if ev.done:
                self._jobs.pop(ev.slot)
                res = ev.result
                end = SequenceEnd(res.finish_reason or "length", res.text or "", len(res.token_ids))
            out.append((ev.slot, token, end, None))
        return out

    def leave(self, slot: int) -> SequenceEnd:
        res = self.decoder.result(slot)
        self.decoder.release(slot)
        self._jobs.pop(slot, None)
        if res is None:
            return SequenceEnd("cancelled", "", 0)
        return SequenceEnd("cancelled", res.text or "", len(res.token_ids))

    def active(self) -> int:
        return len(self.decoder.active())

    def close(self) -> None:
        self.decoder.close()


class TransformersEngine(Engine):
    """Hugging Face transformers through ``model.generate`` with the AutoDeco processor.

    The chat template is ``--chat-template`` or the tokenizer's own (``tokenizer_config.json``),
    rendered by ``tokenizer.apply_chat_template``. The context is the model's
    ``max_position_embeddings``.
    """

    engine_name = "transformers"

    def __init__(self, model: str, heads: Optional[str], *, model_name: str, device: str = "cpu", seed: Optional[int] = None, chat_template: Optional[str] = None,
                 parallel: int = DEFAULT_PARALLEL) -> None:
        import torch

        self.parallel = check_parallel(parallel)
        from autodeco_samplers.adapters.transformers import from_pretrained, load_tokenizer

        self.torch = torch
        self.model = from_pretrained(Path(model), heads).to(device)
        self.device = device
        self.tokenizer = load_tokenizer(Path(model))
        self.model_name = model_name
        self._lock = threading.Lock()  # HF fast tokenizers are not safe to share across threads
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        n_ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if not n_ctx:
            limit = getattr(self.tokenizer, "model_max_length", None)
            n_ctx = limit if isinstance(limit, int) and limit < 10**7 else 4096
        self.n_ctx = int(n_ctx)
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        own = getattr(self.tokenizer, "chat_template", None)
        self.chat_template = chat_template or (own if isinstance(own, str) else None)
        gc = self.model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else getattr(self.model.config, "eos_token_id", None)
        self.eos_ids = set() if eos is None else ({int(eos)} if isinstance(eos, int) else {int(e) for e in eos})
        pad = gc.pad_token_id if gc.pad_token_id is not None else getattr(self.model.config, "pad_token_id", None)
        if pad is None and self.eos_ids:
            pad = min(self.eos_ids)
        self.pad = pad
        self._seeds = np.random.default_rng(seed)

    def _decode(self, ids: Sequence[int]) -> str:
        with self._lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def encode(self, text: str) -> List[int]:
        with self._lock:
            return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_chat(self, messages: List[Dict[str, str]]) -> List[int]:
        if self.chat_template is None:
            raise _no_template(self.model_name)
        with self._lock:
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                          chat_template=self.chat_template)
            except Exception as exc:
                raise bad_request(f"the chat template could not render these messages: {exc}", param="messages") from None
            bos = self.tokenizer.bos_token
            add_special = not (bos and text.startswith(bos))
            return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def token_text(self, token_id: int) -> str:
        with self._lock:
            return self.tokenizer.decode([int(token_id)])

    def request_seed(self, job: SequenceJob) -> int:
        """The seed a sequence draws with: its own, or the next one of the server's ``--seed``
        stream."""
        return int(job.seed) if job.seed is not None else int(self._seeds.integers(0, 2**63 - 1))

    def slots(self, n: int) -> Slots:
        from autodeco_samplers.frontends.server.hf_batch import TransformersSlots

        return TransformersSlots(self, n)
