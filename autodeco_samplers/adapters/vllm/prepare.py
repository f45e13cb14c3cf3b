"""Turn an AutoDeco checkpoint into a folder vLLM serves (no torch, no vLLM).

The folder format is the one the SGLang adapter serves, so there is one preparation
function, :func:`autodeco_samplers.adapters.sglang.prepare.prepare_sglang_checkpoint`:
``config.json`` keeps the *base* ``model_type`` / ``architectures`` (which vLLM's registry
resolves to our classes through the plugin) plus the ``autodeco`` block; weight shards are
symlinked or merged; ``generation_config.json`` loses its sampling keys, so vLLM's default
request is temperature 1, top-p 1, top-k off (vLLM reads those keys as request defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from autodeco_samplers.adapters.sglang.prepare import prepare_sglang_checkpoint
from autodeco_samplers.policy import DecodingPolicy

__all__ = ["prepare_vllm_checkpoint"]


def prepare_vllm_checkpoint(
    src,
    out,
    *,
    heads=None,
    policy: Optional[DecodingPolicy] = None,
    link: bool = True,
    base_model_type_override: Optional[str] = None,
) -> Path:
    """Write a vLLM-servable AutoDeco folder to ``out`` and return its path (same arguments
    and folder as :func:`~autodeco_samplers.adapters.sglang.prepare.prepare_sglang_checkpoint`)."""
    return prepare_sglang_checkpoint(
        src, out, heads=heads, policy=policy, link=link, base_model_type_override=base_model_type_override
    )
