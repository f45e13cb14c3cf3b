"""``autodeco convert-gguf MODEL_DIR --out model.gguf``: the project's tiny Llama models as GGUF."""

from __future__ import annotations

import argparse
import json

from autodeco_samplers.frontends.cli._common import add_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-gguf",
        help="convert a Llama-architecture HF folder (safetensors + tokenizer.json) to GGUF (tiny test/demo models)",
    )
    p.add_argument("model_dir", help="HF model folder: config.json, *.safetensors, tokenizer.json")
    p.add_argument("--out", required=True, help="output .gguf file")
    p.add_argument("--dtype", choices=("f32", "f16"), default="f32", help="weight type of 2-D tensors (default f32)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf

    out = convert_llama_to_gguf(args.model_dir, args.out, dtype=args.dtype)
    if args.json:
        print(json.dumps({"out": str(out), "dtype": args.dtype}))
    else:
        print(f"wrote {out} ({args.dtype})")
    return 0
