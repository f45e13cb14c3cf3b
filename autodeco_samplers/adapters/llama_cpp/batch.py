"""Several sequences on one llama.cpp context: :class:`LlamaBatchDecoder` (continuous batching).

One llama.cpp context holds ``n_slots`` sequence slots (``n_seq_max = n_slots``, one KV
stream per slot, ``kv_unified = false``, so a slot's cells always start at position 0 as in
a context of its own). A caller (``autodeco serve``'s scheduler) starts a sequence in a free
slot with :meth:`LlamaBatchDecoder.start`, calls :meth:`LlamaBatchDecoder.step` in a loop,
and may :meth:`~LlamaBatchDecoder.release` a slot at any time (a cancelled request); a
sequence that ends frees its slot by itself. Sequences join and leave between steps.

One :meth:`~LlamaBatchDecoder.step`:

1. **prefill** (only while some sequence still has prompt tokens to decode): one
   ``llama_decode`` of a ``llama_batch`` holding the next prompt chunks of the joining
   sequences (all but each prompt's last token; at most ``prefill_tokens`` tokens in all,
   oldest sequence first), each token tagged with its slot as sequence id, **embeddings and
   outputs off**. llama.cpp outputs *every* token of a batch while embeddings are on, so the
   prompt bodies cannot share the sampling decode without paying ``lm_head`` for each of
   their tokens;
2. **sampling decode**: one ``llama_decode`` holding the next token of every sequence whose
   prompt is in the cache (its last prompt token, or its last drawn token), embeddings on, an
   output for each; ``llama_get_logits_ith`` / ``llama_get_embeddings_ith`` give each row's
   logits and final hidden state (``lm_head``'s input);
3. each row goes through the core NumPy step
   :func:`autodeco_samplers.core.step.numpy_step_sample` with that sequence's own policy
   (its request multipliers) and its own ``numpy.random.Generator``: one uniform per token,
   exactly as :class:`~autodeco_samplers.adapters.llama_cpp.AutoDecoLlama` draws. The step is
   called one row at a time: a multi-row call is not batch-invariant (NumPy's BLAS sums a
   multi-row matmul in another order: measured on SmolLM2's heads, 4 of 8 rows differ in the
   last bits of ``T``/``P``) and hands the heads' matmul to BLAS's thread pool (see
   :mod:`.decode`);
4. each drawn token goes through the per-token rule :func:`.decode.emit` (end-of-generation
   token, stop strings, ``max_new_tokens``, a full slot context), the rule
   ``AutoDecoLlama.stream`` applies. A sequence that ends has its cells removed
   (``llama_memory_seq_rm(mem, slot, -1, -1)``) and its slot is free for the next one.

What a sequence's tokens depend on: its prompt, its settings and its generator, and the
numbers llama.cpp computes for its rows. The NumPy side is per row by construction; whether
llama.cpp's logits for a row are bit-equal whatever shares the batch depends on its kernels
(docs/server.md, "Slots", has what is measured and tested).
"""

from __future__ import annotations

import codecs
import ctypes
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from autodeco_samplers.core.errors import AutoDecoError, InvalidParameterError
from autodeco_samplers.core.interfaces import GenerationResult, TokenStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.step import numpy_step_sample
from autodeco_samplers.core.text_stream import StopTextStream

from autodeco_samplers.adapters.llama_cpp.decode import StreamedToken, emit

__all__ = ["LlamaBatchDecoder", "SlotEvent"]


@dataclass
class SlotEvent:
    """One drawn token of the sequence in ``slot``.

    ``token`` is what ``AutoDecoLlama.stream`` yields for it (``released`` text, T and P);
    ``done`` says the sequence ended with it (``result.finish_reason``: ``eos``, ``stop`` or
    ``length``; the slot is then already free); ``eog`` whether it is an end-of-generation
    token; ``logits`` a copy of the ``[V]`` logits it was drawn from when the sequence was
    started with ``want_logits=True`` (else ``None``); ``result`` the sequence's
    :class:`GenerationResult` so far. ``error``: the core step refused this row's numbers
    (e.g. a used ``T`` that is not finite); the sequence has ended (``token`` is ``None``,
    ``done`` true, the slot is free) and the other rows went on.
    """

    slot: int
    token: Optional[StreamedToken]
    done: bool
    eog: bool
    result: GenerationResult
    logits: Optional[np.ndarray] = None
    error: Optional[AutoDecoError] = None


