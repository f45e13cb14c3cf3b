"""Every other architecture of the plugin on a real engine (Qwen3, Qwen2, Mistral, Qwen3-MoE,
GPT-OSS; Llama is the other modules' model): greedy equals HF, logprobs are canonical: the
kept set is the canonical nucleus (any extra token, however small its probability, fails) and
the log-probabilities inside it match."""

from __future__ import annotations

import numpy as np
import pytest

from _engine import GREEDY_REQUEST, PROMPTS, SAMPLED_REQUEST, STEPS, run_engine
from _reference import canonical_steps, hf_greedy, load_hf


@pytest.mark.parametrize("arch", ["qwen3", "qwen2", "mistral", "qwen3_moe", "gpt_oss"])
def test_architecture_greedy_and_logprobs(arch, tmp_path_factory):
    from _models import build_prepared

    from autodeco_samplers import load_heads
    from autodeco_samplers.core.policy import DecodingPolicy

    root = tmp_path_factory.mktemp(arch)
    f = build_prepared(root, arch, seed=5)
    out, log = run_engine(root / "run", f["served"], [GREEDY_REQUEST, SAMPLED_REQUEST])
    assert "error" not in out, out.get("error", "")[-3000:]
    import torch

    from autodeco_samplers.conformance.checker import check_distribution

    model, heads = load_hf(f["base"]), load_heads(f["heads"])
    greedy, sampled = out["results"]
    for row in greedy:
        assert row["token_ids"] == hf_greedy(model, row["prompt_token_ids"], STEPS)
    for row in sampled:
        prompt, toks = row["prompt_token_ids"], row["token_ids"]
        steps = canonical_steps(model, heads, DecodingPolicy(), prompt, toks)
        with torch.no_grad():
            logits = model(torch.tensor([list(prompt) + list(toks)])).logits[0].double().numpy()
        for s, tok in enumerate(toks):
            probs, T, P = steps[s]
            assert probs[tok] > 0
            got = np.array([row["logprobs"][s].get(str(i), -np.inf) for i in range(probs.size)])
            verdict = check_distribution(logits[len(prompt) + s - 1][None], np.array([T]), np.array([P]),
                                         np.exp(got)[None])
            assert verdict.ok, verdict.describe(f"vllm {arch} step {s}")
            inside = probs > 1e-12
            np.testing.assert_allclose(got[inside], np.log(probs[inside]), atol=2e-4, rtol=0)
    assert len(sampled) == len(PROMPTS)
