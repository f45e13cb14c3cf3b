"""The one call from the vLLM adapter into the core's AutoDeco step (torch, no vLLM import).

:func:`autodeco_step` is the only place the adapter reaches the algorithm; it is pure wiring
(heads -> :class:`~autodeco_samplers.core.policy.DecodingPolicy` -> nucleus logits), the same
:func:`autodeco_samplers.core.step.torch_step_logits`, the core step the SGLang adapter runs too,
so both engines share one implementation of the rule.
"""

from __future__ import annotations

from typing import Optional

import torch

from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS
from autodeco_samplers.core.step import TorchStep, torch_step_logits

__all__ = ["autodeco_step"]


def autodeco_step(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    heads: torch.nn.Module,
    policy: DecodingPolicy,
    temperature: Optional[torch.Tensor] = None,
    top_p: Optional[torch.Tensor] = None,
    compiled: bool = False,
) -> TorchStep:
    """Float32 logits ``[B, V]`` whose plain softmax is the canonical AutoDeco distribution.

    ``hidden`` ``[B, H]`` is the post-norm state ``lm_head`` read for the same rows; values
    outside the nucleus are :data:`OUTSIDE_NUCLEUS` (finite, so vLLM's later masks never make
    NaN). ``temperature`` / ``top_p`` (optional ``[B]``) are per-row request multipliers that
    multiply the policy's (:meth:`DecodingPolicy.for_request`). vLLM computes logits outside its captured CUDA graphs, so the
    step's default ``sync`` applies (one boolean read per step on the CPU, none on a GPU).
    ``compiled`` runs the step through ``torch.compile`` (the served folder's
    ``compiled_step``; :func:`autodeco_samplers.core.step.compiled_step`).
    """
    return torch_step_logits(
        hidden.float(), logits, heads, policy, temperature=temperature, top_p=top_p, fill=OUTSIDE_NUCLEUS,
        compiled=compiled,
    )
