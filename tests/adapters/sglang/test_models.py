"""SGLang's real model classes through the adapter: construction, weight routing, errors.

Models are built from tiny seeded HF checkpoints (``autodeco_samplers.models.tiny_models``) and
loaded with SGLang's own safetensors iterator and index filter, as its loader does.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autodeco_samplers.conformance.checker import check_distribution
from autodeco_samplers.conformance.runner import reference_heads_float64
from autodeco_samplers.core.errors import CheckpointError, ShapeError
from autodeco_samplers.heads import load_heads
from autodeco_samplers.heads.io.merged import merge_checkpoint
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

from _helpers import decode_metadata
from conftest import native_rotary

ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
TINY = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=300)


def sglang_weights(folder: Path):
    from sglang.srt.model_loader.weight_utils import filter_duplicate_safetensors_files, safetensors_weights_iterator

    files = sorted(str(p) for p in folder.glob("*.safetensors"))
    files = filter_duplicate_safetensors_files(files, str(folder), "model.safetensors.index.json")
    return safetensors_weights_iterator(files)


def build(arch: str, folder: Path):
    """Our registered class for ``arch`` built from ``folder``'s config, on CPU."""
    from transformers import AutoConfig

    module = importlib.import_module(f"autodeco_samplers.adapters.sglang.models.{arch}")
    with native_rotary():
        return module.EntryClass[0](AutoConfig.from_pretrained(folder))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for i, arch in enumerate(ARCHS):
        base = save_tiny_model(root / f"{arch}-base", arch, seed=10 + i, **TINY)
        heads = save_tiny_heads(root / f"{arch}-heads", TINY["hidden_size"], seed=20 + i)
        merged = merge_checkpoint(base, heads, root / f"{arch}-merged")
        out[arch] = (base, heads, merged)
    return root, out


