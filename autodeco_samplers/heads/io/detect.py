"""What a checkpoint path is, decided from its files alone (no torch, no engine import):
a merged AutoDeco folder, or a llama.cpp model GGUF fit to open."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from autodeco_samplers.core.errors import CheckpointError

from autodeco_samplers.heads.io.checkpoint import read_json_object

__all__ = ["is_merged_checkpoint", "check_model_gguf"]


def is_merged_checkpoint(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a merged AutoDeco folder (``config.json`` with ``model_type:
    autodeco``). Raises :class:`CheckpointError` for a ``config.json`` that is not a JSON object."""
    p = Path(path)
    config = p / "config.json"
    if not (p.is_dir() and config.is_file()):
        return False
    return read_json_object(config).get("model_type") == "autodeco"


def check_model_gguf(path: Union[str, Path]) -> Optional[int]:
    """Validate a model GGUF before llama.cpp opens it (llama.cpp may abort the process on a
    bad file): it exists, parses, is not truncated, is not a heads sidecar, and carries a
    tokenizer vocabulary. Raises :class:`CheckpointError` naming the file. Returns the
    model's training context length when the file declares one."""
    from autodeco_samplers.heads.io.gguf_sidecar import SIDECAR_ARCHITECTURE, scan_gguf_header

    header = scan_gguf_header(path)
    arch = header.metadata.get("general.architecture")
    if arch is None:
        raise CheckpointError(f"{path}: GGUF without general.architecture; not a llama.cpp model")
    if arch == SIDECAR_ARCHITECTURE:
        raise CheckpointError(
            f"{path}: is an AutoDeco heads sidecar, not a model; pass it with --heads (heads=) and the model GGUF with --model"
        )
    if "tokenizer.ggml.model" not in header.metadata or "tokenizer.ggml.tokens" not in header.arrays:
        raise CheckpointError(
            f"{path}: model GGUF has no tokenizer vocabulary (tokenizer.ggml.*); llama.cpp cannot tokenize with it"
        )
    ctx = header.metadata.get(f"{arch}.context_length")
    return int(ctx) if isinstance(ctx, int) else None
