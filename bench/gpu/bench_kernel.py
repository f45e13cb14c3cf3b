#!/usr/bin/env python
"""One command for one CUDA GPU (not a test; CI has no GPU), about 8 minutes: the step's Triton
kernel (autodeco_samplers/core/triton_step.py) against the samplers it replaces.

0. ``predictions``: the bytes of one pass over the float32 logits (the floor) at 32k / 152k x
   batch 1 / 8 / 64 / 256, and each version's predicted time on an H100 and an H200 from HBM
   bandwidth (:func:`predict`; the same numbers are in docs/design.md), printed first;
1. ``checks``: the conformance suite's ``torch-cuda-triton`` engine (kernel and sampling levels)
   against the NumPy reference; the kernel against the torch path on the device (kept sets,
   logits on the kept tokens, tokens for the same uniforms) at 32k and 152k; the kernel captured
   in a CUDA graph and replayed on new inputs equals its eager output bit for bit;
2. ``timings``: milliseconds per call (medians, order alternated per repeat), eager and in
   CUDA-graph replay, at every vocabulary and batch of 0., of: one softmax; HF's warpers
   (temperature, top-p, softmax, multinomial); vLLM's sort-based PyTorch top-p path re-created
   from its published semantics (:func:`vllm_sort_top_p`); FlashInfer's
   ``top_p_sampling_from_probs`` when ``flashinfer`` imports; the kernel (draw and logits
   forms); the torch rule eager (``sync=False``, as on a GPU); and the whole step with the
   heads: kernel, torch eager, torch compiled. Then the issue's goals, each met or missed by a
   stated factor, and the CUDA kernels one call launches (torch profiler).

JSON (the card named) goes to ``bench/results/bench_kernel_<card>.json``.

    python bench/gpu/bench_kernel.py                       # everything (one GPU, ~8 minutes)
    python bench/gpu/bench_kernel.py --predict-only        # 0. only (no GPU needed)
    python bench/gpu/bench_kernel.py --smoke               # every part at toy sizes on the CPU
                                                           # (kernel through Triton's interpreter)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

VOCABS = (32000, 152064)
BATCHES = (1, 8, 64, 256)
HIDDEN = 1024

# Published HBM bandwidths (bytes/s) and SM counts: H100 SXM5 80 GB (HBM3), H200 SXM 141 GB (HBM3e).
CARDS = {"H100": {"hbm": 3.35e12, "sms": 132}, "H200": {"hbm": 4.8e12, "sms": 132}}
# Assumptions of the prediction: what one SM streams from L2 (a row the kernel re-reads fits in
# L2 at small batch; not measured), and what one operator call costs: eager, Python + dispatch +
# launch, 25 us (the H200's eager softmax at batch 1 took 0.030 ms, bench_compile_cuda.json);
# in graph replay a launch costs ~1 us.
SM_STREAM = 100e9
LAUNCH_EAGER, LAUNCH_GRAPH = 25e-6, 1e-6

# Passes over the logits (a read or a write of B x V float32 counts 1; int64/float64 tensors
# count 2) and launches per call, from each version's operators.
VERSIONS = {
    "softmax": {"passes": 3, "launches": 1, "per_row": False,
                "how": "max+sum read, read + write"},
    "hf": {"passes": 40, "launches": 16, "per_row": False,
           "how": "divide (2), sort of values+int64 ids (~4 radix digits x 6), softmax (3), cumsum (2), "
                  "mask + scatter (4), masked_fill (2), softmax (3), multinomial (~2)"},
    "vllm_sort": {"passes": 38, "launches": 12, "per_row": False,
                  "how": "divide (2), sort ascending (~24), softmax (3), cumsum (2), mask + scatter (4), "
                         "softmax (3), exponential + divide + argmax (~3)"},
    "kernel_peaked": {"passes": 5, "launches": 2, "per_row": True,
                      "how": "pass 0 (max, sum), 1-2 search passes that mostly only load (blocks outside the "
                             "range skip the work), kept mass + draw; plus torch.rand for u"},
    "kernel_flat": {"passes": 12, "launches": 2, "per_row": True,
                    "how": "pass 0, up to 9 search passes over the whole row (P near 1, flat rows), 2 draw"},
}


def predict(card: str, vocab: int, batch: int) -> dict:
    """Predicted milliseconds per version: ``passes x bytes / HBM bandwidth`` (the kernel, one
    program per row, is at least ``passes x row bytes x ceil(B / SMs) / SM_STREAM``) plus the
    launches (eager and graph). A prediction, to be checked by the timings."""
    c = CARDS[card]
    one = 4 * vocab * batch
    out = {"floor_bytes": one, "floor_ms": 1e3 * one / c["hbm"]}
    for name, v in VERSIONS.items():
        t = v["passes"] * one / c["hbm"]
        if v["per_row"]:
            t = max(t, v["passes"] * 4 * vocab * math.ceil(batch / c["sms"]) / SM_STREAM)
        out[name] = {"eager_ms": round(1e3 * (t + v["launches"] * LAUNCH_EAGER), 4),
                     "graph_ms": round(1e3 * (t + v["launches"] * LAUNCH_GRAPH), 4)}
    return out


def predictions() -> dict:
    table = {card: [{"vocab": V, "batch": B, **predict(card, V, B)} for V in VOCABS for B in BATCHES] for card in CARDS}
    return {"cards": CARDS, "sm_stream_bytes_per_s": SM_STREAM, "launch_s": {"eager": LAUNCH_EAGER, "graph": LAUNCH_GRAPH},
            "versions": VERSIONS, "table": table}


def print_predictions(p: dict) -> None:
    print("predicted ms (eager / graph), floor = one pass over float32 logits")
    for card, rows in p["table"].items():
        print(f"  {card}: {'V':>7} {'B':>4} {'floor MB':>9} {'floor ms':>9} {'softmax':>13} {'hf':>13} {'vllm_sort':>13} "
              f"{'kernel peaked':>15} {'kernel flat':>15}")
        for r in rows:
            cells = " ".join(f"{r[n]['eager_ms']:>6.3f}/{r[n]['graph_ms']:<6.3f}" for n in ("softmax", "hf", "vllm_sort"))
            k = " ".join(f"{r[n]['eager_ms']:>7.3f}/{r[n]['graph_ms']:<7.3f}" for n in ("kernel_peaked", "kernel_flat"))
            print(f"        {r['vocab']:>7} {r['batch']:>4} {r['floor_bytes'] / 1e6:>9.2f} {r['floor_ms']:>9.4f} {cells} {k}")


# ----------------------------------------------------------------------------- contenders


def vllm_sort_top_p(logits, T, P, generator=None):
    """vLLM's PyTorch top-p path as its documentation and source describe it (re-created, not
    copied): logits divided by the temperature; sorted ascending; softmax and cumulative sum
    of the sorted probabilities; tokens whose cumulative sum is ``<= 1 - p`` are masked to
    ``-inf`` (the largest always kept); the mask scattered back; softmax; then the draw as
    ``argmax(probs / q)`` with ``q ~ Exponential(1)`` (the Gumbel-style trick vLLM uses instead
    of ``torch.multinomial``, no host synchronisation)."""
    import torch

    x = logits / T[:, None]
    sorted_x, order = x.sort(dim=-1, descending=False)
    cum = sorted_x.softmax(dim=-1).cumsum(dim=-1)
    mask = cum <= 1 - P[:, None]
    mask[:, -1] = False
    sorted_x = sorted_x.masked_fill(mask, float("-inf"))
    x = torch.empty_like(x).scatter_(-1, order, sorted_x)
    probs = x.softmax(dim=-1)
    q = torch.empty_like(probs).exponential_(generator=generator)
    return probs.div_(q).argmax(dim=-1)


def hf_warpers(logits, generator=None):
    """HF's ``generate(do_sample=True)`` per step: temperature 0.8, top-p 0.9, softmax, multinomial
    (``None`` without transformers)."""
    import torch

    try:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper
    except ImportError:
        return None

    temp, top_p = TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.9)
    return lambda: torch.multinomial(torch.softmax(top_p(None, temp(None, logits)), -1), 1, generator=generator)


def flashinfer_top_p(logits, T, P):
    """FlashInfer's top-p sampling from probabilities (its own kernel), or the reason it is absent."""
    try:
        import flashinfer.sampling as fs
    except Exception as exc:  # not installed, or no build for this card
        return None, f"flashinfer does not import: {type(exc).__name__}: {exc}"
    import torch

    return (lambda: fs.top_p_sampling_from_probs(torch.softmax(logits / T[:, None], -1), P)), ""


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternate(fns: dict, repeats: int, device) -> dict:
    """Median milliseconds of each callable, the order reversed on every other repeat."""
    names = list(fns)
    times = {n: [] for n in names}
    for n in names:
        fns[n]()
    _sync(device)
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            times[n].append(1e3 * (time.perf_counter() - t0))
    return {n: statistics.median(v) for n, v in times.items()}


