"""The in-model AutoDeco transform in plain torch (no SGLang import).

:func:`autodeco_logits` is the only algorithmic step of the SGLang adapter and it is pure
wiring of the core: heads -> :class:`~autodeco_samplers.policy.DecodingPolicy` ->
:func:`~autodeco_samplers.torch_ops.masked_scaled_logits`. Static shapes, no host sync, so
it can run inside a captured CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autodeco_samplers import torch_ops
from autodeco_samplers.policy import DecodingPolicy

#: Value written outside the nucleus: large, negative and *finite*, so a later additive mask
#: (a grammar's ``-inf``, a logit bias) can never produce ``-inf - -inf = NaN``.
OUTSIDE_NUCLEUS = -1e30


@dataclass
class AutoDecoStep:
    """One transform: the logits to sample from and the per-row T/P (all ``[B]`` float32)."""

    logits: torch.Tensor
    T_pred: torch.Tensor
    P_pred: torch.Tensor
    T: torch.Tensor
    P: torch.Tensor


def autodeco_logits(
    logits: torch.Tensor,
    hidden: torch.Tensor,
    heads: torch.nn.Module,
    policy: DecodingPolicy = DecodingPolicy(),
    *,
    fill: float = OUTSIDE_NUCLEUS,
    temperature: torch.Tensor = None,
    top_p: torch.Tensor = None,
) -> AutoDecoStep:
    """Logits ``[B, V]`` whose plain softmax is the canonical AutoDeco distribution.

    Rule: ``T_pred, P_pred = heads(hidden, logits)``; ``T, P = policy.apply(T_pred, P_pred)``;
    the result is ``masked_scaled_logits(logits, T, P, fill)``: ``(l - max l) / T`` for the
    tokens of the nucleus (exclusive prefix sum ``< P``, ties by lower token id), ``fill``
    elsewhere, only the argmax at 0 when ``T < 1e-6``. ``hidden`` ``[B, H]`` must be the
    post-norm state ``lm_head`` consumed for the same rows. Float32 output.
    ``temperature`` / ``top_p`` (optional ``[B]``) are per-request multipliers replacing the
    policy's scalar ones (see :meth:`DecodingPolicy.apply`).
    """
    logits32 = logits.float()
    T_pred, P_pred = heads(hidden, logits32)
    T, P = policy.apply(T_pred, P_pred, temperature, top_p)
    out = torch_ops.masked_scaled_logits(logits32, T, P, fill=fill, check=False)
    return AutoDecoStep(out, T_pred, P_pred, T, P)
