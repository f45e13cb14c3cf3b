"""Export heads from any checkpoint form to the GGUF sidecar (engines without torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

from autodeco_samplers.heads.io.checkpoint import read_head_checkpoint
from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.io.gguf_sidecar import write_gguf_heads

__all__ = ["export_heads"]


def export_heads(checkpoint: Union[str, Path], out: Union[str, Path]) -> Tuple[HeadsConfig, Path]:
    """Read heads from any checkpoint form (folder, safetensors, merged, sidecar) and write a
    sidecar at ``out``; returns ``(config, out)``."""
    config, tensors = read_head_checkpoint(checkpoint)
    return config, write_gguf_heads(out, config, tensors, source_checkpoint=str(checkpoint))
