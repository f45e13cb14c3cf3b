"""AutoDeco on llama.cpp (llama-cpp-python): NumPy heads on the logits and hidden state of each decode.

Needs only NumPy, ``gguf`` and ``llama-cpp-python`` (no torch). Two ways in:

1. :class:`AutoDecoLlama` (recommended): our own decode loop (:mod:`.decode`). Each step
   decodes the last token with embeddings switched on, reads zero-copy views of the logits and
   the final hidden state (``lm_head``'s input) and calls the core NumPy step
   :func:`autodeco_samplers.core.step.numpy_step_sample` (heads, policy, canonical nucleus
   without a vocabulary sort, proved and tested equal to
   :func:`autodeco_samplers.core.reference.next_token_distribution`, seeded draw; ``exact=True``
   runs the reference's full sort instead). llama.cpp's own samplers (whose chain applies top-p
   *before* temperature) are never used. The prompt is decoded with embeddings off except for
   its last token, so prefill costs what it always costs. ``stream(..., on_step=...)`` hands
   each step's hidden state, logits and result (T, P, distribution, token) to the caller.
2. :class:`AutoDecoLlamaProcessor` for code that keeps ``Llama.create_completion``; see its
   docstring for what it costs and which sampling arguments it needs.

Several sequences at once: :class:`LlamaBatchDecoder` (:mod:`.batch`) decodes up to ``n_slots``
sequences on one llama.cpp context (one KV stream per slot), one ``llama_decode`` per step for
the next token of every sequence, each row through the core NumPy step with that sequence's own
policy and generator; sequences join and leave between steps (``autodeco serve --parallel N``).
Alone, a sequence is bit-equal to :meth:`AutoDecoLlama.generate`.

Speculative decoding: ``AutoDecoLlama.stream(..., speculative=SpeculativeConfig(...))`` (and
``generate``) verifies prompt-lookup drafts, or a draft model's, ``k`` at a time in one batched
decode of the same loop, each position scored from its own hidden state, with the exact rule of
:mod:`autodeco_samplers.core.speculative`; the drafters are :mod:`.speculative`.

Errors: a missing, truncated or foreign file (a heads sidecar passed as the model, a file
without a tokenizer vocabulary, which would make ``tokenize()`` abort the process) is refused
with :class:`~autodeco_samplers.core.errors.CheckpointError` *before* llama.cpp sees it; heads whose
``hidden_size`` differs from the model's embedding width raise
:class:`~autodeco_samplers.core.errors.ShapeError` at load.
"""

from __future__ import annotations

import codecs
import ctypes
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from autodeco_samplers.core.errors import AutoDecoError, CheckpointError, InvalidParameterError, ShapeError
from autodeco_samplers.heads import AutoDecoHeads, load_heads
from autodeco_samplers.heads.io.detect import check_model_gguf
from autodeco_samplers.core.interfaces import GenerationResult, TokenStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.step import numpy_step_distribution

from autodeco_samplers.adapters.llama_cpp.batch import LlamaBatchDecoder, SlotEvent
from autodeco_samplers.adapters.llama_cpp.decode import OnStep, StepRecord, StreamedToken, decode_loop
from autodeco_samplers.adapters.llama_cpp.speculative import SpeculativeConfig, SpeculativeStats, make_drafter

__all__ = [
    "ENGINE_NAME",
    "AutoDecoLlama",
    "AutoDecoLlamaProcessor",
    "LlamaBatchDecoder",
    "SlotEvent",
    "SpeculativeConfig",
    "SpeculativeStats",
    "StepRecord",
    "StreamedToken",
    "check_model_gguf",
    "load_llama",
    "NEUTRAL_SAMPLING_KWARGS",
]

ENGINE_NAME = "llama-cpp"

NEUTRAL_SAMPLING_KWARGS = dict(
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    min_p=0.0,
    typical_p=1.0,
    repeat_penalty=1.0,
    frequency_penalty=0.0,
    presence_penalty=0.0,
    mirostat_mode=0,
)
"""``create_completion`` arguments that make llama-cpp-python's chain after a logits
processor the identity followed by ``dist`` (each stage returns early at these values)."""

