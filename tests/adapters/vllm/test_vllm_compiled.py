"""The compiled step in vLLM (``prepare-vllm --compiled-step``): a real engine on a folder whose
``autodeco`` block says ``compiled_step: true`` gives HF's greedy tokens and the canonical
logprobs at every sampled step, as the eager step does (test_llm_engine.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _engine import GREEDY_REQUEST, PROMPTS, SAMPLED_REQUEST, run_engine

from _reference import hf_greedy
from test_llm_engine import _check_logprobs, _tokenize

from autodeco_samplers.heads.io.served import compiled_step_of, prepare_served_folder


@pytest.fixture(scope="module")
def compiled_folder(folders, tmp_path_factory):
    out = prepare_served_folder(folders["served"], tmp_path_factory.mktemp("compiled") / "served", compiled_step=True)
    assert compiled_step_of(json.loads((Path(out) / "config.json").read_text())["autodeco"]) is True
    return out


def test_step_compiled_equals_eager(heads, policy):
    from autodeco_samplers.core.step import torch_step_logits
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    module = AutoDecoHeadsModule.from_numpy(heads).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, heads.hidden_size, generator=g)
    logits = torch.randn(3, 4000, generator=g) * torch.tensor([8.0, 1.0, 3.0])[:, None]
    with torch.no_grad():
        got = torch_step_logits(hidden, logits, module, policy, compiled=True)
        want = torch_step_logits(hidden, logits, module, policy)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.T, want.T)


def test_engine_with_the_compiled_step_is_canonical(compiled_folder, folders, hf_model, heads, policy, tmp_path):
    out, log = run_engine(tmp_path / "engine", compiled_folder, [GREEDY_REQUEST, SAMPLED_REQUEST])
    assert "error" not in out, out.get("error")
    greedy, sampled = out["results"]
    for prompt_ids, row in zip(_tokenize(folders, PROMPTS), greedy):
        assert row["token_ids"] == hf_greedy(hf_model, prompt_ids, len(row["token_ids"]))
    _check_logprobs(sampled, hf_model, heads, [policy] * len(PROMPTS))
