"""Shared helpers of the vLLM tests: engine settings, the standard requests, ``run_engine``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Engine settings shared by every test engine: float32 (so HF comparisons are exact up to
#: kernel rounding), eager mode, a small KV cache, full-vocabulary logprobs allowed.
ENGINE = dict(dtype="float32", max_model_len=256, enforce_eager=True, max_num_seqs=64, seed=0, max_logprobs=-1)
PROMPTS = ["The quick brown fox", "alpha", "Sampling is a choice; precision is a duty.", "red green"]
STEPS = 12
#: Greedy (temperature 0) and seeded default-knob requests over PROMPTS: the TP=1 engine, the
#: TP=2 engine and the stock comparisons all run exactly these.
GREEDY_REQUEST = {"prompts": PROMPTS, "params": {"temperature": 0.0, "max_tokens": STEPS, "ignore_eos": True}}
SAMPLED_REQUEST = {
    "prompts": PROMPTS,
    "params": [{"seed": 11 + i, "max_tokens": STEPS, "logprobs": -1, "ignore_eos": True} for i in range(len(PROMPTS))],
}


def engine_env(extra=None):
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.update(extra or {})
    return env


def run_engine(tmp: Path, model, requests, engine=None, env=None, timeout=900, script="_engine_job.py", **job_extra):
    """Run ``script`` (``_engine_job.py`` or a variant of it) once; returns ``(result dict,
    combined log text)``. ``job_extra`` goes into the job file (e.g. ``spec_metrics=True``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    job = {"model": str(model), "engine": {**ENGINE, **(engine or {})}, "requests": requests, **job_extra}
    job_path, out_path = tmp / "job.json", tmp / "out.json"
    job_path.write_text(json.dumps(job))
    proc = subprocess.run(
        [sys.executable, str(HERE / script), str(job_path), str(out_path)],
        env=engine_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )
    log = proc.stdout
    if not out_path.is_file():
        raise AssertionError(f"engine job exited with {proc.returncode} and no result; log tail:\n{log[-4000:]}")
    return json.loads(out_path.read_text()), log


N_DRAWS = 800  # single-token draws per G-test (fixed seeds)
#: Prompts whose first canonical step has a nucleus of several tokens with this seeded model
#: (checked in the tests from the reference side, never assumed).
DRAW_PROMPTS = ["The quick brown fox", "beta gamma"]

#: AutoDeco's own per-request multipliers (``extra_args``): one draw setting, and a batch of
#: four rows with different settings (none, temperature, top-p, greedy) sampled together.
KNOBS_DRAW = {"autodeco_temperature": 0.6, "autodeco_top_p": 0.8}
KNOBS_ROWS = [None, {"autodeco_temperature": 0.5}, {"autodeco_top_p": 0.5}, {"autodeco_temperature": 0.0}]
KNOBS_REQUEST = {
    "prompts": PROMPTS,
    "params": [dict({"seed": 31 + i, "max_tokens": STEPS, "logprobs": -1, "ignore_eos": True},
                    **({"extra_args": k} if k else {})) for i, k in enumerate(KNOBS_ROWS)],
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(folder, name: str, max_model_len: int, log_path: Path, extra_args=()):
    """``vllm serve FOLDER`` on a free loopback port (as a generator for a pytest fixture):
    yields the base URL once /health answers, stops the server afterwards. vllm-cpu's ``vllm``
    console script cannot start (it asks importlib.metadata for a distribution named "vllm";
    this one is "vllm-cpu"), so the OpenAI server module is run directly."""
    import time
    import urllib.request

    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", name, "--dtype", "float32", "--max-model-len", str(max_model_len),
           "--enforce-eager", "--seed", "0", *extra_args]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=engine_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 900
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"vllm serve exited with {proc.returncode}:\n{Path(log_path).read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"vllm serve did not come up:\n{Path(log_path).read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
