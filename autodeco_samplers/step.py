"""The AutoDeco step: heads -> policy -> canonical rule, once per array library.

Every engine calls one of these (transformers, evaluation, conformance, SGLang and vLLM use
torch; llama.cpp uses NumPy); nothing else wires heads to the rule. The rule itself is
:mod:`autodeco_samplers.reference` (the specification); the kept set is computed by
:mod:`autodeco_samplers.torch_nucleus` (torch) and :mod:`autodeco_samplers.fast_nucleus`
(NumPy), both without sorting the vocabulary and both tested against the reference.

Per step, for ``[B, H]`` hidden states and ``[B, V]`` logits:

1. ``T_pred, P_pred = heads(hidden, logits)`` (the top-p head reads statistics of
   ``softmax(l / (T_pred + 1e-8))``);
2. ``T, P = policy.apply(T_pred, P_pred, temperature, top_p)`` where ``temperature`` /
   ``top_p`` are optional per-row ``[B]`` multipliers replacing the policy's scalar ones;
3. the canonical distribution of ``(logits, T, P)``: ``softmax((l - max l) / T)`` restricted
   to the nucleus (exclusive prefix sum ``< P``, ties by lower id; ``P >= 1`` keeps every
   token of positive probability), renormalised; ``T < 1e-6`` is greedy (argmax, lowest id).

Torch gives two outputs: :func:`torch_step_logits`, logits whose plain softmax is that
distribution (``(l - max l) / T`` inside the nucleus, a finite ``fill`` outside, for engines
that sample themselves), and :func:`torch_step_sample`, a drawn token (inverse CDF over the
kept tokens only, one uniform per row from ``generator``). Neither synchronises with the host
on an accelerator when ``check=False`` (so both can be captured in a CUDA graph; on the CPU
they read one boolean per step, see ``sync``); ``check=True``
validates logits, ``T`` and ``P`` (NaN, +inf, negative ``T``) and does synchronise. Inside a
captured graph no check is possible: a NaN or infinite ``T`` then yields an arbitrary kept
token, so engines must validate request knobs before capture.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np

from .errors import InvalidParameterError
from .policy import DecodingPolicy
from .reference import GREEDY_TEMPERATURE, inverse_cdf

__all__ = [
    "OUTSIDE_NUCLEUS",
    "TorchStep",
    "torch_step_logits",
    "torch_step_sample",
    "torch_rule_logits",
    "torch_rule_sample",
    "numpy_step",
    "numpy_step_distribution",
]

OUTSIDE_NUCLEUS = -1e30
"""Value written outside the nucleus: large, negative and *finite*, so a later additive mask
(a grammar's ``-inf``, a logit bias) never produces ``-inf - -inf = NaN``."""

_DEFAULT_POLICY = DecodingPolicy()


class TorchStep(NamedTuple):
    """One batched torch step; every field is ``[B]`` except ``logits`` ``[B, V]``.
    ``token`` is None for :func:`torch_step_logits`, ``logits`` None for :func:`torch_step_sample`."""

    token: Any
    logits: Any
    T_pred: Any
    P_pred: Any
    T: Any
    P: Any


# ----------------------------------------------------------------------------- torch rule


def _torch_prepare(logits, T, P, check: bool):
    import torch

    from . import torch_ops

    arr = torch_ops.as_logits(logits, check=check)
    T = torch_ops._rows(T, arr, "temperature", check)
    P = torch_ops._rows(P, arr, "top_p", False)
    if check and (torch.isnan(P).any() or (P < 0).any() or (P > 1).any()):
        raise InvalidParameterError(f"top_p must lie in [0, 1], got {P.tolist()}")
    return arr, T, P


def _torch_nucleus(arr, T, P):
    """``(full, kept_z, cand)``: the candidate nucleus with greedy rows folded in (only the
    argmax kept, proven); ``full(rows)``, the scaled logits ``z`` and probabilities ``q`` of
    those rows (all by default), which only the fallback needs; ``kept_z()``, ``z`` at the
    candidate ids."""
    import torch

    from . import torch_nucleus as N

    greedy = T < GREEDY_TEMPERATURE
    Tg = torch.where(greedy, torch.ones_like(T), T)
    cmax = N.chunk_max(arr)  # one pass: row maximum, argmax and candidate chunks from it
    row_max = cmax.amax(dim=-1)
    cand = N.logit_candidates(arr, row_max, Tg, P, cmax)
    argmax = N.first_argmax(arr, cmax)
    # greedy rows: every candidate slot is the argmax (so a scatter writes one value), all
    # "kept" with cumulative mass 1, so the draw returns slot 0 = the argmax
    g = greedy[:, None]
    ids = torch.where(g, argmax[:, None], cand.ids)
    keep = cand.keep | g
    cum = torch.where(g, torch.ones_like(cand.cum), cand.cum)
    cand = N.Candidates(ids, cand.q, keep, cum, cand.proven | greedy)

    def full(rows=slice(None)):
        z = (arr[rows] - row_max[rows, None]) / Tg[rows, None]
        return z, torch.softmax(z, dim=-1)

    def kept_z():
        """``z`` at the candidate ids (the same arithmetic as ``full``)."""
        return (arr.gather(-1, ids) - row_max[:, None]) / Tg[:, None]

    return full, kept_z, cand


def _unproven_rows(cand):
    """The rows the fallback must handle (reads ``proven`` on the host): None when every row
    is proven, ``slice(None)`` when none is (views, no row copies), else their indices."""
    if bool(cand.proven.all()):
        return None
    if not bool(cand.proven.any()):
        return slice(None)
    return (~cand.proven).nonzero()[:, 0]


def _sync_mode(sync: Optional[bool], device) -> bool:
    """``sync=None``: synchronise (to run the threshold search only on the rows that need it)
    on the CPU, where it costs nothing; never on an accelerator (no stall, CUDA-graph safe)."""
    if sync is not None:
        return sync
    return device.type == "cpu"


def torch_rule_logits(logits, T, P, *, fill: float = OUTSIDE_NUCLEUS, check: bool = False, sync: Optional[bool] = None):
    """Logits ``[B, V]`` (float32) whose plain softmax is the canonical distribution of
    ``(logits, T, P)``: ``(l - max l) / T`` in the nucleus (``-inf`` inputs become ``fill``),
    ``fill`` elsewhere; greedy rows have only the argmax, at 0. Always finite.

    ``sync=None`` synchronises once on the CPU (to run the threshold search only on unproven
    rows) and never on an accelerator; ``sync=False`` never synchronises (the search runs on
    every row and ``torch.where`` picks), ``sync=True`` always may.
    """
    import torch

    from . import torch_nucleus as N

    arr, T, P = _torch_prepare(logits, T, P, check)
    full, kept_z, cand = _torch_nucleus(arr, T, P)
    if _sync_mode(sync, arr.device):
        out = torch.full_like(arr, fill).scatter_(-1, cand.ids, torch.where(cand.keep, kept_z().clamp_min(fill), fill))
        rows = _unproven_rows(cand)
        if rows is not None:
            z, q = full(rows)
            out[rows] = torch.where(N.threshold_nucleus(q, P[rows]), z.clamp_min(fill), fill)
        return out
    z, q = full()
    out = torch.full_like(z, fill).scatter_(-1, cand.ids, torch.where(cand.keep, kept_z().clamp_min(fill), fill))
    return torch.where(cand.proven[:, None], out, torch.where(N.threshold_nucleus(q, P), z.clamp_min(fill), fill))


def torch_rule_sample(logits, T, P, generator=None, *, check: bool = False, sync: Optional[bool] = None):
    """One token per row ``[B]`` (int64) drawn from the canonical distribution of
    ``(logits, T, P)``: inverse CDF over the kept tokens only, one ``torch.rand`` per row from
    ``generator``. Greedy rows return the argmax (lowest id) and still consume their uniform."""
    import torch

    from . import torch_nucleus as N

    arr, T, P = _torch_prepare(logits, T, P, check)
    full, _, cand = _torch_nucleus(arr, T, P)
    u = torch.rand(arr.shape[0], generator=generator, device=arr.device, dtype=torch.float64)
    token = N.draw_from_candidates(cand, u)
    if _sync_mode(sync, arr.device):
        rows = _unproven_rows(cand)
        if rows is not None:
            _, q = full(rows)
            token[rows] = N.draw_from_mask(q, N.threshold_nucleus(q, P[rows]), u[rows])
        return token
    _, q = full()
    return torch.where(cand.proven, token, N.draw_from_mask(q, N.threshold_nucleus(q, P), u))


def _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check):
    import torch

    from . import torch_ops

    arr = torch_ops.as_logits(logits, check=check)
    h_logits = arr if head_logits is None else head_logits.float()
    T_pred, P_pred = heads(hidden, h_logits)
    T, P = policy.apply(T_pred, P_pred, temperature, top_p)
    if check:
        bad = ~torch.isfinite(T) | (T < 0) | torch.isnan(P)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise InvalidParameterError(
                f"temperature must be finite and >= 0 and top_p a number, got T={float(T[row])}, "
                f"P={float(P[row])} (row {row})"
            )
    return arr, T_pred, P_pred, T, P