def graphed(fns: dict) -> tuple:
    """Each callable captured in its own CUDA graph (``replay`` callables), and the reasons of
    those that cannot be captured."""
    import torch

    out, errors = {}, {}
    for name, fn in fns.items():
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            out[name] = g.replay
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out, errors


def case(vocab: int, batch: int, repeats: int, device, graphs: bool, compiled: bool, seed: int = 0) -> dict:
    """Timings of every contender at one (vocabulary, batch), eager and in graph replay."""
    import torch

    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS
    from autodeco_samplers.core.step import torch_step_sample
    from autodeco_samplers.core.torch_ops import rule_sample_with
    from autodeco_samplers.core.triton_step import triton_rule_logits, triton_rule_sample_with
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    g = torch.Generator().manual_seed(seed + vocab + batch)
    logits = (torch.randn(batch, vocab, generator=g) * 8).to(device)  # peaked, like a mid-size model's
    hidden = torch.randn(batch, HIDDEN, generator=g).to(device)
    heads = AutoDecoHeadsModule.create(HIDDEN, width=256, seed=seed).requires_grad_(False).to(device)
    policy = DecodingPolicy()
    with torch.no_grad():
        T_pred, P_pred = heads(hidden, logits)
    T, P = (t.float().contiguous() for t in policy.apply(T_pred, P_pred))
    u = torch.rand(batch, generator=g, dtype=torch.float64).to(device)
    fns = {
        "softmax": lambda: torch.softmax(logits, -1),
        "hf": hf_warpers(logits),  # dropped below when transformers is missing
        "vllm_sort": lambda: vllm_sort_top_p(logits, T, P),
        "kernel_sample": lambda: triton_rule_sample_with(logits, T, P, u.uniform_()),
        "kernel_logits": lambda: triton_rule_logits(logits, T, P, fill=OUTSIDE_NUCLEUS),
        "torch_rule_eager": lambda: rule_sample_with(logits, T, P, u.uniform_(), sync=False),
        "heads": lambda: heads(hidden, logits),
        "step_kernel": lambda: torch_step_sample(hidden, logits, heads, policy, kernel="triton"),
        "step_torch_eager": lambda: torch_step_sample(hidden, logits, heads, policy, kernel="torch", sync=False),
    }
    if fns["hf"] is None:
        del fns["hf"]
    if compiled:
        fns["step_torch_compiled"] = lambda: torch_step_sample(hidden, logits, heads, policy, kernel="torch", compiled=True)
    fi, why = flashinfer_top_p(logits, T, P)
    if fi is not None:
        fns["flashinfer"] = fi
    out = {"vocab": vocab, "batch": batch, "P_used_mean": float(P.mean()), "T_used_mean": float(T.mean())}
    if why:
        out["flashinfer"] = why
    with torch.no_grad():
        out["eager_ms"] = alternate(fns, repeats, device)
        if graphs:
            replays, errors = graphed(fns)
            out["graph_ms"] = alternate(replays, repeats, device)
            if errors:
                out["graph_errors"] = errors
    return out


