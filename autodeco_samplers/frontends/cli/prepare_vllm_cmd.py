"""``autodeco prepare-vllm SRC --out OUT``: write a folder vLLM serves with AutoDeco.

SRC is an official merged AutoDeco checkpoint, or a plain base model folder with
``--heads``. The folder is the one ``prepare-sglang`` writes (one shared preparation
function). Serve OUT with ``vllm serve OUT`` or ``LLM(OUT)``: the package's
``vllm.general_plugins`` entry point registers the model classes (see docs/vllm.md).
Needs neither torch nor vLLM.
"""

from __future__ import annotations

import argparse

from autodeco_samplers.frontends.cli._prepare import add_prepare_arguments, run_prepare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-vllm",
        help="turn a merged AutoDeco checkpoint (or base model + heads) into a folder vLLM serves",
    )
    add_prepare_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint

    return run_prepare(args, prepare_vllm_checkpoint, lambda out: f"vllm serve {out}")
