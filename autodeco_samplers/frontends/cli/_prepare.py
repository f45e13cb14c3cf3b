"""What ``prepare-sglang`` and ``prepare-vllm`` share: the same folder, flags and output.

Both write the folder of :func:`autodeco_samplers.heads.io.served.prepare_served_folder`
(base ``model_type``, an ``autodeco`` block with the server-wide policy, weights linked or
merged); only the command that serves it differs.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

from autodeco_samplers.frontends.cli._common import add_json, add_out


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    """SRC, ``--out``, ``--heads``, ``--copy``, ``--base-model-type``, ``--json`` and the policy flags."""
    p.add_argument("src", help="merged AutoDeco checkpoint folder, or a base model folder with --heads")
    add_out(p, "output folder (weights are symlinked unless --copy)")
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
    p.add_argument(
        "--compiled-step", action="store_true",
        help="run each AutoDeco step through torch.compile in the engine (fewer kernels; compiles on the first "
             "batches; see docs/design.md section 3)",
    )


def run_prepare(args: argparse.Namespace, prepare: Callable, serve_command: Callable[[str], str]) -> int:
    """Build the policy from the flags, call ``prepare`` and print where OUT is and how to serve it."""
    from autodeco_samplers.core.policy import DecodingPolicy

    policy = DecodingPolicy(
        temperature=args.temperature,
        top_p=args.top_p,
        min_temperature=args.min_temperature,
        max_temperature=args.max_temperature,
        fixed_temperature=args.fixed_temperature,
        fixed_top_p=args.fixed_top_p,
    )
    out = prepare(
        args.src, args.out, heads=args.heads, policy=policy, link=not args.copy,
        base_model_type_override=args.base_model_type, compiled_step=args.compiled_step,
    )
    serve = serve_command(str(out))
    if args.json:
        print(json.dumps({"out": str(out), "serve": serve}))
    else:
        print(f"wrote {out}; serve it with:")
        print(f"  {serve}")
    return 0
