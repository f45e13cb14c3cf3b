#!/usr/bin/env python
"""Benchmark (not a test): the AutoDeco step against the engines' own samplers, side by side.

Per vocabulary size (32k, 152k) and batch size (1, 8, 64), on the same logits (random normal
x 8, peaked like a mid-size model's) and hidden states (random, width 1024), with random heads
(width 256, enhanced features, seeded):

* torch ``step``: :func:`autodeco_samplers.core.step.torch_step_sample` (heads with their
  statistics, policy, sort-free nucleus, draw among the kept tokens); ``step_logits``: the
  masked-logits form :func:`~autodeco_samplers.core.step.torch_step_logits` (what SGLang/vLLM take);
* (a) ``hf``: transformers' ``TemperatureLogitsWarper(0.8)`` + ``TopPLogitsWarper(0.9)`` +
  softmax + ``torch.multinomial`` (what ``generate(do_sample=True)`` does per step);
* (b) ``softmax``: one ``torch.softmax`` over the same logits (a lower bound on any sampler);
  ``softmax_out`` the same into a preallocated output (no allocation, whose page faults make
  ``softmax`` vary by up to 3x at 5-40 MB outputs; reported, the goal is judged on ``softmax``);
* pieces of the step: ``heads`` (both heads with the top-p head's statistics), ``stats``
  (the statistics alone) and ``rule`` (nucleus + draw for the used T and P);
* ``aten_ops``: per contender, the aten operators one call dispatches (torch profiler,
  :func:`aten_ops`): ``step`` / ``rule`` take the proven path on these logits, ``rule_wide``
  the exact fallback;
* ``rule_wide``: the rule on rows whose nucleus is far wider than the candidates (logits
  random normal x 1, T 1, P 0.9: tens of thousands of kept tokens), i.e. the exact threshold
  search every row takes when the candidates cannot prove its nucleus (HF's cost does not
  depend on the nucleus);
* NumPy ``numpy_step`` (:func:`autodeco_samplers.core.step.numpy_step_sample`, one row at a time as
  llama.cpp needs) against (c) ``llama_native``: llama.cpp's own sampler chain
  ``temp -> top_p -> dist`` applied per token to the same logits through
  ``llama_sampler_apply`` (llama.cpp fills the same ``llama_token_data`` array in
  ``llama_sampler_sample``); reported per token.

Every measurement alternates the order of the contenders per repeat and reports medians; the
ratios are of medians. JSON goes to ``bench/results/bench_step.json``.

    python bench/speed/bench_step.py                 # full grid
    python bench/speed/bench_step.py --quick         # fewer repeats, batch 1 and 8
    python bench/speed/bench_step.py --device cuda   # the torch part on a GPU (synchronised timing)
    python bench/speed/bench_step.py --top-p-one     # the rule at P = 1 vs P = 0.95 (bench_step_top_p_one.json)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._provenance import write_json  # noqa: E402

HIDDEN = 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def alternate(fns: dict, repeats: int, device: str) -> dict:
    """Median seconds of each callable; the order is reversed on every other repeat."""
    names = list(fns)
    times = {n: [] for n in names}
    for n in names:  # warm-up
        fns[n]()
    _sync(device)
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def aten_ops(fn) -> dict:
    """What one call of ``fn`` dispatches, counted by the torch profiler (CPU side, the proxy
    for kernel launches): ``top_level``, the aten operators called from Python (each at least
    one dispatch, on a GPU at least one launch when it touches device memory), and ``all``,
    every aten operator including those nested inside others (``aten::softmax`` calls
    ``aten::_softmax``, ...)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return {"top_level": len(top), "all": len(events)}


