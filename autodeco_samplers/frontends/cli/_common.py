"""The flag vocabulary every ``autodeco`` command shares (one spelling, one default).

* ``--model PATH``: a model folder (transformers) or ``.gguf`` file (llama.cpp);
* ``--heads PATH``: a heads checkpoint (folder, merged folder, ``.safetensors``, ``.gguf``);
* ``--engines a,b``: comma-separated engine names;
* ``--device``: ``auto`` (default: CUDA when torch sees one, else the CPU), ``cpu``, ``cuda``,
  ``cuda:1`` ...;
* ``--threads N``: CPU threads; default ``auto`` = 1 for the embedded default model (tiny:
  more threads only add overhead), the engine's own choice otherwise;
* ``--out PATH``: what a command writes (always an option);
* ``--max-new-tokens N``: how many tokens a command generates;
* ``--json``: one JSON object on stdout instead of the human view.

Old spellings (``--base``, ``--plain-features``, space-separated ``--engines``, train's
``--heads both|temperature|top-p``, a positional OUT of ``init-heads`` / ``prepare-*``, demo's
``--demo-tokens``) still work for one release, with a note on stderr.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from autodeco_samplers.core.errors import UsageError
from autodeco_samplers.frontends.validation import deprecation_note, positive_int

DEVICE_HELP = "auto (default: CUDA when torch sees one, else cpu), cpu, cuda, cuda:1 ..."
THREADS_HELP = "CPU threads (default auto: 1 for the embedded default model, else the engine's own choice)"


class DeprecatedAlias(argparse.Action):
    """An old option spelling: stores into the new option's ``dest`` and prints a note."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        command = parser.prog.split()[-1]
        deprecation_note(command, option_string, self.new)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_deprecated(p: argparse.ArgumentParser, old: str, new: str, dest: str, *, flag: bool = False, **kwargs: Any) -> None:
    """Accept ``old`` as an alias of ``new`` (hidden from --help)."""
    if flag:
        kwargs.setdefault("nargs", 0)
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs)


def add_out(p: argparse.ArgumentParser, help: str) -> None:
    """``--out PATH`` (required), plus the old positional OUT (hidden; :func:`resolve_out`)."""
    p.add_argument("--out", default=None, help=help + " (required)")
    p.add_argument("old_out", nargs="?", default=None, help=argparse.SUPPRESS)


def resolve_out(args: argparse.Namespace, command: str) -> str:
    """``--out``, or the old positional OUT with a deprecation note; a usage error when both or
    neither are given."""
    if args.out is not None and args.old_out is not None:
        raise UsageError(f"give the output once: --out {args.out} (a positional OUT {args.old_out!r} was also given)")
    if args.out is None and args.old_out is None:
        raise UsageError("the following argument is required: --out")
    if args.out is None:
        deprecation_note(command, "a positional OUT", "--out OUT")
        args.out = args.old_out
    return args.out


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_device_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=threads_type, default="auto", help=THREADS_HELP)


def threads_type(text: str):
    if text == "auto":
        return text
    return positive_int(text)


def require(args: argparse.Namespace, dest: str, flag: str) -> Any:
    """A flag that is required but may come through an old spelling (argparse cannot tell)."""
    value = getattr(args, dest, None)
    if value is None:
        raise UsageError(f"the following argument is required: {flag}")
    return value


def resolve_device(device: Optional[str]) -> str:
    """``auto`` -> ``cuda`` when torch is installed and sees a GPU, else ``cpu``."""
    if device in (None, "", "auto"):
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_threads(threads: Any, *, default_model: bool) -> Optional[int]:
    """The thread count to set, or ``None`` for the engine's own choice."""
    if threads in (None, "auto"):
        return 1 if default_model else None
    return int(threads)


def set_torch_threads(threads: Optional[int]) -> Optional[int]:
    """Set torch's CPU threads; returns the previous count (``None`` when nothing was set)."""
    if threads is None:
        return None
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    return previous


def names_arg(values, flag: str, allowed, command: str):
    """Comma-separated names (``a,b``); the old space-separated form (``a b``) still works."""
    if values is None:
        return None
    if len(values) > 1:
        deprecation_note(command, f"space-separated {flag} ({' '.join(values)})", f"{flag} {','.join(values)}")
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    choices = list(allowed() if callable(allowed) else allowed)
    if not names:
        raise UsageError(f"{flag} is empty; choose from: {', '.join(choices)}")
    bad = [n for n in names if n not in choices]
    if bad:
        raise UsageError(f"unknown {flag[2:].rstrip('s')} {bad[0]!r} in {flag}; choose from: {', '.join(choices)}")
    return names
