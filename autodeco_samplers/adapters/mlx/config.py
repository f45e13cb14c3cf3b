"""What mlx-lm 0.32 misreads in a config.json written by transformers 5, as ``model_config`` overrides.

transformers 5 writes the rotary embedding's parameters as ``rope_parameters``
(``{"rope_theta": ..., "rope_type": ...}``) instead of the top-level ``rope_theta`` /
``rope_scaling``; mlx-lm's Llama-family models read only the latter and silently fall back to
``rope_theta = 10000`` (SmolLM2 uses 100000: every position past the first would be rotated
wrongly). :func:`rope_overrides` returns the fields to pass as ``mlx_lm.load(...,
model_config=...)``: ``rope_theta`` from ``rope_parameters`` when the top level lacks it, and
``rope_scaling = rope_parameters`` when its ``rope_type`` is not ``"default"``. Nothing for a
config that already has ``rope_theta`` or has no ``rope_parameters``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

__all__ = ["rope_overrides"]


def rope_overrides(model_dir: Union[str, Path]) -> Dict[str, Any]:
    """The ``model_config`` overrides for the folder's ``config.json`` (see the module docstring);
    ``{}`` if the folder has no ``config.json`` (a hub id, left to mlx-lm)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    params = config.get("rope_parameters")
    if not isinstance(params, dict) or "rope_theta" in config:
        return {}
    out: Dict[str, Any] = {}
    if "rope_theta" in params:
        out["rope_theta"] = float(params["rope_theta"])
    if params.get("rope_type", "default") != "default" and "rope_scaling" not in config:
        out["rope_scaling"] = dict(params)
    return out