def torch_case(vocab: int, batch: int, repeats: int, device: str, seed: int) -> dict:
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from autodeco_samplers.core import torch_ops
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_logits, torch_step_sample
    from autodeco_samplers.core.torch_ops import torch_rule_sample

    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, vocab, generator=g) * 8).to(device)
    hidden = torch.randn(batch, HIDDEN, generator=g).to(device)
    heads = AutoDecoHeadsModule.create(HIDDEN, width=256, seed=seed).requires_grad_(False).to(device)
    policy = DecodingPolicy()
    gen = torch.Generator(device=device).manual_seed(seed)
    temp, top_p = TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.9)
    with torch.no_grad():
        T_pred, P_pred = heads(hidden, logits)
    T, P = policy.apply(T_pred, P_pred)
    wide = torch.randn(batch, vocab, generator=g).to(device)
    buf = torch.empty_like(logits)

    fns = {
        "step": lambda: torch_step_sample(hidden, logits, heads, policy, gen),
        "step_logits": lambda: torch_step_logits(hidden, logits, heads, policy),
        "hf": lambda: torch.multinomial(torch.softmax(top_p(None, temp(None, logits)), -1), 1, generator=gen),
        "softmax": lambda: torch.softmax(logits, -1),
        "softmax_out": lambda: torch._softmax(logits, -1, False, out=buf),
        "heads": lambda: heads(hidden, logits),
        "stats": lambda: torch_ops.probability_stats(logits, T_pred, check=False),
        "rule": lambda: torch_rule_sample(logits, T, P, gen),
        "rule_wide": lambda: torch_rule_sample(wide, 1.0, 0.9, gen),
    }
    with torch.no_grad():
        t = alternate(fns, repeats, device)
        ops = {name: aten_ops(fns[name]) for name in ("step", "step_logits", "heads", "rule", "rule_wide", "softmax")}
    ms = {k: 1e3 * v for k, v in t.items()}
    return {
        "vocab": vocab, "batch": batch, "device": device, "ms": ms, "aten_ops": ops,
        "hf_over_step": ms["hf"] / ms["step"],
        "step_over_softmax": ms["step"] / ms["softmax"],
        "step_over_softmax_out": ms["step"] / ms["softmax_out"],
        "step_logits_over_softmax": ms["step_logits"] / ms["softmax"],
        "hf_over_rule_wide": ms["hf"] / ms["rule_wide"],
        "T_used_mean": float(T.mean()), "P_used_mean": float(P.mean()),
    }


def top_p_one_case(vocab: int, batch: int, repeats: int, device: str, seed: int) -> dict:
    """The rule alone (no heads) at ``P = 1`` against ``P = 0.95`` and greedy rows, per path:
    the default (``sync`` on the CPU: the threshold search runs only on rows that need it),
    ``sync=False`` (every row, as on a GPU) and the logits form. Two logit shapes: ``peaked``
    (random normal x 8, where the candidates prove a ``P = 0.95`` nucleus) and ``wide``
    (random normal x 1, where ``P = 0.95`` needs the threshold search). ``P >= 1`` and greedy
    rows skip the search, so ``p1`` should cost no more than ``p095``."""
    from autodeco_samplers.core.torch_ops import torch_rule_logits, torch_rule_sample

    g = torch.Generator().manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = {"vocab": vocab, "batch": batch, "device": device}
    for shape, scale in (("peaked", 8.0), ("wide", 1.0)):
        logits = (torch.randn(batch, vocab, generator=g) * scale).to(device)
        fns = {}
        for name, T, P in (("p095", 1.0, 0.95), ("p1", 1.0, 1.0), ("greedy", 0.0, 0.95)):
            fns[f"sample_{name}"] = lambda T=T, P=P: torch_rule_sample(logits, T, P, gen)
            fns[f"nosync_{name}"] = lambda T=T, P=P: torch_rule_sample(logits, T, P, gen, sync=False)
            fns[f"logits_{name}"] = lambda T=T, P=P: torch_rule_logits(logits, T, P)
        with torch.no_grad():
            ms = {k: 1e3 * v for k, v in alternate(fns, repeats, device).items()}
        out[shape] = {"ms": ms, **{f"{path}_p1_over_p095": ms[f"{path}_p1"] / ms[f"{path}_p095"]
                                   for path in ("sample", "nosync", "logits")}}
    return out


def _native_chain(temp: float, top_p: float, seed: int):
    import llama_cpp as lc

    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temp))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


