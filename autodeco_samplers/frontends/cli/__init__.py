"""The ``autodeco`` command line (also ``python -m autodeco_samplers``).

Each subcommand lives in its own module ``*_cmd.py`` in this package with
``register(subparsers)``; dropping in such a module adds the command. Command modules import
engines lazily, inside ``run``, so ``autodeco --help`` never imports torch or an engine.

Exit status (the same for every command):

* ``0``: done (for ``conformance``: every check passed);
* ``1``: an error in the inputs' content or the environment: a bad checkpoint or model file,
  prompt ids outside the vocabulary, heads that do not fit the model, a missing optional
  dependency (the message names the extra: ``pip install 'autodeco-samplers[EXTRA]'``), a
  failed check;
* ``2``: a usage error: an unknown flag or engine, a flag value outside its domain, flags
  that do not go together.

Errors print one line on stderr, ``autodeco COMMAND: error: ...``, and no traceback; pass
``--debug`` (anywhere on the command line) or set ``AUTODECO_DEBUG=1`` to see it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from typing import List, Optional

from autodeco_samplers.core.errors import AutoDecoError, UsageError
from autodeco_samplers.frontends.validation import env_flag, missing_dependency

DEBUG_ENV = "AUTODECO_DEBUG"


def command_modules() -> List[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd"))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``autodeco CMD: error: ... (see autodeco CMD --help)``."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autodeco",
        description="AutoDeco decoding: per-token temperature and top-p predicted by two tiny heads.",
        epilog="exit status: 0 done, 1 error (bad file or input, missing extra, failed check), 2 usage error. "
        f"--debug (anywhere) or {DEBUG_ENV}=1 shows tracebacks.",
    )
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in command_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    _give_every_command_threads(sub)
    return parser


def _leaf_parsers(sub: argparse._SubParsersAction) -> List[argparse.ArgumentParser]:
    """The parsers that run a command (a command with its own actions, like ``smollm2
    prepare``, contributes its actions' parsers)."""
    out = []
    for parser in dict.fromkeys(sub.choices.values()):
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        out += _leaf_parsers(nested[0]) if nested else [parser]
    return out


def _give_every_command_threads(sub: argparse._SubParsersAction) -> None:
    """``--threads`` on every command (the shared vocabulary): a command that does not take it
    itself gets it here, applied by :func:`_apply_generic_threads` before the command runs."""
    from autodeco_samplers.frontends.cli._common import THREADS_HELP, threads_type

    for parser in _leaf_parsers(sub):
        if "--threads" not in parser._option_string_actions:
            parser.add_argument("--threads", type=threads_type, default="auto", help=THREADS_HELP)
            parser.set_defaults(generic_threads=True)


def _apply_generic_threads(args: argparse.Namespace) -> None:
    """A number given to a command without its own thread handling caps the CPU threads of
    every library it may load: the OpenMP/BLAS environment (read when they load) and torch
    (when already imported). ``auto`` leaves them alone."""
    if not getattr(args, "generic_threads", False) or args.threads in (None, "auto"):
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(int(args.threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(args.threads))


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else "(no message)"


def _split_debug(argv: List[str]) -> "tuple[List[str], bool]":
    """``--debug`` is accepted anywhere before a ``--``; it is removed before parsing."""
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut:]
    else:
        head, tail = argv, []
    debug = "--debug" in head
    return [a for a in head if a != "--debug"] + tail, debug


def main(argv: Optional[List[str]] = None) -> int:
    argv, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    debug = debug or env_flag(DEBUG_ENV)
    # the command line prints its own progress only: no Hugging Face "Loading weights" bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    command = args.command

    def fail(message: str, code: int) -> int:
        if debug:
            traceback.print_exc()
        print(f"autodeco {command}: error: {_one_line(message)}", file=sys.stderr)
        return code

    try:
        _apply_generic_threads(args)
        return int(args.func(args) or 0)
    except UsageError as exc:
        return fail(str(exc), 2)
    except AutoDecoError as exc:
        return fail(str(exc), 1)
    except ImportError as exc:
        missing = missing_dependency(exc)
        if missing is None:
            return fail(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)
        return fail(str(missing), 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except (OSError, ValueError, RuntimeError) as exc:
        return fail(f"{type(exc).__name__}: {exc}", 1)
    except Exception as exc:  # a bug in our code or an engine's: one line, the traceback on request
        return fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)
