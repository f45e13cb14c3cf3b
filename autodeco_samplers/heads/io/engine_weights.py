"""Head tensors inside an engine's own model class (SGLang, vLLM): one implementation.

Serving engines stream a checkpoint's ``(name, tensor)`` pairs into the model's
``load_weights``. For an AutoDeco model:

* :func:`route_weights` splits the stream: head tensors (``temp_head.*`` / ``top_p_head.*``, with
  or without the ``llm.`` prefix of official merged checkpoints) are collected under their
  canonical key; every other tensor goes on to the stock loader with a leading ``llm.`` removed;
* :class:`HeadWeightsMixin` copies the collected tensors into the float32 heads, refusing a
  tensor of a disabled head (:class:`CheckpointError`) or of the wrong shape
  (:class:`ShapeError`, both shapes named), and after the first load refuses a checkpoint that
  lacks any expected head tensor (:class:`CheckpointError` naming each one).

Engines may call ``load_weights`` several times (one call per shard), so completeness is
checked once, after the first call, against every tensor loaded so far. Torch only; no engine
is imported here.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, Set, Tuple

import torch

from autodeco_samplers.core.errors import CheckpointError, ShapeError
from autodeco_samplers.heads.model.layout import BASE_PREFIX, HEAD_NAMES, PARAM_SUFFIXES, canonical_head_key, head_key

__all__ = ["Weights", "route_weights", "HeadWeightsMixin"]

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


class HeadWeightsMixin:
    """Head loading shared by the engines' AutoDeco model mixins.

    The host class provides ``self.autodeco_heads`` (an ``AutoDecoHeadsModule``) and sets
    ``self._autodeco_loaded = set()`` and ``self._autodeco_ready = False`` in ``__init__``.
    Class attributes: ``autodeco_prepare_command`` (named when heads are missing) and
    ``autodeco_heads_prefix`` (where the engine's state names the head parameters).
    """

    autodeco_prepare_command = "autodeco prepare-vllm"
    autodeco_heads_prefix = "autodeco_heads."
    _autodeco_loaded: Set[str]
    _autodeco_ready: bool

    def expected_head_keys(self) -> Tuple[str, ...]:
        """Canonical keys of every tensor of the enabled heads."""
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

    def _load_weights_and_heads(self, load_stock: Callable[[Weights], Any], weights: Weights) -> Any:
        """Run the stock loader ``load_stock`` on the base tensors of ``weights`` and load the
        head tensors; returns the stock loader's result (a set of loaded names gains the heads')."""
        sink: Dict[str, torch.Tensor] = {}
        result = load_stock(route_weights(weights, sink))
        self._load_head_tensors(sink)
        if not self._autodeco_ready:
            missing = [k for k in self.expected_head_keys() if k not in self._autodeco_loaded]
            if missing:
                raise CheckpointError(
                    f"AutoDeco heads incomplete: missing head tensor(s) {missing} in the checkpoint "
                    f"(run `{self.autodeco_prepare_command}` to build a complete folder)"
                )
            self._autodeco_ready = True
        if isinstance(result, set):
            result |= {f"{self.autodeco_heads_prefix}{k}" for k in sink}
        return result
