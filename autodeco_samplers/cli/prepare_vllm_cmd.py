"""``autodeco prepare-vllm SRC OUT``: write a folder vLLM serves with AutoDeco.

SRC is an official merged AutoDeco checkpoint, or a plain base model folder with
``--heads``. The folder is the one ``prepare-sglang`` writes (one shared preparation
function). Serve OUT with ``vllm serve OUT`` or ``LLM(OUT)``: the package's
``vllm.general_plugins`` entry point registers the model classes (see docs/vllm.md).
Needs neither torch nor vLLM.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-vllm",
        help="turn a merged AutoDeco checkpoint (or base model + heads) into a folder vLLM serves",
    )
    p.add_argument("src", help="merged AutoDeco checkpoint folder, or a base model folder with --heads")
    p.add_argument("out", help="output folder (weights are symlinked unless --copy)")
    p.add_argument("--heads", default=None, help="heads checkpoint to merge with a base model SRC")
    p.add_argument("--copy", action="store_true", help="copy the weight shards of a merged SRC instead of symlinking")
    p.add_argument("--base-model-type", default=None, help="base model_type when a merged config does not record it")
    g = p.add_argument_group("server-wide decoding policy (exact official semantics, applied in the model)")
    g.add_argument("--temperature", type=float, default=1.0, help="multiplier of the predicted T (0 = greedy)")
    g.add_argument("--top-p", type=float, default=1.0, help="multiplier of the predicted P (clamped to [0, 1])")
    g.add_argument("--min-temperature", type=float, default=None)
    g.add_argument("--max-temperature", type=float, default=None)
    g.add_argument("--fixed-temperature", type=float, default=None, help="replace the temperature head's prediction")
    g.add_argument("--fixed-top-p", type=float, default=None, help="replace the top-p head's prediction")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint
    from autodeco_samplers.policy import DecodingPolicy

    policy = DecodingPolicy(
        temperature=args.temperature,
        top_p=args.top_p,
        min_temperature=args.min_temperature,
        max_temperature=args.max_temperature,
        fixed_temperature=args.fixed_temperature,
        fixed_top_p=args.fixed_top_p,
    )
    out = prepare_vllm_checkpoint(
        args.src, args.out, heads=args.heads, policy=policy, link=not args.copy,
        base_model_type_override=args.base_model_type,
    )
    print(f"wrote {out}; serve it with:")
    print(f"  vllm serve {out}")
    return 0
