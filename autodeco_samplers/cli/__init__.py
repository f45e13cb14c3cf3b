"""The ``autodeco`` command line (also ``python -m autodeco_samplers``).

Each subcommand lives in its own module ``*_cmd.py`` in this package with
``register(subparsers)``; dropping in such a module adds the command. Command modules import
engines lazily, inside ``run``, so ``autodeco --help`` never imports torch or an engine.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional

from autodeco_samplers.errors import AutoDecoError



def command_modules() -> List[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autodeco",
        description="AutoDeco decoding: per-token temperature and top-p predicted by two tiny heads.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in command_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AutoDecoError as exc:
        print(f"autodeco {args.command}: error: {exc}", file=sys.stderr)
        return 2
