"""The NumPy nucleus: the canonical rule for one row without a full sort (proved equal).

:mod:`autodeco_samplers.core.reference` sorts the whole vocabulary (a stable ``argsort`` of
``V`` entries, ~15 ms at ``V = 152k``) to find the top-p nucleus. The kept set is a *prefix*
of that order, usually a few dozen tokens, so a per-token engine loop (llama.cpp) can sort a
small candidate set instead. This module does that and nothing else; the rules are exactly
the reference's, the tests in ``tests/core/test_fast_nucleus.py`` check them against
:func:`reference.next_token_distribution` with Hypothesis.

Why the result is the reference's (for one row, ``q = reference.temperature_probs(l, T)``):

1. Candidates are ``S = {i : q_i >= thr}`` for a threshold ``thr > 0``. Every token outside
   ``S`` has a smaller ``q`` than every token inside, and ties are entirely inside or outside,
   so ``S`` sorted by (descending ``q``, ascending id) is exactly the first ``|S|`` entries of
   the reference order (``np.flatnonzero`` lists ``S`` by ascending id, and a *stable* sort by
   ``-q`` keeps that order inside a tie).
2. The reference's float64 prefix sums are a sequential ``np.cumsum`` over that order, so on
   the first ``|S|`` positions ours are bit-identical, and so is the keep test
   ``c_i = C_i - q_i < P`` for every candidate.
3. Every later token ``j`` has ``c_j >= C_{|S|} - 1e-15`` (prefix sums of non-negative terms
   only grow; the subtraction ``C_j - q_j`` loses at most a few ulps of numbers <= 2). So when
   the candidates' inclusive mass satisfies ``C_{|S|} >= P + 1e-12`` no later token is kept
   and the kept set is complete. Otherwise ``thr`` is lowered (x 2^-8, then x 2^-16, ...);
   once ``S`` holds every token of positive ``q`` the remaining tokens have zero probability
   and cannot change the distribution; when ``S`` would exceed half the vocabulary, the
   reference's full sort is used instead.

So the *kept set* equals the reference's on every token of positive probability. The
renormalising sum is taken over the kept tokens (float32, like the reference, but the
reference also adds the zeros of the whole row in a different association), so kept
probabilities agree with the reference to float32 rounding (a few ulps).
:func:`sample_next_token` draws with one ``rng.random()`` per call by inverse CDF over the
kept tokens in ascending id order, the same rule as :func:`reference.sample_tokens`, so a
seeded generator gives the reference's token except when the uniform number falls within
float32 rounding of a CDF step.

:func:`autodeco_samplers.core.step.numpy_step_distribution` and
:func:`~autodeco_samplers.core.step.numpy_step_sample` are the engine-facing wiring (heads,
policy, this module, the draw).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from autodeco_samplers.core import reference as R

__all__ = [
    "COVER_MARGIN",
    "descending_order_row",
    "nucleus_candidates", "sparse_next_token_distribution", "sample_next_token"]

COVER_MARGIN = 1e-12
"""Candidates are complete once their inclusive float64 mass reaches ``P + COVER_MARGIN``."""

_THRESHOLD_STEPS = (2.0 ** -8, 2.0 ** -16, 2.0 ** -32, 2.0 ** -64)


def descending_order_row(q: np.ndarray) -> np.ndarray:
    """Token ids of one row ``q`` (``[V]``, non-negative) by descending ``q``, ties by ascending
    id: equal to ``reference.descending_order(q[None])[0]``.

    For float32 ``q`` (and ``V < 2**32``) this sorts one uint64 key per token,
    ``(0xFFFFFFFF - bits(q_i)) << 32 | i``: the IEEE bit pattern of a non-negative float32 is
    monotone in its value, so ascending keys are descending ``q`` with ties by ascending id;
    an unstable sort of distinct keys is enough, and about twice as fast as a stable argsort.
    """
    if q.dtype != np.float32 or q.size >= 2 ** 32 or (q.size and q.min() < 0):
        return np.argsort(-q, kind="stable")
    bits = q.view(np.uint32).astype(np.uint64)
    key = ((np.uint64(0xFFFFFFFF) - bits) << np.uint64(32)) | np.arange(q.size, dtype=np.uint64)
    key.sort()
    return (key & np.uint64(0xFFFFFFFF)).astype(np.int64)


def nucleus_candidates(q: np.ndarray, P: float) -> Tuple[np.ndarray, np.ndarray]:
    """The kept tokens of one row ``q`` (``[V]`` probabilities) under the canonical rule.

    Returns ``(ids, sorted_q)``: the kept token ids in the reference order (descending ``q``,
    ties by ascending id) and their probabilities as float64. ``P`` must already be in the
    dtype the reference compares in (see :func:`sparse_next_token_distribution`).
    Tokens of probability zero that the reference would keep may be left out. ``P >= 1``
    keeps every token of positive probability, returned in ascending id order.
    """
    V = q.shape[0]
    P64 = float(P)
    if P64 >= 1.0:  # every token of positive probability (float32 q may sum above 1)
        ids = np.flatnonzero(q > 0)
        return ids, q[ids].astype(np.float64)
    qmax = q.max()
    positive: Optional[int] = None
    for step in _THRESHOLD_STEPS + (0.0,):
        thr = qmax * step
        if step == 0.0:
            cand = np.flatnonzero(q > 0)
        else:
            cand = np.flatnonzero(q >= thr)
        if cand.size > V // 2:
            break
        cq = q[cand]
        if step != 0.0 and cq.sum(dtype=np.float64) < P64 + COVER_MARGIN - 1e-9:
            # Clearly too little mass (the pairwise sum differs from the sequential prefix
            # sum by far less than 1e-9): lower the threshold without sorting.
            continue
        order = descending_order_row(cq)  # stable order: ascending id inside a tie
        ids = cand[order]
        sorted_q = cq[order].astype(np.float64)
        inclusive = np.cumsum(sorted_q)
        complete = inclusive[-1] >= P64 + COVER_MARGIN
        if not complete:
            if positive is None:
                positive = int(np.count_nonzero(q))
            complete = cand.size == positive
        if complete:
            return _kept_prefix(ids, sorted_q, P64)
    # Fallback: a full sort in the reference order.
    order = descending_order_row(q)
    return _kept_prefix(order, q[order].astype(np.float64), P64)


def _kept_prefix(ids: np.ndarray, sorted_q: np.ndarray, P: float) -> Tuple[np.ndarray, np.ndarray]:
    """The reference's keep test (:func:`reference.kept_in_order`) on tokens in canonical order;
    the kept tokens are a prefix, returned as ``(ids, sorted_q)``."""
    n = int(np.count_nonzero(R.kept_in_order(R.exclusive_prefix_sums(sorted_q)[None], P)))
    return ids[:n], sorted_q[:n]


def _prepare(logits: np.ndarray, T, P) -> Tuple[np.ndarray, float]:
    if np.ndim(logits) != 1:
        raise R.ShapeError(f"fast nucleus functions take one row of logits [V], got shape {tuple(np.shape(logits))}")
    dtype = R._working_dtype(np.asarray(logits).dtype)  # the dtype the reference compares P in
    P_row = R.as_row_values(P, 1, "top_p", dtype)
    R._check_top_p(P_row)
    q = R.temperature_probs(logits, T)  # validates the logits (NaN, +inf, all -inf)
    return q, float(P_row[0])


def sparse_next_token_distribution(logits: np.ndarray, T, P) -> Tuple[np.ndarray, np.ndarray]:
    """The canonical distribution of one row as ``(ids, probs)``: kept token ids in ascending
    order and their renormalised probabilities (float32, float64 for float64 logits).

    ``reference.next_token_distribution(logits, T, P)`` equals ``probs`` at ``ids`` (to float32
    rounding) and zero elsewhere.
    """
    q, P_cmp = _prepare(logits, T, P)
    ids, _ = nucleus_candidates(q, P_cmp)
    if ids.size > 64:
        mask = np.zeros(q.shape[0], dtype=bool)
        mask[ids] = True
        ids = np.flatnonzero(mask)
    else:
        ids = np.sort(ids)
    kept = q[ids]
    return ids, kept / kept.sum()


def sample_next_token(logits: np.ndarray, T, P, rng: np.random.Generator) -> Tuple[int, np.ndarray, np.ndarray]:
    """Draw one token of the canonical distribution of one row; returns ``(token, ids, probs)``.

    One ``rng.random()`` per call, inverse CDF over the kept tokens in ascending id order
    (:func:`reference.draw_row`), as :func:`reference.sample_tokens` does over the full row.
    """
    ids, probs = sparse_next_token_distribution(logits, T, P)
    return R.draw_row(ids, probs, rng), ids, probs
