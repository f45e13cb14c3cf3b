"""HF safetensors + tokenizer.json -> GGUF: real llama.cpp loads it and agrees with transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from _llama_util import assets, hf_forward, hf_tokenizer, llama

from autodeco_samplers.frontends.cli import main as cli_main
from autodeco_samplers.core.errors import CheckpointError
from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf, permute_rotary

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  two  spaces\n\nand newlines\ttab",
    "alpha's 0.5+3=7.9 {a}[b] <tag> 12345678 ünïcode — €",
    "<|endoftext|>special<|bos|>",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_ids_are_identical(text):
    llm = llama()
    want = hf_tokenizer().encode(text)
    got = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    assert got == want
    if want:
        assert llm.detokenize(want).decode("utf-8", "replace") == hf_tokenizer().decode(want, skip_special_tokens=True)


def _engine_rows(llm, ids):
    """Logits and hidden state of every position, one decode per token (f32 KV cache)."""
    import llama_cpp as lc

    ctx = llm._ctx.ctx
    llm.reset()
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    lc.llama_set_embeddings(ctx, True)
    H, V = llm.n_embd(), llm.n_vocab()
    hs, ls = [], []
    for t in ids:
        arr = (lc.llama_token * 1)(t)
        assert lc.llama_decode(ctx, lc.llama_batch_get_one(arr, 1)) == 0
        ls.append(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(V,)).copy())
        hs.append(np.ctypeslib.as_array(lc.llama_get_embeddings_ith(ctx, -1), shape=(H,)).copy())
    return np.array(hs), np.array(ls)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_f32_gguf_matches_transformers_logits_and_hidden_states():
    ids = hf_tokenizer().encode("AutoDeco predicts a temperature and a top-p for every token.")
    h_ref, l_ref = hf_forward(ids)
    h, l = _engine_rows(llama("gguf_f32", True), ids)
    assert _rel(l, l_ref) < 1e-5
    assert _rel(h, h_ref) < 1e-5


def test_f16_gguf_loads_and_is_close():
    ids = hf_tokenizer().encode("red green blue cyan magenta")
    h_ref, l_ref = hf_forward(ids)
    h, l = _engine_rows(llama("gguf_f16", False), ids)
    assert _rel(l, l_ref) < 3e-2
    assert _rel(h, h_ref) < 3e-2
    assert assets()["gguf_f16"].stat().st_size < 0.7 * assets()["gguf_f32"].stat().st_size


def test_rotary_permutation_is_a_row_permutation():
    w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    p = permute_rotary(w, 2)  # 2 heads of dim 4: rows [0,2,1,3, 4,6,5,7]
    assert p[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]


def test_cli_convert_gguf(tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert cli_main(["convert-gguf", str(assets()["model_dir"]), "--out", str(out), "--dtype", "f16"]) == 0
    assert "f16" in capsys.readouterr().out
    import gguf

    r = gguf.GGUFReader(str(out))
    assert r.fields["general.architecture"].contents() == "llama"
    assert {t.name: t.tensor_type.name for t in r.tensors}["blk.0.attn_q.weight"] == "F16"
    assert {t.name: t.tensor_type.name for t in r.tensors}["blk.0.attn_norm.weight"] == "F32"


def _copy_model(tmp_path, **config_changes):
    folder = tmp_path / "model"
    shutil.copytree(assets()["model_dir"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(config_changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_converter_errors(tmp_path):
    with pytest.raises(CheckpointError, match="model_type"):
        convert_llama_to_gguf(_copy_model(tmp_path / "a", model_type="qwen2"), tmp_path / "x.gguf")
    folder = _copy_model(tmp_path / "b")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        convert_llama_to_gguf(folder, tmp_path / "x.gguf")
    with pytest.raises(CheckpointError, match="shape"):
        convert_llama_to_gguf(_copy_model(tmp_path / "c", intermediate_size=100), tmp_path / "x.gguf")
    with pytest.raises(CheckpointError, match="not a model folder"):
        convert_llama_to_gguf(tmp_path / "nothing", tmp_path / "x.gguf")


def test_converter_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf\n"
        f"convert_llama_to_gguf({str(assets()['model_dir'])!r}, {str(tmp_path / 'm.gguf')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
