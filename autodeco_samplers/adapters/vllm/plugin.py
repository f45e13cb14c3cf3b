"""vLLM general plugin (entry-point group ``vllm.general_plugins``, name ``autodeco``).

vLLM calls :func:`register` in every process it starts (API server, engine core, each
worker), so ``vllm serve FOLDER`` and ``LLM(FOLDER)`` find the AutoDeco model classes with
nothing else set. The classes take over the stock architecture names and stay stock for
checkpoints without an ``autodeco`` block. Set ``VLLM_PLUGINS`` to a list without
``autodeco`` to switch the plugin off.

It also sets ``VLLM_USE_V2_MODEL_RUNNER=0`` unless the environment sets it: where Triton is
present (GPUs) vLLM 0.32 picks its V2 model runner by default, and V2 refuses to start, for any
model, while the package's V1-interface ``vllm.logits_processors`` plugin (the request knobs)
is installed. The V1 runner is what the adapter is tested on. An explicit
``VLLM_USE_V2_MODEL_RUNNER=1`` is kept (and then refused by vLLM with its own message).
"""

from __future__ import annotations

import os

V2_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"


def register() -> None:
    """Register our classes (lazily, by ``module:Class``) under the stock architecture names,
    and choose vLLM's V1 model runner unless the environment chose one (see the module)."""
    os.environ.setdefault(V2_RUNNER_ENV, "0")  # inherited by the engine and worker processes
    from vllm import ModelRegistry

    from autodeco_samplers.adapters.vllm.models import ARCHITECTURES

    for arch, target in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
