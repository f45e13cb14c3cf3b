"""llama.cpp's own HF -> GGUF converter, from the llama-cpp-python source distribution.

The sdist of the installed llama-cpp-python version holds ``vendor/llama.cpp/
convert_hf_to_gguf.py`` with its ``conversion/`` package and its bundled ``gguf-py``. It is
fetched once with pip (``pip download --no-deps --no-binary :all:``, from PyPI or pip's
cache), and only those three parts are extracted into a persistent cache folder
(``$AUTODECO_TEST_CACHE`` or ``~/.cache/autodeco-samplers-tests``), so later sessions start
at once. ``$AUTODECO_LLAMA_CPP_SRC`` may point at an existing ``vendor/llama.cpp`` (or a
llama.cpp checkout) instead.

The converter runs in a subprocess with the bundled ``gguf-py`` first on ``sys.path`` (the
installed ``gguf`` package may be another version). The tiny test tokenizers are unknown to
its ``get_vocab_base_pre`` (a table of hashes of known tokenizers), which raises "BPE
pre-tokenizer was not recognized"; that one method is wrapped to answer ``gpt-2`` (the
byte-level pre-tokenizer these tokenizers use) in that case only.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")

_RUNNER = r"""
import sys
src = sys.argv[1]
sys.path[:0] = [src + "/gguf-py", src]
import conversion.base as base

_original = base.TextModel.get_vocab_base_pre


def _pre(self, tokenizer):
    try:
        return _original(self, tokenizer)
    except NotImplementedError:  # a tokenizer the converter's hash table does not know
        return "gpt-2"


base.TextModel.get_vocab_base_pre = _pre
import runpy

convert = runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="convert_hf_to_gguf")
jobs = sys.argv[2:]
for i in range(0, len(jobs), 3):
    model_dir, outfile, outtype = jobs[i : i + 3]
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", outfile, "--outtype", outtype]
    convert["main"]()
"""


def _cache_root() -> Path:
    return Path(os.environ.get("AUTODECO_TEST_CACHE") or Path.home() / ".cache" / "autodeco-samplers-tests")


@functools.lru_cache(maxsize=None)
def converter_source() -> Tuple[Optional[Path], str]:
    """``(vendor/llama.cpp folder, "")``, or ``(None, why it cannot be had here)``."""
    env = os.environ.get("AUTODECO_LLAMA_CPP_SRC")
    if env:
        root = Path(env)
        if (root / "convert_hf_to_gguf.py").is_file():
            return root, ""
        return None, f"AUTODECO_LLAMA_CPP_SRC={env} has no convert_hf_to_gguf.py"
    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None, "llama-cpp-python is not installed"
    root = _cache_root() / f"llama-cpp-python-{version}" / "vendor" / "llama.cpp"
    if (root / "convert_hf_to_gguf.py").is_file():
        return root, ""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
               "-q", f"llama-cpp-python=={version}", "-d", tmp]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"cannot fetch the llama-cpp-python {version} sdist with pip ({exc})"
        archives = list(Path(tmp).glob("*.tar.gz"))
        if res.returncode != 0 or not archives:
            return None, f"cannot fetch the llama-cpp-python {version} sdist with pip: {res.stderr.strip()[-300:]}"
        staging = Path(tempfile.mkdtemp(prefix="llama-cpp-src-", dir=_mkdir(root.parent.parent.parent)))
        with tarfile.open(archives[0]) as tar:
            members = []
            for m in tar.getmembers():
                parts = m.name.split("/vendor/llama.cpp/", 1)
                if len(parts) == 2 and parts[1].startswith(PARTS) and (m.isfile() or m.isdir()):
                    m.name = "vendor/llama.cpp/" + parts[1]
                    members.append(m)
            tar.extractall(staging, members=members, filter="data")
    if not (staging / "vendor/llama.cpp/convert_hf_to_gguf.py").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        return None, f"the llama-cpp-python {version} sdist has no vendor/llama.cpp/convert_hf_to_gguf.py"
    target = root.parent.parent
    if not (root / "convert_hf_to_gguf.py").is_file():  # another session may have won the race
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    else:
        shutil.rmtree(staging, ignore_errors=True)
    return root, ""


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def convert(jobs: Iterable[Tuple[Path, Path, str]]) -> List[Path]:
    """Run llama.cpp's converter on ``(hf_folder, out.gguf, outtype)`` jobs in one subprocess."""
    root, why = converter_source()
    if root is None:
        raise RuntimeError(why)
    jobs = list(jobs)
    args = [str(x) for job in jobs for x in job]
    env = dict(os.environ, NO_LOCAL_GGUF="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", _RUNNER, str(root), *args], capture_output=True, text=True, env=env,
                         timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"llama.cpp's convert_hf_to_gguf.py failed:\n{res.stderr[-3000:]}")
    return [Path(out) for _, out, _ in jobs]
