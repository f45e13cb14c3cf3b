"""``autodeco prepare-sglang SRC --out OUT``: write a folder SGLang serves with AutoDeco.

SRC is an official merged AutoDeco checkpoint, or a plain base model folder with
``--heads``. Serve OUT with
``SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models python -m sglang.launch_server --model-path OUT``
(see docs/sglang.md). Needs neither torch nor SGLang.
"""

from __future__ import annotations

import argparse

from autodeco_samplers.frontends.cli._prepare import add_prepare_arguments, run_prepare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-sglang",
        help="turn a merged AutoDeco checkpoint (or base model + heads) into a folder SGLang serves",
    )
    add_prepare_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint

    return run_prepare(
        args,
        prepare_sglang_checkpoint,
        lambda out: "SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models "
        f"python -m sglang.launch_server --model-path {out} --sampling-defaults openai",
    )
