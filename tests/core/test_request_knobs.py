"""The one request-knob rule on every engine (docs/design.md section 3): a request's
``temperature`` / ``top_p`` multiply the deployment policy's multipliers.

With a *non-default* deployment policy the same request must give the same used T and P on
transformers (``generate(temperature=..., top_p=...)`` on a model attached with the policy),
llama.cpp (``AutoDecoLlama(policy=...).stream(temperature=..., top_p=...)``) and the rule
itself (``policy.for_request``); vLLM's per-request ``vllm_xargs`` knobs are checked against the
same rule in tests/adapters/vllm/test_openai_server.py. Before the rule was unified, vLLM's
request knobs *replaced* the policy's multipliers while transformers multiplied them.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from _llama_util import assets, hf_forward, llama  # noqa: E402

from autodeco_samplers import load_heads  # noqa: E402
from autodeco_samplers.core.policy import DecodingPolicy  # noqa: E402

DEPLOYMENT = DecodingPolicy(temperature=0.8, top_p=0.9, max_temperature=1.3)
REQUEST = {"temperature": 0.5, "top_p": 0.7}
PROMPT_IDS = [1, 5, 9, 14, 3]
STEPS = 4


def _rule(hidden, logits):
    """T and P the rule gives at each position: heads on the transformers forward, then the
    deployment policy with the request's multipliers."""
    heads = load_heads(assets()["heads_dir"])
    T_pred, P_pred = heads.predict(hidden.astype(np.float32), logits.astype(np.float32))
    return DEPLOYMENT.for_request(**REQUEST).apply(T_pred.astype(np.float64), P_pred.astype(np.float64))


def test_llama_cpp_and_transformers_apply_request_knobs_the_same_way():
    from transformers import AutoModelForCausalLM

    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama
    from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach

    # llama.cpp: the deployment policy at construction, the knobs per request
    gen = AutoDecoLlama(llama(), load_heads(assets()["heads_gguf"]), policy=DEPLOYMENT, seed=0)
    result = gen.generate(PROMPT_IDS, max_new_tokens=STEPS, seed=3, stop_at_eos=False, **REQUEST)
    path = result.token_ids
    assert len(path) == STEPS
    llama_T = np.array([s.T for s in result.steps])
    llama_P = np.array([s.P for s in result.steps])

    # transformers: the same policy at attach time, the knobs as generate()'s own arguments,
    # forced along llama.cpp's tokens one step at a time (only the first step is recorded)
    model = AutoModelForCausalLM.from_pretrained(assets()["model_dir"]).eval()
    attach(model, assets()["heads_dir"], policy=DEPLOYMENT)
    hf_T, hf_P = [], []
    for s in range(STEPS):
        ids = torch.tensor([PROMPT_IDS + path[:s]])
        proc = AutoDecoLogitsProcessor(model)
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=1,
                           pad_token_id=0, logits_processor=[proc], **REQUEST)
        step = proc.trace.steps(0)[0]
        hf_T.append(step.T)
        hf_P.append(step.P)

    hidden, logits = hf_forward(PROMPT_IDS + path)
    positions = slice(len(PROMPT_IDS) - 1, len(PROMPT_IDS) - 1 + STEPS)
    T_rule, P_rule = _rule(hidden[positions], logits[positions])
    # precondition: a rule where the request *replaces* the policy's multipliers gives other numbers
    from dataclasses import replace

    T_replaced, _ = replace(DEPLOYMENT, **REQUEST).apply(*load_heads(assets()["heads_dir"]).predict(
        hidden[positions].astype(np.float32), logits[positions].astype(np.float32)))
    assert np.abs(T_replaced - T_rule).min() > 1e-3
    np.testing.assert_allclose(hf_T, T_rule, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hf_P, P_rule, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(llama_T, T_rule, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(llama_P, P_rule, rtol=1e-3, atol=1e-4)


def test_request_knobs_compose_with_the_policy_as_a_product():
    policy = DecodingPolicy(temperature=0.8, top_p=0.9)
    request = policy.for_request(**REQUEST)
    assert request.temperature == pytest.approx(0.4) and request.top_p == pytest.approx(0.63)
    # per-row request multipliers (batched engines) give the same numbers
    T, P = policy.apply(np.array([1.0, 1.0]), np.array([0.5, 1.0]), np.array([0.5, 1.0]), np.array([0.7, 1.0]))
    np.testing.assert_allclose(T, [0.4, 0.8])
    np.testing.assert_allclose(P, [0.5 * 0.63, 0.9])
