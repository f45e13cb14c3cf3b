"""Write heads in the official heads-only layout (NumPy only, no torch).

A folder with ``config.json`` (``model_type: "autodeco"``, the enable flags, the feature
mode, ``hidden_size``, ``base_model_name_or_path``) and ``autodeco_heads.safetensors`` with
the ``temp_head.mlp.*`` / ``top_p_head.mlp.*`` tensors: the reference project's loader and
:func:`load_heads` both read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import CONFIG_FILE, HEADS_FILE
from autodeco_samplers.heads.io.safetensors_io import write_tensors


def save_heads(
    directory,
    config: HeadsConfig,
    tensors: Dict[str, np.ndarray],
    *,
    extra_config: Optional[dict] = None,
    dtype=np.float32,
) -> Path:
    """Write ``tensors`` (official key names) and ``config`` to ``directory``; returns it."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(extra_config or {})
    cfg.update(config.to_official_config())
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    metadata = {
        "format": "pt",
        "use_enhanced_features": json.dumps(config.use_enhanced_features),
        "hidden_size": json.dumps(config.hidden_size),
    }
    if config.base_model_name_or_path:
        metadata["base_model_name_or_path"] = str(config.base_model_name_or_path)
    write_tensors(out / HEADS_FILE, {k: np.asarray(v, dtype=dtype) for k, v in tensors.items()}, metadata)
    return out