@dataclass
class _Sequence:
    prompt: List[int]
    max_new_tokens: int
    text: StopTextStream
    rng: np.random.Generator
    policy: DecodingPolicy
    stop_at_eos: bool
    want_logits: bool
    result: GenerationResult
    order: int
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    n_kv: int = 0  # tokens in the slot's cache
    next_token: int = -1  # the token the next sampling decode feeds (set once the prompt body is in)
    index: int = 0  # tokens drawn so far


class _Batch:
    """A reusable ``llama_batch`` of up to ``capacity`` tokens, one sequence id per token."""

    def __init__(self, lc: Any, capacity: int) -> None:
        self.lc = lc
        self.capacity = int(capacity)
        self.batch = lc.llama_batch_init(self.capacity, 0, 1)

    def fill(self, entries: Sequence[tuple]) -> Any:
        """``entries``: ``(token, position, seq_id, output)`` in batch order."""
        if len(entries) > self.capacity:
            raise AutoDecoError(f"batch of {len(entries)} tokens exceeds its capacity {self.capacity}")
        b = self.batch
        for i, (tok, pos, seq, out) in enumerate(entries):
            b.token[i] = int(tok)
            b.pos[i] = int(pos)
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = int(seq)
            b.logits[i] = 1 if out else 0
        b.n_tokens = len(entries)
        return b

    def free(self) -> None:
        if self.batch is not None:
            self.lc.llama_batch_free(self.batch)
            self.batch = None