def numpy_case(vocab: int, repeats: int, seed: int) -> dict:
    """Per token: the NumPy step on one row vs llama.cpp's native chain on the same row."""
    import ctypes

    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import numpy_step_sample

    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(vocab) * 8).astype(np.float32)
    hidden = rng.standard_normal(HIDDEN).astype(np.float32)
    heads = AutoDecoHeadsModule.create(HIDDEN, width=256, seed=seed).to_numpy()
    policy = DecodingPolicy()
    draw_rng = np.random.default_rng(seed)
    out = {"vocab": vocab}

    def ours():
        numpy_step_sample(hidden[None], logits[None], heads, policy, draw_rng)

    fns = {"numpy_step": ours}
    try:
        import llama_cpp as lc

        chain = _native_chain(0.8, 0.9, seed)
        data = (lc.llama_token_data * vocab)()
        view = np.frombuffer(data, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        ids = np.arange(vocab, dtype=np.int32)
        arr = lc.llama_token_data_array(data=ctypes.cast(data, ctypes.POINTER(lc.llama_token_data)), size=vocab,
                                        selected=-1, sorted=False)

        def native():
            # what llama_sampler_sample does before the chain: fill (id, logit, p) for every token
            view["id"] = ids
            view["logit"] = logits
            view["p"] = 0.0
            arr.size, arr.selected, arr.sorted = vocab, -1, False
            lc.llama_sampler_apply(chain, ctypes.byref(arr))
            return data[arr.selected].id

        fns["llama_native"] = native
    except ImportError:
        out["llama_native"] = "llama-cpp-python not installed"
    t = alternate(fns, repeats, "cpu")
    out["ms"] = {k: 1e3 * v for k, v in t.items()}
    if "llama_native" in t:
        out["native_over_numpy_step"] = t["llama_native"] / t["numpy_step"]
    return out


def goals(results: dict) -> list:
    """The issue's goals for this CPU, judged on ``results``: each met, or short by a factor.

    torch step >= 5x faster than HF's warpers at every batch size; torch step <= 5x one softmax
    at batch 1 and 8 (stretch 3x). The end-to-end goals (generate(), llama.cpp tokens/s) are
    measured by bench_transformers.py and bench_llama_cpp.py.
    """
    out = []
    for r in results["torch_cases"]:
        case = f"V={r['vocab']} batch={r['batch']}"
        hf = r["hf_over_step"]
        out.append({"goal": "HF warpers / torch step >= 5", "case": case, "value": round(hf, 2), "met": hf >= 5,
                    "short_by": None if hf >= 5 else round(5 / hf, 2)})
        if r["batch"] in (1, 8):
            sm = r["step_over_softmax"]
            out.append({"goal": "torch step / softmax <= 5 (stretch 3)", "case": case, "value": round(sm, 2),
                        "met": sm <= 5, "short_by": None if sm <= 5 else round(sm / 5, 2)})
    return out


# Measured pieces per case are in "ms"; this is what they show when the softmax goal is missed.
SOFTMAX_GOAL_WHY = (
    "the heads' statistics need exp and log over the row (entropy), a sum of squares and the top-5 mass "
    "(~6 passes, one buffer), the rule one more exp pass for its normaliser plus chunk maxima and a "
    "few thousand gathered values: ~8 passes over the row against 1; at batch 1 the ~250 small torch "
    "calls per step (a few microseconds each, heads MLP included) cost more than the passes themselves"
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 1 and 8, fewer repeats")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--vocab", type=int, nargs="*", default=[32000, 152064])
    p.add_argument("--batch", type=int, nargs="*", default=None, help="default 1 8 64 (--quick: 1 8)")
    p.add_argument("--repeats", type=int, default=None, help="alternated repeats (default 31, --quick 9)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy / llama.cpp part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default bench/results/bench_step.json "
                   "(--top-p-one: bench/results/bench_step_top_p_one.json)")
    p.add_argument("--top-p-one", action="store_true",
                   help="only the rule at P = 1 against P = 0.95 and greedy rows (top_p_one_case)")
    a = p.parse_args(argv)
    if a.top_p_one:
        return top_p_one_main(a)
    a.out = a.out or str(Path(__file__).parents[1] / "results" / "bench_step.json")
    batches = a.batch or ([1, 8] if a.quick else [1, 8, 64])
    repeats = a.repeats or (9 if a.quick else 31)
    if a.threads:
        torch.set_num_threads(a.threads)
    results = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": a.device,
        "machine": platform.processor() or platform.machine(), "repeats": repeats,
        "note": "provisional when taken on a shared machine; ratios are of medians",
        "torch_cases": [], "numpy_cases": [],
    }
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}, {repeats} alternated repeats")
    print(f"{'vocab':>7} {'batch':>5} {'step ms':>8} {'logits ms':>9} {'hf ms':>8} {'softmax':>8} {'heads':>7} "
          f"{'rule':>7} {'hf/step':>8} {'step/sm':>8}")
    for vocab in a.vocab:
        for batch in batches:
            r = torch_case(vocab, batch, repeats, a.device, a.seed)
            results["torch_cases"].append(r)
            m = r["ms"]
            print(f"{vocab:>7} {batch:>5} {m['step']:>8.3f} {m['step_logits']:>9.3f} {m['hf']:>8.3f} {m['softmax']:>8.3f} "
                  f"{m['heads']:>7.3f} {m['rule']:>7.3f} {r['hf_over_step']:>8.2f} {r['step_over_softmax']:>8.2f}", flush=True)
    if not a.no_numpy:
        print(f"{'vocab':>7} {'numpy step ms':>14} {'llama native ms':>16} {'native/numpy':>13}")
        for vocab in a.vocab:
            r = numpy_case(vocab, repeats * 2, a.seed)
            results["numpy_cases"].append(r)
            m = r["ms"]
            print(f"{vocab:>7} {m['numpy_step']:>14.3f} {m.get('llama_native', float('nan')):>16.3f} "
                  f"{r.get('native_over_numpy_step', float('nan')):>13.2f}", flush=True)
    results["goals"] = goals(results)
    if any(not g["met"] and g["goal"].startswith("torch step / softmax") for g in results["goals"]):
        results["softmax_goal_why_short"] = SOFTMAX_GOAL_WHY
    for g in results["goals"]:
        verdict = "met" if g["met"] else f"short by {g['short_by']}x"
        print(f"goal {g['goal']:<40} {g['case']:<22} {g['value']:>8.2f}  {verdict}")
    out = Path(a.out)
    write_json(out, results, indent=2)
    print(f"wrote {out}")
    return 0


