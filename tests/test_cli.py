"""The ``autodeco`` command line: inspect and init-heads, console script and ``-m``."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import autodeco_samplers as ad
from autodeco_samplers.cli import main


def test_init_heads_then_inspect(tmp_path, capsys):
    out = tmp_path / "heads"
    assert main(["init-heads", str(out), "--hidden-size", "24", "--width", "8", "--base-model", "tiny/base"]) == 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "hidden size      24" in text
    assert "temperature, top-p" in text and "enhanced" in text and "tiny/base" in text
    # parameters: temp 8*(24+2)+1 = 209, top-p 8*(29+2)+1 = 249
    assert "458" in text
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hidden_size"] == 24 and info["parameter_count"] == 458
    heads = ad.load_heads(out)
    assert sum(v.size for v in heads.tensors.values()) == 458


def test_init_heads_variants(tmp_path, capsys):
    assert main(["init-heads", str(tmp_path / "p"), "--hidden-size", "8", "--plain-features", "--no-temperature-head"]) == 0
    heads = ad.load_heads(tmp_path / "p")
    assert not heads.config.enable_temperature_head and not heads.config.use_enhanced_features
    T, P = heads.predict(np.ones((1, 8), np.float32))
    assert T[0] == 1.0 and 0 < P[0] < 1


def test_python_dash_m_and_console_script(tmp_path):
    out = tmp_path / "h"
    subprocess.run([sys.executable, "-m", "autodeco_samplers", "init-heads", str(out), "--hidden-size", "4"], check=True)
    res = subprocess.run([sys.executable, "-m", "autodeco_samplers", "inspect", str(out), "--json"], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout)["hidden_size"] == 4
    # the console script installed next to this interpreter (the venv need not be activated)
    script = subprocess.run([str(Path(sys.executable).parent / "autodeco"), "--help"], capture_output=True, text=True)
    assert script.returncode == 0 and "inspect" in script.stdout


def test_unknown_engine_is_rejected(capsys):
    try:
        main(["generate", "--engine", "vllm", "--model", "x", "--prompt", "hi"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid choice: 'vllm'" in capsys.readouterr().err


def test_generate_stop_strings_end_the_text_the_same_way_on_both_engines(tmp_path, capsys):
    """--stop: token ids include the token that completed the stop text, the text ends before it."""
    import pytest

    pytest.importorskip("transformers")
    pytest.importorskip("llama_cpp")
    from autodeco_samplers import default_model

    prompt = ["--prompt", "pick one of badger maroon donkey and spell it backwards:", "--stop=->", "--seed", "3", "--json"]
    assert main(["generate", "--engine", "transformers", "--model", str(default_model.base_path()), "--heads", str(default_model.heads_path())] + prompt) == 0
    hf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["export-heads", str(default_model.heads_path()), "--out", str(tmp_path / "h.gguf")]) == 0
    capsys.readouterr()
    gguf = default_model.gguf_path()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model.base_path())
    assert main(["generate", "--engine", "llama-cpp", "--model", str(gguf), "--heads", str(tmp_path / "h.gguf"), "--f32-kv-cache"] + prompt) == 0
    ll = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for out in (hf, ll):
        assert "->" not in out["text"] and out["text"].strip()  # the chosen word, then the stop
        assert len(out["steps"]) == len(out["token_ids"]) >= 2
        assert tok.decode(out["token_ids"]).rstrip().endswith("->")  # ids end with the stop text


def test_generate_with_a_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    import pytest

    pytest.importorskip("transformers")
    assert main(["init-heads", str(tmp_path / "h"), "--hidden-size", "8"]) == 0
    capsys.readouterr()
    code = main(["generate", "--engine", "transformers", "--model", str(tmp_path / "nope"), "--heads", str(tmp_path / "h"), "--prompt", "hi"])
    assert code == 2
    assert "no config.json" in capsys.readouterr().err