class LlamaBatchDecoder:
    """``n_slots`` sequences decoded together on one llama.cpp context (module docstring).

    Args:
        gen: the :class:`~autodeco_samplers.adapters.llama_cpp.AutoDecoLlama` whose model,
            heads, vocabulary and ``exact`` setting are used; its own context is left alone
            (a second context is created on the same model weights).
        n_slots: how many sequences may decode at once (>= 1).
        n_ctx: each slot's context in tokens (default: ``gen``'s ``n_ctx``); the context
            holds ``n_slots * n_ctx`` cells in all.
        prefill_tokens: prompt tokens per prefill decode, over all joining sequences
            (default: ``gen``'s ``n_batch``).

    Not thread-safe: one thread calls :meth:`start`, :meth:`step` and :meth:`release`.
    """

    def __init__(self, gen: Any, n_slots: int = 4, *, n_ctx: Optional[int] = None,
                 prefill_tokens: Optional[int] = None) -> None:
        if int(n_slots) < 1:
            raise InvalidParameterError(f"n_slots must be >= 1, got {n_slots}")
        lc = gen._llama_cpp
        limit = int(lc.llama_max_parallel_sequences())
        if int(n_slots) > limit:
            raise InvalidParameterError(f"n_slots must be <= {limit} (llama.cpp's limit of parallel sequences), got {n_slots}")
        self.gen = gen
        self.lc = lc
        self.n_slots = int(n_slots)
        self.n_ctx = int(n_ctx) if n_ctx is not None else int(gen.llm.n_ctx())
        self.prefill_tokens = int(prefill_tokens) if prefill_tokens is not None else int(gen._n_batch)
        if self.n_ctx < 2 or self.prefill_tokens < 1:
            raise InvalidParameterError(f"n_ctx must be >= 2 and prefill_tokens >= 1, got {self.n_ctx}, {self.prefill_tokens}")
        params = lc.llama_context_params()
        ctypes.memmove(ctypes.addressof(params), ctypes.addressof(gen.llm.context_params), ctypes.sizeof(params))
        params.n_ctx = self.n_ctx * self.n_slots
        params.n_seq_max = self.n_slots
        params.kv_unified = False  # one KV stream per slot: a slot's cells start at 0, as alone
        params.n_batch = max(int(params.n_batch), self.prefill_tokens, self.n_slots)
        params.n_ubatch = max(int(params.n_ubatch), self.n_slots)
        params.embeddings = False
        ctx = lc.llama_init_from_model(gen.llm._model.model, params)
        if not ctx:
            raise AutoDecoError(f"llama.cpp could not create a context of {self.n_slots} slots x {self.n_ctx} tokens "
                                "(out of memory?)")
        self._ctx = ctx
        self._mem = lc.llama_get_memory(ctx)
        self._embeddings = False
        self._prefill = _Batch(lc, self.prefill_tokens)
        self._sample = _Batch(lc, self.n_slots)
        self._seqs: Dict[int, _Sequence] = {}
        self._order = 0
        stack = getattr(gen.llm._model, "_exit_stack", None)
        if stack is not None:  # the context must be freed before its model (as llama-cpp-python's own)
            stack.callback(self.close)

    # --- slots ---------------------------------------------------------------------------
    def free_slots(self) -> List[int]:
        """Slots with no sequence, lowest first."""
        return [s for s in range(self.n_slots) if s not in self._seqs]

    def active(self) -> List[int]:
        """Slots holding a sequence, in the order the sequences started."""
        return sorted(self._seqs, key=lambda s: self._seqs[s].order)

    def start(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        stop: Union[str, Sequence[str], None] = None,
        seed: Optional[int] = None,
        rng: Optional[np.random.Generator] = None,
        policy: Optional[DecodingPolicy] = None,
        stop_at_eos: bool = True,
        want_logits: bool = False,
        slot: Optional[int] = None,
    ) -> int:
        """Start a sequence in ``slot`` (default: the lowest free one) and return the slot.

        Settings as ``AutoDecoLlama.stream``: ``policy`` is the sequence's whole policy (the
        deployment's with the request multipliers, default ``gen.policy``); the generator is
        ``rng``, else ``numpy.random.default_rng(seed)``, else ``gen.rng``. Its prompt is
        decoded by the next steps; its first token comes with the step that decodes the
        prompt's last token.

        Raises:
            InvalidParameterError: no free slot, an empty prompt or ids outside the
                vocabulary, a prompt that fills the slot's context, ``max_new_tokens < 1``.
        """
        free = self.free_slots()
        if slot is None:
            if not free:
                raise InvalidParameterError(f"all {self.n_slots} slots are busy")
            slot = free[0]
        elif slot not in free:
            raise InvalidParameterError(f"slot {slot} is not free (free: {free})")
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise InvalidParameterError("empty prompt")
        bad = [t for t in prompt if not 0 <= t < self.gen.n_vocab]
        if bad:
            raise InvalidParameterError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.gen.n_vocab})")
        if len(prompt) >= self.n_ctx:
            raise InvalidParameterError(f"prompt has {len(prompt)} tokens; a slot's context holds {self.n_ctx}")
        if int(max_new_tokens) < 1:
            raise InvalidParameterError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        if rng is None:
            rng = np.random.default_rng(seed) if seed is not None else self.gen.rng
        result = GenerationResult(engine="llama-cpp", prompt_ids=list(prompt), text="")
        result.finish_reason = "length"
        self.lc.llama_memory_seq_rm(self._mem, slot, -1, -1)
        self._seqs[slot] = _Sequence(prompt, int(max_new_tokens), StopTextStream(stops), rng, policy or self.gen.policy,
                                     bool(stop_at_eos), bool(want_logits), result, self._order)
        self._order += 1
        if len(prompt) == 1:
            self._seqs[slot].next_token = prompt[0]
        return slot

    def release(self, slot: int) -> None:
        """End the sequence in ``slot`` now (if any) and free its cache cells."""
        if self._seqs.pop(slot, None) is not None:
            self.lc.llama_memory_seq_rm(self._mem, slot, -1, -1)

    def result(self, slot: int) -> Optional[GenerationResult]:
        """The running sequence's result so far (``None`` for a free slot)."""
        seq = self._seqs.get(slot)
        return None if seq is None else seq.result

    # --- one step ------------------------------------------------------------------------
    def _set_embeddings(self, on: bool) -> None:
        if self._embeddings != on:
            self.lc.llama_set_embeddings(self._ctx, on)
            self._embeddings = on

    def _decode(self, batch: Any) -> None:
        rc = self.lc.llama_decode(self._ctx, batch)
        if rc != 0:
            raise AutoDecoError(f"llama_decode failed with code {rc} (context full or out of memory?)")

    def _prefill_step(self) -> None:
        entries = []
        budget = self.prefill_tokens
        for slot in self.active():
            seq = self._seqs[slot]
            body = len(seq.prompt) - 1
            if seq.next_token >= 0 or budget == 0:
                continue
            take = min(budget, body - seq.n_kv)
            entries += [(seq.prompt[seq.n_kv + i], seq.n_kv + i, slot, False) for i in range(take)]
            budget -= take
        if not entries:
            return
        self._set_embeddings(False)
        self._decode(self._prefill.fill(entries))
        for _, pos, slot, _ in entries:
            seq = self._seqs[slot]
            seq.n_kv = pos + 1
            if seq.n_kv == len(seq.prompt) - 1:
                seq.next_token = seq.prompt[-1]

    def step(self) -> List[SlotEvent]:
        """Decode one round (module docstring) and return the tokens it drew, one per sequence
        whose prompt was in the cache; sequences still prefilling yield nothing yet."""
        if not self._seqs:
            return []
        self._prefill_step()
        rows = [s for s in self.active() if self._seqs[s].next_token >= 0]
        if not rows:
            return []
        self._set_embeddings(True)
        self._decode(self._sample.fill([(self._seqs[s].next_token, self._seqs[s].n_kv, s, True) for s in rows]))
        lc, gen = self.lc, self.gen
        events = []
        for i, slot in enumerate(rows):
            seq = self._seqs[slot]
            lp = lc.llama_get_logits_ith(self._ctx, i)
            hp = lc.llama_get_embeddings_ith(self._ctx, i)
            if not lp or not hp:
                raise AutoDecoError(f"llama.cpp returned no logits/embeddings for row {i} of the batch")
            logits = np.ctypeslib.as_array(lp, shape=(gen.n_vocab,))
            hidden = np.ctypeslib.as_array(hp, shape=(gen.hidden_size,))
            try:
                st = numpy_step_sample(hidden[None], logits[None], gen.heads, seq.policy, seq.rng, exact=gen.exact)
            except AutoDecoError as exc:  # this row only (InvalidParameterError, InvalidLogitsError)
                events.append(SlotEvent(slot, None, True, False, seq.result, error=exc))
                self.release(slot)
                continue
            tok = int(st.token_ids[0])
            step = TokenStep(tok, float(st.T_pred[0]), float(st.P_pred[0]), float(st.T[0]), float(st.P[0]))
            seq.n_kv += 1  # the cache now holds the token decoded for this row
            last = seq.index + 1 == seq.max_new_tokens or seq.n_kv >= self.n_ctx
            item, done = emit(gen, seq.index, step, seq.text, seq.decoder, seq.result, seq.stop_at_eos, last)
            seq.index += 1
            seq.next_token = tok
            events.append(SlotEvent(slot, item, done, gen.is_eog(tok), seq.result,
                                    logits.copy() if seq.want_logits else None))
            if done:
                self.release(slot)
        return events

    def close(self) -> None:
        """Free the context and the batches (idempotent)."""
        self._seqs.clear()
        self._prefill.free()
        self._sample.free()
        if self._ctx is not None:
            self.lc.llama_free(self._ctx)
            self._ctx = None

