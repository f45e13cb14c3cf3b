"""SGLang's in-model AutoDeco transform as a conformance-suite engine (kernel level).

The kernel is the core step :func:`~autodeco_samplers.core.step.torch_step_logits` called as
the SGLang logits processor calls it (``sync=False``: no host read, as inside a captured CUDA
graph; the default ``fill``); the distribution is the softmax SGLang's stock sampler takes of
its output at temperature 1, top-p 1. It needs only
torch, so it runs in any environment; the real SGLang ``LogitsProcessor`` and ``Sampler`` are
exercised in ``tests/adapters/sglang`` (their own environment, ``scripts/setup_sglang.sh``).
"""

from __future__ import annotations

import numpy as np

from autodeco_samplers.conformance.engines import ConformanceEngine
from autodeco_samplers.core.interfaces import NumpyStep


class SGLangTransformEngine(ConformanceEngine):
    name = "sglang-transform"
    requires = ("torch",)
    missing_reason = "torch is not installed"

    def kernel(self, hidden, logits, heads, policy):
        import torch

        from autodeco_samplers.core.step import torch_step_logits
        from autodeco_samplers.heads import AutoDecoHeadsModule

        module = AutoDecoHeadsModule.from_numpy(heads)
        with torch.no_grad():
            step = torch_step_logits(torch.from_numpy(np.asarray(hidden, np.float32)),
                                     torch.from_numpy(np.asarray(logits, np.float32)), module, policy, sync=False)
            probs = torch.softmax(step.logits, dim=-1)
        return NumpyStep(step.T_pred.numpy(), step.P_pred.numpy(), step.T.numpy(), step.P.numpy(), probs=probs.numpy())
