#!/usr/bin/env python
"""Where a step's GPU time goes (not a test): the torch profiler's CUDA kernels of the eager
and the compiled step, top entries by device time, at one vocabulary, per batch size.

    python bench/gpu/profile_step_cuda.py --vocab 152064 --batch 1 64 --out bench/results/profile_step_cuda.json
"""

from __future__ import annotations

import os

# This script checks and times the *torch* step (eager and compiled) on a GPU, where the step
# would otherwise take the Triton kernel (core/step.py step_kernel); the kernel has its own
# script, bench/gpu/bench_kernel.py.
os.environ.setdefault("AUTODECO_STEP_KERNEL", "torch")

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._provenance import write_json  # noqa: E402


def profile(fn, steps: int = 5, top: int = 15):
    from torch.profiler import ProfilerActivity, profile as prof

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for e in p.key_averages():
        dev = getattr(e, "device_time_total", None)
        if dev is None:
            dev = getattr(e, "cuda_time_total", 0)
        if dev and e.key and not e.key.startswith(("aten::", "autodeco", "Torch-Compiled", "CompiledFunction")):
            rows.append({"kernel": e.key[:120], "us_per_step": round(dev / steps, 1), "calls_per_step": e.count / steps})
    rows.sort(key=lambda r: -r["us_per_step"])
    total = sum(r["us_per_step"] for r in rows)
    return {"kernel_us_per_step": round(total, 1), "kernels_per_step": sum(r["calls_per_step"] for r in rows), "top": rows[:top]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 64])
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_sample

    dev = torch.device("cuda")
    heads = AutoDecoHeadsModule.create(1024, width=256, seed=0).requires_grad_(False).to(dev)
    g = torch.Generator().manual_seed(0)
    gen = torch.Generator(device=dev).manual_seed(0)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "vocab": a.vocab, "cases": []}
    for b in a.batch:
        logits = (torch.randn(b, a.vocab, generator=g) * 8).to(dev)
        hidden = torch.randn(b, 1024, generator=g).to(dev)
        with torch.no_grad():
            for compiled in (False, True):
                r = profile(lambda: torch_step_sample(hidden, logits, heads, DecodingPolicy(), gen, compiled=compiled))
                r.update(batch=b, compiled=compiled)
                report["cases"].append(r)
                print(f"batch {b} compiled={compiled}: {r['kernel_us_per_step']:.0f} us of kernels, "
                      f"{r['kernels_per_step']:.0f} kernels per step", flush=True)
                for row in r["top"][:10]:
                    print(f"   {row['us_per_step']:8.1f} us  x{row['calls_per_step']:.0f}  {row['kernel']}", flush=True)
    if a.out:
        write_json(a.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
