"""The canonical AutoDeco decoding semantics as a NumPy reference (float64 capable).

This module *is* the specification every engine adapter must reproduce; the fast
implementations (torch: :mod:`autodeco_samplers.core.torch_ops` with the kept set in
:mod:`autodeco_samplers.core.torch_nucleus`; NumPy: :mod:`autodeco_samplers.core.fast_nucleus`, which
calls this module's keep test and draw) follow it rule for rule and the conformance suite checks that they do. Nothing here imports torch, an
engine or a fast path.

Rules, for one row of logits ``l`` (shape ``[V]``) with temperature ``T`` and top-p ``P``:

1. Temperature. ``q = softmax((l - max(l)) / T)``. Subtracting the row maximum *before*
   dividing keeps huge logits finite; it does not change the result. If ``T < 1e-6`` the
   step is greedy: all mass on the argmax, ties to the lowest token id.
2. Nucleus. Order tokens by descending ``q``, ties by ascending token id. With the
   exclusive prefix sum ``c_i = sum_{j<i} q_(j)`` keep token ``(i)`` iff ``c_i < P``. The
   first token is always kept, so the token that crosses ``P`` is kept too. ``P >= 1`` keeps
   every token (so every token of positive probability, even when the float32 ``q`` sum
   above 1 and the prefix sums would reach 1 before the tail).
3. Renormalise the kept mass; draw one token.

Soft top-p (training only), with the inclusive prefix sum ``C_i``:
``m_(i) = exp(-alpha * relu(C_i - P))`` and ``p~ = q * m / (sum(q * m) + 1e-9)``. As
``alpha -> inf`` this *drops* the crossing token (keeps ``C_i <= P``) while the hard rule
keeps it: a real train/inference gap that the tests pin down at both limits. The
``prefix="exclusive"`` variant (not the official recipe) uses ``c_i = C_i - q_(i)`` instead,
whose limit is the hard rule itself.

Inputs are ``[B, V]`` (a ``[V]`` row is accepted and returned as ``[V]``). Float16 input is
upcast to float32; float64 stays float64. Prefix sums accumulate in float64.
"""

from __future__ import annotations

import numpy as np

from autodeco_samplers.core.errors import InvalidLogitsError, InvalidParameterError, ShapeError

GREEDY_TEMPERATURE = 1e-6
"""A temperature below this makes the step greedy (argmax, ties to the lowest id)."""

STATS_TEMPERATURE_EPS = 1e-8
"""The top-p head's statistics use ``softmax(l / (T + 1e-8))`` (official head code)."""

ENTROPY_EPS = 1e-8
SOFT_TOP_P_ALPHA = 30.0
SOFT_TOP_P_EPS = 1e-9
SOFT_TOP_P_PREFIXES = ("inclusive", "exclusive")
"""The prefix sums the soft top-p mask can use: ``"inclusive"`` (the official recipe) or
``"exclusive"`` (the hard rule's own sum)."""
EXP_FLOOR = -70.0
"""Not part of the rule: the fast paths raise exponents below this before ``exp`` where only
sums and the largest values matter, so ``exp`` never returns a subnormal number (up to 50x
slower on CPUs). A row's sum then grows by at most ``V e^-70`` (< 1e-25 at V = 152k), and
such tokens (``q < 4e-31``) never enter a nucleus with ``P < 1``, whose float32 gaps near 1
are 6e-8."""

OUTSIDE_NUCLEUS = -1e30
"""Not part of the rule: the value engines that sample from logits get outside the nucleus
(:func:`autodeco_samplers.core.torch_ops.torch_rule_logits`): large, negative and *finite*, so a
later additive mask (a grammar's ``-inf``, a logit bias) never produces ``-inf - -inf = NaN``."""

