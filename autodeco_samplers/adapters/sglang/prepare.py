"""Turn an AutoDeco checkpoint into a folder SGLang serves (no torch, no SGLang): the
served-folder format of :mod:`autodeco_samplers.heads.io.served`, shared with vLLM. Serve it with
``SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models`` (docs/sglang.md)."""

from __future__ import annotations

from autodeco_samplers.heads.io.served import prepare_served_folder

__all__ = ["prepare_sglang_checkpoint"]

prepare_sglang_checkpoint = prepare_served_folder
"""Write an SGLang-servable AutoDeco folder (:func:`~autodeco_samplers.heads.io.served.prepare_served_folder`)."""
