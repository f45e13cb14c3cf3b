"""The canonical AutoDeco semantics in torch: batched, device-agnostic, no loop over rows.

Rule for rule the same as :mod:`autodeco_samplers.core.reference` (read its docstring for the
exact definitions). The kept set itself is computed in one place,
:func:`autodeco_samplers.core.torch_nucleus.kept_set` (no vocabulary sort), and read as logits
(:meth:`~autodeco_samplers.core.torch_nucleus.KeptSet.logits`) or a draw
(:meth:`~autodeco_samplers.core.torch_nucleus.KeptSet.draw`); this module validates the inputs
of those two (:func:`torch_rule_logits`, :func:`torch_rule_sample`) and holds the top-p head's
statistics and the soft top-p mask. Engines call the step functions of
:mod:`autodeco_samplers.core.step`, which wire heads, policy and these rules together.
Everything runs in float32 (float16/bfloat16 inputs are upcast; float64 stays float64).
Validation (NaN, +inf, negative ``T``, ``P`` outside ``[0, 1]``) needs a host synchronisation
and happens only with ``check=True``; inside a captured CUDA graph pass ``check=False`` and
validate upstream: there a NaN temperature gives an undefined (but finite-index) draw.

The training mask :func:`soft_top_p` sorts (it needs every prefix sum, with gradients);
``torch.sort(..., stable=True, descending=True)`` keeps ties in ascending id order.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch

from autodeco_samplers.core import torch_nucleus
from autodeco_samplers.core.errors import InvalidLogitsError, InvalidParameterError, ShapeError
from autodeco_samplers.core.reference import (
    ENTROPY_EPS,
    EXP_FLOOR,
    OUTSIDE_NUCLEUS,
    SOFT_TOP_P_ALPHA,
    SOFT_TOP_P_EPS,
    STATS_TEMPERATURE_EPS,
)

Number = Union[float, torch.Tensor]

__all__ = [
    "OUTSIDE_NUCLEUS",
    "as_logits",
    "probability_stats",
    "torch_rule_logits",
    "torch_rule_sample",
    "next_token_distribution",
    "soft_top_p",
    "sample_tokens",
    "row_uniforms",
]


def _working(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def check_logits(logits: torch.Tensor) -> None:
    """Raise :class:`InvalidLogitsError` naming the first NaN, +inf or all -inf row (syncs)."""
    if torch.isnan(logits).any():
        row = int(torch.isnan(logits).any(dim=-1).nonzero()[0, 0])
        raise InvalidLogitsError(f"logits contain NaN (row {row} of {logits.shape[0]})")
    if torch.isposinf(logits).any():
        row = int(torch.isposinf(logits).any(dim=-1).nonzero()[0, 0])
        raise InvalidLogitsError(f"logits contain +inf (row {row} of {logits.shape[0]})")
    dead = torch.isneginf(logits).all(dim=-1)
    if dead.any():
        row = int(dead.nonzero()[0, 0])
        raise InvalidLogitsError(f"logits row {row} of {logits.shape[0]} is all -inf: no token can be drawn")


def as_logits(logits: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """``[B, V]`` float32 (or float64) view of ``logits``; validated when ``check``."""
    if logits.dim() != 2 or logits.shape[-1] < 1:
        raise ShapeError(f"logits must have shape [B, V] with V >= 1, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ShapeError(f"logits must be floating point, got {logits.dtype}")
    out = _working(logits)
    if check:
        check_logits(out)
    return out


def _rows(value: Number, like: torch.Tensor, name: str, check: bool) -> torch.Tensor:
    """Broadcast a scalar or ``[B]`` parameter to a ``[B]`` tensor of ``like``'s dtype/device."""
    B = like.shape[0]
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 2 and t.shape[-1] == 1:
        t = t[:, 0]
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise ShapeError(f"{name} must be a scalar or have shape [{B}], got {tuple(t.shape)}")
    if check and (~torch.isfinite(t) | (t < 0)).any():
        raise InvalidParameterError(f"{name} must be finite and >= 0, got {t.tolist()}")
    return t