def _hf_tensors(base: Path):
    from safetensors.torch import load_file

    return load_file(str(base / "model.safetensors"))


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("source", ["merged", "base+heads"])
def test_prepared_folder_loads_heads_and_base(checkpoints, tmp_path, arch, source):
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint
    from autodeco_samplers.adapters.sglang.processor import AutoDecoSGLangProcessor

    _, ckpts = checkpoints
    base, heads_dir, merged = ckpts[arch]
    if source == "merged":
        out = prepare_sglang_checkpoint(merged, tmp_path / "served")
    else:
        out = prepare_sglang_checkpoint(base, tmp_path / "served", heads=heads_dir)
    model = build(arch, out)
    assert type(model).__name__ == ARCHS[arch]
    assert isinstance(model.logits_processor, AutoDecoSGLangProcessor)
    model.load_weights(sglang_weights(out))

    heads = load_heads(heads_dir)
    for key, value in heads.tensors.items():
        np.testing.assert_array_equal(dict(model.autodeco_heads.named_parameters())[key].detach().numpy(), value)
    hf = _hf_tensors(base)
    torch.testing.assert_close(model.model.embed_tokens.weight[: TINY["vocab_size"]], hf["model.embed_tokens.weight"])
    W = hf["lm_head.weight"]
    torch.testing.assert_close(model.lm_head.weight[: TINY["vocab_size"]], W)
    qkv = torch.cat([hf[f"model.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"])
    torch.testing.assert_close(model.model.layers[1].self_attn.qkv_proj.weight, qkv)

    # the model's own processor + lm_head on post-norm rows == reference from the HF weights
    hidden = torch.randn(4, TINY["hidden_size"], generator=torch.Generator().manual_seed(1)) * 3
    result = model.logits_processor(torch.zeros(4, dtype=torch.long), hidden, model.lm_head, decode_metadata())
    logits = hidden.double().numpy() @ W.double().numpy().T
    ref = reference_heads_float64(hidden.numpy(), logits, heads, DecodingPolicy())
    T, P = ref.T, ref.P
    step = model.logits_processor.last_step
    np.testing.assert_allclose(step.T.numpy(), T, atol=1e-4)
    np.testing.assert_allclose(step.P.numpy(), P, atol=1e-4)
    verdict = check_distribution(logits, step.T.numpy(), step.P.numpy(), torch.softmax(result.next_token_logits, -1).numpy())
    assert verdict.ok, verdict.describe("sglang-model")


def test_missing_head_tensor_fails_loudly(checkpoints, tmp_path):
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint

    _, ckpts = checkpoints
    out = prepare_sglang_checkpoint(ckpts["llama"][2], tmp_path / "served")
    model = build("llama", out)
    weights = ((n, t) for n, t in sglang_weights(out) if n != "top_p_head.mlp.2.bias")
    with pytest.raises(CheckpointError, match=r"missing head tensor\(s\) \['top_p_head.mlp.2.bias'\]"):
        model.load_weights(weights)


def test_head_tensor_of_wrong_shape_fails(checkpoints, tmp_path):
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint

    _, ckpts = checkpoints
    out = prepare_sglang_checkpoint(ckpts["qwen3"][2], tmp_path / "served")
    model = build("qwen3", out)

    def weights():
        for name, tensor in sglang_weights(out):
            yield name, (tensor[:, :-1] if name == "temp_head.mlp.0.weight" else tensor)

    with pytest.raises(ShapeError, match="temp_head.mlp.0.weight"):
        model.load_weights(weights())


def test_llm_prefixed_heads_are_routed_too(checkpoints, tmp_path):
    """Some merged exports keep the heads under ``llm.`` as well; both spellings load."""
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint

    _, ckpts = checkpoints
    out = prepare_sglang_checkpoint(ckpts["qwen2"][2], tmp_path / "served")
    model = build("qwen2", out)
    renamed = (("llm." + n if n.startswith(("temp_head", "top_p_head")) else n, t) for n, t in sglang_weights(out))
    model.load_weights(renamed)
    heads = load_heads(ckpts["qwen2"][1])
    got = dict(model.autodeco_heads.named_parameters())
    for key, value in heads.tensors.items():
        np.testing.assert_array_equal(got[key].detach().numpy(), value)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_without_autodeco_block_the_class_is_stock(checkpoints, arch):
    from sglang.srt.layers.logits_processor import LogitsProcessor

    _, ckpts = checkpoints
    base = ckpts[arch][0]
    assert "autodeco" not in json.loads((base / "config.json").read_text())
    model = build(arch, base)
    assert type(model.logits_processor) is LogitsProcessor
    assert model.autodeco_heads is None
    model.load_weights(sglang_weights(base))
    torch.testing.assert_close(model.lm_head.weight[: TINY["vocab_size"]], _hf_tensors(base)["lm_head.weight"])


def _save_hf_moe(folder: Path, arch: str) -> Path:
    from transformers import AutoModelForCausalLM, GptOssConfig, Qwen3MoeConfig

    common = dict(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64, head_dim=16, tie_word_embeddings=False)
    if arch == "qwen3_moe":
        config = Qwen3MoeConfig(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, **common)
    else:
        config = GptOssConfig(num_local_experts=4, num_experts_per_tok=2, **common)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch,name", [("qwen3_moe", "Qwen3MoeForCausalLM"), ("gpt_oss", "GptOssForCausalLM")])
def test_moe_models_route_weights(tmp_path, arch, name):
    """Qwen3-MoE and GPT-OSS follow the same pattern: official merged layout (``llm.``
    prefix, expert weights through SGLang's fused-MoE loaders) plus heads."""
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint

    base = _save_hf_moe(tmp_path / "base", arch)
    heads_dir = save_tiny_heads(tmp_path / "heads", 32, seed=5)
    merged = merge_checkpoint(base, heads_dir, tmp_path / "merged")
    out = prepare_sglang_checkpoint(merged, tmp_path / "served")
    assert json.loads((out / "config.json").read_text())["architectures"] == [name]
    model = build(arch, out)
    assert type(model).__name__ == name
    model.load_weights(sglang_weights(out))
    hf = _hf_tensors(base) if (base / "model.safetensors").exists() else None
    assert hf is not None
    torch.testing.assert_close(model.lm_head.weight[:128], hf["lm_head.weight"])
    got = dict(model.autodeco_heads.named_parameters())
    for key, value in load_heads(heads_dir).tensors.items():
        np.testing.assert_array_equal(got[key].detach().numpy(), value)
    fresh = build(arch, out)
    with pytest.raises(CheckpointError, match="temp_head.mlp.0.weight"):
        fresh.load_weights((n, t) for n, t in sglang_weights(out) if not n.startswith("temp_head"))


def test_compiled_step_flag_reaches_the_processor_and_stays_canonical(checkpoints, tmp_path):
    """``prepare_served_folder(compiled_step=True)`` (``prepare-sglang --compiled-step``): the
    model's processor runs the compiled step, canonical and equal to the eager step."""
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint

    _, ckpts = checkpoints
    base, heads_dir, merged = ckpts["llama"]
    eager = build("llama", prepare_sglang_checkpoint(merged, tmp_path / "eager"))
    out = prepare_sglang_checkpoint(merged, tmp_path / "compiled", compiled_step=True)
    model = build("llama", out)
    assert model.logits_processor.compiled and not eager.logits_processor.compiled
    for m in (model, eager):
        m.load_weights(sglang_weights(out))
    hidden = torch.randn(4, TINY["hidden_size"], generator=torch.Generator().manual_seed(2)) * 3
    got = model.logits_processor(torch.zeros(4, dtype=torch.long), hidden, model.lm_head, decode_metadata())
    want = eager.logits_processor(torch.zeros(4, dtype=torch.long), hidden, eager.lm_head, decode_metadata())
    torch.testing.assert_close(got.next_token_logits, want.next_token_logits, rtol=1e-5, atol=1e-5)
    W = _hf_tensors(base)["lm_head.weight"]
    logits = hidden.double().numpy() @ W.double().numpy().T
    step = model.logits_processor.last_step
    verdict = check_distribution(logits, step.T.numpy(), step.P.numpy(), torch.softmax(got.next_token_logits, -1).numpy())
    assert verdict.ok, verdict.describe("sglang-compiled")
