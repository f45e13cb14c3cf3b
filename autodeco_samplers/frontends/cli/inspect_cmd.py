"""``autodeco inspect PATH``: what a checkpoint holds."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what an AutoDeco checkpoint holds")
    p.add_argument("path", help="heads-only or merged folder, .safetensors file, or .gguf sidecar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.heads import read_head_checkpoint

    config, _ = read_head_checkpoint(args.path)
    info = config.summary()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    heads = [name for name, on in (("temperature", config.enable_temperature_head), ("top-p", config.enable_top_p_head)) if on]
    rows = [
        ("checkpoint", config.source),
        ("hidden size", config.hidden_size),
        ("heads present", ", ".join(heads)),
        ("feature mode", "enhanced (h, T, max prob, entropy, var, top-5)" if config.use_enhanced_features else "plain (h, T)"),
        ("MLP widths", f"temperature {config.temperature_width or '-'}, top-p {config.top_p_width or '-'}"),
        ("parameters", f"{config.parameter_count:,}"),
        ("base model", config.base_model_name_or_path or "(not recorded)"),
        ("files", "\n".ljust(17).join(config.source_files)),
    ]
    for key, value in rows:
        print(f"{key:<15}  {value}")
    return 0
