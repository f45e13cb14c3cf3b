"""vLLM general plugin (entry-point group ``vllm.general_plugins``, name ``autodeco``).

vLLM calls :func:`register` in every process it starts (API server, engine core, each
worker), so ``vllm serve FOLDER`` and ``LLM(FOLDER)`` find the AutoDeco model classes with
nothing else set. The classes take over the stock architecture names and stay stock for
checkpoints without an ``autodeco`` block. Set ``VLLM_PLUGINS`` to a list without
``autodeco`` to switch the plugin off.
"""

from __future__ import annotations


def register() -> None:
    """Register our classes (lazily, by ``module:Class``) under the stock architecture names."""
    from vllm import ModelRegistry

    from .models import ARCHITECTURES

    for arch, target in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