__all__ = [
    "GREEDY_TEMPERATURE",
    "OUTSIDE_NUCLEUS",
    "as_logits",
    "as_row_values",
    "temperature_probs",
    "probability_stats",
    "descending_order",
    "exclusive_prefix_sums",
    "kept_in_order",
    "nucleus_mask",
    "next_token_distribution",
    "soft_top_p",
    "inverse_cdf",
    "draw_row",
    "sample_tokens",
    "sample",
]


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64; every other float is computed in float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def as_logits(logits: np.ndarray, *, check: bool = True) -> np.ndarray:
    """Return ``logits`` as a float ``[B, V]`` array (float32 or float64), validated.

    Raises :class:`InvalidLogitsError` for NaN, +inf or a row that is all -inf, and
    :class:`ShapeError` for anything that is not ``[V]`` or ``[B, V]`` with ``V >= 1``.
    """
    arr = np.asarray(logits)
    if arr.dtype.kind not in "fiu":
        raise ShapeError(f"logits must be a float array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ShapeError(f"logits must have shape [B, V] or [V] with V >= 1, got {tuple(np.shape(logits))}")
    arr = arr.astype(_working_dtype(arr.dtype), copy=False)
    if check:
        check_logits(arr)
    return arr


def check_logits(arr: np.ndarray) -> None:
    """Raise :class:`InvalidLogitsError` naming the first bad row of a ``[B, V]`` array."""
    nan_rows = np.flatnonzero(np.isnan(arr).any(axis=1))
    if nan_rows.size:
        raise InvalidLogitsError(f"logits contain NaN (row {int(nan_rows[0])} of {arr.shape[0]})")
    pinf_rows = np.flatnonzero(np.isposinf(arr).any(axis=1))
    if pinf_rows.size:
        raise InvalidLogitsError(f"logits contain +inf (row {int(pinf_rows[0])} of {arr.shape[0]})")
    dead_rows = np.flatnonzero(np.isneginf(arr).all(axis=1))
    if dead_rows.size:
        raise InvalidLogitsError(
            f"logits row {int(dead_rows[0])} of {arr.shape[0]} is all -inf: no token can be drawn"
        )


def as_row_values(values, batch: int, name: str, dtype: np.dtype) -> np.ndarray:
    """Broadcast a scalar or ``[B]`` parameter to a ``[B]`` array of ``dtype``."""
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(batch, arr, dtype=dtype)
    arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr
    if arr.shape != (batch,):
        raise ShapeError(f"{name} must be a scalar or have shape [{batch}], got {tuple(np.shape(values))}")
    if np.isnan(arr).any():
        raise InvalidParameterError(f"{name} contains NaN (row {int(np.flatnonzero(np.isnan(arr))[0])})")
    return arr


def _stable_softmax(logits: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """``softmax((l - max l) / T)`` per row; ``temperature`` is ``[B]`` and positive."""
    with np.errstate(over="ignore", invalid="ignore"):  # l - max may overflow to -inf: harmless
        z = (logits - logits.max(axis=1, keepdims=True)) / temperature[:, None]
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_temperature(T: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(T) | (T < 0))
    if bad.size:
        raise InvalidParameterError(
            f"temperature must be finite and >= 0, got {T[bad[0]]!r} (row {int(bad[0])})"
        )


def temperature_probs(logits: np.ndarray, T) -> np.ndarray:
    """Rule 1: ``softmax((l - max l) / T)`` per row, greedy one-hot where ``T < 1e-6``.

    >>> temperature_probs(np.array([[0.0, 0.0, -1.0]]), 0.0).tolist()
    [[1.0, 0.0, 0.0]]
    """
    squeeze = np.ndim(logits) == 1
    arr = as_logits(logits)
    T = as_row_values(T, arr.shape[0], "temperature", arr.dtype)
    _check_temperature(T)
    greedy = T < arr.dtype.type(GREEDY_TEMPERATURE)  # threshold compared in the working dtype
    q = _stable_softmax(arr, np.where(greedy, 1.0, T).astype(arr.dtype))
    if greedy.any():
        onehot = np.zeros_like(q)
        onehot[np.arange(arr.shape[0]), arr.argmax(axis=1)] = 1.0
        q = np.where(greedy[:, None], onehot, q)
    return q[0] if squeeze else q


def probability_stats(logits: np.ndarray, T) -> np.ndarray:
    """The top-p head's four features of ``q = softmax(l / (T + 1e-8))``, shape ``[B, 4]``.

    Columns: ``max q``; entropy ``-sum q log(q + 1e-8)``; the unbiased variance of the ``V``
    entries of ``q`` (0 when ``V == 1``, where the unbiased estimate is undefined); the sum of
    the ``min(5, V)`` largest entries. ``T`` here is the raw predicted temperature.
    """
    arr = as_logits(logits)
    T = as_row_values(T, arr.shape[0], "temperature", arr.dtype)
    _check_temperature(T)
    q = _stable_softmax(arr, T + arr.dtype.type(STATS_TEMPERATURE_EPS))
    V = q.shape[1]
    max_prob = q.max(axis=1)
    entropy = -(q * np.log(q + arr.dtype.type(ENTROPY_EPS))).sum(axis=1)
    var = q.var(axis=1, ddof=1) if V > 1 else np.zeros(q.shape[0], dtype=q.dtype)
    k = min(5, V)
    if k < V:
        # the k largest entries (np.partition), summed in descending order: the same numbers
        # and additions as -np.sort(-q, axis=1)[:, :k].sum(axis=1), without sorting V entries
        largest = np.partition(q, V - k, axis=1)[:, V - k:]
        top5 = (-np.sort(-largest, axis=1)).sum(axis=1)
    else:
        top5 = q.sum(axis=1)
    return np.stack([max_prob, entropy, var, top5], axis=1).astype(arr.dtype, copy=False)


def descending_order(q: np.ndarray) -> np.ndarray:
    """Token ids of each row sorted by descending probability, ties by ascending id."""
    return np.argsort(-q, axis=1, kind="stable")


def exclusive_prefix_sums(sorted_q: np.ndarray) -> np.ndarray:
    """``c_i = sum_{j<i} q_(j)`` (float64, a sequential ``cumsum``) of rows ``[B, n]`` already in
    the canonical order (descending ``q``, ties by ascending id)."""
    sorted_q = np.asarray(sorted_q, dtype=np.float64)
    exclusive = np.cumsum(sorted_q, axis=-1) - sorted_q
    exclusive[..., 0] = 0.0
    return exclusive


def kept_in_order(exclusive: np.ndarray, P) -> np.ndarray:
    """Rule 2, the keep test, on rows ``[B, n]`` of exclusive prefix sums in canonical order:
    token ``(i)`` is kept iff ``c_i < P``; the first token always; ``P >= 1`` keeps every
    token (so every token of positive probability, even when float32 ``q`` sums above 1).
    The kept tokens are a prefix of the order. This is the one NumPy statement of the rule:
    :func:`nucleus_mask`, :mod:`autodeco_samplers.core.fast_nucleus` and the conformance checker
    call it."""
    exclusive = np.atleast_2d(exclusive)
    P = np.asarray(P, dtype=np.float64).reshape(-1, 1)
    keep = (exclusive < P) | (P >= 1.0)
    keep[:, 0] = True
    return keep


def nucleus_mask(q: np.ndarray, P) -> np.ndarray:
    """Rule 2: boolean ``[B, V]`` mask of the kept tokens for probabilities ``q``.

    Token ``(i)`` (in descending order, ties by ascending id) is kept iff the exclusive
    prefix sum ``c_i < P``; the first token is always kept (:func:`kept_in_order`).
    """
    q = np.atleast_2d(q)
    P = as_row_values(P, q.shape[0], "top_p", np.float64)
    order = descending_order(q)
    keep_sorted = kept_in_order(exclusive_prefix_sums(np.take_along_axis(q, order, axis=1)), P)
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    return keep


def next_token_distribution(logits: np.ndarray, T, P) -> np.ndarray:
    """The distribution AutoDeco samples the next token from: rules 1 to 3.

    Args:
        logits: ``[B, V]`` or ``[V]`` raw logits (any float dtype; -inf allowed).
        T: temperature actually used, scalar or ``[B]``; ``< 1e-6`` means greedy.
        P: top-p actually used, scalar or ``[B]``, in ``[0, 1]``.

    Returns:
        Probabilities of the same shape, float32 (float64 for float64 logits), each row
        summing to 1 with zeros outside the nucleus.

    >>> next_token_distribution(np.log([[0.5, 0.3, 0.2]]), 1.0, 0.6).round(3).tolist()
    [[0.625, 0.375, 0.0]]
    """
    squeeze = np.ndim(logits) == 1
    arr = as_logits(logits)
    P = as_row_values(P, arr.shape[0], "top_p", arr.dtype)
    _check_top_p(P)
    q = temperature_probs(arr, T)
    kept = np.where(nucleus_mask(q, P), q, 0.0)
    out = (kept / kept.sum(axis=1, keepdims=True)).astype(arr.dtype, copy=False)
    return out[0] if squeeze else out


def _check_top_p(P: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(P) | (P < 0) | (P > 1))
    if bad.size:
        raise InvalidParameterError(f"top_p must lie in [0, 1], got {P[bad[0]]!r} (row {int(bad[0])})")


def soft_top_p(q: np.ndarray, P, alpha: float = SOFT_TOP_P_ALPHA, *, prefix: str = "inclusive") -> np.ndarray:
    """The differentiable training mask: ``p~ = q * m / (sum(q * m) + 1e-9)``.

    ``m_(i) = exp(-alpha * relu(C_i - P))`` with ``C_i`` the *inclusive* prefix sum in
    descending order (ties by ascending id), scattered back to vocabulary order: the official
    recipe. ``prefix="exclusive"`` uses the exclusive sum ``c_i = C_i - q_(i)`` instead (as
    ``alpha -> inf`` it keeps exactly the hard rule's tokens ``c_i < P``, the crossing token
    included). The torch twin is :func:`autodeco_samplers.core.torch_ops.soft_top_p`.
    """
    if prefix not in SOFT_TOP_P_PREFIXES:
        raise InvalidParameterError(f"prefix must be one of {SOFT_TOP_P_PREFIXES}, got {prefix!r}")
    q = np.atleast_2d(np.asarray(q))
    dtype = _working_dtype(q.dtype)
    q = q.astype(dtype, copy=False)
    P = as_row_values(P, q.shape[0], "top_p", dtype)
    order = descending_order(q)
    sorted_q = np.take_along_axis(q, order, axis=1)
    prefix_sum = np.cumsum(sorted_q, axis=1)
    if prefix == "exclusive":
        prefix_sum = prefix_sum - sorted_q
    m_sorted = np.exp(-dtype.type(alpha) * np.maximum(prefix_sum - P[:, None], 0.0))
    m = np.empty_like(m_sorted)
    np.put_along_axis(m, order, m_sorted, axis=1)
    weighted = q * m
    return weighted / (weighted.sum(axis=1, keepdims=True) + dtype.type(SOFT_TOP_P_EPS))


def inverse_cdf(probs: np.ndarray, u) -> np.ndarray:
    """The draw: per row of ``probs`` ``[B, n]`` (non-negative, not necessarily normalised),
    the index of the first entry whose float64 cumulative sum exceeds ``u * total``, for
    uniforms ``u`` ``[B]`` in ``[0, 1)``; never an entry of probability zero. The one NumPy
    draw: :func:`sample_tokens`, the NumPy step and the llama.cpp adapter use it."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    cdf = np.cumsum(probs, axis=1)
    x = np.asarray(u, dtype=np.float64).reshape(-1) * cdf[:, -1]
    idx = (cdf <= x[:, None]).sum(axis=1)
    last_nonzero = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    return np.minimum(idx, last_nonzero).astype(np.int64)


def draw_row(ids: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> int:
    """The draw from one sparse row: ``ids`` (ascending token ids) with their probabilities
    ``probs``; :func:`inverse_cdf` with one ``rng.random()``. A dense row drawn with the same
    uniform (:func:`sample_tokens`) gives the same token: zeros add nothing to the CDF."""
    return int(np.asarray(ids)[inverse_cdf(np.asarray(probs)[None], rng.random())[0]])


def sample_tokens(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one token id per row of ``probs`` (``[B, V]``) by inverse CDF with ``rng``.

    One uniform number per row (:func:`inverse_cdf`), so a seeded generator gives
    reproducible draws. A token of probability zero is never drawn.
    """
    probs = np.atleast_2d(probs)
    return inverse_cdf(probs, rng.random(probs.shape[0]))


def sample(logits: np.ndarray, T, P, rng: np.random.Generator) -> np.ndarray:
    """Rules 1 to 3 with the draw: one token per row from :func:`next_token_distribution`
    ``(logits, T, P)`` (:func:`sample_tokens`). ``T`` and ``P`` are the values used; the heads
    and the policy are the step's business (:mod:`autodeco_samplers.core.step`).

    >>> int(sample(np.array([0.0, 5.0, 1.0]), 1.0, 0.1, np.random.default_rng(0))[0])
    1
    """
    return sample_tokens(np.atleast_2d(next_token_distribution(logits, T, P)), rng)
