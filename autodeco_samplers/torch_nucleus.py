"""Batched torch nucleus without a full-vocabulary sort, equal to :mod:`torch_ops`' rule.

:func:`autodeco_samplers.torch_ops.masked_scaled_logits` sorts the whole vocabulary (a
stable ``torch.sort`` of ``V`` entries: ~20 ms per row at ``V = 152k`` on a small CPU, more
than a whole decoder layer). The kept set is a *prefix* of that order, usually a few dozen
tokens, so :func:`masked_scaled_logits_topk` looks for it among the ``k + 1`` largest
probabilities (``torch.topk``) and sorts only those; rows where that cannot be proven
complete go through the full sort. The result has the same softmax as ``masked_scaled_logits``.

Why it is the same kept set (per row, ``q = softmax((l - max l) / T)``, the same float32
tensor both functions compute; ``v`` = the smallest of the ``k + 1`` values ``topk`` returns):

1. Every token outside the ``k + 1`` candidates has ``q <= v``. Candidates are put in the
   canonical order (descending ``q``, ties by ascending id: ids sorted ascending, then a
   stable descending sort by value), so the candidates with ``q > v`` are exactly the first
   entries of the canonical order of the full row, in that order.
2. Exclusive prefix sums ``c_i = cumsum(q)_i - q_i`` along that order over those first entries
   are the same sums of the same numbers as the full path's (a row-wise ``cumsum`` on the
   CPU adds sequentially from the top, so they agree bit for bit there; on other devices to
   float32 rounding of the scan).
3. Keep ``i`` iff ``c_i < P`` (first always kept). Let ``i*`` be the last kept candidate. If
   ``q_(i*) > v``, every token of the full order up to ``i*`` is a candidate with ``q > v``
   (point 1), and the next token has ``c >= P``, as does every later one (prefix sums of
   non-negative terms only grow): the kept set is complete. That is the per-row test; rows
   failing it (a nucleus reaching the ``k + 1``-th largest value, e.g. ``P`` close to 1 on a
   flat distribution) use :func:`torch_ops.masked_scaled_logits`. Greedy rows
   (``T < 1e-6``) keep only the argmax, as in ``torch_ops``.

The one-bool test "does any row need the full path" is the only host synchronisation.
"""

from __future__ import annotations

import torch

from . import torch_ops
from .reference import GREEDY_TEMPERATURE

__all__ = ["masked_scaled_logits_topk", "DEFAULT_CANDIDATES"]

DEFAULT_CANDIDATES = 1024


def masked_scaled_logits_topk(
    logits: torch.Tensor, T, P, *, k: int = DEFAULT_CANDIDATES, fill: float = -1e30, check: bool = False
) -> torch.Tensor:
    """Logits whose plain softmax is the canonical distribution (like
    :func:`torch_ops.masked_scaled_logits`), sorting only ``k + 1`` candidates per row.

    Args:
        logits: ``[B, V]``; upcast to float32 (float64 stays).
        T, P: scalars or ``[B]``: the temperature and top-p used for sampling.
        k: candidates proven sufficient per row before falling back to the full sort.
        fill: value of the tokens outside the nucleus (large finite negative).
    """
    arr = torch_ops.as_logits(logits, check=check)
    B, V = arr.shape
    if k + 1 >= V:
        return torch_ops.masked_scaled_logits(arr, T, P, fill=fill, check=check)
    T = torch_ops._rows(T, arr, "temperature", check)
    P = torch_ops._rows(P, arr, "top_p", check)
    greedy = T < GREEDY_TEMPERATURE
    shifted = arr - arr.max(dim=-1, keepdim=True).values
    scaled = shifted / torch.where(greedy, torch.ones_like(T), T)[:, None]
    q = torch.softmax(scaled, dim=-1)

    vals, idx = torch.topk(q, k + 1, dim=-1, sorted=False)
    idx_asc, perm = torch.sort(idx, dim=-1)
    vals_asc = vals.gather(-1, perm)
    cand_q, order = torch.sort(vals_asc, dim=-1, descending=True, stable=True)
    cand_ids = idx_asc.gather(-1, order)
    floor = cand_q[:, -1:]  # v: every non-candidate has q <= v

    exclusive = torch.cumsum(cand_q, dim=-1) - cand_q
    keep = exclusive < P[:, None]
    keep[:, 0] = True
    last = keep.sum(dim=-1, keepdim=True) - 1
    proven = (cand_q.gather(-1, last) > floor)[:, 0] | greedy

    out = torch.full_like(scaled, fill)
    kept_vals = torch.where(keep, scaled.gather(-1, cand_ids), torch.full_like(cand_q, fill))
    out.scatter_(-1, cand_ids, kept_vals)
    onehot = torch.full_like(scaled, fill).scatter_(-1, arr.argmax(dim=-1, keepdim=True), 0.0)
    out = torch.where(greedy[:, None], onehot, out)
    if not bool(proven.all()):  # the one host sync
        rows = (~proven).nonzero()[:, 0]
        out[rows] = torch_ops.masked_scaled_logits(arr[rows], T[rows], P[rows], fill=fill, check=False)
    return out
