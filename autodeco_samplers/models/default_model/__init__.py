"""The embedded default model: a tiny ``LlamaForCausalLM`` trained on the choice-then-derive
task (:mod:`autodeco_samplers.research.evaluation.toy_task`) plus AutoDeco heads trained on it with the recipe.

Files (all safetensors / JSON, a few hundred kB): ``base/`` (model, tokenizer),
``heads/`` (official heads-only layout), ``task.json`` (the task's parameters) and
``build_info.json`` (how it was built). Rebuild with ``python scripts/build_default_model.py``.
Its GGUF is made on demand by :mod:`autodeco_samplers.models.gguf_convert` (see :func:`gguf_path`).

>>> from autodeco_samplers.models import default_model
>>> (default_model.base_path() / "config.json").is_file()
True
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["path", "base_path", "heads_path", "task_spec", "gguf_path", "cache_dir"]

_HERE = Path(__file__).resolve().parent


def path() -> Path:
    """The folder holding ``base/``, ``heads/``, ``task.json``."""
    return _HERE


def base_path() -> Path:
    return _HERE / "base"


def heads_path() -> Path:
    return _HERE / "heads"


def task_spec():
    from autodeco_samplers.research.evaluation.toy_task import TaskSpec

    return TaskSpec.from_json(json.loads((_HERE / "task.json").read_text()))


def cache_dir() -> Path:
    """Where derived files (the GGUF) go: ``$AUTODECO_CACHE`` or ``~/.cache/autodeco-samplers``
    (falls back to the temp dir when the home is not writable)."""
    root = os.environ.get("AUTODECO_CACHE")
    candidates = [Path(root)] if root else []
    candidates += [Path.home() / ".cache" / "autodeco-samplers", Path(tempfile.gettempdir()) / "autodeco-samplers"]
    for c in candidates:
        try:
            c.mkdir(parents=True, exist_ok=True)
            return c
        except OSError:
            continue
    raise OSError("no writable cache directory for autodeco-samplers")


def gguf_path(*, rebuild: bool = False) -> Path:
    """The default model as GGUF, converted on first use with ``autodeco_samplers.models.gguf_convert``
    and cached (keyed by the safetensors file's size and mtime)."""
    from autodeco_samplers.models import gguf_convert  # the llama.cpp developer's converter

    st = (base_path() / "model.safetensors").stat()
    target = cache_dir() / f"default-tiny-llama-{st.st_size}-{int(st.st_mtime)}.gguf"
    if rebuild or not target.is_file():
        tmp = target.with_suffix(".tmp.gguf")
        gguf_convert.convert_llama_to_gguf(base_path(), tmp, dtype="f32")
        tmp.replace(target)
    return target