PathLike = Union[str, Path]


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise AutoDecoError(
            "the llama-cpp engine needs llama-cpp-python: pip install 'autodeco-samplers[llama-cpp]'"
        ) from None
    return llama_cpp


def load_llama(
    model_path: PathLike,
    *,
    n_ctx: Optional[int] = None,
    f32_kv_cache: bool = False,
    n_threads: Optional[int] = None,
    seed: int = 0,
    **llama_kwargs: Any,
):
    """Open a GGUF as ``llama_cpp.Llama`` after :func:`check_model_gguf`, quietly (``verbose=False``).

    ``f32_kv_cache=True`` stores the KV cache in float32 (``type_k=type_v=0``): logits and
    hidden states then match transformers to ~1e-6 relative; llama.cpp's default f16 cache
    gives ~1e-3.
    """
    llama_cpp = _llama_cpp()
    train_ctx = check_model_gguf(model_path)
    if n_ctx is None:
        n_ctx = min(4096, train_ctx) if train_ctx else 2048
    kwargs = dict(n_ctx=n_ctx, verbose=False, seed=seed, logits_all=False)
    if n_threads is not None:
        kwargs["n_threads"] = n_threads
        kwargs.setdefault("n_threads_batch", n_threads)
    if f32_kv_cache:
        kwargs.update(type_k=0, type_v=0)
    kwargs.update(llama_kwargs)
    try:
        return llama_cpp.Llama(str(model_path), **kwargs)
    except ValueError as exc:
        raise CheckpointError(f"{model_path}: llama.cpp could not load the model ({exc})") from None


def _embedding_width(llm) -> int:
    llama_cpp = _llama_cpp()
    fn = getattr(llama_cpp, "llama_model_n_embd_out", None)
    if fn is not None:
        try:
            return int(fn(llm._model.model))
        except Exception:  # pragma: no cover - symbol present but not exported by the build
            pass
    return int(llm.n_embd())


class GenerationStream:
    """Iterator of :class:`StreamedToken`; after exhaustion ``.result`` holds the trace."""

    def __init__(self, gen: Iterator[StreamedToken], result: GenerationResult) -> None:
        self._gen = gen
        self.result = result
        self.speculation: Optional[SpeculativeStats] = None  # counts of a speculative stream

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> StreamedToken:
        return next(self._gen)

    def close(self) -> None:
        """End the generation early (the adapter switches the context's embeddings off)."""
        self._gen.close()