def launches(device) -> dict:
    """CUDA kernels one call launches (torch profiler), after the heads and for the whole step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_sample
    from autodeco_samplers.core.triton_step import triton_rule_sample_with
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    logits = torch.randn(8, 32000, device=device) * 8
    hidden = torch.randn(8, HIDDEN, device=device)
    heads = AutoDecoHeadsModule.create(HIDDEN, width=256, seed=0).requires_grad_(False).to(device)
    T, P = torch.full((8,), 0.8, device=device), torch.full((8,), 0.9, device=device)
    u = torch.rand(8, device=device, dtype=torch.float64)
    out = {}
    with torch.no_grad():
        for name, fn in {
            "after_heads": lambda: triton_rule_sample_with(logits, T, P, u),
            "after_heads_with_uniforms": lambda: triton_rule_sample_with(logits, T, P, u.uniform_()),
            "whole_step": lambda: torch_step_sample(hidden, logits, heads, DecodingPolicy(), kernel="triton"),
            "heads": lambda: heads(hidden, logits),
        }.items():
            fn()
            _sync(device)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                _sync(device)
            out[name] = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return out


# ----------------------------------------------------------------------------- checks


def conformance(examples: int) -> dict:
    from autodeco_samplers.conformance.runner import run_engine

    results = run_engine("torch-cuda-triton", ("kernel", "sampling"), examples=examples)
    return {r.level: {"verdict": r.verdict, "cases": r.cases, "reason": r.reason[-2000:]} for r in results}


def against_torch(device, vocabs=VOCABS, batch: int = 8) -> list:
    """The kernel against the torch path on ``device``: kept sets, logits on the kept tokens,
    tokens for the same uniforms; three logit shapes (peaked, flat: the long search, ties)."""
    import numpy as np
    import torch

    from autodeco_samplers.conformance.checker import check_distribution
    from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS as FILL
    from autodeco_samplers.core.torch_ops import rule_sample_with, torch_rule_logits
    from autodeco_samplers.core.triton_step import triton_rule_logits, triton_rule_sample_with

    out = []
    g = torch.Generator().manual_seed(11)
    for vocab in vocabs:
        for shape in ("peaked", "flat", "ties"):
            if shape == "ties":
                x = torch.randint(-20, 20, (batch, vocab), generator=g).float()
            else:
                x = torch.randn(batch, vocab, generator=g) * (8.0 if shape == "peaked" else 0.5)
            T = torch.rand(batch, generator=g) * 1.5
            T[0] = 0.0  # a greedy row
            P = torch.rand(batch, generator=g)
            P[1], P[2] = 1.0, 0.999
            u = torch.rand(batch, generator=g, dtype=torch.float64)
            x, T, P, u = (t.to(device) for t in (x, T, P, u))
            got, want = triton_rule_logits(x, T, P, fill=FILL), torch_rule_logits(x, T, P, fill=FILL, sync=False)
            kept, kept_t = got > FILL, want > FILL
            both = kept & kept_t
            verdict = check_distribution(x.cpu().numpy(), T.cpu().numpy(), P.cpu().numpy(),
                                         torch.softmax(got.double(), -1).cpu().numpy())
            tok, tok_t = triton_rule_sample_with(x, T, P, u), rule_sample_with(x, T, P, u, sync=False)
            out.append({
                "vocab": vocab, "shape": shape, "reference_ok": verdict.ok,
                "reference": "" if verdict.ok else verdict.describe("kernel")[-1500:],
                "kept_rows_equal_to_torch": int((kept == kept_t).all(-1).sum()), "rows": batch,
                "logits_equal_on_kept": bool(torch.equal(got[both], want[both])),
                "tokens_equal_to_torch": int((tok == tok_t).sum()),
                "tokens_kept": bool(kept.gather(-1, tok[:, None]).all()),
                "nucleus_widths": kept.sum(-1).tolist(),
            })
            ok = out[-1]["reference_ok"] and out[-1]["tokens_kept"] and out[-1]["logits_equal_on_kept"]
            print(f"  kernel vs torch V={vocab} {shape}: reference {'ok' if ok else 'FAILED'}, kept rows equal "
                  f"{out[-1]['kept_rows_equal_to_torch']}/{batch}, tokens equal {out[-1]['tokens_equal_to_torch']}/{batch}",
                  flush=True)
    return out


def graph_replay(vocab: int, batch: int) -> dict:
    """The kernel (both forms) captured in a CUDA graph, replayed on new inputs: equal to eager."""
    import torch

    from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS as FILL
    from autodeco_samplers.core.triton_step import triton_rule_logits, triton_rule_sample_with

    dev = torch.device("cuda")
    x = torch.empty(batch, vocab, device=dev)
    T, P = torch.empty(batch, device=dev), torch.empty(batch, device=dev)
    u = torch.empty(batch, device=dev, dtype=torch.float64)
    g = torch.Generator().manual_seed(vocab + batch)

    def fill(scale):
        x.copy_(torch.randn(batch, vocab, generator=g) * scale)
        T.copy_(torch.rand(batch, generator=g) * 1.5)
        P.copy_(torch.rand(batch, generator=g))
        u.copy_(torch.rand(batch, generator=g, dtype=torch.float64))

    fill(1.0)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            triton_rule_logits(x, T, P, fill=FILL), triton_rule_sample_with(x, T, P, u)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out_logits = triton_rule_logits(x, T, P, fill=FILL)
        out_tokens = triton_rule_sample_with(x, T, P, u)
    replays = []
    for scale in (8.0, 1.0, 3.0):
        fill(scale)
        graph.replay()
        torch.cuda.synchronize()
        replays.append({"scale": scale,
                        "logits_equal": bool(torch.equal(out_logits, triton_rule_logits(x, T, P, fill=FILL))),
                        "tokens_equal": bool(torch.equal(out_tokens, triton_rule_sample_with(x, T, P, u)))})
    return {"vocab": vocab, "batch": batch, "replays": replays,
            "ok": all(r["logits_equal"] and r["tokens_equal"] for r in replays)}


# ----------------------------------------------------------------------------- goals


def goals(cases: list, launch_counts: dict) -> list:
    """The issue's goals, each met or missed by a factor (``value / limit``)."""
    out = []

    def goal(name, case, value, limit):
        out.append({"goal": name, "case": case, "value": round(value, 3), "limit": limit, "met": value <= limit,
                    "missed_by": None if value <= limit else round(value / limit, 2)})

    for c in cases:
        e, where = c["eager_ms"], f"V={c['vocab']} B={c['batch']}"
        if "hf" in e:
            goal("eager: kernel after heads / HF warpers <= 0.5", where, e["kernel_sample"] / e["hf"], 0.5)
            goal("eager: whole step (heads + kernel) / HF warpers <= 1", where, e["step_kernel"] / e["hf"], 1)
        goal("eager: kernel after heads / one softmax <= 10", where, e["kernel_sample"] / e["softmax"], 10)
        if "flashinfer" in e and c["batch"] >= 64:
            goal("stretch: kernel / FlashInfer top-p <= 1 (batch >= 64)", where, e["kernel_sample"] / e["flashinfer"], 1)
        gm = c.get("graph_ms", {})
        if "kernel_sample" in gm and "softmax" in gm:
            goal("graph replay: kernel after heads / one softmax <= 3", where, gm["kernel_sample"] / gm["softmax"], 3)
    if "after_heads" in launch_counts:
        goal("kernel launches after the heads <= 4", "V=32000 B=8", launch_counts["after_heads_with_uniforms"], 4)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--predict-only", action="store_true", help="print and write the predictions only (no GPU)")
    p.add_argument("--smoke", action="store_true",
                   help="every part at toy sizes on the CPU, the kernel through Triton's interpreter (checks the script)")
    p.add_argument("--repeats", type=int, default=15, help="alternated repeats per timing (default 15)")
    p.add_argument("--examples", type=int, default=100, help="conformance kernel-level examples (default 100)")
    p.add_argument("--no-compiled", action="store_true", help="skip the compiled torch step (its compile takes ~1 min)")
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    a = p.parse_args(argv)
    if a.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    report = {"predictions": predictions()}
    print_predictions(report["predictions"])
    from bench._provenance import write_json

    if a.predict_only:
        write_json(Path(a.out_dir) / "bench_kernel_predictions.json", report, indent=2)
        print(f"wrote {Path(a.out_dir) / 'bench_kernel_predictions.json'}")
        return 0
    import torch

    device = "cpu" if a.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --predict-only or --smoke", file=sys.stderr)
        return 2
    card = "cpu-smoke" if a.smoke else torch.cuda.get_device_name(0)
    report.update({"device": card, "torch": torch.__version__})
    try:
        import triton

        report["triton"] = triton.__version__
    except ImportError:
        print("triton does not import: pip install 'autodeco-samplers[triton]'", file=sys.stderr)
        return 2
    t0 = time.time()
    ok = True
    print(f"device {card}, torch {torch.__version__}, triton {report['triton']}", flush=True)
    if not a.smoke:
        report["conformance"] = conformance(a.examples)
        ok &= all(v["verdict"] == "pass" for v in report["conformance"].values())
        print("conformance torch-cuda-triton:", {k: v["verdict"] for k, v in report["conformance"].items()},
              f"({time.time() - t0:.0f} s)", flush=True)
    report["against_torch"] = against_torch(device, vocabs=(1000,) if a.smoke else VOCABS, batch=4 if a.smoke else 8)
    ok &= all(r["reference_ok"] and r["tokens_kept"] and r["logits_equal_on_kept"] for r in report["against_torch"])
    if not a.smoke:
        report["cuda_graph"] = [graph_replay(v, b) for v, b in ((32000, 8), (152064, 1), (152064, 64))]
        ok &= all(r["ok"] for r in report["cuda_graph"])
        print("cuda graph replay:", "ok" if all(r["ok"] for r in report["cuda_graph"]) else "FAILED", flush=True)
    vocabs, batches = ((1000,), (1, 2)) if a.smoke else (VOCABS, BATCHES)
    repeats = 3 if a.smoke else a.repeats
    report["timings"] = []
    print(f"{'V':>7} {'B':>4}  ms eager (graph): softmax, hf, vllm_sort, kernel_sample, kernel_logits, torch_rule_eager, "
          "step_kernel, step_torch_eager, step_torch_compiled", flush=True)
    for V in vocabs:
        for B in batches:
            c = case(V, B, repeats, device, graphs=not a.smoke, compiled=not (a.smoke or a.no_compiled))
            report["timings"].append(c)
            names = ("softmax", "hf", "vllm_sort", "kernel_sample", "kernel_logits", "torch_rule_eager", "step_kernel",
                     "step_torch_eager", "step_torch_compiled")
            cells = " ".join(f"{c['eager_ms'].get(n, float('nan')):.3f}({c.get('graph_ms', {}).get(n, float('nan')):.3f})"
                             for n in names)
            print(f"{V:>7} {B:>4}  {cells}  [{time.time() - t0:.0f} s]", flush=True)
    report["launches"] = {} if a.smoke else launches(device)
    report["goals"] = goals(report["timings"], report["launches"])
    for g in report["goals"]:
        print(f"goal {g['goal']:<58} {g['case']:<16} {g['value']:>8.3f}  "
              f"{'met' if g['met'] else 'missed by ' + str(g['missed_by']) + 'x'}")
    report["checks_ok"] = bool(ok)
    report["seconds"] = round(time.time() - t0, 1)
    name = "smoke" if a.smoke else card.replace("NVIDIA ", "").replace(" ", "_")
    out = Path(a.out_dir) / f"bench_kernel_{name}.json"
    write_json(out, report, indent=2)
    print(f"checks {'ok' if ok else 'FAILED'}; wrote {out} ({report['seconds']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
