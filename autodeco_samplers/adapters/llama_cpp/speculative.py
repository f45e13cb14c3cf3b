"""Exact speculative decoding for :class:`~autodeco_samplers.adapters.llama_cpp.AutoDecoLlama`: the
configuration, the counts and the drafters.

Wiring only: the drafts come from :func:`autodeco_samplers.core.speculative.prompt_lookup_drafts`
(or from a second GGUF model sampling its own softmax at ``draft_temperature``,
:func:`autodeco_samplers.core.reference.temperature_probs`), and every verification is
:func:`autodeco_samplers.core.speculative.verify_drafts`, the one implementation of the rule,
called from the adapter's one decode loop (:mod:`.decode`), which verifies ``[last token, d_1 ..
d_k]`` in one batched decode, each position scored from its own hidden state.

The output is distributed exactly as plain :meth:`AutoDecoLlama.stream` (docs/design.md
section 3), greedy requests give the same tokens, but a seeded sampling run draws different
tokens than the same seed without speculation (the rule consumes the generator differently).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from autodeco_samplers.core.errors import AutoDecoError, InvalidParameterError
from autodeco_samplers.core.policy import check_knob
from autodeco_samplers.core.reference import GREEDY_TEMPERATURE, draw_row, temperature_probs
from autodeco_samplers.core.speculative import SparseRow, prompt_lookup_drafts

__all__ = ["SpeculativeConfig", "SpeculativeStats", "make_drafter"]


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
        draft_temperature: the draft model's sampling temperature; 0 (below the core's
            greedy threshold, :data:`~autodeco_samplers.core.reference.GREEDY_TEMPERATURE`)
            drafts its argmax (deterministic drafts, point masses for the rule).
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
        check_knob("draft_temperature", self.draft_temperature)


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
        self.greedy = self.temperature < GREEDY_TEMPERATURE  # drafts are point masses
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
            q = temperature_probs(logits, self.temperature)  # one-hot at the lowest argmax when greedy
            if self.greedy:
                tok = int(np.argmax(q))
            else:
                tok = draw_row(self.ids, q, rng)
                rows.append((self.ids, q))
            drafts.append(tok)
            if i + 1 < k:
                self._decode([tok])
        return drafts, (None if self.greedy else rows)

    def keep(self, n: int) -> None:
        """Keep the first ``n`` tokens of the sequence in the draft cache."""
        if self.n_kv > n:
            self.lc.llama_memory_seq_rm(self.lc.llama_get_memory(self.ctx), 0, n, -1)
            self.n_kv = n


def make_drafter(target: Any, config: SpeculativeConfig):
    """The drafter of ``config`` for the :class:`AutoDecoLlama` ``target``: prompt lookup, or a
    draft model (opened once per target, its vocabulary checked once against the target's)."""
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
