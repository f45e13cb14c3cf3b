"""``autodeco export-heads CHECKPOINT --out heads.gguf``: heads as a GGUF sidecar for llama.cpp."""

from __future__ import annotations

import argparse
import json

from autodeco_samplers.frontends.cli._common import add_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-heads",
        help="write a checkpoint's AutoDeco heads as a small GGUF sidecar (for --engine llama-cpp)",
    )
    p.add_argument("checkpoint", help="heads-only or merged folder, .safetensors file, or .gguf sidecar")
    p.add_argument("--out", required=True, help="output .gguf file")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.heads.io.export import export_heads

    config, out = export_heads(args.checkpoint, args.out)
    if args.json:
        print(json.dumps({"out": str(out), **config.summary()}))
        return 0
    print(
        f"wrote {config.parameter_count:,} head parameters (hidden_size={config.hidden_size}, "
        f"{'enhanced' if config.use_enhanced_features else 'plain'} features) to {out}"
    )
    return 0
