"""Where a benchmark or evaluation result came from: every script under ``bench/`` writes its
JSON through :func:`write_json` (or adds :func:`provenance` itself when it prints the JSON), so
each result records

* ``command``: the command line as run, paths relative to the repository (no machine's own
  folders, :func:`autodeco_samplers.research.evaluation.toy.portable_path`);
* ``commit``: ``git rev-parse HEAD`` of the checkout and ``dirty``: whether tracked files other
  than ``bench/results/`` differ from it (on a copy without ``.git``, set
  ``AUTODECO_BENCH_COMMIT`` to the commit the copy was made from; ``dirty`` is then unknown,
  ``null``);
* ``machine``: CPU model, logical core count, the GPU's name when torch sees CUDA, platform,
  Python and torch versions;
* ``date``: when the JSON was written (UTC).

Results written before this helper existed carry the same block with ``"backfilled": true``
(see bench/README.md).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

ROOT = Path(__file__).resolve().parents[1]
COMMIT_ENV = "AUTODECO_BENCH_COMMIT"

__all__ = ["ROOT", "COMMIT_ENV", "command_line", "git_commit", "machine", "provenance", "write_json"]


def _portable(arg: str) -> str:
    """``arg`` with an absolute path (alone or as ``--flag=/path``) made repository-relative."""
    from autodeco_samplers.research.evaluation.toy import portable_path

    flag, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
    if not value.startswith(os.sep):
        return arg
    return f"{flag}{eq}{portable_path(value)}"


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command as run (``sys.argv`` by default), shell-quoted. The interpreter is written
    ``python`` unless it lies inside the repository (e.g. ``.venv-vllm/bin/python``); the script
    and every absolute path argument are relative to the repository."""
    from autodeco_samplers.research.evaluation.toy import portable_path

    argv = list(sys.argv if argv is None else argv)
    if not argv:
        raise ValueError("command_line: argv is empty")
    exe = Path(sys.executable).absolute()  # not resolved: a venv's python links outside it
    python = exe.relative_to(ROOT).as_posix() if exe.is_relative_to(ROOT) else "python"
    script = argv[0]
    script = portable_path(script) if Path(script).exists() else script
    return shlex.join([python, script] + [_portable(a) for a in argv[1:]])


def _git(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> Dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}``. Results under ``bench/results/`` do
    not count as dirty (an earlier run of another script changes them)."""
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return {"commit": os.environ.get(COMMIT_ENV) or None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return {"commit": sha, "dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> Dict[str, Any]:
    """The machine: CPU model, logical cores, GPU (``None`` without CUDA), platform, versions."""
    try:
        import torch
    except ImportError:
        torch = None
    gpu = None
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": None if torch is None else torch.__version__,
    }


def provenance(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The ``provenance`` block of a result written now by the command ``argv``."""
    return {
        "command": command_line(argv),
        **git_commit(),
        "machine": machine(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Union[str, Path], report: Union[Dict[str, Any], List[Any]], *, indent: Optional[int] = 1,
               key: str = "runs") -> Path:
    """Write ``report`` to ``path`` (folders created) with its ``provenance`` block added as the
    last key. A list report is stored as ``{key: report, "provenance": ...}``. Returns the path."""
    if isinstance(report, list):
        report = {key: report}
    elif not isinstance(report, dict):
        raise TypeError(f"write_json: report must be a dict or a list, got {type(report).__name__}")
    report.pop("provenance", None)
    report["provenance"] = provenance()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent) + "\n", encoding="utf-8")
    return path