def torch_step_logits(
    hidden,
    logits,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    *,
    temperature=None,
    top_p=None,
    head_logits=None,
    fill: float = OUTSIDE_NUCLEUS,
    check: bool = False,
    sync: Optional[bool] = None,
) -> TorchStep:
    """The step for engines that sample themselves (SGLang, vLLM, transformers' processors).

    Args:
        hidden: ``[B, H]`` post-norm hidden states that produced ``logits``.
        logits: ``[B, V]`` logits the rule applies to (upcast to float32).
        heads: a torch module, ``heads(hidden, logits) -> (T_pred, P_pred)``.
        policy: request knobs; ``temperature`` / ``top_p`` (optional ``[B]``) replace its
            scalar multipliers per row.
        head_logits: logits the heads read when they differ from ``logits`` (default: same).
        fill: value outside the nucleus (finite). ``check``/``sync``: see the module docstring.

    Returns:
        :class:`TorchStep` with ``logits`` set (see :func:`torch_rule_logits`).
    """
    arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check)
    out = torch_rule_logits(arr, T, P, fill=fill, check=False, sync=sync)
    return TorchStep(None, out, T_pred, P_pred, T, P)


def torch_step_sample(
    hidden,
    logits,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    generator=None,
    *,
    temperature=None,
    top_p=None,
    head_logits=None,
    check: bool = False,
    sync: Optional[bool] = None,
) -> TorchStep:
    """The step for engines that let us draw (transformers' own loop, the evaluation):
    :class:`TorchStep` with ``token`` set (see :func:`torch_rule_sample`); arguments as
    :func:`torch_step_logits`, ``generator`` a ``torch.Generator`` on the logits' device."""
    arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check)
    token = torch_rule_sample(arr, T, P, generator, check=False, sync=sync)
    return TorchStep(token, None, T_pred, P_pred, T, P)


