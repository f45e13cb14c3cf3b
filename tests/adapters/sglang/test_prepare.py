"""``prepare_sglang_checkpoint`` and ``autodeco prepare-sglang``: the folder SGLang serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autodeco_samplers.heads.io.served import compiled_step_of, parse_autodeco_block
from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint
from autodeco_samplers.core.errors import CheckpointError
from autodeco_samplers.heads.io.merged import merge_checkpoint
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=300)


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    base = save_tiny_model(root / "base", "qwen2", seed=3, **TINY)
    gen = json.loads((base / "generation_config.json").read_text())
    gen.update(temperature=0.6, top_p=0.95, top_k=20, do_sample=True)
    (base / "generation_config.json").write_text(json.dumps(gen))
    heads = save_tiny_heads(root / "heads", TINY["hidden_size"], seed=4)
    return base, heads, merge_checkpoint(base, heads, root / "merged")


def test_merged_checkpoint_becomes_base_config_plus_block(merged, tmp_path):
    base, _, src = merged
    assert json.loads((src / "config.json").read_text())["model_type"] == "autodeco"
    out = prepare_sglang_checkpoint(src, tmp_path / "out", policy=DecodingPolicy(top_p=0.9))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert "enable_top_p_head" not in cfg and "base_model_type" not in cfg
    heads_cfg, policy = parse_autodeco_block(cfg["autodeco"], model_hidden_size=cfg["hidden_size"])
    assert heads_cfg.temperature_width == heads_cfg.top_p_width == 32
    assert policy == DecodingPolicy(top_p=0.9)
    # shards are symlinks to the merged files; the index keeps filtering which ones load
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert shards == sorted(p.name for p in src.glob("*.safetensors"))
    assert all((out / s).is_symlink() for s in shards)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert any(k.startswith("llm.") for k in index["weight_map"]) and "temp_head.mlp.0.weight" in index["weight_map"]
    gen = json.loads((out / "generation_config.json").read_text())
    assert not {"temperature", "top_p", "top_k", "do_sample"} & set(gen)
    assert cfg["autodeco"]["stripped_generation_config"] == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "do_sample": True}
    assert (out / "tokenizer.json").is_file()
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(out)  # what SGLang's config parser does
    assert type(hf).__name__ == "Qwen2Config" and hf.autodeco["hidden_size"] == 32


def test_copy_mode_and_reprepare(merged, tmp_path):
    _, _, src = merged
    first = prepare_sglang_checkpoint(src, tmp_path / "a", link=False)
    assert not any(p.is_symlink() for p in first.iterdir())
    again = prepare_sglang_checkpoint(first, tmp_path / "b", policy=DecodingPolicy(temperature=0.5))
    cfg = json.loads((again / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["autodeco"]["policy"]["temperature"] == 0.5


def test_errors_are_clear(merged, tmp_path):
    base, heads, src = merged
    with pytest.raises(CheckpointError, match="no AutoDeco head tensors"):
        prepare_sglang_checkpoint(base, tmp_path / "x")
    with pytest.raises(CheckpointError, match="must differ"):
        prepare_sglang_checkpoint(src, src)
    other = save_tiny_model(tmp_path / "wide", "llama", seed=1, **dict(TINY, hidden_size=48))
    with pytest.raises(CheckpointError, match="hidden-size mismatch"):
        prepare_sglang_checkpoint(other, tmp_path / "y", heads=heads)
    with pytest.raises(CheckpointError, match="unknown policy field"):
        parse_autodeco_block({"hidden_size": 32, "temperature_width": 4, "top_p_width": 4, "policy": {"temp": 1}})
    with pytest.raises(CheckpointError, match="compiled_step must be true or false"):
        compiled_step_of({"compiled_step": "yes"})


def test_cli(merged, tmp_path):
    base, heads, _ = merged
    (base / "tokenizer.model").write_bytes(b"sentencepiece model stand-in")
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "autodeco_samplers", "prepare-sglang", str(base), "--out", str(out), "--heads", str(heads), "--top-p", "0.8"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models" in proc.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["autodeco"]["policy"]["top_p"] == 0.8 and cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert compiled_step_of(cfg["autodeco"]) is False  # off unless --compiled-step
    assert (out / "tokenizer.model").read_bytes() == b"sentencepiece model stand-in"  # every tokenizer file travels
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    on = subprocess.run(
        [sys.executable, "-m", "autodeco_samplers", "prepare-sglang", str(base), "--out", str(tmp_path / "on"),
         "--heads", str(heads), "--compiled-step"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert on.returncode == 0, on.stderr
    assert compiled_step_of(json.loads((tmp_path / "on" / "config.json").read_text())["autodeco"]) is True
    bad = subprocess.run(
        [sys.executable, "-m", "autodeco_samplers", "prepare-sglang", str(base), "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 1 and "no AutoDeco head tensors" in bad.stderr
