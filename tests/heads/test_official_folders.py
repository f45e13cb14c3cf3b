"""Folders as the official AutoDeco tools write them work in every adapter.

The folders are built by ``tests/_official.py``'s re-implementation of what the official
``construct``/training save, ``merge`` and ``split`` write (keys, config fields, index):

* ``heads``: ``config.json`` (base fields + AutoDeco fields, ``model_type: autodeco``) and
  ``model.safetensors`` with only the head tensors;
* ``merged``: the sharded base with every key under ``llm.``, the heads appended to the last
  shard, the index renamed and extended (its ``total_size`` stale), the heads' config;
* ``split``: the heads in ``model.safetensors`` plus every JSON of the merged folder, so a
  *stale* ``model.safetensors.index.json`` naming shards that are not there;
* the same merged folder in bfloat16 (base and heads), as bf16 releases are.

The reference predictions are the official head structure (``OfficialHeads``, a real
``torch.nn.Sequential``) on hidden states and logits of a teacher-forced transformers forward.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from _official import OfficialHeads, official_heads_folder, official_merge, official_split

import autodeco_samplers as ad
from autodeco_samplers.core.errors import CheckpointError

H = 64
LOGGER = "autodeco_samplers.heads.io.checkpoint"
PROMPT = "The quick brown fox"


def _write_base(folder, model, tok):
    model.save_pretrained(folder, max_shard_size="100KB")  # sharded, with an index
    tok.save_pretrained(folder)
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


def assert_same_state_dict(model, ref) -> None:
    """The same tensor names and every tensor bit-identical (a missing or extra name fails)."""
    got, want = model.state_dict(), ref.state_dict()
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))
    for name, q in want.items():
        torch.testing.assert_close(got[name], q, rtol=0, atol=0, msg=name)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    from autodeco_samplers.models.tiny_models import build_tiny_model, build_tokenizer

    root = tmp_path_factory.mktemp("official")
    tok = build_tokenizer(512)
    model = build_tiny_model("llama", seed=0, tokenizer=tok, hidden_size=H)
    heads = OfficialHeads(H, True, seed=0)
    base = _write_base(root / "base", model, tok)
    heads_dir = official_heads_folder(root / "heads", base, heads.state_dict())
    merged = official_merge(heads_dir, base, root / "merged")
    split = official_split(merged, root / "split")
    # bf16: base weights and heads in bfloat16, as bf16 releases ship them
    model16 = build_tiny_model("llama", seed=0, tokenizer=tok, hidden_size=H).to(torch.bfloat16)
    base16 = _write_base(root / "base-bf16", model16, tok)
    heads16 = {k: v.to(torch.bfloat16) for k, v in heads.state_dict().items()}
    heads16_dir = official_heads_folder(root / "heads-bf16", base16, heads16)
    merged16 = official_merge(heads16_dir, base16, root / "merged-bf16")
    heads_bf16 = OfficialHeads(H, True, seed=0)
    heads_bf16.load_state_dict({k: v.float() for k, v in heads16.items()})
    return dict(root=root, tok=tok, model=model, model16=model16, heads=heads, base=base, heads_dir=heads_dir,
                merged=merged, split=split, base16=base16, merged16=merged16, heads_bf16=heads_bf16)


def _inputs(seed=1, B=5, V=512):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, generator=g), torch.randn(B, V, generator=g) * 3


def _assert_official(heads, official_module, atol=1e-6):
    h, logits = _inputs()
    T_ref, P_ref = official_module.predict(h, logits)
    T, P = heads.predict(h.numpy(), logits.numpy())
    np.testing.assert_allclose(T, T_ref.numpy(), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(P, P_ref.numpy(), rtol=1e-5, atol=atol)


def test_the_folders_have_the_official_layout(official):
    merged_index = json.loads((official["merged"] / "model.safetensors.index.json").read_text())
    keys = merged_index["weight_map"]
    assert keys and all(k.startswith(("llm.", "temp_head.", "top_p_head.")) for k in keys)
    shards = sorted(set(keys.values()))
    assert len(shards) > 2 and {keys[k] for k in keys if k.startswith("temp_head.")} == {shards[-1]}
    config = json.loads((official["merged"] / "config.json").read_text())
    assert config["model_type"] == "autodeco" and config["base_model_type"] == "llama"
    assert config["architectures"] == ["AutoDecoModelForCausalLM"] and "base_architectures" not in config
    split = sorted(p.name for p in official["split"].iterdir())
    assert "model.safetensors" in split and "model.safetensors.index.json" in split
    assert not any(name.startswith("model-") for name in split)  # the index names shards that are absent


def test_split_folder_with_a_stale_index_loads_with_one_warning_line(official, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    heads = ad.load_heads(official["split"])
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "\n" not in message and "stale index" in message and "model.safetensors" in message
    shard = json.loads((official["split"] / "model.safetensors.index.json").read_text())["weight_map"]["temp_head.mlp.0.bias"]
    assert shard in message
    assert heads.config.hidden_size == H and heads.config.base_model_type == "llama"
    _assert_official(heads, official["heads"])


def test_a_stale_index_without_the_heads_anywhere_names_the_missing_shard(official, tmp_path):
    import shutil

    folder = tmp_path / "no-heads"
    folder.mkdir()
    for f in ("config.json", "model.safetensors.index.json"):
        shutil.copy(official["split"] / f, folder / f)
    from safetensors.numpy import save_file

    save_file({"something.else": np.zeros(3, np.float32)}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"lists 'temp_head.mlp.0.(weight|bias)' in model-\d+-of-\d+\.safetensors, which is missing"):
        ad.load_heads(folder)


def test_a_merged_folder_missing_one_head_shard_is_refused(official, tmp_path):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(official["merged"], folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["top_p_head.mlp.0.bias"] = "model-99999-of-99999.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="top_p_head.mlp.0.bias' in model-99999-of-99999.safetensors, which is missing"):
        ad.load_heads(folder)


@pytest.mark.parametrize("which", ["heads_dir", "merged", "split"])
def test_every_official_folder_predicts_the_official_T_and_P(official, which):
    _assert_official(ad.load_heads(official[which]), official["heads"])


def test_bf16_merged_folder_widens_the_heads_exactly(official):
    heads = ad.load_heads(official["merged16"])
    for k, v in official["heads_bf16"].state_dict().items():
        np.testing.assert_array_equal(heads.tensors[k], v.numpy())
    _assert_official(heads, official["heads_bf16"])


def _generate(model, tok, seed=0, n=8):
    from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor

    enc = tok([PROMPT], return_tensors="pt")
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, max_new_tokens=n, min_new_tokens=n, logits_processor=[proc],
                             pad_token_id=tok.pad_token_id)
    return enc["input_ids"], out, proc.trace


@pytest.mark.parametrize("which", ["merged", "merged16"])
def test_transformers_loads_the_official_merged_folder(official, which, one_torch_thread):
    from autodeco_samplers.adapters.transformers import from_pretrained

    model = from_pretrained(official[which])
    base_dtype = torch.bfloat16 if which == "merged16" else torch.float32
    assert next(model.parameters()).dtype == base_dtype
    ref = official["model"] if which == "merged" else official["model16"]
    assert_same_state_dict(model, ref)  # every base tensor came through, none missing or extra
    prompt, out, trace = _generate(model, official["tok"])
    # the official heads on a teacher-forced forward of the same tokens
    with torch.no_grad():
        tf = model(out, output_hidden_states=True)
    L = prompt.shape[1]
    module = official["heads"] if which == "merged" else official["heads_bf16"]
    for s in range(out.shape[1] - L):
        h = tf.hidden_states[-1][:, L + s - 1].float()
        T_ref, P_ref = module.predict(h, tf.logits[:, L + s - 1].float())
        # KV-cached steps vs one full forward: measured max |dT| 2.4e-7 (float32), |dP| 9e-8
        # (bf16, whose hidden states both forwards round the same way); 1e-6 leaves 4x
        atol = 1e-6
        dT = abs(float(trace.T_pred[0, s]) - float(T_ref[0]))
        dP = abs(float(trace.P_pred[0, s]) - float(P_ref[0]))
        assert dT <= atol and dP <= atol


def test_merged_and_base_plus_heads_generate_the_same(official, one_torch_thread):
    from autodeco_samplers.adapters.transformers import attach, detach, from_pretrained

    merged = from_pretrained(official["merged"])
    _, out_a, tr_a = _generate(merged, official["tok"], seed=3)
    base = official["model"]
    attach(base, official["split"])
    try:
        _, out_b, tr_b = _generate(base, official["tok"], seed=3)
    finally:
        detach(base)
    assert out_a.tolist() == out_b.tolist()
    torch.testing.assert_close(tr_a.T_pred, tr_b.T_pred, rtol=0, atol=1e-6)


@pytest.mark.parametrize("which", ["merged", "split", "merged16"])
def test_llama_cpp_sidecar_from_official_folders(official, which, tmp_path, capsys):
    pytest.importorskip("gguf")
    from autodeco_samplers.frontends.cli import main

    out = tmp_path / "heads.gguf"
    assert main(["export-heads", str(official[which]), "--out", str(out)]) == 0
    capsys.readouterr()
    sidecar = ad.load_heads(out)
    folder = ad.load_heads(official[which])
    for k, v in folder.tensors.items():
        np.testing.assert_array_equal(sidecar.tensors[k], v)
    _assert_official(sidecar, official["heads_bf16" if which == "merged16" else "heads"])


def test_llama_cpp_runs_the_base_gguf_with_the_official_heads(official, tmp_path):
    pytest.importorskip("llama_cpp")
    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama
    from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf
    from autodeco_samplers.heads.io.export import export_heads

    gguf_path = convert_llama_to_gguf(official["base"], tmp_path / "base.gguf")
    sidecar = export_heads(official["split"], tmp_path / "heads.gguf")[1]
    gen = AutoDecoLlama(gguf_path, sidecar, f32_kv_cache=True, n_ctx=128, n_threads=2)
    res = gen.generate(PROMPT, max_new_tokens=6, seed=0)
    ids = res.prompt_ids + res.token_ids
    with torch.no_grad():
        tf = official["model"](torch.tensor([ids]), output_hidden_states=True)
    L = len(res.prompt_ids)
    for s, step in enumerate(res.steps):
        T_ref, P_ref = official["heads"].predict(tf.hidden_states[-1][:, L + s - 1], tf.logits[:, L + s - 1])
        assert step.T_pred == pytest.approx(float(T_ref[0]), abs=1e-4)
        assert step.P_pred == pytest.approx(float(P_ref[0]), abs=1e-4)


@pytest.mark.parametrize("which", ["merged", "merged16"])
def test_sglang_prepare_reads_the_official_merged_folder(official, which, tmp_path):
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint

    out = prepare_sglang_checkpoint(official[which], tmp_path / "sglang")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["autodeco"]["hidden_size"] == H and "temperature_hidden_size" not in config
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert all((out / f).exists() for f in set(index["weight_map"].values()))
    _assert_official(ad.load_heads(out), official["heads_bf16" if which == "merged16" else "heads"])


def test_split_of_the_official_merged_folder_is_a_loadable_base(official, tmp_path):
    from transformers import AutoModelForCausalLM

    from autodeco_samplers.heads.io.merged import split_checkpoint

    base, heads = split_checkpoint(official["merged"], tmp_path / "base", tmp_path / "heads")
    config = json.loads((base / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    assert_same_state_dict(model, official["model"])
    _assert_official(ad.load_heads(heads), official["heads"])
