"""``autodeco prepare-sglang SRC OUT``: write a folder SGLang serves with AutoDeco.

SRC is an official merged AutoDeco checkpoint, or a plain base model folder with
``--heads``. Serve OUT with
``SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models python -m sglang.launch_server --model-path OUT``
(see docs/sglang.md). Needs neither torch nor SGLang.
"""

from __future__ import annotations

import argparse
import json

from ._common import add_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-sglang",
        help="turn a merged AutoDeco checkpoint (or base model + heads) into a folder SGLang serves",
    )
    p.add_argument("src", help="merged AutoDeco checkpoint folder, or a base model folder with --heads")
    p.add_argument("out", help="output folder (weights are symlinked unless --copy)")
    p.add_argument("--heads", default=None, help="heads checkpoint to merge with a base model SRC")
    p.add_argument("--copy", action="store_true", help="copy the weight shards of a merged SRC instead of symlinking")
    p.add_argument("--base-model-type", default=None, help="base model_type when a merged config does not record it")
    add_json(p)
    g = p.add_argument_group("server-wide decoding policy (exact official semantics, applied in the model)")
    g.add_argument("--temperature", type=float, default=1.0, help="multiplier of the predicted T (0 = greedy)")
    g.add_argument("--top-p", type=float, default=1.0, help="multiplier of the predicted P (clamped to [0, 1])")
    g.add_argument("--min-temperature", type=float, default=None)
    g.add_argument("--max-temperature", type=float, default=None)
    g.add_argument("--fixed-temperature", type=float, default=None, help="replace the temperature head's prediction")
    g.add_argument("--fixed-top-p", type=float, default=None, help="replace the top-p head's prediction")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint
    from autodeco_samplers.policy import DecodingPolicy

    policy = DecodingPolicy(
        temperature=args.temperature,
        top_p=args.top_p,
        min_temperature=args.min_temperature,
        max_temperature=args.max_temperature,
        fixed_temperature=args.fixed_temperature,
        fixed_top_p=args.fixed_top_p,
    )
    out = prepare_sglang_checkpoint(
        args.src,
        args.out,
        heads=args.heads,
        policy=policy,
        link=not args.copy,
        base_model_type_override=args.base_model_type,
    )
    serve = ("SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models "
             f"python -m sglang.launch_server --model-path {out} --sampling-defaults openai")
    if args.json:
        print(json.dumps({"out": str(out), "serve": serve}))
    else:
        print(f"wrote {out}; serve it with:")
        print(f"  {serve}")
    return 0
