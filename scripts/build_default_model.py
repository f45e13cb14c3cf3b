#!/usr/bin/env python
"""Rebuild the embedded default model (tokenizer, tiny Llama backbone, AutoDeco heads) from a seed.

    python scripts/build_default_model.py                 # into autodeco_samplers/default_model/
    python scripts/build_default_model.py --out /tmp/dm --seed 1 --backbone-steps 300

CPU only, a few minutes. See autodeco_samplers/default_model/build.py for the exact steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autodeco_samplers.default_model.build import BuildConfig, build_default_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "autodeco_samplers" / "default_model"))
    for f in fields(BuildConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this tiny model)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cfg = BuildConfig(**{f.name: getattr(args, f.name) for f in fields(BuildConfig)})
    out = Path(args.out)
    for sub in ("base", "heads"):  # replace the model files, keep the package's Python files
        shutil.rmtree(out / sub, ignore_errors=True)
    info = build_default_model(out, cfg, progress=not args.quiet)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
