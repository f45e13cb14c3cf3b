#!/usr/bin/env python
"""Head-recipe ablation and seed spread on the choice-then-derive task.

    python bench/quality/recipe_ablation.py --variants official,exclusive --train-seeds 0 --eval-seeds 0,1,2
    python bench/quality/recipe_ablation.py --variants exclusive --train-seeds 0,1,2 --eval-seeds 0,1,2 \\
        --out bench/results/seed_spread.json

Every variant trains heads on the *same* frozen backbone (default: the embedded default
model's ``base/``) with the default build's head settings (400 steps, batch 64, lr 1e-3,
width 256; data ``task.training_records(spec, 20000, seed=train_seed + 3)``, heads seed
``train_seed``: training seed 0 is exactly the default build's heads step) and changes one
knob of :class:`autodeco_samplers.research.training.TrainConfig` (see ``VARIANTS``). Each trained
head set is evaluated on the held-out prompts with every evaluation seed
(:func:`autodeco_samplers.research.evaluation.toy.evaluate` with ``seeds``; the static grid is sampled
once per evaluation seed and reused across variants). The JSON (``--out``) holds, per variant
and training seed, AutoDeco's accuracy/valid/diversity/score, mean-static, oracle, the
paired AutoDeco - oracle difference with its SE over evaluation seeds, and, per variant,
mean and SE over training seeds. Trained heads are kept in ``--work`` and reused when rerun.
Nothing here looks at the held-out prompts except the evaluation itself; ``--split train``
evaluates on prompts from training sets instead, which is how a variant should be *chosen*.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autodeco_samplers.research.evaluation.toy import portable_path  # noqa: E402
from bench._provenance import write_json  # noqa: E402

# name -> TrainConfig overrides (each one change from the official recipe, or a named combination)
VARIANTS = {
    "official": {},
    "exclusive": {"soft_top_p_prefix": "exclusive"},
    "no-dft": {"dft": False},
    "alpha100": {"alpha": 100.0},
    "no-easy-mask": {"easy_token_ratio": 0.0},
    "steps1200": {"steps": 1200},
    "lr3e-3": {"lr": 3e-3},
    "t-loss-weight0": {"temperature_loss_weight": 0.0},
    "exclusive+no-dft": {"soft_top_p_prefix": "exclusive", "dft": False},
    "exclusive+t-loss-weight0": {"soft_top_p_prefix": "exclusive", "temperature_loss_weight": 0.0},
    "exclusive+no-dft+t-loss-weight0": {"soft_top_p_prefix": "exclusive", "dft": False, "temperature_loss_weight": 0.0},
}


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="official,exclusive")
    p.add_argument("--train-seeds", type=_ints, default=[0])
    p.add_argument("--eval-seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=24)
    p.add_argument("--split", choices=("heldout", "train"), default="heldout",
                   help="evaluate on the held-out prompts (default) or on prompts from training sets (for choosing a variant)")
    p.add_argument("--model", "--base", dest="base", default=None,
                   help="backbone folder, as the CLI's --model (default: the embedded default model's base/)")
    p.add_argument("--work", default="/tmp/autodeco_recipe_ablation", help="where trained heads are kept")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "recipe_ablation.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from autodeco_samplers.models import default_model
    from autodeco_samplers.research.evaluation import toy_task as task
    from autodeco_samplers.models.default_model.build import BuildConfig
    from autodeco_samplers.research.evaluation.report import mean_and_se
    from autodeco_samplers.research.evaluation.toy import evaluate
    from autodeco_samplers.research.training import TrainConfig, train_heads

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    base = Path(args.base) if args.base else default_model.base_path()
    spec = default_model.task_spec()
    bc = BuildConfig()
    cache: dict = {}
    results = {"base": portable_path(base), "split": args.split, "eval_seeds": args.eval_seeds, "train_seeds": args.train_seeds, "samples": args.samples,
               "variants": {}}
    out_path = Path(args.out)
    for name in names:
        per_seed = []
        for ts in args.train_seeds:
            kw = {"steps": bc.head_steps, "batch_size": bc.head_batch_size, "lr": bc.head_lr, "width": bc.head_width,
                  "seed": ts, "save_every": 0, **VARIANTS[name]}
            heads_dir = Path(args.work) / f"{name}-train{ts}"
            t0 = time.perf_counter()
            records = task.training_records(spec, bc.train_examples, seed=ts + 3)
            train_heads(str(base), records, heads_dir, TrainConfig(**kw), progress=False)
            t1 = time.perf_counter()
            rep = evaluate(base, heads_dir, spec=spec, n_samples=args.samples, seeds=args.eval_seeds, static_cache=cache,
                           split=args.split)
            rows = {r["group"]: r for r in rep["strategies"] if r["group"] != "grid"}
            oracle = next(r for r in rep["strategies"] if r["oracle"])
            ad = rows["autodeco"]
            entry = {
                "train_seed": ts, "config": kw,
                "autodeco": {m: ad[m] for m in ("accuracy", "valid_choice", "derive_accuracy", "diversity", "score", "T", "P")},
                "autodeco_score_se": ad["spread"]["score"], "autodeco_per_seed_score": ad["per_seed"]["score"],
                "mean_static": {"T": rows["mean_static"]["T"], "P": rows["mean_static"]["P"], "score": rows["mean_static"]["score"]},
                "oracle": {"name": oracle["name"], "score": oracle["score"], "accuracy": oracle["accuracy"],
                           "diversity": oracle["diversity"], "per_seed_score": oracle["per_seed"]["score"]},
                "greedy_score": rows["greedy"]["score"], "default_score": rows["default"]["score"],
                "vs_oracle": rep["autodeco_vs_oracle_score"], "vs_oracle_se": rep["autodeco_vs_oracle_score_se"],
                "beyond_frontier": rep["autodeco_beyond_frontier"], "dominated_by": rep["autodeco_dominated_by"],
                "choice_token_T_P": [rep["trace"]["T"][0], rep["trace"]["P"][0]],
                "seconds_train": t1 - t0, "seconds_eval": time.perf_counter() - t1,
            }
            per_seed.append(entry)
            print(json.dumps({"variant": name, "train_seed": ts, "score": round(ad["score"], 4),
                              "valid": round(ad["valid_choice"], 4), "diversity": round(ad["diversity"], 4),
                              "mean_static": round(rows["mean_static"]["score"], 4), "oracle": round(oracle["score"], 4),
                              "vs_oracle": round(entry["vs_oracle"], 4), "beyond": entry["beyond_frontier"]}), flush=True)
        summary = {}
        for key, get in (("autodeco_score", lambda e: e["autodeco"]["score"]), ("vs_oracle", lambda e: e["vs_oracle"]),
                         ("mean_static_score", lambda e: e["mean_static"]["score"]), ("oracle_score", lambda e: e["oracle"]["score"]),
                         ("autodeco_valid", lambda e: e["autodeco"]["valid_choice"]), ("autodeco_diversity", lambda e: e["autodeco"]["diversity"])):
            m, se = mean_and_se([get(e) for e in per_seed])
            summary[key] = {"mean": m, "se_over_train_seeds": se}
        # every (training seed, evaluation seed) cell: paired AutoDeco - oracle differences
        cells = [a - o for e in per_seed for a, o in zip(e["autodeco_per_seed_score"], e["oracle"]["per_seed_score"])]
        m, se = mean_and_se(cells)
        summary["vs_oracle_all_cells"] = {"mean": m, "se": se, "n": len(cells)}
        summary["beyond_frontier_count"] = sum(e["beyond_frontier"] for e in per_seed)
        results["variants"][name] = {"overrides": VARIANTS[name], "per_train_seed": per_seed, "summary": summary}
        write_json(out_path, results)  # after every variant: partial results survive
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
