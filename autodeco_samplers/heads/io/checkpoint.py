"""Find, read and validate AutoDeco head tensors in any official checkpoint form.

Accepted inputs (head tensors are found by *key*, never by file name):

* a heads-only folder: ``config.json`` plus any ``*.safetensors`` holding ``temp_head.*`` /
  ``top_p_head.*`` (the official tools write ``autodeco_heads.safetensors`` or
  ``model.safetensors``);
* a merged folder: base weights under ``llm.`` plus the head keys, possibly sharded with a
  ``*.safetensors.index.json``; only the head tensors are read, the shards' other bytes are
  never touched;
* the official ``split`` tool's output: the heads in ``model.safetensors`` next to the merged
  folder's stale index (it names shards that are not there); the heads are read from the
  folder's safetensors files and one line is logged at WARNING level on the
  ``autodeco_samplers.heads.io.checkpoint`` logger (Python ``logging``: it concerns a file on
  disk, not the calling code, and is logged on every load);
* a single ``.safetensors`` file;
* a ``.gguf`` sidecar written by ``autodeco export-heads`` (needs the ``gguf`` package).

Pickle-based files (``.bin``, ``.pt``, ``.pth``, ...) are refused, never unpickled.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from autodeco_samplers.core.errors import CheckpointError, UnsafeCheckpointError

from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import (
    CONFIG_FILE,
    PARAM_SUFFIXES,
    TEMP,
    TOP_P,
    canonical_head_key,
    head_key,
)
from autodeco_samplers.heads.io.safetensors_io import PICKLE_SUFFIXES, TensorEntry, read_header, read_tensor
from autodeco_samplers.heads.io.validation import Tensors, check_finite, validate_head_entries

logger = logging.getLogger(__name__)


def read_json_object(path: Path) -> dict:
    """``path`` parsed as a JSON object; :class:`CheckpointError` naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _collect_entries(files: List[Path]) -> Tuple[Dict[str, TensorEntry], Dict[str, str]]:
    """Head entries (by canonical key) across ``files``, plus the first file's metadata."""
    found: Dict[str, TensorEntry] = {}
    metadata: Dict[str, str] = {}
    for file in files:
        entries, meta = read_header(file)
        for name, entry in entries.items():
            key = canonical_head_key(name)
            if key is None:
                continue
            if key in found and found[key].file != entry.file:
                raise CheckpointError(
                    f"head tensor {key!r} appears in two files: {found[key].file} and {entry.file}"
                )
            found[key] = entry
            if not metadata and meta:
                metadata = meta
    return found, metadata


def _files_in_folder(folder: Path) -> Tuple[List[Path], Optional[Tuple[str, str]]]:
    """The safetensors files of a folder that may hold head tensors.

    With a ``*.safetensors.index.json`` only the shards its weight map lists for head keys
    are opened; without one (or when the index lists none), every ``*.safetensors``.

    A *stale* index, one that lists head tensors in shards that are not in the folder, is
    what the official ``split`` tool leaves: it writes the heads to ``model.safetensors`` and
    copies the merged folder's ``model.safetensors.index.json`` along. Then every
    ``*.safetensors`` of the folder is returned with ``(error, warning)`` texts:
    :func:`read_head_checkpoint` logs the warning (one line, WARNING level, logger
    ``autodeco_samplers.heads.io.checkpoint``) when it finds the heads there, and raises the
    error (naming the missing shard) when it does not. Returns ``(files, stale or None)``.
    """
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    all_files = sorted(folder.glob("*.safetensors"))
    if not all_files:
        if pickles:
            raise UnsafeCheckpointError(
                f"{folder}: holds only pickle-based weights ({', '.join(pickles)}); they are refused "
                "because loading them can run arbitrary code; convert to safetensors first"
            )
        raise CheckpointError(f"{folder}: no *.safetensors file found")
    wanted: List[Path] = []
    stale: List[Tuple[Path, str, str]] = []  # (index, head key, missing shard)
    for index_path in sorted(folder.glob("*.safetensors.index.json")):
        weight_map = read_json_object(index_path).get("weight_map", {})
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: 'weight_map' must be an object, not {type(weight_map).__name__}")
        for name, fname in weight_map.items():
            if canonical_head_key(name) is not None:
                target = folder / str(fname)
                if not target.is_file():
                    stale.append((index_path, name, str(fname)))
                elif target not in wanted:
                    wanted.append(target)
    if stale and not wanted:
        index_path, name, fname = stale[0]
        missing = sorted({f for _, _, f in stale})
        error = f"{index_path}: lists {name!r} in {fname}, which is missing"
        warning = (
            f"{index_path}: a stale index (as the official split tool leaves it) lists the head tensors in "
            f"{', '.join(missing)}, not in this folder; read them from {', '.join(p.name for p in all_files)}"
        )
        return all_files, (error, warning)
    if stale:  # some head shards exist, others not: a broken merged folder
        index_path, name, fname = stale[0]
        raise CheckpointError(f"{index_path}: lists {name!r} in {fname}, which is missing")
    return (wanted or all_files), None


def read_head_checkpoint(path) -> Tuple[HeadsConfig, Tensors]:
    """Read and validate the head tensors at ``path``; returns ``(config, float tensors)``.

    Only the enabled heads' tensors are returned (float32, or float64 if stored so).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    config: dict = {}
    stale = None
    if path.is_dir():
        config_path = path / CONFIG_FILE
        if config_path.exists():
            config = read_json_object(config_path)
        files, stale = _files_in_folder(path)
    else:
        if path.suffix.lower() == ".gguf":
            from autodeco_samplers.heads.io.gguf_sidecar import read_gguf_heads

            return read_gguf_heads(path)
        if path.name.endswith(".safetensors.index.json"):
            return read_head_checkpoint(path.parent)
        files = [path]
    entries, metadata = _collect_entries(files)
    if stale is not None:
        if not entries:
            raise CheckpointError(f"{stale[0]}; no head tensors in the folder's safetensors files either")
        logger.warning(stale[1])
    if not entries and path.is_dir() and any(p.suffix.lower() in PICKLE_SUFFIXES for p in path.iterdir()):
        raise UnsafeCheckpointError(
            f"{path}: no head tensors in its safetensors files, and pickle-based files are refused"
        )
    cfg = validate_head_entries(entries, config, metadata, str(path))
    tensors = {}
    for head, enabled in ((TEMP, cfg.enable_temperature_head), (TOP_P, cfg.enable_top_p_head)):
        if enabled:
            for s in PARAM_SUFFIXES:
                key = head_key(head, s)
                arr = read_tensor(entries[key])
                tensors[key] = arr if arr.dtype == np.float64 else arr.astype(np.float32)
    check_finite(tensors, str(path))
    return cfg, tensors
