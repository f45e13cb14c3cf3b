"""Optional SGLang general-plugin hook (entry-point group ``sglang.srt.plugins``).

Declare ``autodeco = "autodeco_samplers.adapters.sglang.plugin:register"`` under that group
to have every SGLang process of the environment register the AutoDeco model classes
(they stay stock for checkpoints without an ``autodeco`` block). The environment variable
``SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models`` does the same
for one server without any packaging change.
"""

from __future__ import annotations

from autodeco_samplers.adapters.sglang import EXTERNAL_MODEL_PACKAGE


def register() -> None:
    """Register (overwriting) our classes under the stock architecture names."""
    from sglang.srt.models.registry import ModelRegistry

    ModelRegistry.register(EXTERNAL_MODEL_PACKAGE, overwrite=True)
