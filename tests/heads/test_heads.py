"""Loading heads in every official form, NumPy and torch predictions, the torch twin."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from safetensors.torch import save_file

import autodeco_samplers as ad
from autodeco_samplers.conformance.strategies import heads_cases
from autodeco_samplers.heads import AutoDecoHeadsModule, read_head_checkpoint
from autodeco_samplers.heads.io import checkpoint as checkpoint_module
from autodeco_samplers.heads.io.merged import merge_checkpoint, split_checkpoint

from _official import OfficialHeads

H, V = 48, 97


def official_state(enhanced=True, seed=0, dtype=torch.float32):
    model = OfficialHeads(H, enhanced, seed)
    return model, {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}


def write_heads_only(folder, state, *, config_extra=None, fname="autodeco_heads.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "autodeco",
        "enable_temperature_head": True,
        "enable_top_p_head": True,
        "use_enhanced_features": True,
        "base_model_name_or_path": "some/base",
        "hidden_size": H,
    }
    config.update(config_extra or {})
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / fname))
    return folder


def inputs(seed=1, B=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, generator=g), torch.randn(B, V, generator=g) * 3


def test_official_key_layout_is_what_the_reference_structure_produces():
    _, state = official_state()
    assert sorted(state) == sorted(
        f"{h}.mlp.{i}.{p}" for h in ("temp_head", "top_p_head") for i in (0, 2) for p in ("weight", "bias")
    )
    assert tuple(state["top_p_head.mlp.0.weight"].shape) == (256, H + 5)


@pytest.mark.parametrize("fname", ["autodeco_heads.safetensors", "model.safetensors"])
@pytest.mark.parametrize("enhanced", [True, False])
def test_heads_only_folder_predicts_like_the_official_modules(tmp_path, fname, enhanced):
    model, state = official_state(enhanced)
    folder = write_heads_only(tmp_path / "heads", state, config_extra={"use_enhanced_features": enhanced}, fname=fname)
    heads = ad.load_heads(folder)
    assert heads.config.hidden_size == H and heads.config.use_enhanced_features is enhanced
    assert heads.config.temperature_width == 256 and heads.config.base_model_name_or_path == "some/base"
    h, logits = inputs()
    T_ref, P_ref = model.predict(h, logits)
    T, P = heads.predict(h.numpy(), logits.numpy())
    np.testing.assert_allclose(T, T_ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(P, P_ref.numpy(), rtol=1e-5, atol=1e-6)
    T64, P64 = ad.load_heads(folder, dtype=np.float64).predict(h.numpy().astype(np.float64), logits.numpy().astype(np.float64))
    np.testing.assert_allclose(T64, T_ref.numpy(), rtol=1e-5, atol=1e-6)
    assert T64.dtype == np.float64
    module = AutoDecoHeadsModule.from_pretrained(folder)
    T_t, P_t = module(h, logits)
    torch.testing.assert_close(T_t, T_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(P_t, P_ref, rtol=1e-5, atol=1e-6)


def test_bfloat16_checkpoint_is_widened_exactly(tmp_path):
    _, state = official_state(dtype=torch.bfloat16)
    folder = write_heads_only(tmp_path / "bf16", state)
    _, tensors = read_head_checkpoint(folder)
    for k, v in state.items():
        np.testing.assert_array_equal(tensors[k], v.float().numpy())


def test_single_safetensors_file_infers_everything_from_shapes(tmp_path):
    _, state = official_state(enhanced=False)
    save_file(state, str(tmp_path / "heads.safetensors"))
    heads = ad.load_heads(tmp_path / "heads.safetensors")
    assert heads.config.hidden_size == H and heads.config.use_enhanced_features is False
    assert not heads.needs_logits
    T, P = heads.predict(np.zeros((2, H), np.float32))
    assert T.shape == P.shape == (2,)


def test_merged_sharded_checkpoint_reads_only_head_tensors(tmp_path, monkeypatch):
    from autodeco_samplers.models.tiny_models import save_tiny_model

    base = save_tiny_model(tmp_path / "base", "llama", hidden_size=H, num_heads=4, num_kv_heads=2)
    model, state = official_state()
    heads_dir = write_heads_only(tmp_path / "heads", state)
    merged = merge_checkpoint(base, heads_dir, tmp_path / "merged", max_shard_bytes=64 * 1024)
    index = json.loads((merged / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and any(k.startswith("llm.") for k in index["weight_map"])
    opened, read = [], []
    real_header, real_tensor = checkpoint_module.read_header, checkpoint_module.read_tensor
    monkeypatch.setattr(checkpoint_module, "read_header", lambda p: opened.append(p.name) or real_header(p))
    monkeypatch.setattr(checkpoint_module, "read_tensor", lambda e: read.append(e.name) or real_tensor(e))
    heads = ad.load_heads(merged)
    head_shards = {index["weight_map"][k] for k in state}
    assert set(opened) == head_shards  # base-only shards are never opened
    assert sorted(read) == sorted(state)  # and only head tensors are read
    h, logits = inputs()
    np.testing.assert_allclose(heads.predict(h.numpy(), logits.numpy())[1], model.predict(h, logits)[1].numpy(), rtol=1e-5)
    config = json.loads((merged / "config.json").read_text())
    assert config["model_type"] == "autodeco" and config["base_model_type"] == "llama"
    base2, heads2 = split_checkpoint(merged, tmp_path / "split_base", tmp_path / "split_heads")
    assert json.loads((base2 / "config.json").read_text())["model_type"] == "llama"
    np.testing.assert_array_equal(ad.load_heads(heads2).tensors["temp_head.mlp.0.weight"], state["temp_head.mlp.0.weight"].numpy())


def test_head_keys_under_llm_prefix_are_found(tmp_path):
    _, state = official_state()
    save_file({f"llm.{k}": v for k, v in state.items()}, str(tmp_path / "x.safetensors"))
    assert ad.load_heads(tmp_path / "x.safetensors").config.hidden_size == H


@pytest.mark.parametrize("disabled", ["temperature", "top_p"])
def test_disabled_head_falls_back_to_one(tmp_path, disabled):
    model, state = official_state()
    flag = "enable_temperature_head" if disabled == "temperature" else "enable_top_p_head"
    folder = write_heads_only(tmp_path / "h", state, config_extra={flag: False})
    heads = ad.load_heads(folder)
    h, logits = inputs()
    T, P = heads.predict(h.numpy(), logits.numpy())
    if disabled == "temperature":
        np.testing.assert_array_equal(T, 1.0)
        # the top-p head reads the fallback T = 1
        want = model.top_p_head(h, torch.ones(len(h), 1), logits)[:, 0].detach().numpy()
        np.testing.assert_allclose(P, want, rtol=1e-5)
    else:
        np.testing.assert_array_equal(P, 1.0)
        np.testing.assert_allclose(T, model.predict(h, logits)[0].numpy(), rtol=1e-5)


def test_checkpoint_with_only_a_top_p_head(tmp_path):
    _, state = official_state()
    save_file({k: v for k, v in state.items() if k.startswith("top_p_head")}, str(tmp_path / "p.safetensors"))
    heads = ad.load_heads(tmp_path / "p.safetensors")
    assert not heads.config.enable_temperature_head and heads.config.hidden_size == H


def test_save_pretrained_writes_what_the_reference_loader_reads(tmp_path):
    module = AutoDecoHeadsModule.create(H, base_model_name_or_path="base/model", seed=3)
    out = module.save_pretrained(tmp_path / "ours")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "autodeco" and config["hidden_size"] == H
    assert config["enable_temperature_head"] and config["enable_top_p_head"] and config["use_enhanced_features"]
    assert config["base_model_name_or_path"] == "base/model"
    # the reference loader: every *.safetensors in the folder, keys starting with the head names
    from safetensors.torch import load_file

    official = OfficialHeads(config["hidden_size"], config["use_enhanced_features"])
    state = {}
    for f in out.glob("*.safetensors"):
        state.update({k: v for k, v in load_file(f).items() if k.startswith(("temp_head", "top_p_head"))})
    official.load_state_dict(state, strict=True)
    h, logits = inputs()
    T_ref, P_ref = official.predict(h, logits)
    T, P = module(h, logits)
    torch.testing.assert_close(T, T_ref)
    torch.testing.assert_close(P, P_ref)


@settings(max_examples=40)
@given(heads_cases())
def test_numpy_and_torch_heads_agree(case):
    heads = case.heads()
    module = AutoDecoHeadsModule.from_numpy(heads)
    T, P = heads.predict(case.hidden, case.logits)
    T_t, P_t = module(torch.from_numpy(case.hidden), torch.from_numpy(case.logits))
    np.testing.assert_allclose(T, T_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(P, P_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert ((T >= 0) & (T <= 2)).all() and ((P >= 0) & (P <= 1)).all()


def test_sampler_applies_policy_and_reports_both(tmp_path):
    _, state = official_state()
    heads = ad.load_heads(write_heads_only(tmp_path / "h", state))
    h, logits = inputs(B=4)
    policy = ad.DecodingPolicy(temperature=0.5, top_p=0.5)
    out = ad.numpy_step_sample(h.numpy(), logits.numpy(), heads, policy, np.random.default_rng(0), exact=True)
    np.testing.assert_allclose(out.T, out.T_pred * 0.5, rtol=1e-6)
    np.testing.assert_allclose(out.P, np.clip(out.P_pred * 0.5, 0, 1), rtol=1e-6)
    probs = ad.numpy_step_distribution(h.numpy(), logits.numpy(), heads, policy, exact=True).probs
    assert (probs[np.arange(4), out.token_ids] > 0).all()
    greedy = ad.numpy_step_sample(h.numpy(), logits.numpy(), heads, ad.DecodingPolicy(temperature=0.0),
                                  np.random.default_rng(0), exact=True)
    np.testing.assert_array_equal(greedy.token_ids, logits.numpy().argmax(axis=1))
