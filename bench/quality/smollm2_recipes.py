"""Train the SmolLM2-135M-Instruct heads with every recipe the evaluation compares.

    python bench/quality/smollm2_recipes.py             # every recipe -> $AUTODECO_CACHE/smollm2-recipes/<name>/
    python bench/quality/smollm2_recipes.py --only official,self
    python bench/quality/eval_smollm2.py --variants-from bench/results/smollm2_recipes.json

Each recipe is a :class:`autodeco_samplers.models.smollm2.build.BuildConfig` built by the same
function as the shipped heads (:func:`build_smollm2_heads`), so the one that ships rebuilds bit for
bit with ``scripts/build_smollm2_heads.py``. Recipes (docs/evaluation.md, "Recipes"):

* ``current``: the first shipped recipe: reference targets, exclusive soft top-p prefix, no
  temperature loss (the two named options of docs/training.md);
* ``official``: the paper's recipe: inclusive prefix, temperature loss on, easy-token masking
  (ratio 0.6) and DFT weights;
* ``official-exclusive`` / ``official-no-T-loss``: one named option each on top of ``official``;
* ``self``: ``official`` trained on the model's own verified answers instead of reference
  sentences (:mod:`autodeco_samplers.models.smollm2.self_targets`, 12 draws per training item at T = 1),
  1,200 records: meant to beat
  the static oracle, since the heads then learn from text the model does produce;
* ``self-current``: ``current``'s options on the same self-verified data.

Writes ``bench/results/smollm2_recipes.json``: per recipe its config, heads folder, losses and
times. The self-verified records are made once and shared by the recipes that use them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autodeco_samplers.models.smollm2.build import BuildConfig  # noqa: E402
from bench._provenance import write_json  # noqa: E402

OFFICIAL = BuildConfig(soft_top_p_prefix="inclusive", temperature_loss_weight=1.0)
RECIPES = {
    "current": BuildConfig(),
    "official": OFFICIAL,
    "official-exclusive": replace(OFFICIAL, soft_top_p_prefix="exclusive"),
    "official-no-T-loss": replace(OFFICIAL, temperature_loss_weight=0.0),
    "self": replace(OFFICIAL, targets="self", train_records=1200, self_samples=12),
    "self-current": replace(BuildConfig(), targets="self", train_records=1200, self_samples=12),
}


def cache_dir() -> Path:
    return Path(os.environ.get("AUTODECO_CACHE", Path.home() / ".cache" / "autodeco-samplers")) / "smollm2-recipes"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(RECIPES), help="comma-separated recipe names")
    ap.add_argument("--out-dir", default=str(cache_dir()), help="where each recipe's heads folder goes")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "smollm2_recipes.json"))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")

    from autodeco_samplers.models.smollm2.build import build_smollm2_heads, training_data
    from autodeco_samplers.models.smollm2.model import load_hf

    t0 = time.perf_counter()
    data_cache = {}
    out = {}
    model = tok = None
    for name in names:
        cfg = RECIPES[name]
        key = (cfg.targets, cfg.train_records, cfg.seed, cfg.self_samples)
        if cfg.targets == "self" and key not in data_cache:
            import torch

            torch.set_num_threads(cfg.threads)
            if model is None:
                model, tok = load_hf()
            ts = time.perf_counter()
            data_cache[key] = (training_data(cfg, model, tok), round(time.perf_counter() - ts, 1))
        records, t_data = data_cache.get(key, (None, None))
        folder = Path(args.out_dir) / name
        print(f"== {name}: {asdict(cfg)}", flush=True)
        info = build_smollm2_heads(folder, cfg, records=records, progress=True)
        if t_data is not None:
            info["seconds_training_data"] = t_data
        out[name] = {"heads": str(folder / "heads").replace(str(Path.home()), "~"), **info}
        print(f"   {name}: final losses {info['heads_final_losses']}, {info['seconds_total']:.0f} s", flush=True)
    write_json(Path(args.json), {"recipes": out, "seconds_total": round(time.perf_counter() - t0, 1),
                                 "machine": {"platform": platform.platform(), "loadavg": os.getloadavg()}})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
