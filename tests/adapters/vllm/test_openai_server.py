"""``vllm serve FOLDER`` (our package installed, nothing else set) and the ``openai`` client.

One server process serves every test here. Its folder is prepared with a server-wide policy
``temperature=2.5`` (T_used = 2.5 T_pred), which vLLM itself would refuse as a request
temperature (its bound is [0, 2]): the logprobs check shows AutoDeco's T is never clipped.
"""

from __future__ import annotations


import numpy as np
import pytest

from _engine import serve
from _reference import canonical_steps, hf_greedy

SERVER_POLICY_TEMPERATURE = 2.5
PROMPT = "The quick brown fox"


@pytest.fixture(scope="session")
def hot_folder(folders, tmp_path_factory):
    from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint
    from autodeco_samplers.core.policy import DecodingPolicy

    out = tmp_path_factory.mktemp("hot") / "served"
    return prepare_vllm_checkpoint(folders["base"], out, heads=folders["heads"],
                                   policy=DecodingPolicy(temperature=SERVER_POLICY_TEMPERATURE))


@pytest.fixture(scope="session")
def server(hot_folder, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    yield from serve(hot_folder, "tiny", 256, log_path, ("--max-logprobs", "-1"))


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key="none")


@pytest.fixture(scope="session")
def tokenizer(hot_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hot_folder))


def test_completions_greedy_equals_hf(client, tokenizer, hf_model):
    ids = tokenizer(PROMPT)["input_ids"]
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0,
                                  extra_body={"return_token_ids": True, "ignore_eos": True})
    assert r.choices[0].token_ids == hf_greedy(hf_model, ids, 8)


def test_completions_streaming_matches(client):
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    parts = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, stream=True,
                                      extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in parts) == full


def test_chat_completions_greedy_and_streaming(client, tokenizer, hf_model):
    messages = [{"role": "user", "content": "alpha beta"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0,
                                       extra_body={"return_token_ids": True, "ignore_eos": True})
    assert r.choices[0].token_ids == hf_greedy(hf_model, list(ids), 6)
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0,
                                            stream=True, extra_body={"ignore_eos": True})
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert text == r.choices[0].message.content


def test_sampled_logprobs_are_canonical_with_T_above_2(client, tokenizer, hf_model, heads):
    """Default request (temperature 1, top_p 1): each returned logprob is the canonical
    log-probability at T_used = 2.5 T_pred (> 2 on every step), P_used = P_pred."""
    from autodeco_samplers.core.policy import DecodingPolicy

    policy = DecodingPolicy(temperature=SERVER_POLICY_TEMPERATURE)
    ids = tokenizer(PROMPT)["input_ids"]
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, logprobs=1, seed=3,
                                  extra_body={"return_token_ids": True, "ignore_eos": True})
    toks = r.choices[0].token_ids
    got = r.choices[0].logprobs.token_logprobs
    steps = canonical_steps(hf_model, heads, policy, ids, toks)
    Ts = [steps[s][1] for s in range(len(toks))]
    assert max(Ts) > 2.0, Ts  # steps above vLLM's own temperature bound are checked too
    want = [np.log(steps[s][0][t]) for s, t in enumerate(toks)]
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_request_multipliers_multiply_the_server_policy_like_transformers(client, tokenizer, hf_model, heads, folders):
    """The one request-knob rule across engines: under the server-wide policy temperature 2.5,
    a request with ``vllm_xargs`` ``autodeco_temperature`` 0.5 and ``autodeco_top_p`` 0.8 samples
    at T_used = 2.5 * 0.5 * T_pred and P_used = clamp(0.8 * P_pred); transformers with the same
    policy at attach time and ``generate(temperature=0.5, top_p=0.8)`` uses the same T and P
    along the same tokens, and vLLM's returned logprobs are the canonical ones at those values.
    (A rule where the request *replaced* the server's multiplier would give T = 0.5 T_pred.)"""
    import torch
    from transformers import AutoModelForCausalLM

    from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach
    from autodeco_samplers.core.policy import DecodingPolicy

    server = DecodingPolicy(temperature=SERVER_POLICY_TEMPERATURE)
    request = server.for_request(0.5, 0.8)
    ids = tokenizer(PROMPT)["input_ids"]
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, logprobs=1, seed=11,
                                  extra_body={"return_token_ids": True, "ignore_eos": True,
                                              "vllm_xargs": {"autodeco_temperature": 0.5, "autodeco_top_p": 0.8}})
    toks = r.choices[0].token_ids
    steps = canonical_steps(hf_model, heads, request, ids, toks)
    want = [np.log(steps[s][0][t]) for s, t in enumerate(toks)]
    np.testing.assert_allclose(r.choices[0].logprobs.token_logprobs, want, atol=2e-4)

    model = AutoModelForCausalLM.from_pretrained(folders["base"], torch_dtype=torch.float32).eval()
    attach(model, folders["heads"], policy=server)
    for s in range(len(toks)):
        seq = torch.tensor([list(ids) + list(toks[:s])])
        proc = AutoDecoLogitsProcessor(model)
        with torch.no_grad():
            model.generate(input_ids=seq, attention_mask=torch.ones_like(seq), do_sample=True, max_new_tokens=1,
                           pad_token_id=0, temperature=0.5, top_p=0.8, logits_processor=[proc])
        step = proc.trace.steps(0)[0]
        assert step.T == pytest.approx(steps[s][1], rel=1e-4), s
        assert step.P == pytest.approx(steps[s][2], rel=1e-4, abs=1e-6), s
    replaced = DecodingPolicy(temperature=0.5, top_p=0.8)  # the rule this test rules out
    assert abs(canonical_steps(hf_model, heads, replaced, ids, toks)[0][1] - steps[0][1]) > 1e-3