# ----------------------------------------------------------------------------- NumPy


def numpy_step_distribution(
    hidden: np.ndarray,
    logits: np.ndarray,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    *,
    temperature=None,
    top_p=None,
) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The NumPy step without the draw: ``(rows, T_pred, P_pred, T, P)`` where ``rows[b]`` is
    ``(ids, probs)``, the kept token ids of row ``b`` (ascending) and their canonical
    probabilities (see :func:`fast_nucleus.sparse_next_token_distribution`).

    ``heads`` has ``predict(hidden, logits) -> (T_pred, P_pred)`` (NumPy heads); ``hidden``
    ``[B, H]`` or ``[H]``, ``logits`` ``[B, V]`` or ``[V]``. Validates the logits and the used
    ``T``/``P`` (NaN, +inf, negative ``T`` raise :class:`InvalidParameterError` / ``InvalidLogitsError``).
    """
    from .fast_nucleus import sparse_next_token_distribution

    logits = np.atleast_2d(logits)
    T_pred, P_pred = heads.predict(np.atleast_2d(hidden), logits)
    T, P = policy.apply(T_pred, P_pred, temperature, top_p)
    rows = [sparse_next_token_distribution(logits[b], T[b], P[b]) for b in range(logits.shape[0])]
    return rows, T_pred, P_pred, T, P


def numpy_step(
    hidden: np.ndarray,
    logits: np.ndarray,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    rng: Optional[np.random.Generator] = None,
    *,
    temperature=None,
    top_p=None,
):
    """The NumPy step (llama.cpp): heads, policy, canonical nucleus, and one token per row
    drawn with ``rng`` (one ``rng.random()`` per row, inverse CDF over the kept tokens in
    ascending id order). Returns a :class:`~autodeco_samplers.interfaces.StepOutput`."""
    from .interfaces import StepOutput

    rng = rng if rng is not None else np.random.default_rng()
    rows, T_pred, P_pred, T, P = numpy_step_distribution(hidden, logits, heads, policy, temperature=temperature, top_p=top_p)
    tokens = np.empty(len(rows), dtype=np.int64)
    for b, (ids, probs) in enumerate(rows):
        tokens[b] = ids[inverse_cdf(probs[None], rng.random())[0]]
    return StepOutput(tokens, T_pred, P_pred, T, P)