class AutoDecoLlama:
    """AutoDeco decoding over a ``llama_cpp.Llama`` (or a GGUF path) plus heads.

    Args:
        model: a ``llama_cpp.Llama`` or a model ``.gguf`` path (opened with :func:`load_llama`
            and ``n_ctx`` / ``f32_kv_cache`` / ``llama_kwargs``).
        heads: :class:`AutoDecoHeads` or any checkpoint path ``load_heads`` reads (a ``.gguf``
            sidecar needs no torch). Its ``hidden_size`` must equal the model's embedding width.
        policy: request knobs (multipliers of T and P, clamps, overrides).
        seed: seed of the NumPy generator used for draws when a call passes no seed.
        exact: run the step with the reference's full sort (``exact=True`` of
            :func:`~autodeco_samplers.core.step.numpy_step_sample`) instead of the equivalent
            sort-free nucleus.

    >>> # gen = AutoDecoLlama("model.gguf", "heads.gguf", seed=0)
    >>> # for tok in gen.stream("Once upon a time", max_new_tokens=20): print(tok.piece, tok.T, tok.P)
    """

    def __init__(
        self,
        model: Any,
        heads: Union[AutoDecoHeads, PathLike],
        *,
        policy: Optional[DecodingPolicy] = None,
        seed: Optional[int] = None,
        exact: bool = False,
        n_ctx: Optional[int] = None,
        f32_kv_cache: bool = False,
        **llama_kwargs: Any,
    ) -> None:
        self._llama_cpp = _llama_cpp()
        if not isinstance(heads, AutoDecoHeads):
            heads = load_heads(heads)  # validate the heads before loading a large model
        if isinstance(model, (str, Path)):
            model = load_llama(model, n_ctx=n_ctx, f32_kv_cache=f32_kv_cache, **llama_kwargs)
        if not hasattr(model, "_ctx") or not hasattr(model, "_model"):
            raise AutoDecoError(f"model must be a llama_cpp.Llama or a .gguf path, got {type(model).__name__}")
        self.llm = model
        self.hidden_size = _embedding_width(model)
        if heads.hidden_size != self.hidden_size:
            raise ShapeError(
                f"hidden-size mismatch: the model has hidden_size={self.hidden_size} but the heads "
                f"({heads.config.source}) expect {heads.hidden_size}"
            )
        self.heads = heads
        self.policy = policy or DecodingPolicy()
        self.exact = exact
        self.rng = np.random.default_rng(seed)
        self.n_vocab = int(model.n_vocab())
        self._ctx = model._ctx.ctx
        self._vocab = self._llama_cpp.llama_model_get_vocab(model._model.model)
        self._n_batch = int(getattr(model, "n_batch", 512))
        self._pieces: dict = {}
        self._draft_models: dict = {}  # GGUF path -> the draft llama_cpp.Llama opened for it
        self._checked_drafts: set = set()  # ids of draft models whose vocabulary was checked
        self.last_speculation: Optional[SpeculativeStats] = None
        """Counts of the last speculative stream (drafts verified and accepted, target decodes)."""

    # --- engine plumbing -------------------------------------------------------------
    def _decode(self, tokens: Sequence[int]) -> None:
        lc = self._llama_cpp
        arr = (lc.llama_token * len(tokens))(*tokens)
        rc = lc.llama_decode(self._ctx, lc.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise AutoDecoError(f"llama_decode failed with code {rc} (context full or out of memory?)")

    def last_outputs(self) -> Tuple[np.ndarray, np.ndarray]:
        """Zero-copy ``(hidden [H], logits [V])`` of the last decoded position (while a plain
        :meth:`stream` is paused at a token, the state that token was drawn from; under
        speculation the last position of the verified block: use ``on_step`` there). Valid
        until the next decode; copy to keep."""
        lc = self._llama_cpp
        logits_ptr = lc.llama_get_logits_ith(self._ctx, -1)
        hidden_ptr = lc.llama_get_embeddings_ith(self._ctx, -1)
        if not logits_ptr or not hidden_ptr:
            raise AutoDecoError("llama.cpp returned no logits/embeddings for the last token")
        logits = np.ctypeslib.as_array(logits_ptr, shape=(self.n_vocab,))
        hidden = np.ctypeslib.as_array(hidden_ptr, shape=(self.hidden_size,))
        return hidden, logits

    def _reset(self) -> None:
        lc = self._llama_cpp
        self.llm.reset()
        if hasattr(lc, "llama_memory_clear"):
            lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
        else:  # pragma: no cover - llama-cpp-python builds before the memory API
            (getattr(lc, "llama_kv_self_clear", None) or lc.llama_kv_cache_clear)(self._ctx)

    def tokenize(self, text: str, *, add_bos: bool = True) -> List[int]:
        """Token ids of ``text``; BOS is added only if the model's vocabulary asks for it."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def is_eog(self, token_id: int) -> bool:
        """Whether ``token_id`` ends generation (EOS, EOT, ... as the GGUF declares)."""
        return bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, int(token_id)))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token's text as it continues a sequence (``llama_token_to_piece``
        without stripping a leading space; control tokens render as empty). Cached."""
        piece = self._pieces.get(token_id)
        if piece is None:
            lc = self._llama_cpp
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = lc.llama_token_to_piece(self._vocab, int(token_id), buf, size, 0, False)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token_id] = buf.raw[:n]
        return piece

    def _open_draft(self, path: PathLike):
        """The draft model for a GGUF path of :class:`SpeculativeConfig`, opened once (the
        target's ``n_ctx`` and thread count) and kept for later calls."""
        key = str(Path(path).resolve())
        llm = self._draft_models.get(key)
        if llm is None:
            kwargs = {}
            n_threads = getattr(self.llm, "n_threads", None)
            if n_threads:
                kwargs["n_threads"] = int(n_threads)
            llm = self._draft_models[key] = load_llama(path, n_ctx=int(self.llm.n_ctx()), **kwargs)
        return llm

    # --- generation --------------------------------------------------------------------
    def stream(
        self,
        prompt: Union[str, Sequence[int]],
        *,
        max_new_tokens: int = 64,
        stop: Union[str, Sequence[str], None] = None,
        seed: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        policy: Optional[DecodingPolicy] = None,
        stop_at_eos: bool = True,
        speculative: Optional[SpeculativeConfig] = None,
        on_step: Optional[OnStep] = None,
    ) -> GenerationStream:
        """Generate token by token; iterate for :class:`StreamedToken`, then read ``.result``.

        Stops at the first of: an end-of-generation token (included in ``token_ids``, not in
        ``text``; ``finish_reason="eos"``), a stop string appearing in the decoded text (the
        token completing it is included in ``token_ids``; ``text`` ends before the stop
        string; ``"stop"``), ``max_new_tokens`` or a full context (``"length"``).
        ``seed`` gives the draw a fresh ``numpy.random.default_rng(seed)``; ``None`` continues
        the generator given at construction. ``temperature`` / ``top_p`` are the request's
        multipliers on top of the deployment policy (``policy``, default the one given at
        construction), the one request-knob rule of every engine
        (:meth:`DecodingPolicy.for_request`; 0 is greedy).

        ``speculative=SpeculativeConfig(...)`` verifies drafts (prompt lookup, or a draft
        model) with the exact rule: the output has the same distribution (greedy: the same
        tokens), each target decode can emit several tokens; counts in ``stream.speculation``
        and :attr:`last_speculation` (see :mod:`.speculative`).

        ``on_step``, when given, is called once per generated token, before the token is
        yielded, with a :class:`StepRecord`: copies of the hidden state and logits the token
        was drawn from, and the core step's result on them (``T_pred``, ``P_pred``, ``T``,
        ``P``, the canonical distribution as ``rows``, the token). That is every number the
        conformance suite checks; without it nothing is copied.
        """
        if speculative is not None and not isinstance(speculative, SpeculativeConfig):
            raise InvalidParameterError(f"speculative must be a SpeculativeConfig or None, got {type(speculative).__name__}")
        if max_new_tokens < 0:
            raise InvalidParameterError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if isinstance(prompt, str):
            prompt_ids = self.tokenize(prompt)
        else:
            prompt_ids = [int(t) for t in prompt]
        if not prompt_ids:
            bos = int(self.llm.token_bos())
            if bos < 0:
                raise InvalidParameterError("empty prompt and the model has no BOS token")
            prompt_ids = [bos]
        bad = [t for t in prompt_ids if not 0 <= t < self.n_vocab]
        if bad:
            raise InvalidParameterError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.n_vocab})")
        n_ctx = int(self.llm.n_ctx())
        if len(prompt_ids) >= n_ctx:
            raise InvalidParameterError(f"prompt has {len(prompt_ids)} tokens; the context holds {n_ctx}")
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        result = GenerationResult(engine=ENGINE_NAME, prompt_ids=list(prompt_ids), text="")
        rng = np.random.default_rng(seed) if seed is not None else self.rng
        policy = (policy or self.policy).for_request(temperature, top_p)
        stats = None
        if speculative is not None:
            stats = self.last_speculation = SpeculativeStats()
        stream = GenerationStream(
            self._run(prompt_ids, max_new_tokens, stops, rng, policy, stop_at_eos, result, speculative, stats, on_step),
            result,
        )
        stream.speculation = stats
        return stream

    def _run(self, prompt_ids, max_new_tokens, stops, rng, policy, stop_at_eos, result, speculative, stats,
             on_step) -> Iterator[StreamedToken]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        result.finish_reason = "length"
        if max_new_tokens == 0:
            return
        self._reset()
        drafter = None if speculative is None else make_drafter(self, speculative)
        k = 0 if speculative is None else int(speculative.num_draft_tokens)
        try:
            yield from decode_loop(self, prompt_ids, max_new_tokens, stops, rng, policy, stop_at_eos, result, decoder,
                                   drafter=drafter, num_draft_tokens=k, stats=stats, on_step=on_step)
        finally:
            # leave the context as we found it: later plain create_completion calls on the same
            # Llama should not compute hidden states (and logits) for every prompt token
            self._llama_cpp.llama_set_embeddings(self._ctx, False)

    def generate(self, prompt: Union[str, Sequence[int]], **kwargs: Any) -> GenerationResult:
        """Run :meth:`stream` to the end and return its :class:`GenerationResult`
        (engine ``"llama-cpp"``, per-token ``T_pred``, ``P_pred``, ``T``, ``P``)."""
        stream = self.stream(prompt, **kwargs)
        for _ in stream:
            pass
        return stream.result


