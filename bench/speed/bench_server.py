"""Tokens/s through ``autodeco serve`` vs the library call and vs llama-cpp-python's own server (not a test).

One toy model for all three: a random, seeded Llama GGUF (``build_model`` of
``bench/speed/bench_llama_cpp.py``: default vocab 32k, hidden 1024, 8 layers, f16; not trained) and
random seeded heads (``init_heads(hidden, width=256, seed=0)``, output layers x6 so that P is a
real choice). Per repeat, in an order that rotates every repeat:

* ``library``: :meth:`AutoDecoLlama.generate` in this process (the same GGUF, threads, context);
  each repeat has its own prompt (:func:`prompt`) and seed, the same for every condition;
* ``server``: ``autodeco serve --engine llama-cpp`` (subprocess), one ``/v1/completions``
  request with the same seed (so the same tokens as ``library``);
* ``server_stream``: the same request with ``"stream": true`` (timed to ``data: [DONE]``);
* ``llama_cpp_server``: ``python -m llama_cpp.server`` (subprocess) on the same GGUF, one
  ``/v1/completions`` request with its own sampler (``temperature 0.8, top_p 0.9, top_k 0``,
  the chain ``bench_llama_cpp.py`` calls native); needs ``pip install 'llama-cpp-python[server]'``
  (``sse-starlette``, ``starlette-context``, ``pydantic-settings``), skipped with a note if absent.

tokens/s = generated tokens (the answer's ``usage.completion_tokens``) / wall time of the call,
prefill included. Reported: medians, and the medians of the per-repeat ratios
``server / library`` (goal >= 0.95) and ``server / llama_cpp_server`` (goal >= 0.95). The
machine's load (``uptime``) before and after is saved with the results, as the ratios measured
side by side are what count on a shared machine.

    python bench/speed/bench_server.py                                   # full (about 2 minutes on 2 cores)
    python bench/speed/bench_server.py --vocab 8000 --layers 2 --tokens 16 --repeats 3 --no-save   # quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench._provenance import write_json  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog while the cat sleeps"


def prompt(seed: int) -> str:
    """A new prompt per repeat (its first token differs), so that no engine reuses the KV
    cache of the previous request's prompt (llama-cpp-python's ``Llama`` keeps and reuses the
    longest common prefix; ``AutoDecoLlama`` clears the cache per call)."""
    return f"Story {seed}. {PROMPT}"


def _bench_llama_cpp():
    spec = importlib.util.spec_from_file_location("bench_llama_cpp", ROOT / "bench" / "speed" / "bench_llama_cpp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uptime() -> Dict[str, object]:
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"uptime": out, "loadavg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Proc:
    """A server subprocess; ``url`` once ready."""

    def __init__(self, cmd: List[str], url: Optional[str] = None, read_port: bool = False) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=_env())
        if read_port:
            line: List[str] = []
            t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
            t.start()
            t.join(300)
            if not line or not line[0].strip():
                raise RuntimeError(f"{cmd[:4]} did not start: {self.stderr()}")
            url = json.loads(line[0])["url"]
        self.url = url
        self._wait_ready()

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def _wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.stderr()}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=5).status_code == 200:
                    return
            except Exception:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout}s: {self.stderr()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def timed_post(url: str, body: dict) -> Tuple[int, float]:
    import httpx

    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/completions", json=body, timeout=600)
    dt = time.perf_counter() - t0
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"]), dt


def timed_stream(url: str, body: dict) -> Tuple[int, float]:
    import httpx

    n = None
    t0 = time.perf_counter()
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True,
                                                            "stream_options": {"include_usage": True}}, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    n = int(chunk["usage"]["completion_tokens"])
    dt = time.perf_counter() - t0
    assert n is not None, "no usage chunk"
    return n, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--temp", type=float, default=0.8, help="llama-cpp-python server's temperature")
    ap.add_argument("--top-p", type=float, default=0.9, help="llama-cpp-python server's top_p")
    ap.add_argument("--no-llama-cpp-server", action="store_true", help="skip llama-cpp-python's server")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_server.json"))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama
    from autodeco_samplers.research.evaluation.toy import portable_path
    from autodeco_samplers.heads.io.gguf_sidecar import write_gguf_heads
    from autodeco_samplers.heads.model.init import init_heads

    load_before = _uptime()
    have_llama_server = not args.no_llama_cpp_server
    if have_llama_server:
        try:
            import llama_cpp.server.app  # noqa: F401
        except ImportError as exc:
            print(f"note: llama-cpp-python's server is not installed ({exc}); pip install 'llama-cpp-python[server]'")
            have_llama_server = False

    with tempfile.TemporaryDirectory(prefix="autodeco-bench-server-") as tmp:
        tmp = Path(tmp)
        model = _bench_llama_cpp().build_model(tmp, args.vocab, args.hidden, args.layers, args.heads, args.kv_heads,
                                               args.ffn, seed=0)
        config, tensors = init_heads(args.hidden, width=256, seed=0)
        for k in tensors:
            if k.endswith("mlp.2.weight"):
                tensors[k] = tensors[k] * 6.0
        heads = write_gguf_heads(tmp / "heads.gguf", config, tensors)

        gen = AutoDecoLlama(model, heads, n_ctx=args.n_ctx, n_threads=args.threads)
        ours = Proc([sys.executable, "-m", "autodeco_samplers", "serve", "--engine", "llama-cpp", "--model", str(model),
                     "--heads", str(heads), "--model-name", "bench", "--threads", str(args.threads),
                     "--n-ctx", str(args.n_ctx), "--port", "0", "--json"], read_port=True)
        theirs = None
        if have_llama_server:
            port = _free_port()
            theirs = Proc([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "bench",
                           "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                           "--n_ctx", str(args.n_ctx), "--host", "127.0.0.1", "--port", str(port)],
                          url=f"http://127.0.0.1:{port}")
        try:
            def body(seed: int) -> dict:
                return {"model": "bench", "prompt": prompt(seed), "max_tokens": args.tokens, "seed": seed}
            native = {"temperature": args.temp, "top_p": args.top_p, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}

            def library(seed: int) -> Tuple[int, float]:
                t0 = time.perf_counter()
                res = gen.generate(prompt(seed), max_new_tokens=args.tokens, seed=seed)
                return len(res.token_ids), time.perf_counter() - t0

            conditions = {
                "library": library,
                "server": lambda seed: timed_post(ours.url, body(seed)),
                "server_stream": lambda seed: timed_stream(ours.url, body(seed)),
            }
            if theirs is not None:
                conditions["llama_cpp_server"] = lambda seed: timed_post(theirs.url, {**body(seed), **native})
            for name, fn in conditions.items():  # warm-up (page cache, first-call costs)
                fn(1000)
            names = list(conditions)
            runs = []
            for r in range(args.repeats):
                order = names[r % len(names):] + names[: r % len(names)]
                row: Dict[str, object] = {"repeat": r, "order": order}
                for name in order:
                    n, dt = conditions[name](r)
                    row[name] = {"tokens": n, "seconds": round(dt, 4), "tok_s": round(n / dt, 3)}
                runs.append(row)
                print(f"repeat {r}: " + "  ".join(f"{k} {row[k]['tok_s']:7.2f} tok/s ({row[k]['tokens']})" for k in names),
                      flush=True)
        finally:
            ours.stop()
            if theirs is not None:
                theirs.stop()
            gen.llm.close() if hasattr(gen.llm, "close") else None

    def ratio(a: str, b: str) -> Optional[float]:
        if a not in runs[0] or b not in runs[0]:
            return None
        return round(statistics.median(x[a]["tok_s"] / x[b]["tok_s"] for x in runs), 4)

    medians = {k: round(statistics.median(x[k]["tok_s"] for x in runs), 3) for k in conditions}
    ratios = {
        "server_over_library": ratio("server", "library"),
        "server_stream_over_library": ratio("server_stream", "library"),
        "server_over_llama_cpp_server": ratio("server", "llama_cpp_server"),
        "server_stream_over_llama_cpp_server": ratio("server_stream", "llama_cpp_server"),
    }
    import fastapi
    import llama_cpp
    import uvicorn

    report = {
        "benchmark": "bench/speed/bench_server.py",
        "command": "python bench/speed/bench_server.py " + " ".join(sys.argv[1:]),
        "model": {
            "kind": "toy: random seeded Llama GGUF, not trained (bench/speed/bench_llama_cpp.py build_model, seed 0)",
            "vocab": args.vocab, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
            "kv_heads": args.kv_heads, "ffn": args.ffn, "dtype": "f16",
            "autodeco_heads": "init_heads(hidden, width=256, seed=0), output layers x6",
        },
        "prompt": prompt(0).replace("0", "{repeat}", 1), "max_tokens": args.tokens, "threads": args.threads, "n_ctx": args.n_ctx,
        "repeats": args.repeats,
        "llama_cpp_server_sampling": native if theirs is not None else None,
        "tok_s_median": medians,
        "median_ratios": ratios,
        "goals": {"server_over_library": 0.95, "server_over_llama_cpp_server": 0.95},
        "load_before": load_before, "load_after": _uptime(),
        "versions": {"python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
                     "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__},
        "runs": runs,
    }
    print("medians tok/s: " + ", ".join(f"{k} {v}" for k, v in medians.items()))
    print("median ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items() if v is not None))
    print(f"load: before {load_before['loadavg']}, after {report['load_after']['loadavg']} ({load_before['cpus']} cpus)")
    if not args.no_save:
        out = write_json(args.out, report, indent=2)
        print(f"saved {portable_path(out)}")


if __name__ == "__main__":
    main()
