"""The ``autodeco`` block of an SGLang-ready ``config.json`` (no torch, no SGLang).

SGLang parses ``config.json`` with transformers, which rejects ``model_type: "autodeco"``.
A folder prepared for SGLang therefore keeps the *base* ``model_type`` and
``architectures`` and carries everything AutoDeco needs in one nested object::

    "autodeco": {
      "format_version": 1,
      "hidden_size": 3584,
      "use_enhanced_features": true,
      "enable_temperature_head": true,   "temperature_width": 256,
      "enable_top_p_head": true,         "top_p_width": 256,
      "base_model_name_or_path": "...",
      "policy": {"temperature": 1.0, "top_p": 1.0, "min_temperature": null,
                 "max_temperature": null, "fixed_temperature": null, "fixed_top_p": null}
    }

``policy`` holds the server-wide :class:`~autodeco_samplers.policy.DecodingPolicy` (exact
official multiplier semantics, applied inside the model). Widths are read from the head
tensors when the folder is prepared, never assumed.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from autodeco_samplers.errors import AutoDecoError, CheckpointError
from autodeco_samplers.heads.config import HeadsConfig
from autodeco_samplers.policy import DecodingPolicy

AUTODECO_CONFIG_KEY = "autodeco"
BLOCK_FORMAT_VERSION = 1
_POLICY_FIELDS = tuple(f.name for f in fields(DecodingPolicy))


class SGLangModeError(AutoDecoError, ValueError):
    """SGLang asked the AutoDeco model for a mode it cannot serve correctly (speculative
    decoding with aux hidden states, FULL hidden capture, multi-item scoring, ...)."""


def make_autodeco_block(config: HeadsConfig, policy: Optional[DecodingPolicy] = None) -> Dict[str, Any]:
    """The ``autodeco`` block describing ``config`` (and the server-wide ``policy``)."""
    policy = policy or DecodingPolicy()
    return {
        "format_version": BLOCK_FORMAT_VERSION,
        "hidden_size": config.hidden_size,
        "use_enhanced_features": config.use_enhanced_features,
        "enable_temperature_head": config.enable_temperature_head,
        "enable_top_p_head": config.enable_top_p_head,
        "temperature_width": config.temperature_width,
        "top_p_width": config.top_p_width,
        "base_model_name_or_path": config.base_model_name_or_path,
        "base_model_type": config.base_model_type,
        "policy": asdict(policy),
    }


def _get(block: Any, key: str, default: Any = None) -> Any:
    if isinstance(block, Mapping):
        return block.get(key, default)
    return getattr(block, key, default)


def parse_autodeco_block(block: Any, *, model_hidden_size: Optional[int] = None) -> Tuple[HeadsConfig, DecodingPolicy]:
    """``(HeadsConfig, DecodingPolicy)`` from an ``autodeco`` block (a dict, or the object
    transformers made of it). Raises :class:`CheckpointError` naming the bad field."""
    where = f"config.json '{AUTODECO_CONFIG_KEY}' block"
    version = _get(block, "format_version", BLOCK_FORMAT_VERSION)
    if version != BLOCK_FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {version!r} is not supported (expected {BLOCK_FORMAT_VERSION})")
    hidden = _get(block, "hidden_size", model_hidden_size)
    if hidden is None:
        raise CheckpointError(f"{where}: hidden_size is missing")
    if model_hidden_size is not None and int(hidden) != int(model_hidden_size):
        raise CheckpointError(
            f"hidden-size mismatch: {where} says hidden_size={hidden} but the model has hidden_size={model_hidden_size}"
        )
    enable_t = bool(_get(block, "enable_temperature_head", True))
    enable_p = bool(_get(block, "enable_top_p_head", True))
    if not (enable_t or enable_p):
        raise CheckpointError(f"{where}: both heads are disabled; nothing to decode with")
    widths = {}
    for name, enabled in (("temperature_width", enable_t), ("top_p_width", enable_p)):
        w = int(_get(block, name, 0) or 0)
        if enabled and w <= 0:
            raise CheckpointError(f"{where}: {name} must be a positive integer for an enabled head, got {w}")
        widths[name] = w if enabled else 0
    heads = HeadsConfig(
        hidden_size=int(hidden),
        use_enhanced_features=bool(_get(block, "use_enhanced_features", True)),
        enable_temperature_head=enable_t,
        enable_top_p_head=enable_p,
        base_model_name_or_path=_get(block, "base_model_name_or_path"),
        base_model_type=_get(block, "base_model_type"),
        **widths,
    )
    raw_policy = _get(block, "policy") or {}
    if not isinstance(raw_policy, Mapping):
        raw_policy = {k: getattr(raw_policy, k) for k in _POLICY_FIELDS if hasattr(raw_policy, k)}
    unknown = sorted(set(raw_policy) - set(_POLICY_FIELDS))
    if unknown:
        raise CheckpointError(f"{where}: unknown policy field(s) {unknown}; known: {list(_POLICY_FIELDS)}")
    policy = DecodingPolicy(**{k: v for k, v in raw_policy.items() if v is not None or k not in ("temperature", "top_p")})
    return heads, policy


def autodeco_block_of(hf_config: Any) -> Optional[Any]:
    """The ``autodeco`` block of a transformers config object, or None (stock model)."""
    block = getattr(hf_config, AUTODECO_CONFIG_KEY, None)
    if block is None and hasattr(hf_config, "to_dict"):
        block = hf_config.to_dict().get(AUTODECO_CONFIG_KEY)
    return block
