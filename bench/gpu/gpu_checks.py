#!/usr/bin/env python
"""One command for a machine with a CUDA GPU (not a test; CI has no GPU): checks the torch step
on the device, then benchmarks it.

1. the conformance suite's ``torch-cuda`` engine (kernel and sampling levels, Hypothesis cases
   plus the fixed real-size rows) against the NumPy reference;
2. the sync-free step (``sync=False``) captured in a CUDA graph and replayed on new inputs:
   its masked logits equal the eager step's bit for bit, and every token it draws is one the
   eager step keeps (peaked rows, where the candidates prove the nucleus, and flat rows, where
   the threshold search runs), at 32k and 152k;
3. ``bench/speed/bench_step.py --device cuda``: timings against HF's warpers and one softmax, and the
   aten operators per call.

``--compiled`` checks the compiled step instead (``compiled=True``: torch.compile, Triton
kernels): its CUDA-graph replay as in 2., the time of one CUDA-graph replay of the eager
step, the compiled step, HF's warpers and one softmax (where launches cost nothing, as in
SGLang's decode graphs), then ``bench/speed/bench_compile.py --device cuda``
(compile time, recompiles per batch size, tokens equal to the eager step's, timings against
the eager step, HF's warpers and one softmax, aten operators per call).

    python bench/gpu/gpu_checks.py --out-dir bench/results      # writes gpu_checks.json, bench_step_cuda.json
    python bench/gpu/gpu_checks.py --compiled --out-dir bench/results  # gpu_checks_compiled.json, bench_compile_cuda.json
"""

from __future__ import annotations

import os

# This script checks and times the *torch* step (eager and compiled) on a GPU, where the step
# would otherwise take the Triton kernel (core/step.py step_kernel); the kernel has its own
# script, bench/gpu/bench_kernel.py.
os.environ.setdefault("AUTODECO_STEP_KERNEL", "torch")

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "speed"))
from bench._provenance import write_json  # noqa: E402


def conformance(examples: int) -> dict:
    from autodeco_samplers.conformance.runner import run_engine

    results = run_engine("torch-cuda", ("kernel", "sampling"), examples=examples)
    return {r.level: {"verdict": r.verdict, "cases": r.cases, "reason": r.reason} for r in results}


def cuda_graph_replay(vocab: int, batch: int, compiled: bool = False) -> dict:
    """Capture both step forms with ``sync=False`` (or ``compiled``) and replay on fresh inputs."""
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS
    from autodeco_samplers.core.step import torch_step_logits, torch_step_sample

    dev = torch.device("cuda")
    heads = AutoDecoHeadsModule.create(1024, width=256, seed=0).requires_grad_(False).to(dev)
    policy = DecodingPolicy()
    g = torch.Generator(device="cpu").manual_seed(vocab + batch)
    static_logits = torch.empty(batch, vocab, device=dev)
    static_hidden = torch.empty(batch, 1024, device=dev)

    def fill(scale: float) -> None:
        static_logits.copy_((torch.randn(batch, vocab, generator=g) * scale).to(dev))
        static_hidden.copy_(torch.randn(batch, 1024, generator=g).to(dev))

    fill(8.0)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(2):  # warm-up on a side stream, as CUDA graphs require
            torch_step_logits(static_hidden, static_logits, heads, policy, sync=False, compiled=compiled)
            torch_step_sample(static_hidden, static_logits, heads, policy, None, sync=False, compiled=compiled)
    torch.cuda.current_stream().wait_stream(stream)
    graph_logits, graph_sample = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    with torch.no_grad():
        with torch.cuda.graph(graph_logits):
            out_logits = torch_step_logits(static_hidden, static_logits, heads, policy, sync=False, compiled=compiled)
        with torch.cuda.graph(graph_sample):  # the default CUDA generator: graph-safe
            out_sample = torch_step_sample(static_hidden, static_logits, heads, policy, None, sync=False, compiled=compiled)
    report = {"vocab": vocab, "batch": batch, "compiled": compiled, "replays": []}
    for scale in (8.0, 1.0, 3.0):  # peaked rows (candidates prove) and flat rows (fallback)
        fill(scale)
        graph_logits.replay()
        with torch.no_grad():
            eager = torch_step_logits(static_hidden, static_logits, heads, policy, sync=True)
        if compiled:  # fused kernels may round differently: equal up to float noise, same kept set
            same_logits = bool(torch.allclose(out_logits.logits, eager.logits, rtol=1e-5, atol=1e-5)) and bool(
                torch.allclose(out_logits.T, eager.T, rtol=1e-5, atol=1e-6))
        else:
            same_logits = bool(torch.equal(out_logits.logits, eager.logits)) and bool(torch.equal(out_logits.T, eager.T))
        kept = eager.logits > OUTSIDE_NUCLEUS / 2
        widths = kept.sum(-1).tolist()
        tokens_kept = True
        for _ in range(20):
            graph_sample.replay()
            tokens_kept &= bool(kept.gather(-1, out_sample.token_ids[:, None]).all())
        report["replays"].append({"scale": scale, "logits_equal": same_logits, "tokens_kept": tokens_kept,
                                  "nucleus_widths": widths})
    report["ok"] = all(r["logits_equal"] and r["tokens_kept"] for r in report["replays"])
    return report


