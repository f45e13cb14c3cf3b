"""SGLang adapter: AutoDeco inside SGLang's own model forward (so CUDA graphs capture it).

How it works (details and the launch command in ``docs/sglang.md``):

* :mod:`.models` is an *external model package* for SGLang
  (``SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models``). Its classes
  subclass SGLang's stock ``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``,
  ``Qwen3MoeForCausalLM`` and ``GptOssForCausalLM`` and keep those names (SGLang switches
  behaviour on them). Without an ``autodeco`` block in ``config.json`` they are the stock
  classes, byte for byte.
* With the block, the model's ``LogitsProcessor`` becomes :class:`AutoDecoSGLangProcessor`:
  it forces LAST hidden-state capture, runs the heads on the post-norm rows aligned with the
  logits to sample, and replaces those logits by the core step's
  (:func:`autodeco_samplers.core.step.torch_step_logits`: ``(l - max l) / T`` inside the
  nucleus, ``-1e30`` outside), so SGLang's stock sampler at temperature 1 / top-p 1 draws
  exactly the canonical distribution of docs/design.md section 3.
* ``autodeco prepare-sglang`` (:func:`prepare_sglang_checkpoint`) writes a folder SGLang
  serves: base ``model_type`` plus the ``autodeco`` block, sampling keys stripped from
  ``generation_config.json``.

Importing this package never imports SGLang or torch; the names below load lazily.
"""

from __future__ import annotations

from typing import Any

EXTERNAL_MODEL_PACKAGE = "autodeco_samplers.adapters.sglang.models"

__all__ = [
    "EXTERNAL_MODEL_PACKAGE",
    "AutoDecoSGLangProcessor",
    "SGLangModeError",
    "autodeco_model_class",
    "prepare_sglang_checkpoint",
    "route_weights",
]

_LAZY = {
    "SGLangModeError": "config",
    "AutoDecoSGLangProcessor": "processor",
    "autodeco_model_class": "model_mixin",
    "route_weights": "model_mixin",
    "prepare_sglang_checkpoint": "prepare",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
