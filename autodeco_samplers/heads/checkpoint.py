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
  ``autodeco_samplers.heads.checkpoint`` logger (Python ``logging``: it concerns a file on
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

from autodeco_samplers.errors import CheckpointError, ShapeError, UnsafeCheckpointError

from .config import HeadsConfig
from .layout import (
    CONFIG_FILE,
    ENHANCED_EXTRA_FEATURES,
    HEAD_NAMES,
    PARAM_SUFFIXES,
    PLAIN_EXTRA_FEATURES,
    TEMP,
    TOP_P,
    canonical_head_key,
    expected_shapes,
    head_key,
)
from .safetensors_io import PICKLE_SUFFIXES, TensorEntry, read_header, read_tensor

Tensors = Dict[str, np.ndarray]
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
    ``autodeco_samplers.heads.checkpoint``) when it finds the heads there, and raises the
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


def _bool(config: dict, key: str) -> Optional[bool]:
    value = config.get(key)
    return None if value is None else bool(value)


def _check_finite(tensors: Tensors, source: str) -> None:
    for key, arr in tensors.items():
        if not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "inf"
            raise CheckpointError(f"{source}: head tensor {key!r} contains {bad}")


def _validate(
    entries: Dict[str, TensorEntry], config: dict, metadata: Dict[str, str], source: str
) -> HeadsConfig:
    """Decide which heads are present and check every shape; return the config."""
    expected = {head_key(h, s) for h in HEAD_NAMES for s in PARAM_SUFFIXES}
    extra = sorted(set(entries) - expected)
    if extra:
        raise CheckpointError(
            f"{source}: unexpected head tensor(s) {extra} (in {entries[extra[0]].file}); the official "
            f"layout has {sorted(expected)}"
        )
    present = {h: any(head_key(h, s) in entries for s in PARAM_SUFFIXES) for h in HEAD_NAMES}
    if not any(present.values()):
        raise CheckpointError(
            f"{source}: no AutoDeco head tensors (temp_head.* / top_p_head.*) found; is this a plain base model?"
        )
    meta_cfg = {k: json.loads(v) for k, v in metadata.items() if k in ("use_enhanced_features", "hidden_size")}
    enabled = {
        TEMP: _bool(config, "enable_temperature_head"),
        TOP_P: _bool(config, "enable_top_p_head"),
    }
    for head in HEAD_NAMES:
        if enabled[head] is None:
            enabled[head] = present[head]
        if enabled[head]:
            missing = [head_key(head, s) for s in PARAM_SUFFIXES if head_key(head, s) not in entries]
            if missing:
                raise CheckpointError(f"{source}: missing head tensor(s) {missing}")
    if not any(enabled.values()):
        raise CheckpointError(f"{source}: both heads are disabled by config.json; nothing to decode with")

    def shape(key: str) -> Tuple[int, ...]:
        return entries[key].shape

    hidden = config.get("hidden_size", meta_cfg.get("hidden_size"))
    enhanced = _bool(config, "use_enhanced_features")
    if enhanced is None and "use_enhanced_features" in meta_cfg:
        enhanced = bool(meta_cfg["use_enhanced_features"])
    temp_w1 = shape(head_key(TEMP, "mlp.0.weight")) if enabled[TEMP] else None
    top_w1 = shape(head_key(TOP_P, "mlp.0.weight")) if enabled[TOP_P] else None
    for name, w1 in ((head_key(TEMP, "mlp.0.weight"), temp_w1), (head_key(TOP_P, "mlp.0.weight"), top_w1)):
        if w1 is not None and len(w1) != 2:
            raise CheckpointError(f"{source}: head tensor {name!r} must be 2-D, has shape {list(w1)}")
    if hidden is None:
        if temp_w1 is not None:
            hidden = temp_w1[1]
        else:
            extra_features = PLAIN_EXTRA_FEATURES if enhanced is False else ENHANCED_EXTRA_FEATURES
            hidden = top_w1[1] - extra_features
    hidden = int(hidden)
    if temp_w1 is not None and temp_w1[1] != hidden:
        raise ShapeError(
            f"{source}: hidden-size mismatch: config says hidden_size={hidden} but "
            f"{head_key(TEMP, 'mlp.0.weight')} has shape {list(temp_w1)} (expects [W, {hidden}])"
        )
    if top_w1 is not None:
        d_in = top_w1[1]
        inferred = {hidden + ENHANCED_EXTRA_FEATURES: True, hidden + PLAIN_EXTRA_FEATURES: False}.get(d_in)
        if inferred is None:
            raise ShapeError(
                f"{source}: hidden-size mismatch: {head_key(TOP_P, 'mlp.0.weight')} has shape {list(top_w1)}; "
                f"with hidden_size={hidden} its input must be {hidden + ENHANCED_EXTRA_FEATURES} (enhanced "
                f"features) or {hidden + PLAIN_EXTRA_FEATURES}"
            )
        if enhanced is not None and enhanced != inferred:
            raise CheckpointError(
                f"{source}: config says use_enhanced_features={enhanced} but "
                f"{head_key(TOP_P, 'mlp.0.weight')} has input width {d_in} (= hidden_size + "
                f"{d_in - hidden})"
            )
        enhanced = inferred
    enhanced = True if enhanced is None else enhanced
    widths = {}
    for head in HEAD_NAMES:
        if not enabled[head]:
            widths[head] = 0
            continue
        width = shape(head_key(head, "mlp.0.weight"))[0]
        widths[head] = width
        for key, want in expected_shapes(head, hidden, width, enhanced).items():
            if shape(key) != want:
                raise CheckpointError(
                    f"{source}: head tensor {key!r} in {entries[key].file} has shape {list(shape(key))}, "
                    f"expected {list(want)}"
                )
    files = sorted({str(entries[k].file) for k in entries})
    return HeadsConfig(
        hidden_size=hidden,
        use_enhanced_features=enhanced,
        enable_temperature_head=bool(enabled[TEMP]),
        enable_top_p_head=bool(enabled[TOP_P]),
        temperature_width=widths[TEMP],
        top_p_width=widths[TOP_P],
        base_model_name_or_path=config.get("base_model_name_or_path") or metadata.get("base_model_name_or_path"),
        base_model_type=config.get("base_model_type") or metadata.get("base_model_type"),
        source=source,
        source_files=tuple(files),
    )


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
            from .gguf_sidecar import read_gguf_heads

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
    cfg = _validate(entries, config, metadata, str(path))
    tensors = {}
    for head, enabled in ((TEMP, cfg.enable_temperature_head), (TOP_P, cfg.enable_top_p_head)):
        if enabled:
            for s in PARAM_SUFFIXES:
                key = head_key(head, s)
                arr = read_tensor(entries[key])
                tensors[key] = arr if arr.dtype == np.float64 else arr.astype(np.float32)
    _check_finite(tensors, str(path))
    return cfg, tensors
