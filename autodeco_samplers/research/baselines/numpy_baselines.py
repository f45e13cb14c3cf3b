"""The samplers users pick instead of AutoDeco, as a NumPy reference (engine-free, no torch).

Each rule is stated and implemented once here; :mod:`autodeco_samplers.research.baselines.torch_baselines` is its
batched torch twin (tested against this module). Every rule ends in the canonical temperature
step of :func:`autodeco_samplers.core.reference.temperature_probs`: ``q = softmax((l - max l) / T)``,
greedy (argmax, ties to the lowest id) when ``T < 1e-6``; a rule that *keeps* a set of tokens
then renormalises ``q`` over it. For one row of logits ``l`` (``[V]``):

* **static T x P** (the canonical rule, docs/design.md section 3):
  :func:`autodeco_samplers.core.reference.next_token_distribution` with fixed ``(T, P)``.
* **min-p** (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling"), after temperature:
  ``q = softmax(l / T)``; keep token ``i`` iff ``q_i >= min_p * max_j q_j`` (a tie at the
  threshold is kept, so the argmax always is); renormalise. Transformers'
  ``MinPLogitsWarper`` (after ``TemperatureLogitsWarper``) keeps the same set.
* **dynamic temperature** as llama.cpp's ``temp_ext`` sampler (``--dynatemp-range delta``,
  ``--dynatemp-exp exponent`` around ``--temp T``): with ``p = softmax(l)`` over the ``N``
  candidates (tokens with a finite logit), ``H = -sum p_i log p_i`` (``0 log 0 = 0``) and
  ``H_max = log N``, the temperature is
  ``T_dyn = T_lo + (T_hi - T_lo) * (H / H_max) ** exponent`` with ``T_lo = max(0, T - delta)``,
  ``T_hi = T + delta``; then ``q = softmax(l / T_dyn)``. ``N = 1`` leaves the row alone
  (``T_dyn = T``, one candidate either way); ``delta = 0`` is plain temperature ``T``.
  llama.cpp counts every entry of its candidate array; here a token whose logit is ``-inf``
  (masked by a grammar or a previous sampler) is not a candidate.
* **EDT**, entropy-based dynamic temperature (Zhang et al. 2024, "EDT: Improving Large
  Language Models' Generation by Entropy-based Dynamic Temperature Sampling"):
  ``T = T0 * N ** (theta / H)`` with ``H`` the entropy of ``softmax(l)`` (natural log),
  ``0 < N < 1`` (the paper uses ``N = 0.8``) and ``theta > 0``; a confident row (small ``H``)
  gets a low temperature, ``H -> 0`` gives ``T -> 0`` (greedy), ``H -> inf`` gives ``T0``.
  Then ``q = softmax(l / T)``.
* **top-nσ** (Tang et al. 2024, "Top-nσ: Not All Logits Are You Need"): with ``M = max l``
  and ``σ`` the standard deviation of the logits (population, ``ddof = 0``, over the finite
  logits), keep token ``i`` iff ``l_i >= M - n * σ``; then ``q = softmax(l / T)`` over the
  kept tokens. The kept set does not depend on ``T > 0`` (dividing by ``T`` scales ``M``,
  ``l_i`` and ``σ`` alike); ``T < 1e-6`` is greedy.

All functions take ``[B, V]`` or ``[V]`` logits (float32 or float64; float16 is upcast),
refuse NaN, ``+inf`` and all ``-inf`` rows (:func:`reference.as_logits`), and return the
same shape. Parameters are scalars or ``[B]``; out-of-range values raise
:class:`~autodeco_samplers.core.errors.InvalidParameterError` naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Tuple

import numpy as np

from autodeco_samplers.core import reference
from autodeco_samplers.core.errors import InvalidParameterError
from autodeco_samplers.core.reference import as_logits, as_row_values, temperature_probs

__all__ = [
    "Baseline",
    "BASELINE_KINDS",
    "entropy",
    "min_p_mask",
    "min_p_distribution",
    "dynatemp_temperature",
    "dynatemp_distribution",
    "edt_temperature",
    "edt_distribution",
    "top_n_sigma_mask",
    "top_n_sigma_distribution",
    "static_distribution",
]


def _check_range(values: np.ndarray, name: str, lo: float, hi: float, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
    bad_lo = values <= lo if lo_open else values < lo
    bad_hi = values >= hi if hi_open else values > hi
    bad = np.flatnonzero(~np.isfinite(values) | bad_lo | bad_hi)
    if bad.size:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise InvalidParameterError(f"{name} must lie in {interval}, got {values[bad[0]]!r} (row {int(bad[0])})")


def _row_param(value, batch: int, name: str, lo: float, hi: float = np.inf, **kw) -> np.ndarray:
    arr = as_row_values(value, batch, name, np.float64)
    _check_range(arr, name, lo, hi, **kw)
    return arr


def _renormalised(q: np.ndarray, keep: np.ndarray) -> np.ndarray:
    kept = np.where(keep, q, 0.0)
    return (kept / kept.sum(axis=1, keepdims=True)).astype(q.dtype, copy=False)


def _squeeze(out: np.ndarray, logits) -> np.ndarray:
    return out[0] if np.ndim(logits) == 1 else out


def entropy(logits: np.ndarray) -> np.ndarray:
    """``H = -sum p log p`` of ``p = softmax(l)`` per row (natural log, ``0 log 0 = 0``), ``[B]``
    float64 (``[]`` for a ``[V]`` row). ``-inf`` logits have ``p = 0`` and add nothing."""
    arr = as_logits(logits).astype(np.float64)
    z = arr - arr.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h = np.maximum(terms.sum(axis=1), 0.0)
    return h[0] if np.ndim(logits) == 1 else h


# ----------------------------------------------------------------------------- min-p


def min_p_mask(q: np.ndarray, min_p) -> np.ndarray:
    """Boolean ``[B, V]``: ``q_i >= min_p * max_j q_j`` per row of probabilities ``q``;
    ``min_p`` in ``[0, 1]`` (0 keeps every token, 1 keeps the ties of the maximum)."""
    q = np.atleast_2d(np.asarray(q))
    m = _row_param(min_p, q.shape[0], "min_p", 0.0, 1.0).astype(q.dtype)
    return q >= m[:, None] * q.max(axis=1, keepdims=True)


def min_p_distribution(logits: np.ndarray, min_p, T=1.0) -> np.ndarray:
    """Min-p after temperature: ``q = softmax(l / T)`` (greedy for ``T < 1e-6``), keep
    ``q_i >= min_p * max q``, renormalise (module docstring)."""
    arr = as_logits(logits)
    q = temperature_probs(arr, T)
    return _squeeze(_renormalised(q, min_p_mask(q, min_p)), logits)


# ----------------------------------------------------------------------------- dynamic temperature


def dynatemp_temperature(logits: np.ndarray, T=1.0, delta=0.5, exponent=1.0) -> np.ndarray:
    """llama.cpp's dynamic temperature per row, ``[B]`` float64 (module docstring):
    ``T_dyn = T_lo + (T_hi - T_lo) * (H / log N) ** exponent`` with ``T_lo = max(0, T - delta)``,
    ``T_hi = T + delta``, ``N`` the number of finite logits; ``T`` itself when ``delta = 0``
    or ``N = 1``. ``T >= 0``, ``delta >= 0``, ``exponent >= 0`` (``0 ** 0 = 1``)."""
    arr = as_logits(logits)
    B = arr.shape[0]
    T = _row_param(T, B, "temperature", 0.0)
    delta = _row_param(delta, B, "delta", 0.0)
    exponent = _row_param(exponent, B, "exponent", 0.0)
    n = np.isfinite(arr).sum(axis=1)
    lo, hi = np.maximum(0.0, T - delta), T + delta
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(n > 1, entropy(arr) / np.log(np.maximum(n, 2)), 0.0)
    dyn = lo + (hi - lo) * np.power(ratio, exponent)
    out = np.where((delta > 0) & (n > 1), dyn, T)
    return out[0] if np.ndim(logits) == 1 else out


def dynatemp_distribution(logits: np.ndarray, T=1.0, delta=0.5, exponent=1.0) -> np.ndarray:
    """``softmax(l / T_dyn)`` with :func:`dynatemp_temperature` (greedy when ``T_dyn < 1e-6``)."""
    arr = as_logits(logits)
    return _squeeze(temperature_probs(arr, dynatemp_temperature(arr, T, delta, exponent)), logits)


# ----------------------------------------------------------------------------- EDT


def edt_temperature(logits: np.ndarray, T0=1.0, N=0.8, theta=1.0) -> np.ndarray:
    """EDT's temperature per row, ``[B]`` float64: ``T0 * N ** (theta / H)`` (module
    docstring); ``H = 0`` gives ``T = 0`` (the limit), ``T0 >= 0``, ``0 < N < 1``, ``theta > 0``."""
    arr = as_logits(logits)
    B = arr.shape[0]
    T0 = _row_param(T0, B, "T0", 0.0)
    N = _row_param(N, B, "N", 0.0, 1.0, lo_open=True, hi_open=True)
    theta = _row_param(theta, B, "theta", 0.0, lo_open=True)
    h = entropy(arr)
    h = np.atleast_1d(h)
    with np.errstate(divide="ignore", over="ignore"):
        out = np.where(h > 0, T0 * np.power(N, theta / np.where(h > 0, h, 1.0)), 0.0)
    return out[0] if np.ndim(logits) == 1 else out


def edt_distribution(logits: np.ndarray, T0=1.0, N=0.8, theta=1.0) -> np.ndarray:
    """``softmax(l / T_edt)`` with :func:`edt_temperature` (greedy when ``T_edt < 1e-6``)."""
    arr = as_logits(logits)
    return _squeeze(temperature_probs(arr, edt_temperature(arr, T0, N, theta)), logits)


# ----------------------------------------------------------------------------- top-n sigma


def top_n_sigma_mask(logits: np.ndarray, n=1.0) -> np.ndarray:
    """Boolean ``[B, V]``: ``l_i >= max l - n * std(l)`` (population std over the finite
    logits; ``-inf`` logits are never kept); ``n >= 0`` (0 keeps the ties of the maximum)."""
    arr = as_logits(logits).astype(np.float64)
    n = _row_param(n, arr.shape[0], "n", 0.0)
    finite = np.isfinite(arr)
    count = finite.sum(axis=1, keepdims=True)
    vals = np.where(finite, arr, 0.0)
    mean = vals.sum(axis=1, keepdims=True) / count
    sigma = np.sqrt((np.where(finite, arr - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
    top = arr.max(axis=1, keepdims=True)
    keep = finite & (arr >= top - n[:, None] * sigma)
    return keep[0] if np.ndim(logits) == 1 else keep


def top_n_sigma_distribution(logits: np.ndarray, n=1.0, T=1.0) -> np.ndarray:
    """Top-nσ: the kept set of :func:`top_n_sigma_mask`, then ``softmax(l / T)`` over it."""
    arr = as_logits(logits)
    keep = np.atleast_2d(top_n_sigma_mask(arr, n))
    masked = np.where(keep, arr, -np.inf).astype(arr.dtype)
    return _squeeze(temperature_probs(masked, T), logits)


def static_distribution(logits: np.ndarray, T, P) -> np.ndarray:
    """The canonical rule with fixed ``(T, P)``: :func:`reference.next_token_distribution`."""
    return reference.next_token_distribution(logits, T, P)


# ----------------------------------------------------------------------------- named baselines

#: rule name -> (NumPy distribution function, its parameter names in call order)
BASELINE_KINDS: Dict[str, Tuple[Callable[..., np.ndarray], Tuple[str, ...]]] = {
    "static": (static_distribution, ("T", "P")),
    "min_p": (min_p_distribution, ("min_p", "T")),
    "dynatemp": (dynatemp_distribution, ("T", "delta", "exponent")),
    "edt": (edt_distribution, ("T0", "N", "theta")),
    "top_n_sigma": (top_n_sigma_distribution, ("n", "T")),
}


@dataclass(frozen=True)
class Baseline:
    """A named baseline: ``kind`` (a key of :data:`BASELINE_KINDS`) and its parameters;
    ``distribution(logits)`` is the NumPy rule, ``torch_distribution(logits)`` its torch twin.

    >>> Baseline("min_p", {"min_p": 0.1}).name
    'min-p 0.1'
    """

    kind: str
    params: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in BASELINE_KINDS:
            raise ValueError(f"unknown baseline {self.kind!r}; choose from {', '.join(BASELINE_KINDS)}")
        names = BASELINE_KINDS[self.kind][1]
        unknown = sorted(set(self.params) - set(names))
        if unknown:
            raise ValueError(f"baseline {self.kind!r} takes {', '.join(names)}; got unknown {', '.join(unknown)}")

    @property
    def name(self) -> str:
        p = self.params
        if self.kind == "static":
            return f"static T={p.get('T', 1.0):g} P={p.get('P', 1.0):g}"
        if self.kind == "min_p":
            return f"min-p {p['min_p']:g}" + (f" T={p['T']:g}" if p.get("T", 1.0) != 1.0 else "")
        if self.kind == "dynatemp":
            T, d = p.get("T", 1.0), p.get("delta", 0.5)
            return f"dynatemp T={max(0.0, T - d):g}..{T + d:g} exp={p.get('exponent', 1.0):g}"
        if self.kind == "edt":
            return f"EDT T0={p.get('T0', 1.0):g} N={p.get('N', 0.8):g} theta={p.get('theta', 1.0):g}"
        return f"top-nσ n={p.get('n', 1.0):g}" + (f" T={p['T']:g}" if p.get("T", 1.0) != 1.0 else "")

    def distribution(self, logits: np.ndarray) -> np.ndarray:
        return BASELINE_KINDS[self.kind][0](logits, **self.params)

    def torch_distribution(self, logits: Any) -> Any:
        from autodeco_samplers.research.baselines import torch_baselines

        return torch_baselines.TORCH_KINDS[self.kind](logits, **self.params)
