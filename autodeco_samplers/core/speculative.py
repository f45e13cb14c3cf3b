"""Speculative decoding that keeps AutoDeco's distribution exact (NumPy, no engine imports).

A draft proposes tokens ``d_1 .. d_k`` after a prefix; the target model scores the prefix and
every drafted continuation in one forward, and each verified position gets its own canonical
distribution ``p_i`` from its own hidden state and logits (AutoDeco's T and P depend only on the
prefix, so the target is a fixed distribution per prefix). The verification rule (speculative
sampling, Leviathan et al. 2023; Chen et al. 2023) then emits tokens distributed exactly as
plain AutoDeco decoding would:

* position ``i`` accepts ``d_i`` with probability ``min(1, p_i(d_i) / q_i(d_i))``, where ``q_i`` is
  the distribution the draft was drawn from (a point mass ``q_i = 1{d_i}`` for drafts that are
  not sampled, such as prompt lookup: accept with probability ``p_i(d_i)``);
* the first rejected position emits a token drawn from the residual ``max(p_i - q_i, 0)``
  (renormalised) and verification stops;
* when every draft is accepted, one more token is drawn from ``p_{k+1}``.

What the draft proposes changes only how many tokens each target forward yields, never the
distribution of the output (docs/design.md section 3, "Speculative decoding").

Distributions are sparse rows ``(ids, probs)`` as the NumPy step returns them
(``rows`` of :func:`autodeco_samplers.core.step.numpy_step_distribution`); every draw is the
one NumPy draw of a row, :func:`autodeco_samplers.core.reference.draw_row`. With no drafts,
:func:`verify_drafts` is exactly the step's own draw (:func:`~autodeco_samplers.core.step.numpy_step_sample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from autodeco_samplers.core.errors import InvalidParameterError
from autodeco_samplers.core.reference import draw_row

__all__ = ["SparseRow", "Verdict", "verify_drafts", "residual_row", "prompt_lookup_drafts"]

SparseRow = Tuple[np.ndarray, np.ndarray]
"""``(ids, probs)``: token ids and their probabilities (non-negative, summing to 1)."""


@dataclass(frozen=True)
class Verdict:
    """What one verification emits.

    Attributes:
        tokens: the accepted drafts followed by one token drawn by the target (the residual
            draw after a rejection, or the bonus draw when every draft was accepted); always
            ``n_accepted + 1`` tokens.
        n_accepted: how many drafts were accepted (a prefix of the drafts).
    """

    tokens: List[int]
    n_accepted: int


def _prob_of(row: SparseRow, token: int) -> float:
    ids, probs = row
    hit = np.flatnonzero(np.asarray(ids) == token)
    return float(probs[hit[0]]) if hit.size else 0.0


def residual_row(target: SparseRow, draft: Optional[SparseRow], token: int) -> SparseRow:
    """The distribution a rejected position draws from: ``max(p - q, 0)`` renormalised, with
    ``q`` the point mass on ``token`` when ``draft`` is ``None``. If the residual has no mass
    (possible only through rounding, since a rejection needs ``p(token) < q(token)``), the
    target row itself."""
    ids, probs = np.asarray(target[0]), np.asarray(target[1], dtype=np.float64)
    if draft is None:
        rest = np.where(ids == token, 0.0, probs)
    else:
        # the draft's probability of each target id (0 where the draft does not have it)
        d_ids, d_probs = np.asarray(draft[0]), np.asarray(draft[1], dtype=np.float64)
        order = np.argsort(d_ids, kind="stable")
        d_ids, d_probs = d_ids[order], d_probs[order]
        q = np.zeros(ids.shape[0], dtype=np.float64)
        if d_ids.size:
            at = np.minimum(np.searchsorted(d_ids, ids), d_ids.size - 1)
            q = np.where(d_ids[at] == ids, d_probs[at], 0.0)
        rest = np.maximum(probs - q, 0.0)
    total = rest.sum()
    if not total > 0.0:
        return ids, probs
    return ids, rest / total


def verify_drafts(
    targets: Sequence[SparseRow],
    drafts: Sequence[int],
    rng: np.random.Generator,
    draft_rows: Optional[Sequence[SparseRow]] = None,
) -> Verdict:
    """Accept a prefix of ``drafts`` and draw the next token, exactly as the targets dictate.

    Args:
        targets: ``k + 1`` canonical rows: ``targets[i]`` is the distribution after the prefix
            and the first ``i`` drafts.
        drafts: ``k`` drafted token ids.
        rng: the generator; each position uses one ``rng.random()`` for the acceptance test and
            the emitted token one more for its draw.
        draft_rows: the ``k`` distributions the drafts were drawn from, or ``None`` for drafts
            that were not sampled (point masses: prompt lookup, greedy drafts).

    Returns:
        :class:`Verdict`: accepted drafts plus one target token.
    """
    k = len(drafts)
    if len(targets) != k + 1:
        raise InvalidParameterError(f"verification needs {k + 1} target rows for {k} drafts, got {len(targets)}")
    if draft_rows is not None and len(draft_rows) != k:
        raise InvalidParameterError(f"{k} drafts need {k} draft distributions, got {len(draft_rows)}")
    out: List[int] = []
    for i, token in enumerate(drafts):
        token = int(token)
        p = _prob_of(targets[i], token)
        q = 1.0 if draft_rows is None else _prob_of(draft_rows[i], token)
        if q <= 0.0:
            raise InvalidParameterError(f"draft token {token} at position {i} has probability 0 under its draft distribution")
        # accept with probability min(1, p / q); strict < never accepts a token with p = 0
        if rng.random() * q < p:
            out.append(token)
            continue
        out.append(draw_row(*residual_row(targets[i], None if draft_rows is None else draft_rows[i], token), rng))
        return Verdict(out, i)
    out.append(draw_row(*targets[k], rng))
    return Verdict(out, k)


def prompt_lookup_drafts(tokens: Sequence[int], k: int, *, max_ngram: int = 3, min_ngram: int = 1) -> List[int]:
    """Prompt-lookup (n-gram) drafts: find the latest earlier occurrence of the sequence's last
    ``n`` tokens (``n`` from ``max_ngram`` down to ``min_ngram``) and propose the up to ``k``
    tokens that followed it. Returns ``[]`` when no n-gram recurs. Deterministic, so the drafts
    are point masses for :func:`verify_drafts`."""
    if k <= 0:
        return []
    seq = [int(t) for t in tokens]
    n_seq = len(seq)
    for n in range(min(max_ngram, n_seq - 1), min_ngram - 1, -1):
        tail = seq[n_seq - n :]
        for start in range(n_seq - n - 1, -1, -1):
            if seq[start : start + n] == tail:
                follow = seq[start + n : start + n + k]
                if follow:
                    return follow
    return []
