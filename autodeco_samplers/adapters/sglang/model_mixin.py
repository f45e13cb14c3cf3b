"""Model classes: SGLang's stock ``*ForCausalLM`` plus AutoDeco when the config asks for it.

:func:`autodeco_model_class` builds a subclass *with the base class's name* (SGLang's
registry keys models by class name, and SGLang switches behaviour on architecture names).
The subclass is the stock class unless ``config.autodeco`` exists; then it

* replaces ``self.logits_processor`` by :class:`AutoDecoSGLangProcessor` (in place, keeping
  the stock processor's settings) holding float32 heads replicated on every TP rank;
* routes weights in ``load_weights``: head tensors (``temp_head.*`` / ``top_p_head.*``, with or
  without the ``llm.`` prefix of official merged checkpoints) go to the heads; every other
  tensor loses a leading ``llm.`` and goes to the stock loader. The first load fails with
  :class:`~autodeco_samplers.core.errors.CheckpointError` if any expected head tensor is missing.
"""

from __future__ import annotations

from typing import Any, Set

from autodeco_samplers.heads.io.engine_weights import HeadWeightsMixin, Weights, route_weights

from autodeco_samplers.heads.io.served import autodeco_block_of, compiled_step_of, parse_autodeco_block

__all__ = ["AutoDecoModelMixin", "autodeco_model_class", "route_weights"]

class AutoDecoModelMixin(HeadWeightsMixin):
    """Mixed in front of a stock SGLang ``*ForCausalLM``; see the module docstring."""

    autodeco_prepare_command = "autodeco prepare-sglang"
    autodeco_heads_prefix = "logits_processor.heads."

    def __init__(self, config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        block = autodeco_block_of(config)
        self.autodeco_enabled = block is not None
        self._autodeco_loaded: Set[str] = set()
        self._autodeco_ready = False
        if not self.autodeco_enabled:
            return
        from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

        from autodeco_samplers.adapters.sglang.processor import AutoDecoSGLangProcessor

        heads_config, policy = parse_autodeco_block(block, model_hidden_size=getattr(config, "hidden_size", None))
        heads = AutoDecoHeadsModule(heads_config).float().eval()
        for p in heads.parameters():
            p.requires_grad_(False)
        AutoDecoSGLangProcessor.wrap(self.logits_processor, heads, policy, compiled=compiled_step_of(block))

    @property
    def autodeco_heads(self):
        return self.logits_processor.heads if self.autodeco_enabled else None

    def load_weights(self, weights: Weights, *args: Any, **kwargs: Any):
        if not self.autodeco_enabled:
            return super().load_weights(weights, *args, **kwargs)
        stock = super(AutoDecoModelMixin, self).load_weights
        return self._load_weights_and_heads(lambda base: stock(base, *args, **kwargs), weights)


def autodeco_model_class(base: type) -> type:
    """A subclass of SGLang model class ``base`` with the same ``__name__`` (and
    ``__qualname__``) adding :class:`AutoDecoModelMixin`; defined in the caller's module."""
    import sys

    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    cls = type(base.__name__, (AutoDecoModelMixin, base), {"__module__": caller, "__qualname__": base.__qualname__})
    cls.__doc__ = f"SGLang ``{base.__name__}`` with AutoDeco heads when config.json has an ``autodeco`` block."
    return cls
