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
"""

from __future__ import annotations

import argparse
from typing import Any, List, Optional

from autodeco_samplers.core.errors import UsageError
from autodeco_samplers.frontends.validation import positive_int

DEVICE_HELP = "auto (default: CUDA when torch sees one, else cpu), cpu, cuda, cuda:1 ..."
THREADS_HELP = "CPU threads (default auto: 1 for the embedded default model, else the engine's own choice)"


def add_out(p: argparse.ArgumentParser, help: str) -> None:
    """``--out PATH``, required."""
    p.add_argument("--out", required=True, help=help)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_device_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=threads_type, default="auto", help=THREADS_HELP)


def threads_type(text: str):
    if text == "auto":
        return text
    return positive_int(text)


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


def names_arg(value: Optional[str], flag: str, allowed) -> Optional[List[str]]:
    """The comma-separated names of ``flag`` (``a,b``), each checked against ``allowed`` (a
    list, or a callable returning one); ``None`` when the flag was not given. An empty list
    or an unknown name is a :class:`UsageError` naming the choices."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    choices = list(allowed() if callable(allowed) else allowed)
    if not names:
        raise UsageError(f"{flag} is empty; choose from: {', '.join(choices)}")
    bad = [n for n in names if n not in choices]
    if bad:
        raise UsageError(f"unknown {flag[2:].rstrip('s')} {bad[0]!r} in {flag}; choose from: {', '.join(choices)}")
    return names