def graph_timings(vocab: int, batch: int, replays: int = 50) -> dict:
    """Milliseconds per replay of one step captured in a CUDA graph (what SGLang's decode
    graphs run; the launches cost nothing there): the eager sync-free step, the compiled step,
    HF's temperature + top-p warpers + softmax + multinomial, and one softmax (the floor)."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_sample

    dev = torch.device("cuda")
    heads = AutoDecoHeadsModule.create(1024, width=256, seed=0).requires_grad_(False).to(dev)
    g = torch.Generator().manual_seed(vocab + batch)
    logits = (torch.randn(batch, vocab, generator=g) * 8).to(dev)
    hidden = torch.randn(batch, 1024, generator=g).to(dev)
    temp, top_p = TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.9)
    fns = {
        "eager": lambda: torch_step_sample(hidden, logits, heads, DecodingPolicy(), None, sync=False),
        "compiled": lambda: torch_step_sample(hidden, logits, heads, DecodingPolicy(), None, compiled=True),
        "hf": lambda: torch.multinomial(torch.softmax(top_p(None, temp(None, logits)), -1), 1),
        "softmax": lambda: torch.softmax(logits, -1),
    }
    ms = {}
    with torch.no_grad():
        for name, fn in fns.items():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            graph.replay()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(replays):
                graph.replay()
            end.record()
            torch.cuda.synchronize()
            ms[name] = round(start.elapsed_time(end) / replays, 4)
    return {"vocab": vocab, "batch": batch, "ms_per_replay": ms,
            "hf_over_eager": round(ms["hf"] / ms["eager"], 2), "hf_over_compiled": round(ms["hf"] / ms["compiled"], 2),
            "eager_over_softmax": round(ms["eager"] / ms["softmax"], 1),
            "compiled_over_softmax": round(ms["compiled"] / ms["softmax"], 1)}


def compiled_checks(report: dict, out: Path) -> int:
    """The compiled step on CUDA: CUDA-graph replay, then bench_compile (its own JSON)."""
    import traceback

    t0 = time.time()
    try:
        report["cuda_graph_compiled"] = [cuda_graph_replay(v, b, compiled=True) for v, b in ((32000, 8), (152064, 1))]
        ok = all(r["ok"] for r in report["cuda_graph_compiled"])
    except Exception as exc:  # record why, so the JSON says what a GPU run hits
        report["cuda_graph_compiled_error"] = "".join(traceback.format_exception_only(type(exc), exc))[-2000:]
        ok = False
    report["seconds"] = round(time.time() - t0, 1)
    if ok:
        report["cuda_graph_timings"] = [graph_timings(v, b) for v in (32000, 152064) for b in (1, 8, 64)]
        for r in report["cuda_graph_timings"]:
            print("graph replay ms:", r["vocab"], r["batch"], r["ms_per_replay"], flush=True)
    write_json(out / "gpu_checks_compiled.json", report, indent=2)
    print("compiled cuda graph:", "ok" if ok else "FAILED", f"({report['seconds']} s)", flush=True)
    if ok:
        from bench_compile import main as compile_main

        compile_main(["--device", "cuda", "--repeats", "11", "--out", str(out / "bench_compile_cuda.json")])
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--examples", type=int, default=300, help="Hypothesis kernel cases for the conformance check")
    p.add_argument("--quick", action="store_true", help="pass --quick to bench_step")
    p.add_argument("--compiled", action="store_true", help="check and benchmark the compiled step instead")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_checks: no CUDA device", file=sys.stderr)
        return 1
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if a.compiled:
        return compiled_checks(report, out)
    t0 = time.time()
    report["conformance"] = conformance(a.examples)
    print("conformance:", report["conformance"], f"({time.time() - t0:.0f} s)", flush=True)
    report["cuda_graph"] = [cuda_graph_replay(v, b) for v in (32000, 152064) for b in (1, 8)]
    print("cuda graph:", [(r["vocab"], r["batch"], r["ok"]) for r in report["cuda_graph"]], flush=True)
    write_json(out / "gpu_checks.json", report, indent=2)
    from bench_step import main as bench_main

    bench_args = ["--device", "cuda", "--no-numpy", "--out", str(out / "bench_step_cuda.json")]
    bench_main(bench_args + (["--quick"] if a.quick else []))
    ok = all(v["verdict"] == "pass" for v in report["conformance"].values()) and all(r["ok"] for r in report["cuda_graph"])
    print("gpu_checks:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
