"""Exact speculative decoding for :class:`~autodeco_samplers.adapters.llama_cpp.AutoDecoLlama`.

Wiring only: the drafts come from :func:`autodeco_samplers.core.speculative.prompt_lookup_drafts`
(or from a second GGUF model sampling its own softmax), and every verification is
:func:`autodeco_samplers.core.speculative.verify_drafts`, the one implementation of the rule. What
this module adds is the llama.cpp plumbing:

* one ``llama_decode`` per round of ``[last token, d_1 .. d_k]`` as a ``llama_batch`` whose
  ``logits`` flag is set for every token, with embeddings on, so ``llama_get_logits_ith`` and
  ``llama_get_embeddings_ith`` give the logits and the final hidden state of *each* position;
* each position's canonical distribution from its own hidden state and logits (the heads, the
  policy and :func:`autodeco_samplers.core.step.numpy_step_distribution`, batched over the
  ``k + 1`` positions; the reference's full sort with ``exact=True``);
* after the verdict, ``llama_memory_seq_rm`` removes the cache entries of the rejected drafts,
  so the next round continues at the first position past the accepted prefix;
* emission through the adapter's own per-token rule (EOS, stop strings, ``max_new_tokens``, a
  full context): tokens after the one that ends the generation are never emitted.

The output is distributed exactly as plain :meth:`AutoDecoLlama.stream` (docs/design.md
section 3), greedy requests give the same tokens, but a seeded sampling run draws different
tokens than the same seed without speculation (the rule consumes the generator differently).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from autodeco_samplers.core.errors import AutoDecoError, InvalidParameterError
from autodeco_samplers.core.interfaces import TokenStep
from autodeco_samplers.core.reference import inverse_cdf
from autodeco_samplers.core.speculative import SparseRow, prompt_lookup_drafts, verify_drafts
from autodeco_samplers.core.step import numpy_step_distribution
from autodeco_samplers.core.text_stream import StopTextStream

__all__ = ["SpeculativeConfig", "SpeculativeStats", "speculative_loop"]


@dataclass(frozen=True)
class SpeculativeConfig:
    """How :meth:`AutoDecoLlama.stream` / ``generate`` speculate (``speculative=...``).

    Args:
        num_draft_tokens: ``k``, the most drafts verified per target decode (fewer near
            ``max_new_tokens`` or the end of the context, or when prompt lookup finds less).
        max_ngram, min_ngram: prompt lookup looks for the latest earlier occurrence of the
            last ``n`` tokens, ``n`` from ``max_ngram`` down to ``min_ngram``, and proposes
            what followed it (:func:`autodeco_samplers.core.speculative.prompt_lookup_drafts`).
            ``min_ngram=2`` by default: a match of the last token alone proposes mostly drafts
            that get rejected, and on a CPU each verified draft costs a good part of a decode
            (SmolLM2 on a story prompt: 0.64x the plain speed with ``min_ngram=1``, 0.93x with 2;
            on a copying prompt 1.4x either way).
        draft_model: optional draft model instead of prompt lookup: a ``llama_cpp.Llama`` or a
            GGUF path (opened once per :class:`AutoDecoLlama` with the target's ``n_ctx``).
            Its vocabulary must be the target's (same size, same token texts). It drafts by
            sampling its own plain softmax at ``draft_temperature``; those distributions are
            passed to the rule (``draft_rows``), which keeps the output exact.
        draft_temperature: the draft model's sampling temperature; 0 drafts its argmax
            (deterministic drafts, point masses for the rule).
    """

    num_draft_tokens: int = 4
    max_ngram: int = 3
    min_ngram: int = 2
    draft_model: Any = None
    draft_temperature: float = 1.0

    def __post_init__(self) -> None:
        if int(self.num_draft_tokens) != self.num_draft_tokens or self.num_draft_tokens < 1:
            raise InvalidParameterError(f"num_draft_tokens must be an integer >= 1, got {self.num_draft_tokens!r}")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise InvalidParameterError(
                f"need 1 <= min_ngram <= max_ngram, got min_ngram={self.min_ngram}, max_ngram={self.max_ngram}"
            )
        t = float(self.draft_temperature)
        if not np.isfinite(t) or t < 0:
            raise InvalidParameterError(f"draft_temperature must be a finite number >= 0, got {self.draft_temperature!r}")


@dataclass
class SpeculativeStats:
    """Counts of one speculative generation (``AutoDecoLlama.last_speculation``, and
    ``stream.speculation`` while it runs): target decodes (``rounds``), drafts verified,
    drafts accepted, tokens emitted."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    emitted: int = 0
    accepted_per_round: List[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        """Emitted tokens per target decode."""
        return self.emitted / self.rounds if self.rounds else 0.0


# ----------------------------------------------------------------------------- drafters


class _LookupDrafter:
    """Prompt lookup: deterministic drafts (point masses for the rule)."""

    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config

    def start(self) -> None:
        pass

    def propose(self, seq: Sequence[int], k: int, rng: np.random.Generator) -> Tuple[List[int], Optional[List[SparseRow]]]:
        c = self.config
        return prompt_lookup_drafts(seq, k, max_ngram=c.max_ngram, min_ngram=c.min_ngram), None

    def keep(self, n: int) -> None:
        pass


def _piece(lc: Any, vocab: Any, tok: int) -> bytes:
    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = lc.llama_token_to_piece(vocab, tok, buf, size, 0, True)
        if n >= 0:
            return buf.raw[:n]
        size = -n


def _same_vocabulary(target: Any, draft: Any) -> None:
    """Refuse a draft model whose vocabulary differs from the target's (size or any token's text)."""
    lc = target._llama_cpp
    n_target, n_draft = target.n_vocab, int(draft.n_vocab())
    if n_draft != n_target:
        raise InvalidParameterError(
            f"the draft model's vocabulary has {n_draft} tokens, the target's {n_target}: speculative decoding "
            "needs the same vocabulary (same token ids and texts)"
        )
    mine = lc.llama_model_get_vocab(draft._model.model)
    for tok in range(n_target):
        a, b = _piece(lc, mine, tok), _piece(lc, target._vocab, tok)
        if a != b:
            raise InvalidParameterError(
                f"the draft model's token {tok} is {a!r}, the target's {b!r}: speculative decoding needs the same "
                "vocabulary (same token ids and texts)"
            )


class _ModelDrafter:
    """A second llama.cpp model that samples ``k`` drafts from its own softmax, one decode per
    draft, and keeps its own KV cache in step with the accepted sequence."""

    def __init__(self, target: Any, llm: Any, temperature: float) -> None:
        self.lc = target._llama_cpp
        self.llm = llm
        self.ctx = llm._ctx.ctx
        self.n_vocab = int(llm.n_vocab())
        self.n_ctx = int(llm.n_ctx())
        self.n_batch = int(getattr(llm, "n_batch", 512))
        self.temperature = float(temperature)
        self.ids = np.arange(self.n_vocab)
        self.n_kv = 0

    def start(self) -> None:
        lc = self.lc
        self.llm.reset()
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        lc.llama_set_embeddings(self.ctx, False)
        self.n_kv = 0

    def _decode(self, tokens: Sequence[int]) -> None:
        lc = self.lc
        for start in range(0, len(tokens), self.n_batch):
            part = tokens[start : start + self.n_batch]
            arr = (lc.llama_token * len(part))(*part)
            rc = lc.llama_decode(self.ctx, lc.llama_batch_get_one(arr, len(part)))
            if rc != 0:
                raise AutoDecoError(f"the draft model's llama_decode failed with code {rc}")
            self.n_kv += len(part)

    def propose(self, seq: Sequence[int], k: int, rng: np.random.Generator) -> Tuple[List[int], Optional[List[SparseRow]]]:
        # the draft cache must hold the sequence and the first k - 1 drafts
        k = min(k, self.n_ctx - len(seq) + 1)
        if k <= 0:
            return [], None
        self._decode(list(seq[self.n_kv :]))
        drafts: List[int] = []
        rows: List[SparseRow] = []
        for i in range(k):
            ptr = self.lc.llama_get_logits_ith(self.ctx, -1)
            if not ptr:
                raise AutoDecoError("the draft model returned no logits")
            logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
            if self.temperature == 0.0:
                tok = int(np.argmax(logits))
            else:
                z = (logits - logits.max()) / self.temperature
                q = np.exp(z)
                q /= q.sum()
                tok = int(inverse_cdf(q[None], rng.random())[0])
                rows.append((self.ids, q))
            drafts.append(tok)
            if i + 1 < k:
                self._decode([tok])
        return drafts, (rows if self.temperature > 0.0 else None)

    def keep(self, n: int) -> None:
        """Keep the first ``n`` tokens of the sequence in the draft cache."""
        if self.n_kv > n:
            self.lc.llama_memory_seq_rm(self.lc.llama_get_memory(self.ctx), 0, n, -1)
            self.n_kv = n


def _drafter(target: Any, config: SpeculativeConfig):
    if config.draft_model is None:
        return _LookupDrafter(config)
    model = config.draft_model
    if isinstance(model, (str, Path)):
        model = target._open_draft(model)
    if not hasattr(model, "_ctx") or not hasattr(model, "_model"):
        raise InvalidParameterError(f"draft_model must be a llama_cpp.Llama or a .gguf path, got {type(model).__name__}")
    if model is target.llm:
        raise InvalidParameterError("the draft model must be a separate llama_cpp.Llama (it keeps its own cache)")
    if id(model) not in target._checked_drafts:
        _same_vocabulary(target, model)
        target._checked_drafts.add(id(model))
    return _ModelDrafter(target, model, config.draft_temperature)


# ----------------------------------------------------------------------------- target side


class _Batch:
    """A ``llama_batch`` of up to ``capacity`` tokens of sequence 0, outputs for every token."""

    def __init__(self, lc: Any, capacity: int) -> None:
        self.lc = lc
        self.capacity = capacity
        self.batch = lc.llama_batch_init(capacity, 0, 1)

    def fill(self, tokens: Sequence[int], pos0: int) -> Any:
        b = self.batch
        for i, tok in enumerate(tokens):
            b.token[i] = int(tok)
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1
        b.n_tokens = len(tokens)
        return b

    def free(self) -> None:
        if self.batch is not None:
            self.lc.llama_batch_free(self.batch)
            self.batch = None


def _block_outputs(gen: Any, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(hidden [n, H], logits [n, V])`` (copies) of the ``n`` positions of the last decode."""
    lc = gen._llama_cpp
    hidden = np.empty((n, gen.hidden_size), dtype=np.float32)
    logits = np.empty((n, gen.n_vocab), dtype=np.float32)
    for i in range(n):
        lp = lc.llama_get_logits_ith(gen._ctx, i)
        hp = lc.llama_get_embeddings_ith(gen._ctx, i)
        if not lp or not hp:
            raise AutoDecoError(f"llama.cpp returned no logits/embeddings for position {i} of the verified block")
        logits[i] = np.ctypeslib.as_array(lp, shape=(gen.n_vocab,))
        hidden[i] = np.ctypeslib.as_array(hp, shape=(gen.hidden_size,))
    return hidden, logits


def block_rows(gen: Any, hidden: np.ndarray, logits: np.ndarray, policy) -> Tuple[List[SparseRow], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each position's canonical distribution (sparse rows) and ``T_pred, P_pred, T, P`` ``[n]``:
    the adapter's step on each position (the reference's full sort when ``gen.exact``).

    One row at a time, as the plain loop does: equal inputs give bit-equal records, and a
    multi-row matmul in the heads would hand NumPy's BLAS to its thread pool, which costs
    milliseconds per call on a busy machine (measured on SmolLM2's heads: 9 ms per head call for
    5 rows under load, 0.2 ms for one row)."""
    if not gen.exact:
        out = [numpy_step_distribution(hidden[i : i + 1], logits[i : i + 1], gen.heads, policy) for i in range(len(hidden))]
        rows = [o[0][0] for o in out]
        return (rows,) + tuple(np.concatenate([o[j] for o in out]) for j in range(1, 5))
    from autodeco_samplers.core.sampler import AutoDecoSampler

    probs, (T_pred, P_pred, T, P) = AutoDecoSampler(gen.heads, policy).distribution(hidden, logits)
    rows = []
    for row in np.atleast_2d(probs):
        ids = np.flatnonzero(row > 0)
        rows.append((ids, row[ids]))
    return rows, T_pred, P_pred, T, P


def speculative_loop(
    gen: Any, prompt_ids: List[int], max_new_tokens: int, stops, rng: np.random.Generator, policy,
    stop_at_eos: bool, result, decoder, config: SpeculativeConfig, stats: SpeculativeStats,
) -> Iterator[Any]:
    """The speculative twin of ``AutoDecoLlama._loop`` (same arguments, same emission rule).

    Invariant: the target's cache holds ``seq[:n_kv]`` and ``seq[n_kv]`` (the last emitted
    token, or the prompt's last token) is the first token of the next verified block.
    """
    lc = gen._llama_cpp
    text = StopTextStream(stops)
    n_ctx = int(gen.llm.n_ctx())
    drafter = _drafter(gen, config)
    drafter.start()
    mem = lc.llama_get_memory(gen._ctx)
    seq = list(prompt_ids)
    lc.llama_set_embeddings(gen._ctx, False)
    head = seq[:-1]
    for start in range(0, len(head), gen._n_batch):
        gen._decode(head[start : start + gen._n_batch])
    lc.llama_set_embeddings(gen._ctx, True)
    n_kv = len(head)
    batch = _Batch(lc, config.num_draft_tokens + 1)
    index = 0
    try:
        while True:
            # a draft is worth verifying only if its token could be emitted: one more token (the
            # target's own) always follows, and the block's last position must fit the context
            room = min(config.num_draft_tokens, max_new_tokens - index - 1, n_ctx - n_kv - 1)
            drafts, draft_rows = drafter.propose(seq, room, rng) if room > 0 else ([], None)
            block = [seq[-1]] + [int(d) for d in drafts]
            rc = lc.llama_decode(gen._ctx, batch.fill(block, n_kv))
            if rc != 0:
                raise AutoDecoError(f"llama_decode failed with code {rc} (context full or out of memory?)")
            hidden, logits = _block_outputs(gen, len(block))
            rows, T_pred, P_pred, T, P = block_rows(gen, hidden, logits, policy)
            verdict = verify_drafts(rows, drafts, rng, draft_rows)
            stats.rounds += 1
            stats.drafted += len(drafts)
            stats.accepted += verdict.n_accepted
            stats.accepted_per_round.append(verdict.n_accepted)
            # the cache holds seq[:n_kv] + block; keep the last token and the accepted drafts
            keep = n_kv + 1 + verdict.n_accepted
            if verdict.n_accepted < len(drafts) and not lc.llama_memory_seq_rm(mem, 0, keep, -1):
                raise AutoDecoError("llama.cpp could not remove the rejected drafts from the cache")
            drafter.keep(keep)
            base = n_kv
            n_kv = keep
            for j, tok in enumerate(verdict.tokens):
                step = TokenStep(int(tok), float(T_pred[j]), float(P_pred[j]), float(T[j]), float(P[j]))
                seq.append(int(tok))
                # the token was drawn from a cache of base + j + 1 tokens (n_past of the plain loop)
                last = index + 1 == max_new_tokens or base + j + 1 >= n_ctx
                item, done = gen._emit(index, step, text, decoder, result, stop_at_eos, last)
                index += 1
                stats.emitted += 1
                yield item
                if done:
                    return
    finally:
        batch.free()