class AutoDecoLlamaProcessor:
    """AutoDeco as a llama-cpp-python ``logits_processor`` for ``Llama.create_completion``.

    How it works: construction switches the context's embeddings on
    (``llama_set_embeddings(ctx, True)``), so every decode ``Llama.eval`` makes also leaves the
    final hidden state; the processor reads it with ``llama_get_embeddings_ith(ctx, -1)``,
    runs the heads on it and on the logits it is given (raw, token-id order), and returns
    ``log(p)`` of the canonical distribution ``p`` (``-inf`` outside the nucleus), whose
    softmax is ``p`` again.

    Call ``create_completion(..., logits_processor=LogitsProcessorList([proc]),
    **NEUTRAL_SAMPLING_KWARGS)``: llama-cpp-python runs the processor first, then penalties,
    top-k, typical, top-p, min-p, temperature and ``dist``; with ``temperature=1``,
    ``top_p=1``, ``top_k=0``, ``min_p=0``, ``typical_p=1`` and no penalties every stage but
    ``dist`` leaves the logits unchanged, so the token is drawn from ``p``. Other values
    would re-shape ``p`` after AutoDeco (top-p applied twice, temperature applied twice).

    Limits and cost:

    * the draw uses llama.cpp's RNG (``seed=`` of the call), not NumPy's: the *distribution*
      is canonical, the token sequence differs from :class:`AutoDecoLlama` with the same seed;
    * T and P are recorded in :attr:`steps` (``TokenStep`` with ``token_id=-1``: the
      processor does not learn which token was drawn; read the completion's tokens);
    * with embeddings on, llama.cpp computes outputs for *every* prompt token during prefill
      (``lm_head`` over the whole prompt, and it logs a warning saying so), which
      :class:`AutoDecoLlama` avoids;
    * a Python round trip through llama-cpp-python's record array per token.
    """

    def __init__(
        self,
        llm: Any,
        heads: Union[AutoDecoHeads, PathLike],
        policy: Optional[DecodingPolicy] = None,
    ) -> None:
        self._llama_cpp = _llama_cpp()
        self.llm = llm
        self.hidden_size = _embedding_width(llm)
        if not isinstance(heads, AutoDecoHeads):
            heads = load_heads(heads, hidden_size=self.hidden_size)
        elif heads.hidden_size != self.hidden_size:
            raise ShapeError(
                f"hidden-size mismatch: the model has hidden_size={self.hidden_size} but the heads expect {heads.hidden_size}"
            )
        self.heads = heads
        self.policy = policy or DecodingPolicy()
        self.steps: List[TokenStep] = []
        self._ctx = llm._ctx.ctx
        self._n_vocab = int(llm.n_vocab())
        self._llama_cpp.llama_set_embeddings(self._ctx, True)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        lc = self._llama_cpp
        ptr = lc.llama_get_embeddings_ith(self._ctx, -1)
        if not ptr:
            raise AutoDecoError("no hidden state for the last token: were embeddings switched off?")
        hidden = np.ctypeslib.as_array(ptr, shape=(self.hidden_size,))
        logits = np.asarray(scores, dtype=np.float32)
        if logits.shape != (self._n_vocab,):
            raise AutoDecoError(
                f"the logits processor got {logits.shape[0]} scores, expected the full vocabulary "
                f"({self._n_vocab}) in token-id order; it must run first in the chain"
            )
        st = numpy_step_distribution(hidden[None, :], logits[None, :], self.heads, self.policy)
        ids, probs = st.rows[0]
        out = np.full(logits.shape[0], -np.inf, dtype=np.float32)
        with np.errstate(divide="ignore"):
            out[ids] = np.log(probs)
        self.steps.append(TokenStep(-1, float(st.T_pred[0]), float(st.P_pred[0]), float(st.T[0]), float(st.P[0])))
        return out
