"""Turn an AutoDeco checkpoint into a folder vLLM serves (no torch, no vLLM): the
served-folder format of :mod:`autodeco_samplers.heads.io.served`, shared with SGLang.
``config.json`` keeps the *base* ``model_type`` / ``architectures`` (which vLLM's registry
resolves to our classes through the plugin) plus the ``autodeco`` block; weight shards are
symlinked or merged; ``generation_config.json`` loses its sampling keys, so vLLM's default
request is temperature 1, top-p 1, top-k off (vLLM reads those keys as request defaults).
"""

from __future__ import annotations

from autodeco_samplers.heads.io.served import prepare_served_folder

__all__ = ["prepare_vllm_checkpoint"]

prepare_vllm_checkpoint = prepare_served_folder
"""Write a vLLM-servable AutoDeco folder (:func:`~autodeco_samplers.heads.io.served.prepare_served_folder`)."""
