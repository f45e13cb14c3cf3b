"""The one call from the vLLM adapter into the core's AutoDeco step (torch, no vLLM import).

:func:`autodeco_step` is the only place the adapter reaches the algorithm; it is pure wiring
(heads -> :class:`~autodeco_samplers.policy.DecodingPolicy` -> nucleus logits), the same
function the SGLang adapter runs, so both engines share one implementation of the rule.
"""

from __future__ import annotations

from typing import Optional

import torch

from autodeco_samplers.adapters.sglang.transform import OUTSIDE_NUCLEUS, AutoDecoStep, autodeco_logits
from autodeco_samplers.policy import DecodingPolicy

__all__ = ["OUTSIDE_NUCLEUS", "AutoDecoStep", "autodeco_step"]


def autodeco_step(
    logits: torch.Tensor,
    hidden: torch.Tensor,
    heads: torch.nn.Module,
    policy: DecodingPolicy,
    temperature: Optional[torch.Tensor] = None,
    top_p: Optional[torch.Tensor] = None,
) -> AutoDecoStep:
    """Float32 logits ``[B, V]`` whose plain softmax is the canonical AutoDeco distribution.

    ``hidden`` ``[B, H]`` is the post-norm state ``lm_head`` read for the same rows; values
    outside the nucleus are :data:`OUTSIDE_NUCLEUS` (finite, so vLLM's later masks never make
    NaN). ``temperature`` / ``top_p`` (optional ``[B]``) are per-row multipliers replacing the
    policy's scalar ones. See :func:`autodeco_samplers.adapters.sglang.transform.autodeco_logits`.
    """
    return autodeco_logits(
        logits, hidden.float(), heads, policy, fill=OUTSIDE_NUCLEUS, temperature=temperature, top_p=top_p
    )