def probability_stats(logits: torch.Tensor, T: Number, *, check: bool = True) -> torch.Tensor:
    """The top-p head's features of ``q = softmax(l / (T + 1e-8))``: ``[B, 4]`` = max prob,
    entropy ``-sum q log(q + 1e-8)``, unbiased variance (0 when ``V == 1``), top-``min(5, V)``
    mass, as :func:`autodeco_samplers.core.reference.probability_stats`.

    ``q`` is never materialised. With ``e = exp((l - max l) / (T + 1e-8))`` and ``S = sum e``
    (so ``q = e / S``): max prob ``= 1 / S``; top-5 mass ``= sum of e over the 5 largest
    logits / S``; entropy ``= log S - sum e log(e + 1e-8 S) / S``; variance
    ``= (sum e^2 / S^2 - 1 / V) / (V - 1)`` (``sum q = 1``). ``e`` is computed in one buffer;
    the two sums run over column blocks of a small scratch (no further ``[B, V]`` allocations,
    whose page faults cost more than the arithmetic at large ``B * V``).
    """
    arr = as_logits(logits, check=check)
    T = _rows(T, arr, "temperature", check)
    B, V = arr.shape
    scale = (T + STATS_TEMPERATURE_EPS).reciprocal()[:, None]
    top = torch_nucleus.top_k_values(arr, min(5, V))  # the largest logits, no sort of the row
    # exponents below EXP_FLOOR = -70 are raised to it (no subnormal numbers, which are slow on
    # CPUs); this moves each feature by at most V * e^-70 (< 1e-25 at V = 152k)
    e = (arr - top[:, :1]).mul_(scale).clamp_(min=EXP_FLOOR).exp_()
    S = e.sum(dim=-1)
    sum_sq, sum_e_log = _exp_sums(e, ENTROPY_EPS * S)
    entropy = torch.log(S) - sum_e_log / S
    var = (sum_sq / (S * S) - 1.0 / V) / (V - 1) if V > 1 else torch.zeros_like(S)
    top_e = ((top - top[:, :1]) * scale).clamp_(min=EXP_FLOOR).exp_()
    return torch.stack([1.0 / S, entropy, var, top_e.sum(dim=-1) / S], dim=-1)


_SQUARE_FLOOR = math.exp(EXP_FLOOR / 2)


