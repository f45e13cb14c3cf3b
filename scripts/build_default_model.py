#!/usr/bin/env python
"""Rebuild the embedded default model (tokenizer, tiny Llama backbone, AutoDeco heads) from a seed.

    python scripts/build_default_model.py                 # into autodeco_samplers/models/default_model/
    python scripts/build_default_model.py --out /tmp/dm --seed 1 --backbone-steps 300
    python scripts/build_default_model.py --verify        # rebuild into a temp dir, compare bit for bit

``--verify`` rebuilds with the ``build_config`` recorded in the embedded ``build_info.json`` and
compares every tensor of ``base/model.safetensors`` and ``heads/autodeco_heads.safetensors``
and the tokenizer and config files byte for byte; exit status 1 when anything differs.

CPU only, a few minutes. See autodeco_samplers/models/default_model/build.py for the exact steps.
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

from autodeco_samplers.models.default_model.build import BuildConfig, build_default_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "autodeco_samplers" / "default_model"))
    for f in fields(BuildConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this tiny model)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verify", action="store_true", help="rebuild the embedded model in a temp dir and compare bit for bit")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.verify:
        return verify(Path(args.out), progress=not args.quiet)
    cfg = BuildConfig(**{f.name: getattr(args, f.name) for f in fields(BuildConfig)})
    out = Path(args.out)
    for sub in ("base", "heads"):  # replace the model files, keep the package's Python files
        shutil.rmtree(out / sub, ignore_errors=True)
    info = build_default_model(out, cfg, progress=not args.quiet)
    print(json.dumps(info, indent=2))
    return 0


COMPARED_FILES = ("base/model.safetensors", "heads/autodeco_heads.safetensors", "base/tokenizer.json", "base/config.json",
                  "heads/config.json", "task.json")


def verify(target: Path, *, progress: bool = True) -> int:
    """Rebuild ``target``'s model from its recorded build config and compare (module docstring)."""
    import tempfile

    from safetensors.numpy import load_file

    recorded = json.loads((target / "build_info.json").read_text())["build_config"]
    known = {f.name for f in fields(BuildConfig)}
    cfg = BuildConfig(**{k: v for k, v in recorded.items() if k in known})
    different = []
    with tempfile.TemporaryDirectory() as tmp:
        build_default_model(Path(tmp), cfg, progress=progress)
        for rel in COMPARED_FILES:
            a, b = target / rel, Path(tmp) / rel
            if rel.endswith(".safetensors"):
                ta, tb = load_file(str(a)), load_file(str(b))
                same = ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and (ta[k] == tb[k]).all() for k in ta)
            else:
                same = a.read_bytes() == b.read_bytes()
            print(f"{'identical' if same else 'DIFFERENT'}: {rel}")
            if not same:
                different.append(rel)
    print("rebuild is bit-identical" if not different else f"rebuild differs in {different}")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
