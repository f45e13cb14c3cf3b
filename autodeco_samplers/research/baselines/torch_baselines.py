"""Batched torch twins of :mod:`autodeco_samplers.research.baselines.numpy_baselines` (the rules are stated there).

Each function takes ``[B, V]`` logits (float32 or float64 tensors; other floats are computed
in float32) and returns the ``[B, V]`` distribution (float32; float64 for float64 logits), so
the evaluation draws with :func:`autodeco_samplers.core.torch_ops.sample_tokens`. The temperature
step (greedy below ``T = 1e-6``) is the core's :func:`autodeco_samplers.core.torch_ops.next_token_distribution`
with ``P = 1``; the per-row temperatures and kept sets are computed here, in the logits' dtype.
Tests (tests/research/test_baselines.py) check every function against the NumPy reference.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from autodeco_samplers.core.errors import InvalidParameterError
from autodeco_samplers.core.torch_ops import as_logits, next_token_distribution

__all__ = [
    "entropy",
    "min_p_distribution",
    "dynatemp_temperature",
    "dynatemp_distribution",
    "edt_temperature",
    "edt_distribution",
    "top_n_sigma_mask",
    "top_n_sigma_distribution",
    "static_distribution",
    "TORCH_KINDS",
]


def _param(value, like: torch.Tensor, name: str, lo: float, hi: float = float("inf"), *,
           lo_open: bool = False, hi_open: bool = False) -> torch.Tensor:
    """A scalar or ``[B]`` parameter as ``[B]`` (``like``'s dtype/device), range-checked."""
    B = like.shape[0]
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise InvalidParameterError(f"{name} must be a scalar or have shape [{B}], got {tuple(t.shape)}")
    bad = ~torch.isfinite(t) | ((t <= lo) if lo_open else (t < lo)) | ((t >= hi) if hi_open else (t > hi))
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise InvalidParameterError(f"{name} must lie in {interval}, got {float(t[row])!r} (row {row})")
    return t


def _temperature(arr: torch.Tensor, T) -> torch.Tensor:
    return next_token_distribution(arr, T, 1.0, check=False)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-sum p log p`` of ``p = softmax(l)`` per row, ``[B]`` float64
    (``0 log 0 = 0``), computed in float64 as the NumPy rule is (in float32 it is off by
    ~1e-5 relative at 152k tokens, which EDT's ``theta / H`` amplifies at low entropy)."""
    arr = as_logits(logits)
    logp = torch.log_softmax(arr.double(), dim=-1)
    p = logp.exp()
    return (-torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)).clamp_min(0.0)


def min_p_distribution(logits: torch.Tensor, min_p, T=1.0) -> torch.Tensor:
    """``q = softmax(l / T)``; keep ``q_i >= min_p * max q``; renormalise."""
    arr = as_logits(logits)
    m = _param(min_p, arr, "min_p", 0.0, 1.0)
    q = _temperature(arr, T)
    kept = torch.where(q >= m[:, None].to(q.dtype) * q.amax(dim=-1, keepdim=True), q, torch.zeros_like(q))
    return kept / kept.sum(dim=-1, keepdim=True)


def dynatemp_temperature(logits: torch.Tensor, T=1.0, delta=0.5, exponent=1.0) -> torch.Tensor:
    """llama.cpp's ``T_lo + (T_hi - T_lo) * (H / log N) ** exponent`` per row, ``[B]`` float64."""
    arr = as_logits(logits)
    T = _param(T, arr.new_empty(arr.shape[0], dtype=torch.float64), "temperature", 0.0)
    delta = _param(delta, T, "delta", 0.0)
    exponent = _param(exponent, T, "exponent", 0.0)
    n = torch.isfinite(arr).sum(dim=-1).double()
    lo, hi = (T - delta).clamp_min(0.0), T + delta
    ratio = torch.where(n > 1, entropy(arr) / torch.log(n.clamp_min(2.0)), torch.zeros_like(n))
    dyn = lo + (hi - lo) * torch.pow(ratio, exponent)
    return torch.where((delta > 0) & (n > 1), dyn, T)


def dynatemp_distribution(logits: torch.Tensor, T=1.0, delta=0.5, exponent=1.0) -> torch.Tensor:
    arr = as_logits(logits)
    return _temperature(arr, dynatemp_temperature(arr, T, delta, exponent))


def edt_temperature(logits: torch.Tensor, T0=1.0, N=0.8, theta=1.0) -> torch.Tensor:
    """EDT's ``T0 * N ** (theta / H)`` per row, ``[B]`` float64 (``0`` where ``H = 0``)."""
    arr = as_logits(logits)
    T0 = _param(T0, arr.new_empty(arr.shape[0], dtype=torch.float64), "T0", 0.0)
    N = _param(N, T0, "N", 0.0, 1.0, lo_open=True, hi_open=True)
    theta = _param(theta, T0, "theta", 0.0, lo_open=True)
    h = entropy(arr)
    safe = torch.where(h > 0, h, torch.ones_like(h))
    return torch.where(h > 0, T0 * torch.pow(N, theta / safe), torch.zeros_like(h))


def edt_distribution(logits: torch.Tensor, T0=1.0, N=0.8, theta=1.0) -> torch.Tensor:
    arr = as_logits(logits)
    return _temperature(arr, edt_temperature(arr, T0, N, theta))


def top_n_sigma_mask(logits: torch.Tensor, n=1.0) -> torch.Tensor:
    """``l_i >= max l - n * std(l)`` (population std over the finite logits), ``[B, V]`` bool."""
    arr = as_logits(logits)
    n = _param(n, arr, "n", 0.0)
    finite = torch.isfinite(arr)
    count = finite.sum(dim=-1, keepdim=True).to(arr.dtype)
    zero = torch.zeros_like(arr)
    mean = torch.where(finite, arr, zero).sum(dim=-1, keepdim=True) / count
    sigma = (torch.where(finite, arr - mean, zero).square().sum(dim=-1, keepdim=True) / count).sqrt()
    top = arr.amax(dim=-1, keepdim=True)
    return finite & (arr >= top - n[:, None] * sigma)


def top_n_sigma_distribution(logits: torch.Tensor, n=1.0, T=1.0) -> torch.Tensor:
    arr = as_logits(logits)
    masked = torch.where(top_n_sigma_mask(arr, n), arr, torch.full_like(arr, float("-inf")))
    return _temperature(masked, T)


def static_distribution(logits: torch.Tensor, T, P) -> torch.Tensor:
    """The canonical rule with fixed ``(T, P)``: :func:`torch_ops.next_token_distribution`."""
    return next_token_distribution(as_logits(logits), T, P, check=False)


#: rule name -> torch distribution function (the same keys as ``baselines.BASELINE_KINDS``)
TORCH_KINDS: Dict[str, Callable[..., torch.Tensor]] = {
    "static": static_distribution,
    "min_p": min_p_distribution,
    "dynatemp": dynatemp_distribution,
    "edt": edt_distribution,
    "top_n_sigma": top_n_sigma_distribution,
}
