"""The top-p head's statistics in NumPy without materialising the probabilities.

:func:`autodeco_samplers.core.reference.probability_stats` (the specification) computes
``q = softmax(l / (T + 1e-8))`` and then four features of it, about twenty passes over the
row. The NumPy step (llama.cpp, one row per token) needs the same numbers in fewer passes.
With ``e = exp((l - max l) / (T + 1e-8))`` and ``S = sum e`` (so ``q = e / S``):

* max prob ``= 1 / S`` (``e = 1`` at the maximum);
* entropy ``-sum q log(q + 1e-8) = log S - sum e log(e + 1e-8 S) / S``;
* unbiased variance ``= (sum e^2 / S^2 - 1 / V) / (V - 1)`` (``sum q = 1``; 0 when ``V = 1``);
* top-``min(5, V)`` mass ``= sum of e at the 5 largest logits / S`` (``q`` is a
  non-decreasing function of the logit).

Exponents below ``reference.EXP_FLOOR`` (-70) are raised to it, so ``exp`` never returns a subnormal
number (slow on CPUs); that moves each feature by at most ``V e^-70`` (< 1e-25 at 152k).
Sums are NumPy's pairwise float32 sums, as in the reference; ``tests/core/test_fast_stats.py``
checks every feature against the reference with Hypothesis, at sizes up to 152k.
The logits must already be validated (finite or ``-inf``, no all ``-inf`` row): the step
validates once for the heads and the nucleus.
"""

from __future__ import annotations

import math

import numpy as np

from autodeco_samplers.core.reference import ENTROPY_EPS, EXP_FLOOR, STATS_TEMPERATURE_EPS

SQUARE_FLOOR = math.exp(EXP_FLOOR / 2)


def probability_stats(logits: np.ndarray, T) -> np.ndarray:
    """``[B, 4]`` = max prob, entropy, unbiased variance, top-5 mass of
    ``softmax(l / (T + 1e-8))``, as :func:`autodeco_samplers.core.reference.probability_stats`,
    for validated ``[B, V]`` float32/float64 logits and ``[B]`` (or scalar) ``T >= 0``."""
    arr = np.atleast_2d(logits)
    B, V = arr.shape
    dt = arr.dtype.type
    T = np.broadcast_to(np.asarray(T, dtype=arr.dtype), (B,))
    out = np.empty((B, 4), dtype=arr.dtype)
    k = min(5, V)
    e = np.empty(V, dtype=arr.dtype)
    scratch = np.empty(V, dtype=arr.dtype)
    for b in range(B):  # one row per token in llama.cpp; rows are independent
        row = arr[b]
        top = np.partition(row, V - k)[V - k:] if k < V else row
        m = top.max()
        t = T[b] + dt(STATS_TEMPERATURE_EPS)
        # -inf - max, or a huge difference over a tiny T, gives -inf: raised to the floor
        with np.errstate(over="ignore", invalid="ignore"):
            np.subtract(row, m, out=e)
            np.divide(e, t, out=e)
            top_z = (top - m) / t
        np.maximum(e, dt(EXP_FLOOR), out=e)
        np.exp(e, out=e)
        S = e.sum()
        # e below e^-35 is raised to it before squaring (e^-70 stays normal in float32; smaller
        # squares are subnormal and slow): sum e^2 >= 1 grows by at most V e^-70
        sum_sq = np.square(np.maximum(e, dt(SQUARE_FLOOR), out=scratch), out=scratch).sum()
        np.add(e, dt(ENTROPY_EPS) * S, out=scratch)
        np.log(scratch, out=scratch)
        sum_e_log = np.multiply(scratch, e, out=scratch).sum()
        top_e = np.exp(np.maximum(top_z, dt(EXP_FLOOR)))
        out[b, 0] = 1.0 / S
        out[b, 1] = np.log(S) - sum_e_log / S
        out[b, 2] = (sum_sq / (S * S) - dt(1.0) / V) / (V - 1) if V > 1 else 0.0
        out[b, 3] = top_e.sum() / S
    return out
