"""Model classes: SGLang's stock ``*ForCausalLM`` plus AutoDeco when the config asks for it.

:func:`autodeco_model_class` builds a subclass *with the base class's name* (SGLang's
registry keys models by class name, and SGLang switches behaviour on architecture names).
The subclass is the stock class unless ``config.autodeco`` exists; then it

* replaces ``self.logits_processor`` by :class:`AutoDecoLogitsProcessor` (in place, keeping
  the stock processor's settings) holding float32 heads replicated on every TP rank;
* routes weights in ``load_weights``: head tensors (``temp_head.*`` / ``top_p_head.*``, with or
  without the ``llm.`` prefix of official merged checkpoints) go to the heads; every other
  tensor loses a leading ``llm.`` and goes to the stock loader. The first load fails with
  :class:`~autodeco_samplers.errors.CheckpointError` if any expected head tensor is missing.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Set, Tuple

import torch

from autodeco_samplers.errors import CheckpointError, ShapeError
from autodeco_samplers.heads.layout import BASE_PREFIX, HEAD_NAMES, PARAM_SUFFIXES, canonical_head_key, head_key

from .config import autodeco_block_of, parse_autodeco_block

Weights = Iterable[Tuple[str, torch.Tensor]]


def route_weights(weights: Weights, heads_sink: Dict[str, torch.Tensor]) -> Iterator[Tuple[str, torch.Tensor]]:
    """Yield the base-model ``(name, tensor)`` pairs of ``weights`` with a leading ``llm.``
    removed; head tensors are stored in ``heads_sink`` under their canonical key instead."""
    for name, tensor in weights:
        key = canonical_head_key(name)
        if key is not None:
            heads_sink[key] = tensor
            continue
        yield (name[len(BASE_PREFIX):] if name.startswith(BASE_PREFIX) else name), tensor


class AutoDecoModelMixin:
    """Mixed in front of a stock SGLang ``*ForCausalLM``; see the module docstring."""

    def __init__(self, config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        block = autodeco_block_of(config)
        self.autodeco_enabled = block is not None
        self._autodeco_loaded: Set[str] = set()
        self._autodeco_ready = False
        if not self.autodeco_enabled:
            return
        from autodeco_samplers.heads.torch_heads import AutoDecoHeadsModule

        from .processor import AutoDecoLogitsProcessor

        heads_config, policy = parse_autodeco_block(block, model_hidden_size=getattr(config, "hidden_size", None))
        heads = AutoDecoHeadsModule(heads_config).float().eval()
        for p in heads.parameters():
            p.requires_grad_(False)
        AutoDecoLogitsProcessor.wrap(self.logits_processor, heads, policy)

    @property
    def autodeco_heads(self):
        return self.logits_processor.heads if self.autodeco_enabled else None

    def expected_head_keys(self) -> Tuple[str, ...]:
        cfg = self.autodeco_heads.config
        enabled = {HEAD_NAMES[0]: cfg.enable_temperature_head, HEAD_NAMES[1]: cfg.enable_top_p_head}
        return tuple(head_key(h, s) for h in HEAD_NAMES if enabled[h] for s in PARAM_SUFFIXES)

    def _load_head_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        params = dict(self.autodeco_heads.named_parameters())
        for key, tensor in tensors.items():
            if key not in params:
                raise CheckpointError(
                    f"head tensor {key!r} found in the checkpoint, but config.json's autodeco block disables that head"
                )
            param = params[key]
            if tuple(tensor.shape) != tuple(param.shape):
                raise ShapeError(
                    f"head tensor {key!r} has shape {list(tensor.shape)}, expected {list(param.shape)} "
                    "(from the autodeco block's hidden_size / widths)"
                )
            with torch.no_grad():
                param.copy_(tensor.to(device=param.device, dtype=param.dtype))
            self._autodeco_loaded.add(key)

    def load_weights(self, weights: Weights, *args: Any, **kwargs: Any):
        if not self.autodeco_enabled:
            return super().load_weights(weights, *args, **kwargs)
        sink: Dict[str, torch.Tensor] = {}
        result = super().load_weights(route_weights(weights, sink), *args, **kwargs)
        self._load_head_tensors(sink)
        if not self._autodeco_ready:
            missing = [k for k in self.expected_head_keys() if k not in self._autodeco_loaded]
            if missing:
                raise CheckpointError(
                    f"AutoDeco heads incomplete: missing head tensor(s) {missing} in the checkpoint "
                    "(run `autodeco prepare-sglang` to build a complete folder)"
                )
            self._autodeco_ready = True
        if isinstance(result, set):
            result |= {f"logits_processor.heads.{k}" for k in sink}
        return result


def autodeco_model_class(base: type) -> type:
    """A subclass of SGLang model class ``base`` with the same ``__name__`` (and
    ``__qualname__``) adding :class:`AutoDecoModelMixin`; defined in the caller's module."""
    import sys

    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    cls = type(base.__name__, (AutoDecoModelMixin, base), {"__module__": caller, "__qualname__": base.__qualname__})
    cls.__doc__ = f"SGLang ``{base.__name__}`` with AutoDeco heads when config.json has an ``autodeco`` block."
    return cls
