"""vLLM adapter: AutoDeco inside a stock vLLM engine (a plugin, no fork).

How it works (details, commands and limits in ``docs/vllm.md``):

* The entry point ``autodeco`` in the ``vllm.general_plugins`` group (:mod:`.plugin`) runs in
  every vLLM process and registers :mod:`.models`: subclasses of vLLM's stock
  ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``,
  ``Qwen3MoeForCausalLM`` and ``GptOssForCausalLM`` under the same names. Without an
  ``autodeco`` block in ``config.json`` they are the stock classes.
* With the block, ``compute_logits`` (which vLLM's runner calls with the post-norm hidden row
  of each request it samples) returns the logits of the core step
  :func:`autodeco_samplers.core.step.torch_step_logits`: ``(l - max l) / T`` inside the
  nucleus, a large negative constant outside. vLLM's own sampler at
  temperature 1 / top-p 1 then draws the canonical AutoDeco distribution, and vLLM's returned
  logprobs (``raw_logprobs``, its default) are its log-probabilities.
* ``autodeco prepare-vllm`` (:func:`prepare_vllm_checkpoint`) writes the folder to serve.

Importing this package never imports vLLM or torch; the names below load lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AutoDecoModelMixin",
    "autodeco_model_class",
    "prepare_vllm_checkpoint",
]

_LAZY = {
    "AutoDecoModelMixin": "model_mixin",
    "autodeco_model_class": "model_mixin",
    "prepare_vllm_checkpoint": "prepare",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
