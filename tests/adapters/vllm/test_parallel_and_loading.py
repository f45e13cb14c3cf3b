"""Tensor parallel 2, checkpoints without heads, and broken head tensors, on real engines."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _engine import GREEDY_REQUEST, SAMPLED_REQUEST, run_engine


def test_tensor_parallel_2_gives_the_same_tokens(engine_a, folders, tmp_path_factory):
    """TP=2 on 2 CPU cores (one OpenMP thread per rank): every rank holds its own heads and
    the full logits row, so greedy and seeded sampled tokens equal TP=1's."""
    out, log = run_engine(
        tmp_path_factory.mktemp("tp2"), folders["served"], [GREEDY_REQUEST, SAMPLED_REQUEST],
        engine={"tensor_parallel_size": 2}, env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
    )
    assert "error" not in out, out.get("error", "")[-3000:]
    for g in (0, 1):
        assert [r["token_ids"] for r in out["results"][g]] == [r["token_ids"] for r in engine_a[g]]
    for a, b in zip(out["results"][1], engine_a[1]):
        for sa, sb in zip(a["logprobs"], b["logprobs"]):
            ka = {k for k, v in sa.items() if v > -1e20}
            assert ka == {k for k, v in sb.items() if v > -1e20}
            np.testing.assert_allclose([sa[k] for k in ka], [sb[k] for k in ka], atol=1e-4)


def test_checkpoint_without_heads_is_stock_vllm(folders, tmp_path_factory):
    """A plain base model behaves exactly as with the plugin switched off (VLLM_PLUGINS=""):
    same greedy and seeded sampled tokens, same full-vocabulary logprobs. (The knobs logits
    processor is an entry point of another group and loads in both runs; for a model without
    heads it never changes a logit.)"""
    requests = [GREEDY_REQUEST, SAMPLED_REQUEST]
    tmp = tmp_path_factory.mktemp("stock")
    ours, _ = run_engine(tmp / "plugin", folders["base"], requests)
    stock, _ = run_engine(tmp / "noplugin", folders["base"], requests, env={"VLLM_PLUGINS": ""})
    assert "error" not in ours and "error" not in stock
    assert ours["results"] == stock["results"]


def _broken_copy(served: Path, out: Path, edit) -> Path:
    from safetensors.numpy import load_file, save_file

    shutil.copytree(served, out, symlinks=False)
    for f in out.glob("*.safetensors"):
        tensors = load_file(str(f))
        if edit(tensors):
            save_file(tensors, str(f), metadata={"format": "pt"})
    return out


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("missing", lambda t: t.pop("top_p_head.mlp.2.bias", None) is not None,
         "missing head tensor(s) ['top_p_head.mlp.2.bias']"),
        ("misshaped", lambda t: t.__setitem__("temp_head.mlp.0.weight", t["temp_head.mlp.0.weight"][:, :-1]) is None
         if "temp_head.mlp.0.weight" in t else False,
         "head tensor 'temp_head.mlp.0.weight' has shape [32, 127], expected [32, 128]"),
    ],
)
def test_broken_head_tensor_fails_at_load_naming_it(folders, tmp_path_factory, name, edit, message):
    tmp = tmp_path_factory.mktemp(f"broken-{name}")
    folder = _broken_copy(Path(folders["served"]), tmp / "model", edit)
    _fix_index(folder)
    out, log = run_engine(tmp / "run", folder, [GREEDY_REQUEST])
    assert "error" in out, "the engine started with a broken head tensor"
    assert message in log, log[-3000:]


def _fix_index(folder: Path) -> None:
    """Drop index entries of tensors removed from the shards (the loader reads the shards)."""
    import json

    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return
    data = json.loads(index.read_text())
    present = set()
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "np") as h:
            present |= set(h.keys())
    data["weight_map"] = {k: v for k, v in data["weight_map"].items() if k in present}
    index.write_text(json.dumps(data))
