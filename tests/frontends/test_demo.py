"""``autodeco demo`` on the embedded default model: real engines, per-token T and P, the
evaluation summary, and a missing engine reported rather than hidden."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from autodeco_samplers.models import default_model  # noqa: E402
from autodeco_samplers.frontends.cli import main  # noqa: E402
from autodeco_samplers.frontends.cli.demo_cmd import run_engine  # noqa: E402
from autodeco_samplers.research.evaluation.toy_task import eval_prompts, score_completion  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_default_model_ships_small_and_complete():
    root = default_model.path()
    for rel in ("base/config.json", "base/model.safetensors", "base/tokenizer.json", "heads/config.json",
                "heads/autodeco_heads.safetensors", "task.json", "build_info.json"):
        assert (root / rel).is_file(), rel
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.suffix != ".pyc")
    assert size < 8 * 2**20
    conf = json.loads((root / "base" / "config.json").read_text())
    assert conf["architectures"] == ["LlamaForCausalLM"]
    assert not list(root.rglob("*.bin")) and not list(root.rglob("*.pt"))


def _heads_on_the_same_context(result):
    """``(T_pred, P_pred)`` per generated step, recomputed independently of the engines: a
    teacher-forced transformers forward over prompt + generated ids, the NumPy heads on its
    final hidden state and logits at the position before each token."""
    from transformers import AutoModelForCausalLM

    from _hf_util import teacher_forced
    from autodeco_samplers.heads import load_heads

    model = AutoModelForCausalLM.from_pretrained(default_model.base_path()).eval()
    ids = torch.tensor([list(result["prompt_ids"]) + list(result["token_ids"])])
    hidden, logits = teacher_forced(model, ids, torch.ones_like(ids))
    rows = [len(result["prompt_ids"]) - 1 + s for s in range(len(result["steps"]))]
    return load_heads(default_model.heads_path()).predict(hidden[0, rows].astype("float32"), logits[0, rows].astype("float32"))


def _check_engine(rep, prompt):
    assert rep["status"] == "ok", rep.get("reason")
    steps = rep["result"]["steps"]
    assert steps and len(steps) == len(rep["result"]["token_ids"])
    for s in steps:
        assert 0 < s["T"] < 2 and 0 < s["P"] <= 1 and s["T"] == pytest.approx(s["T_pred"])
        assert s["P"] == pytest.approx(s["P_pred"])  # the demo's policy is the identity
    # the T and P shown are the heads' predictions from the hidden state that chose each token
    # (the f32 GGUF agrees with transformers to ~2e-5)
    T_ref, P_ref = _heads_on_the_same_context(rep["result"])
    assert [s["T_pred"] for s in steps] == pytest.approx(T_ref.tolist(), abs=1e-4)
    assert [s["P_pred"] for s in steps] == pytest.approx(P_ref.tolist(), abs=1e-4)
    assert len({round(s["T_pred"], 4) for s in steps}) > 1  # T follows the context
    opts = eval_prompts(default_model.task_spec(), 1)[0][1]
    return score_completion(rep["result"]["text"], opts)


def test_transformers_engine_generates_the_task():
    prompt = eval_prompts(default_model.task_spec(), 1)[0][0]
    rep = run_engine("transformers", prompt, 12, seed=0)
    scored = _check_engine(rep, prompt)
    assert scored.choice is not None  # the model answers in the task's shape


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_llama_cpp_engine_generates_the_task():
    prompt = eval_prompts(default_model.task_spec(), 1)[0][0]
    rep = run_engine("llama-cpp", prompt, 12, seed=0)
    scored = _check_engine(rep, prompt)
    assert scored.choice is not None
    assert rep["model"].endswith(".gguf") and rep["heads"].endswith(".gguf")


def test_missing_engine_is_reported_not_hidden():
    table = {"ghost": ("autodeco_samplers.adapters.ghost", "no_such_engine_package_xyz", "pip install ghost")}
    rep = run_engine("ghost", "x", 4, 0, engines=table)
    assert rep["status"] == "not installed" and "pip install ghost" in rep["reason"]


def test_demo_cli_json_and_text(capsys):
    rc = main(["demo", "--samples", "2", "--prompts", "3", "--temperatures", "1", "--top-ps", "0.7,1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    names = {e["engine"]: e for e in out["engines"]}
    assert set(names) == {"transformers", "llama-cpp"}
    assert names["transformers"]["status"] == "ok"
    if importlib.util.find_spec("llama_cpp") is None:
        assert names["llama-cpp"]["status"] == "not installed"
    else:
        assert names["llama-cpp"]["status"] == "ok"
    assert {r["group"] for r in out["evaluation"]["strategies"]} >= {"greedy", "default", "mean_static", "autodeco"}

    rc = main(["demo", "--engines", "transformers", "--no-eval"])
    text = capsys.readouterr().out
    assert rc == 0 and "T_pred" in text and "engine transformers: ok" in text


@pytest.mark.slow  # a fresh process: imports and the evaluation again
def test_demo_runs_in_a_fresh_process_without_network(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "AUTODECO_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "autodeco_samplers", "demo", "--samples", "2", "--prompts", "2",
                           "--temperatures", "1", "--top-ps", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "engine transformers: ok" in proc.stdout and "engine llama-cpp:" in proc.stdout
    assert "autodeco" in proc.stdout and "oracle" in proc.stdout
    standing = [line for line in proc.stdout.splitlines() if line.startswith("where AutoDeco stands:")]
    assert len(standing) == 1
    for word in ("greedy", "default", "mean-static", "oracle", "vs oracle"):
        assert word in standing[0]


def test_build_default_model_script_path_is_seeded(tmp_path):
    """A miniature rebuild (few steps) twice from the same seed: identical files, loadable, evaluable."""
    from safetensors.numpy import load_file

    from autodeco_samplers.models.default_model.build import BuildConfig, build_default_model
    from autodeco_samplers.research.evaluation.toy import evaluate
    from autodeco_samplers.research.evaluation.toy_task import TaskSpec

    cfg = BuildConfig(train_examples=256, backbone_steps=4, backbone_batch_size=16, head_steps=3, head_batch_size=16, head_width=16)
    for name in ("a", "b"):
        build_default_model(tmp_path / name, cfg, progress=False)
    for rel in ("base/model.safetensors", "heads/autodeco_heads.safetensors"):
        a, b = load_file(str(tmp_path / "a" / rel)), load_file(str(tmp_path / "b" / rel))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), rel
    conf = json.loads((tmp_path / "a" / "base" / "config.json").read_text())
    assert conf["model_type"] == "llama"
    rep = evaluate(tmp_path / "a" / "base", tmp_path / "a" / "heads", spec=TaskSpec(), n_prompts=2, n_samples=2,
                   temperatures=(1.0,), top_ps=(1.0,), max_new_tokens=4)
    assert len(rep["strategies"]) == 4  # greedy, default, mean-static, autodeco
    heads_conf = json.loads((tmp_path / "a" / "heads" / "config.json").read_text())["autodeco_training"]
    assert heads_conf["soft_top_p_prefix"] == cfg.head_soft_top_p_prefix
    assert heads_conf["temperature_loss_weight"] == cfg.head_temperature_loss_weight

    # the script's --verify path: rebuild from the recorded settings, compare bit for bit
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "build_default_model.py"
    spec_ = importlib.util.spec_from_file_location("build_default_model_script", script)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    assert mod.verify(tmp_path / "a", progress=False) == 0
    from safetensors.numpy import save_file

    tensors = load_file(str(tmp_path / "b" / "heads" / "autodeco_heads.safetensors"))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].copy()
    tensors[key].flat[0] += 1e-3  # one changed weight must be caught
    save_file(tensors, str(tmp_path / "b" / "heads" / "autodeco_heads.safetensors"))
    assert mod.verify(tmp_path / "b", progress=False) == 1