def top_p_one_main(a) -> int:
    """``--top-p-one``: :func:`top_p_one_case` over the grid, JSON to ``--out``."""
    import os

    batches = a.batch or [1, 8, 64]
    repeats = a.repeats or 15
    if a.threads:
        torch.set_num_threads(a.threads)
    results = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": a.device, "repeats": repeats,
        "load_average_before": os.getloadavg()[0],
        "note": "the rule alone; ratios are of medians of alternated repeats; p1_over_p095 <= 1 is the goal",
        "cases": [],
    }
    print(f"{'vocab':>7} {'batch':>5} {'shape':>7} {'p095 ms':>8} {'p1 ms':>8} {'greedy':>8} {'p1/p095':>8} "
          f"{'nosync p1/p095':>15} {'logits p1/p095':>15}")
    for vocab in a.vocab:
        for batch in batches:
            r = top_p_one_case(vocab, batch, repeats, a.device, a.seed)
            results["cases"].append(r)
            for shape in ("peaked", "wide"):
                m, c = r[shape]["ms"], r[shape]
                print(f"{vocab:>7} {batch:>5} {shape:>7} {m['sample_p095']:>8.3f} {m['sample_p1']:>8.3f} "
                      f"{m['sample_greedy']:>8.3f} {c['sample_p1_over_p095']:>8.2f} {c['nosync_p1_over_p095']:>15.2f} "
                      f"{c['logits_p1_over_p095']:>15.2f}", flush=True)
    results["load_average_after"] = os.getloadavg()[0]
    out = Path(a.out or Path(__file__).parents[1] / "results" / "bench_step_top_p_one.json")
    write_json(out, results, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
