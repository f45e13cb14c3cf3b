"""Keep the final hidden state of the positions an mlx-lm model scores.

mlx-lm's causal models are an outer module whose ``__call__`` runs the backbone
``model.model(inputs, cache, ...)`` (embeddings, layers, final norm: the post-norm hidden state
``[B, L, H]``) and then the output layer (``embed_tokens.as_linear`` when the embeddings are
tied, ``lm_head`` otherwise). :func:`tap_hidden` swaps the backbone's class for a subclass whose
``__call__`` is the original one plus one lazy slice that keeps ``out[:, -1, :]`` (the row the
next token is drawn from) on a :class:`HiddenTap`. Same object, same parameters, same output:
only the class changes, and :meth:`HiddenTap.remove` restores it. MLX is lazy, so the slice
costs nothing until the sampler reads it.
"""

from __future__ import annotations

from typing import Any, Optional

from autodeco_samplers.core.errors import ShapeError

__all__ = ["HiddenTap", "tap_hidden", "backbone_of"]


def backbone_of(model: Any) -> Any:
    """The module whose output is the final hidden state: ``model.model`` (every mlx-lm
    language model built from a Hugging Face causal LM has it); :class:`ShapeError` otherwise."""
    backbone = getattr(model, "model", None)
    if backbone is None or not callable(backbone):
        raise ShapeError(f"{type(model).__name__} has no backbone `model.model`: not an mlx-lm causal language model")
    return backbone


class HiddenTap:
    """The last-position hidden state ``[B, H]`` of the backbone's latest call (an ``mx.array``,
    lazy), or ``None`` before the first call."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone
        self.original_class = type(backbone)
        self.hidden: Optional[Any] = None

    def remove(self) -> None:
        """Give the backbone its own class back (the tap keeps nothing afterwards)."""
        self.backbone.__class__ = self.original_class
        self.hidden = None


def tap_hidden(model: Any) -> HiddenTap:
    """Install the tap on ``model``'s backbone and return it. A backbone already tapped is
    refused (:class:`ShapeError`): two adapters would fight over one hidden state."""
    backbone = backbone_of(model)
    if getattr(type(backbone), "_autodeco_tap", None) is not None:
        raise ShapeError("this mlx-lm model already has an AutoDeco tap; call detach() on the first adapter")
    tap = HiddenTap(backbone)
    base = tap.original_class

    def __call__(self, *args, **kwargs):
        out = base.__call__(self, *args, **kwargs)
        tap.hidden = out[:, -1, :]
        return out

    backbone.__class__ = type(f"AutoDecoTapped{base.__name__}", (base,), {"__call__": __call__, "_autodeco_tap": tap})
    return tap
