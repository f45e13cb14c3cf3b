"""The tensor the heads read: a forward pre-hook on the model's output layer (``lm_head``)."""

from __future__ import annotations

from typing import Optional

import torch

from autodeco_samplers.core.errors import AutoDecoError

__all__ = ["HiddenCapture"]


class HiddenCapture:
    """Context manager: a forward pre-hook on ``model.get_output_embeddings()`` that keeps
    the tensor it receives (the final hidden state ``lm_head`` consumes) in ``.hidden``."""

    def __init__(self, model) -> None:
        self.model = model
        self.hidden: Optional[torch.Tensor] = None
        self._handle = None

    def _hook(self, module, args, kwargs=None):
        self.hidden = args[0] if args else next(iter(kwargs.values()))

    def __enter__(self) -> "HiddenCapture":
        head = self.model.get_output_embeddings()
        if head is None:
            raise AutoDecoError(f"{type(self.model).__name__} has no output embeddings (lm_head) to read hidden states from")
        self._handle = head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
