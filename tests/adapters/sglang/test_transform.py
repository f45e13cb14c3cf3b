"""The in-model transform is CUDA-graph friendly: one static graph, no host sync.

``torch.compile(..., fullgraph=True, dynamic=False)`` refuses any graph break: a ``.item()``,
``.tolist()``, data-dependent Python branch or data-dependent output shape (``nonzero``,
boolean indexing) would raise here. That is the same set of operations a CUDA-graph capture
cannot replay, so this CPU test guards the property the GPU path relies on.
"""

from __future__ import annotations

import pytest
import torch

from autodeco_samplers.adapters.sglang.transform import autodeco_logits
from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS
from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
from autodeco_samplers.core.policy import DecodingPolicy

from _helpers import H, V, numpy_heads


@pytest.mark.parametrize(
    "policy",
    [DecodingPolicy(), DecodingPolicy(temperature=0.0), DecodingPolicy(temperature=0.7, top_p=0.9, min_temperature=0.2, max_temperature=1.5, fixed_top_p=0.8)],
    ids=["default", "greedy", "all-knobs"],
)
@pytest.mark.parametrize("enhanced", [True, False])
def test_transform_compiles_to_one_graph(policy, enhanced):
    heads = AutoDecoHeadsModule.from_numpy(numpy_heads(seed=1, use_enhanced_features=enhanced)).requires_grad_(False)

    def step(logits, hidden):
        out = autodeco_logits(hidden, logits, heads, policy)
        return out.logits, out.T_pred, out.P_pred, out.T, out.P

    compiled = torch.compile(step, fullgraph=True, backend="eager", dynamic=False)
    g = torch.Generator().manual_seed(0)
    logits, hidden = torch.randn(4, V, generator=g) * 3, torch.randn(4, H, generator=g)
    for got, want in zip(compiled(logits, hidden), step(logits, hidden)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    z = step(logits, hidden)[0]
    assert torch.isfinite(z).all() and (z == OUTSIDE_NUCLEUS).any()


def test_bfloat16_logits_and_hidden_are_upcast():
    heads = AutoDecoHeadsModule.from_numpy(numpy_heads(seed=2)).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    logits, hidden = torch.randn(3, V, generator=g) * 3, torch.randn(3, H, generator=g)
    low = autodeco_logits(hidden.bfloat16(), logits.bfloat16(), heads)
    assert low.logits.dtype == torch.float32 and low.T.dtype == torch.float32
    ref = autodeco_logits(hidden.bfloat16().float(), logits.bfloat16().float(), heads)
    torch.testing.assert_close(low.logits, ref.logits, rtol=0, atol=0)
