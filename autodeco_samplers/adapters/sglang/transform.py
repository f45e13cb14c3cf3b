"""The in-model AutoDeco transform in plain torch (no SGLang import).

:func:`autodeco_logits` is the only algorithmic step of the SGLang adapter and it is one
call of the core step :func:`autodeco_samplers.core.step.torch_step_logits` (heads -> policy ->
canonical nucleus, no vocabulary sort). Static shapes; no host sync while a CUDA graph is
being captured, so it can run inside one.
"""

from __future__ import annotations

import torch

from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS
from autodeco_samplers.core.step import TorchStep, torch_step_logits


def autodeco_logits(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    heads: torch.nn.Module,
    policy: DecodingPolicy = DecodingPolicy(),
    *,
    fill: float = OUTSIDE_NUCLEUS,
    temperature: torch.Tensor = None,
    top_p: torch.Tensor = None,
    compiled: bool = False,
) -> TorchStep:
    """Logits ``[B, V]`` whose plain softmax is the canonical AutoDeco distribution.

    Exactly :func:`autodeco_samplers.core.step.torch_step_logits`: ``(l - max l) / T`` for the
    tokens of the nucleus (exclusive prefix sum ``< P``, ties by lower token id; ``P >= 1``
    keeps every token of positive probability), ``fill`` elsewhere (always finite), only the
    argmax at 0 when ``T < 1e-6``. ``hidden`` ``[B, H]`` must be the post-norm state
    ``lm_head`` consumed for the same rows. Float32 output. ``temperature`` / ``top_p``
    (optional ``[B]``) are per-request multipliers that multiply the policy's (the one
    request-knob rule, :meth:`DecodingPolicy.for_request`). ``compiled`` runs the step
    through ``torch.compile`` (:func:`autodeco_samplers.core.step.compiled_step`). Returns the core
    :class:`~autodeco_samplers.core.step.TorchStep` with ``logits`` set.
    """
    # sync=False: no host read on any device (the transform runs inside captured CUDA graphs)
    return torch_step_logits(
        hidden, logits, heads, policy, temperature=temperature, top_p=top_p, fill=fill, sync=False, compiled=compiled
    )
