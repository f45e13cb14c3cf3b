"""The one definition of agreement with the canonical AutoDeco distribution.

Given logits and the (T, P) actually used, an implementation *agrees* with the reference on
a row when

1. its kept set (tokens of non-zero probability) equals the reference nucleus, except for
   tokens whose exclusive prefix sum ``c_i`` lies within ``eps`` of ``P`` (float32 summation
   order may legitimately put those on either side; ``eps`` is 1e-5, growing with the
   vocabulary beyond 15206 tokens to 1e-4 at 152064, see :func:`default_eps`), ignoring
   tokens whose reference probability underflows to 0;
2. its probabilities are within total-variation distance ``tol`` of the reference
   probabilities *restricted to its own (acceptable) kept set*, renormalised.

For head outputs, ``|T - T_ref|`` and ``|P - P_ref|`` must be at most ``head_tol``.
Everything is computed with the NumPy reference in float64 from the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from autodeco_samplers.core.reference import (
    GREEDY_TEMPERATURE,
    as_logits,
    descending_order,
    exclusive_prefix_sums,
    kept_in_order,
    temperature_probs,
)

DEFAULT_EPS = 1e-5


def default_eps(V: int) -> float:
    """The boundary allowance for ``V`` tokens: ``max(1e-5, 1e-4 * V / 152064)`` (1e-5 up to
    V = 15206, then growing linearly to 1e-4 at 152064). A float32 softmax's normaliser is a
    sum of V terms whose relative error grows with V, and it scales every prefix sum alike:
    measured 1.5e-5 on tie-heavy rows at V = 151936 (torch CPU), so 1e-4 leaves ~6x there."""
    return max(DEFAULT_EPS, 1e-4 * V / 152064)
DEFAULT_TOL = 1e-4
DEFAULT_HEAD_TOL = 1e-4


@dataclass
class RowReport:
    """Why one row disagrees (empty ``problems`` means it agrees)."""

    row: int
    tv_distance: float = 0.0
    missing: List[int] = field(default_factory=list)  # in the reference nucleus, dropped by the engine
    extra: List[int] = field(default_factory=list)  # outside the reference nucleus, kept by the engine
    ambiguous: List[int] = field(default_factory=list)  # at the boundary, either choice accepted
    problems: List[str] = field(default_factory=list)


@dataclass
class Verdict:
    """Agreement of one batch; ``ok`` is True when every row agrees."""

    rows: List[RowReport]
    max_tv: float
    max_dT: float = 0.0
    max_dP: float = 0.0

    @property
    def ok(self) -> bool:
        return all(not r.problems for r in self.rows)

    def describe(self, engine: str = "engine") -> str:
        lines = [f"{engine}: max TV {self.max_tv:.3g}, max |dT| {self.max_dT:.3g}, max |dP| {self.max_dP:.3g}"]
        for r in self.rows:
            for p in r.problems:
                lines.append(f"  row {r.row}: {p}")
        return "\n".join(lines)


def reference_boundary(q: np.ndarray, P: np.ndarray):
    """Per row: the reference's exclusive prefix sums ``c`` (float64) in vocabulary order and
    its kept set (:func:`reference.kept_in_order`), both ``[B, V]``."""
    order = descending_order(q)
    exclusive = exclusive_prefix_sums(np.take_along_axis(q, order, axis=1))
    c = np.empty_like(exclusive)
    np.put_along_axis(c, order, exclusive, axis=1)
    keep = np.zeros(q.shape, dtype=bool)
    np.put_along_axis(keep, order, kept_in_order(exclusive, P), axis=1)
    return c, keep


def check_distribution(
    logits,
    T,
    P,
    probs,
    *,
    eps: Optional[float] = None,
    tol: float = DEFAULT_TOL,
    max_listed: int = 8,
) -> Verdict:
    """Compare an engine's next-token ``probs`` ``[B, V]`` with the canonical rule.

    ``logits`` are the engine's raw logits, ``T``/``P`` the values it says it used; ``eps``
    defaults to :func:`default_eps` of the vocabulary size.
    """
    arr = as_logits(np.asarray(logits, dtype=np.float64))
    eps = default_eps(arr.shape[1]) if eps is None else float(eps)
    B = arr.shape[0]
    T_in = np.asarray(T)
    T_in = T_in if T_in.dtype.kind == "f" else T_in.astype(np.float64)
    # greedy is decided in the dtype the engine used (a float32 T of 1e-6 is *not* below
    # float32(1e-6)); the rest of the comparison runs in float64
    greedy = np.broadcast_to((T_in < T_in.dtype.type(GREEDY_TEMPERATURE)).reshape(-1), (B,))
    T = np.broadcast_to(T_in.astype(np.float64).reshape(-1), (B,))
    T = np.where(greedy, 0.0, np.maximum(T, GREEDY_TEMPERATURE))
    P = np.broadcast_to(np.asarray(P, dtype=np.float64).reshape(-1), (B,))
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if probs.shape != arr.shape:
        raise ValueError(f"probs have shape {probs.shape}, logits {arr.shape}")
    q = temperature_probs(arr, T)
    c, ref_keep = reference_boundary(q, P)
    rows: List[RowReport] = []
    max_tv = 0.0
    for b in range(B):
        report = RowReport(row=b)
        live = q[b] > 0
        eng_keep = probs[b] > 0
        if greedy[b]:
            ambiguous = np.zeros_like(live)
        else:
            ambiguous = live & (np.abs(c[b] - P[b]) <= eps)
        differ = live & (eng_keep != ref_keep[b])
        bad = differ & ~ambiguous
        report.ambiguous = np.flatnonzero(differ & ambiguous)[:max_listed].tolist()
        report.missing = np.flatnonzero(bad & ref_keep[b])[:max_listed].tolist()
        report.extra = np.flatnonzero(bad & ~ref_keep[b])[:max_listed].tolist()
        dead_mass = probs[b][~live].sum()
        if report.missing:
            report.problems.append(
                f"dropped token(s) {report.missing} that the canonical nucleus keeps "
                f"(c_i - P = {[float(c[b, i] - P[b]) for i in report.missing]})"
            )
        if report.extra:
            report.problems.append(
                f"kept token(s) {report.extra} outside the canonical nucleus "
                f"(c_i - P = {[float(c[b, i] - P[b]) for i in report.extra]})"
            )
        if dead_mass > tol:
            report.problems.append(f"put mass {dead_mass:.3g} on tokens of zero reference probability")
        expected = np.where(eng_keep & live, q[b], 0.0) if not report.missing and not report.extra else np.where(ref_keep[b], q[b], 0.0)
        total = expected.sum()
        expected = expected / total if total > 0 else expected
        tv = 0.5 * np.abs(expected - probs[b]).sum()
        report.tv_distance = float(tv)
        max_tv = max(max_tv, float(tv))
        if tv > tol:
            report.problems.append(f"total-variation distance {tv:.3g} exceeds {tol:g}")
        rows.append(report)
    return Verdict(rows=rows, max_tv=max_tv)


def check_heads(T, P, T_ref, P_ref, *, head_tol: float = DEFAULT_HEAD_TOL) -> Optional[str]:
    """``None`` if ``|T - T_ref|`` and ``|P - P_ref|`` are within ``head_tol``, else a message."""
    dT = np.abs(np.asarray(T, np.float64) - np.asarray(T_ref, np.float64))
    dP = np.abs(np.asarray(P, np.float64) - np.asarray(P_ref, np.float64))
    if dT.max(initial=0) > head_tol or dP.max(initial=0) > head_tol:
        return f"head outputs differ: max |dT| {dT.max():.3g}, max |dP| {dP.max():.3g} (tol {head_tol:g})"
    return None
