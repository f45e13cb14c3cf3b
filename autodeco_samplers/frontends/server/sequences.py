"""What the server's engines exchange with the scheduler: a sequence to run
(:class:`SequenceJob`), its tokens (:class:`TokenOut`) and its end (:class:`SequenceEnd`), the
:class:`Slots` interface of a batched engine, and :func:`canonical_logprobs`.

Log-probabilities are those of the **canonical distribution** the token was drawn from
(docs/design.md section 3): :func:`canonical_logprobs` applies
:func:`autodeco_samplers.core.fast_nucleus.sparse_next_token_distribution` to the step's logits
with the step's used T and P. Tokens outside the nucleus have probability 0 and are never
listed; ``top_logprobs`` lists at most ``k`` kept tokens (most probable first, ties to the
lower id), fewer when the nucleus is smaller. A greedy step has one token of log-probability 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.frontends.server.errors import APIError

__all__ = ["FLOOR_LOGPROB", "SequenceEnd", "SequenceJob", "Slots", "StepOut", "TokenOut", "canonical_logprobs"]

FLOOR_LOGPROB = -9999.0  # stands for log(0) in JSON (a token the distribution cannot draw)


@dataclass
class SequenceJob:
    """One sequence to generate: prompt ids, limits, the request's policy and options."""

    prompt_ids: List[int]
    max_tokens: int
    stops: List[str] = field(default_factory=list)
    seed: Optional[int] = None
    policy: DecodingPolicy = field(default_factory=DecodingPolicy)
    logprobs: Optional[int] = None  # None: no log-probabilities; k: the drawn token and k alternatives


@dataclass
class TokenOut:
    """One generated token: its id, the text released with it, predicted and used T and P, and
    (when asked) its canonical log-probability and the top alternatives ``[(id, logprob)]``."""

    index: int
    token_id: int
    text: str
    T_pred: float
    P_pred: float
    T: float
    P: float
    eog: bool = False
    logprob: Optional[float] = None
    top_logprobs: Optional[List[Tuple[int, float]]] = None

    def step(self) -> Dict[str, Any]:
        """The trace entry, the ``steps`` schema of ``autodeco generate --json``."""
        return {"token_id": self.token_id, "T_pred": self.T_pred, "P_pred": self.P_pred, "T": self.T, "P": self.P}


@dataclass
class SequenceEnd:
    """How a sequence ended: ``eos``, ``stop``, ``length`` or ``cancelled``; its whole text;
    its number of tokens; and ``tail``, text released after the last token event (empty
    unless the engine's last step could not carry it)."""

    finish_reason: str
    text: str
    n_tokens: int
    tail: str = ""


def canonical_logprobs(logits: np.ndarray, T: float, P: float, token_id: int, k: int) -> Tuple[float, List[Tuple[int, float]]]:
    """``(log p[token_id], top-k [(id, log p)])`` of the canonical distribution of one row of
    logits under the used ``T`` and ``P`` (module docstring)."""
    from autodeco_samplers.core.fast_nucleus import sparse_next_token_distribution

    ids, probs = sparse_next_token_distribution(np.asarray(logits, dtype=np.float32), float(T), float(P))
    with np.errstate(divide="ignore"):
        logp = np.log(probs.astype(np.float64))
    pos = int(np.searchsorted(ids, token_id))
    chosen = float(logp[pos]) if pos < ids.size and int(ids[pos]) == int(token_id) else FLOOR_LOGPROB
    top: List[Tuple[int, float]] = []
    if k > 0:
        order = np.lexsort((ids, -probs))[:k]
        top = [(int(ids[i]), max(float(logp[i]), FLOOR_LOGPROB)) for i in order]
    return max(chosen, FLOOR_LOGPROB), top


Emit = Callable[[TokenOut], None]

StepOut = Tuple[int, Optional[TokenOut], Optional[SequenceEnd], Optional[APIError]]
"""One sequence's outcome of a :meth:`Slots.step`: ``(slot, token, end, error)``; ``end`` is
set when the sequence ended with this token (its slot is then free), ``error`` (with no token)
when this sequence failed alone (its slot is then free; the other rows went on)."""


class Slots:
    """``n_slots`` sequences an engine decodes together (continuous batching).

    The scheduler calls :meth:`join` for a sequence when a slot is free, :meth:`step` while
    any sequence is active, and :meth:`leave` to end one early (a cancelled request). One
    thread uses it. Each sequence's tokens are drawn with its own policy and generator
    (``SequenceJob.seed``), so what runs beside it changes them only through the engine's
    numbers (docs/server.md, "Slots").
    """

    n_slots: int = 1

    def join(self, job: SequenceJob) -> int:
        """Start ``job`` in a free slot; returns the slot. Raises :class:`APIError` (400) for a
        sequence the engine cannot run."""
        raise NotImplementedError

    def step(self) -> List[StepOut]:
        """One decode for every active sequence (module docstring); may return nothing for a
        sequence whose prompt is still being decoded."""
        raise NotImplementedError

    def leave(self, slot: int) -> SequenceEnd:
        """End the sequence in ``slot`` now (``finish_reason`` ``cancelled``) and free the slot."""
        raise NotImplementedError

    def active(self) -> int:
        """How many slots hold a sequence."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the engine resources of the slots."""


