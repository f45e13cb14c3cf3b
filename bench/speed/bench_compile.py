#!/usr/bin/env python
"""Benchmark (not a test): the compiled step (``torch.compile``, inductor) against the eager
step, HF's warpers and one softmax, side by side, on one device.

Per vocabulary (32k, 152k), in one process:

* ``compile_s``: wall time of the first call of the compiled step at batch 1 (the
  compilation), then ``first_call_s`` per new batch size (8, 64, then 1 again): a recompile
  shows as seconds, a reuse of the dynamic-shape graph as milliseconds; ``graphs_built``
  counts the graphs Dynamo built for this vocabulary (0: an earlier vocabulary's graph served);
* per batch size (1, 8, 64): ``tokens_equal_to_eager``, how many of 10 seeded draws give the
  eager step's tokens with the same uniforms, and ``max_abs_dT``; median ms of ``compiled`` (:func:`torch_step_sample` with
  ``compiled=True``), ``eager`` (the same step, ``sync`` at its default: one host read on the
  CPU, none on a GPU), ``hf`` (transformers' temperature + top-p warpers + softmax +
  multinomial) and ``softmax`` (one pass, the floor), alternated per repeat; the ratios; and
  ``aten_ops`` of one compiled and one eager call (torch profiler, bench_step.aten_ops).

    python bench/speed/bench_compile.py --device cuda        # the GPU numbers
    python bench/speed/bench_compile.py --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_step import HIDDEN, _sync, alternate, aten_ops  # noqa: E402
from bench._provenance import write_json  # noqa: E402


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def case(vocab: int, batches, repeats: int, device: str, seed: int) -> dict:
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_sample

    heads = AutoDecoHeadsModule.create(HIDDEN, width=256, seed=seed).requires_grad_(False).to(device)
    policy = DecodingPolicy()
    gen = torch.Generator(device=device).manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = {b: ((torch.randn(b, vocab, generator=g) * 8).to(device), torch.randn(b, HIDDEN, generator=g).to(device))
            for b in batches}
    out = {"vocab": vocab, "first_call_s": {}, "batches": []}
    graphs0 = _graphs()
    with torch.no_grad():
        for i, b in enumerate(list(batches) + [batches[0]]):
            logits, hidden = data[b]
            t0 = time.perf_counter()
            torch_step_sample(hidden, logits, heads, policy, gen, compiled=True)
            _sync(device)
            key = "compile_s" if i == 0 else f"batch_{b}" + ("_again" if i == len(batches) else "")
            (out if i == 0 else out["first_call_s"])[key] = round(time.perf_counter() - t0, 3)
    out["graphs_built"] = _graphs() - graphs0
    temp, top_p = TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.9)
    for b in batches:
        logits, hidden = data[b]
        fns = {
            "compiled": lambda: torch_step_sample(hidden, logits, heads, policy, gen, compiled=True),
            "eager": lambda: torch_step_sample(hidden, logits, heads, policy, gen),
            "hf": lambda: torch.multinomial(torch.softmax(top_p(None, temp(None, logits)), -1), 1, generator=gen),
            "softmax": lambda: torch.softmax(logits, -1),
        }
        with torch.no_grad():
            t = alternate(fns, repeats, device)
            ops = {name: aten_ops(fns[name]) for name in ("compiled", "eager")}
            same = 0
            for s in range(10):  # the same uniforms: the same tokens, up to float rounding at a CDF step
                gen.manual_seed(100 + s)
                a = torch_step_sample(hidden, logits, heads, policy, gen, compiled=True)
                gen.manual_seed(100 + s)
                e = torch_step_sample(hidden, logits, heads, policy, gen)
                same += int(torch.equal(a.token_ids, e.token_ids))
                T_diff = float((a.T - e.T).abs().max())
        ms = {k: round(1e3 * v, 4) for k, v in t.items()}
        out["batches"].append({
            "batch": b, "ms": ms, "aten_ops": ops, "tokens_equal_to_eager": f"{same}/10", "max_abs_dT": T_diff,
            "compiled_over_softmax": round(ms["compiled"] / ms["softmax"], 2),
            "eager_over_softmax": round(ms["eager"] / ms["softmax"], 2),
            "hf_over_compiled": round(ms["hf"] / ms["compiled"], 2),
            "hf_over_eager": round(ms["hf"] / ms["eager"], 2),
            "eager_over_compiled": round(ms["eager"] / ms["compiled"], 2),
        })
        print(f"{vocab:>7} {b:>5} compiled {ms['compiled']:8.3f} ms  eager {ms['eager']:8.3f}  hf {ms['hf']:8.3f}  "
              f"softmax {ms['softmax']:7.3f}  ops compiled/eager {ops['compiled']['top_level']}/{ops['eager']['top_level']}",
              flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--vocab", type=int, nargs="*", default=[32000, 152064])
    p.add_argument("--batch", type=int, nargs="*", default=[1, 8, 64])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--static", action="store_true", help="compile with dynamic=False (one graph per shape)")
    p.add_argument("--out", default=None, help="default bench/results/bench_compile_DEVICE.json")
    a = p.parse_args(argv)
    from autodeco_samplers.core import step

    step.COMPILE_DYNAMIC = not a.static
    if a.threads:
        torch.set_num_threads(a.threads)
    import os

    results = {"torch": torch.__version__, "device": a.device, "threads": torch.get_num_threads(),
               "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or platform.machine(),
               "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
               "model": "random heads (width 256, hidden 1024) on random logits x 8; no language model",
               "repeats": a.repeats, "dynamic": step.COMPILE_DYNAMIC, "cases": []}
    for vocab in a.vocab:
        results["cases"].append(case(vocab, a.batch, a.repeats, a.device, a.seed))
    device_tag = a.device.split(":")[0]
    out = Path(a.out or Path(__file__).parents[1] / "results" / f"bench_compile_{device_tag}.json")
    write_json(out, results, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