def _exp_sums(e: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(sum e^2, sum e log(e + c))`` per row of ``e`` ``[B, V]``, ``c`` ``[B]``, block by block
    (:func:`torch_nucleus.column_blocks`; torch's own summation, not a BLAS dot, which adds in
    float32 lanes and loses ~1e-4 at 152k)."""
    if torch.compiler.is_compiling():  # inductor fuses these without temporaries; no out= there
        return torch.clamp(e, min=_SQUARE_FLOOR).square().sum(dim=-1), (torch.log(e + c[:, None]) * e).sum(dim=-1)
    sum_sq = e.new_zeros(e.shape[0])
    sum_e_log = e.new_zeros(e.shape[0])
    for part, scratch in torch_nucleus.column_blocks(e):
        # e below e^-35 is raised to it before squaring (e^-70 stays normal in float32; smaller
        # squares are subnormal and slow): sum e^2 >= 1 grows by at most V e^-70
        sum_sq += torch.clamp(part, min=_SQUARE_FLOOR, out=scratch).square_().sum(dim=-1)
        sum_e_log += torch.add(part, c[:, None], out=scratch).log_().mul_(part).sum(dim=-1)
    return sum_sq, sum_e_log


def _prepare(logits, T, P, check: bool):
    arr = as_logits(logits, check=check)
    T = _rows(T, arr, "temperature", check)
    P = _rows(P, arr, "top_p", False)
    if check and (torch.isnan(P).any() or (P < 0).any() or (P > 1).any()):
        raise InvalidParameterError(f"top_p must lie in [0, 1], got {P.tolist()}")
    return arr, T, P


def torch_rule_logits(logits, T: Number, P: Number, *, fill: float = OUTSIDE_NUCLEUS, check: bool = False,
                      sync: Optional[bool] = None) -> torch.Tensor:
    """Logits ``[B, V]`` (float32) whose plain softmax is the canonical distribution of
    ``(logits, T, P)``: ``(l - max l) / T`` in the nucleus (``-inf`` inputs become ``fill``),
    ``fill`` elsewhere; greedy rows have only the argmax, at 0. Always finite. For engines
    that sample themselves with temperature 1 and top-p 1. ``sync``: see
    :func:`torch_nucleus.kept_set`; ``check=True`` validates (and synchronises).
    """
    arr, T, P = _prepare(logits, T, P, check)
    return torch_nucleus.kept_set(arr, T, P, sync=sync).logits(fill)


def torch_rule_sample(logits, T: Number, P: Number, generator: Optional[torch.Generator] = None, *,
                      check: bool = False, sync: Optional[bool] = None, uniforms: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One token per row ``[B]`` (int64) drawn from the canonical distribution of
    ``(logits, T, P)``: inverse CDF over the kept tokens only, one ``torch.rand`` per row from
    ``generator``, or the caller's ``uniforms`` (``[B]`` in ``[0, 1)``; see
    :func:`row_uniforms`). Greedy rows return the argmax (lowest id) and still consume their
    uniform."""
    arr, T, P = _prepare(logits, T, P, check)
    return rule_sample_with(arr, T, P, row_uniforms(arr, generator, uniforms), sync=sync)


def row_uniforms(logits: torch.Tensor, generator: Optional[torch.Generator] = None,
                 uniforms: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The ``[B]`` float64 uniforms a draw uses: ``torch.rand(B, generator=generator)`` on the
    logits' device, or the given ``uniforms`` (checked: shape ``[B]``, every value in
    ``[0, 1)``). Callers pass their own uniforms to draw several strategies with the same
    random numbers (common random numbers: paired comparisons)."""
    B = logits.shape[0]
    if uniforms is None:
        return torch.rand(B, generator=generator, device=logits.device, dtype=torch.float64)
    u = torch.as_tensor(uniforms, device=logits.device).to(torch.float64)
    if u.shape != (B,):
        raise InvalidParameterError(f"uniforms must have shape [{B}] (one per logits row), got {list(u.shape)}")
    if not bool(((u >= 0) & (u < 1)).all()):
        raise InvalidParameterError("uniforms must lie in [0, 1)")
    return u


def rule_sample_with(logits: torch.Tensor, T: torch.Tensor, P: torch.Tensor, u: torch.Tensor, *,
                     sync: Optional[bool] = None) -> torch.Tensor:
    """:func:`torch_rule_sample` with the uniforms ``u`` ``[B]`` (float64) given: float32
    ``logits`` ``[B, V]``, ``T`` and ``P`` ``[B]``, unchecked. The token of row ``b`` is the
    kept token where the inverse CDF of the canonical distribution crosses ``u[b]``."""
    return torch_nucleus.kept_set(logits, T, P, sync=sync).draw(u)


def next_token_distribution(logits: torch.Tensor, T: Number, P: Number, *, check: bool = True) -> torch.Tensor:
    """Rules 1 to 3: the renormalised nucleus of ``softmax(l / T)``, ``[B, V]`` float32 (the
    softmax of :func:`torch_rule_logits`)."""
    return torch.softmax(torch_rule_logits(logits, T, P, check=check), dim=-1)


def soft_top_p(q: torch.Tensor, P: Number, alpha: float = SOFT_TOP_P_ALPHA, *, prefix: str = "inclusive") -> torch.Tensor:
    """Differentiable training mask ``q * m / (sum(q * m) + 1e-9)`` with
    ``m_(i) = exp(-alpha * relu(C_i - P))``, ``C_i`` the inclusive prefix sum (descending,
    ties by ascending id): the official recipe, :func:`reference.soft_top_p`. Gradients flow
    to ``q`` and ``P``.

    ``prefix="exclusive"`` (a training option, not the official recipe) uses the exclusive
    sum ``c_i = C_i - q_(i)`` instead: as ``alpha -> inf`` it keeps exactly the tokens with
    ``c_i < P`` (plus ties at ``c_i = P`` with weight 1), the hard rule *including* the
    crossing token, so training and inference agree.
    """
    if prefix not in SOFT_TOP_P_PREFIXES:
        raise ValueError(f"prefix must be one of {SOFT_TOP_P_PREFIXES}, got {prefix!r}")
    P = torch.as_tensor(P, dtype=q.dtype, device=q.device)
    if P.dim() == q.dim():
        P = P.squeeze(-1)
    sorted_q, order = torch.sort(q, dim=-1, descending=True, stable=True)
    prefix_sum = torch.cumsum(sorted_q, dim=-1)
    if prefix == "exclusive":
        prefix_sum = prefix_sum - sorted_q
    m_sorted = torch.exp(-alpha * torch.relu(prefix_sum - P[..., None]))
    m = torch.zeros_like(m_sorted).scatter(-1, order, m_sorted)
    weighted = q * m
    return weighted / (weighted.sum(dim=-1, keepdim=True) + SOFT_TOP_P_EPS)


SOFT_TOP_P_PREFIXES = ("inclusive", "exclusive")


def sample_tokens(probs: torch.Tensor, generator: torch.Generator = None, *,
                  uniforms: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One token id per row of ``probs`` ``[B, V]``: inverse CDF in id order over the tokens
    of positive probability, one uniform per row from ``generator`` or ``uniforms``
    (:func:`row_uniforms`; never a zero-probability token). The step functions draw from the kept tokens only, without a ``[B, V]`` input."""
    return torch_nucleus.draw_from_mask(probs, probs > 0, row_uniforms(probs, generator, uniforms))
