"""Validation shared by every head-checkpoint reader (safetensors and the GGUF sidecar):
which heads a set of tensors holds, every shape against the official layout, finite values."""

from __future__ import annotations

import json
from typing import Dict, Optional, Tuple

import numpy as np

from autodeco_samplers.core.errors import CheckpointError, ShapeError

from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import (
    ENHANCED_EXTRA_FEATURES,
    HEAD_NAMES,
    PARAM_SUFFIXES,
    PLAIN_EXTRA_FEATURES,
    TEMP,
    TOP_P,
    expected_shapes,
    head_key,
)
from autodeco_samplers.heads.io.safetensors_io import TensorEntry

Tensors = Dict[str, np.ndarray]

__all__ = ["Tensors", "check_finite", "validate_head_entries"]


def _bool(config: dict, key: str) -> Optional[bool]:
    value = config.get(key)
    return None if value is None else bool(value)


def check_finite(tensors: Tensors, source: str) -> None:
    for key, arr in tensors.items():
        if not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "inf"
            raise CheckpointError(f"{source}: head tensor {key!r} contains {bad}")


def validate_head_entries(
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
