"""``autodeco init-heads OUT``: write freshly initialised heads (official layout)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-heads",
        help="write new, untrained heads for a backbone of a given hidden size (a starting point for training)",
    )
    p.add_argument("out", help="folder to write (config.json + autodeco_heads.safetensors)")
    p.add_argument("--hidden-size", type=int, required=True)
    p.add_argument("--width", type=int, default=256, help="MLP hidden width (official: 256)")
    p.add_argument("--plain-features", action="store_true", help="top-p head reads (h, T) only")
    p.add_argument("--no-temperature-head", action="store_true")
    p.add_argument("--no-top-p-head", action="store_true")
    p.add_argument("--base-model", default=None, help="base_model_name_or_path to record")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.heads.init import init_heads
    from autodeco_samplers.heads.writer import save_heads

    config, tensors = init_heads(
        args.hidden_size,
        width=args.width,
        use_enhanced_features=not args.plain_features,
        enable_temperature_head=not args.no_temperature_head,
        enable_top_p_head=not args.no_top_p_head,
        base_model_name_or_path=args.base_model,
        seed=args.seed,
    )
    out = save_heads(args.out, config, tensors)
    print(f"wrote {config.parameter_count:,} head parameters to {out}")
    return 0
