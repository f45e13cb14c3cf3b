"""``autodeco init-heads --out OUT``: write freshly initialised heads (official layout)."""

from __future__ import annotations

import argparse
import json

from autodeco_samplers.frontends.validation import positive_int

from autodeco_samplers.frontends.cli._common import add_json, add_out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-heads",
        help="write new, untrained heads for a backbone of a given hidden size (a starting point for training)",
    )
    add_out(p, "folder to write (config.json + autodeco_heads.safetensors)")
    p.add_argument("--hidden-size", type=positive_int, required=True)
    p.add_argument("--width", type=positive_int, default=256, help="MLP hidden width (official: 256)")
    p.add_argument("--no-enhanced-features", action="store_true", help="top-p head reads [h, T] only")
    p.add_argument("--no-temperature-head", action="store_true")
    p.add_argument("--no-top-p-head", action="store_true")
    p.add_argument("--base-model", default=None, help="base_model_name_or_path to record")
    p.add_argument("--seed", type=int, default=0)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.heads.model.init import init_heads
    from autodeco_samplers.heads.io.writer import save_heads

    config, tensors = init_heads(
        args.hidden_size,
        width=args.width,
        use_enhanced_features=not args.no_enhanced_features,
        enable_temperature_head=not args.no_temperature_head,
        enable_top_p_head=not args.no_top_p_head,
        base_model_name_or_path=args.base_model,
        seed=args.seed,
    )
    out = save_heads(args.out, config, tensors)
    if args.json:
        print(json.dumps({"out": str(out), **config.summary()}))
    else:
        print(f"wrote {config.parameter_count:,} head parameters to {out}")
    return 0
