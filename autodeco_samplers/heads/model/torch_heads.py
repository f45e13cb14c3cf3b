"""The torch twin of :class:`AutoDecoHeads`: an ``nn.Module`` with the official key layout.

``state_dict()`` keys are exactly ``temp_head.mlp.{0,2}.{weight,bias}`` and
``top_p_head.mlp.{0,2}.{weight,bias}`` because each head is built as the official
``Sequential(Linear, ReLU, Linear, Sigmoid)``. ``save_pretrained`` writes the heads-only
layout that the official tools and :func:`load_heads` read; ``from_pretrained`` accepts
every form :func:`load_heads` accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from autodeco_samplers.core.errors import ShapeError
from autodeco_samplers.core import torch_ops

from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import ENHANCED_EXTRA_FEATURES, PLAIN_EXTRA_FEATURES
from autodeco_samplers.heads.model.numpy_heads import FALLBACK_TEMPERATURE, FALLBACK_TOP_P, AutoDecoHeads, load_heads
from autodeco_samplers.heads.io.writer import save_heads

DEFAULT_MLP_WIDTH = 256


class _MLPHead(nn.Module):
    def __init__(self, d_in: int, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)[..., 0]


class AutoDecoHeadsModule(nn.Module):
    """Temperature and top-p heads as torch modules.

    ``forward(hidden [..., H], logits [..., V]) -> (T, P)`` of shape ``[...]``, computed in
    float32 whatever the input dtype. The top-p head reads the *detached* predicted ``T``
    (official recipe), so at training time the top-p loss reaches the temperature head only
    through the sampling distribution, never through the head input.
    """

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        H = config.hidden_size
        extra = ENHANCED_EXTRA_FEATURES if config.use_enhanced_features else PLAIN_EXTRA_FEATURES
        self.temp_head = _MLPHead(H, config.temperature_width) if config.enable_temperature_head else None
        self.top_p_head = _MLPHead(H + extra, config.top_p_width) if config.enable_top_p_head else None

    @classmethod
    def create(
        cls,
        hidden_size: int,
        *,
        width: int = DEFAULT_MLP_WIDTH,
        use_enhanced_features: bool = True,
        enable_temperature_head: bool = True,
        enable_top_p_head: bool = True,
        base_model_name_or_path: Optional[str] = None,
        base_model_type: Optional[str] = None,
        seed: Optional[int] = None,
    ) -> "AutoDecoHeadsModule":
        """New heads with torch's default ``nn.Linear`` initialisation (seeded if ``seed``)."""
        config = HeadsConfig(
            hidden_size=hidden_size,
            use_enhanced_features=use_enhanced_features,
            enable_temperature_head=enable_temperature_head,
            enable_top_p_head=enable_top_p_head,
            temperature_width=width if enable_temperature_head else 0,
            top_p_width=width if enable_top_p_head else 0,
            base_model_name_or_path=base_model_name_or_path,
            base_model_type=base_model_type,
        )
        if seed is None:
            return cls(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config)

    @classmethod
    def from_numpy(cls, heads: AutoDecoHeads) -> "AutoDecoHeadsModule":
        module = cls(heads.config)
        state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in heads.tensors.items()}
        module.load_state_dict(state, strict=True)
        return module

    @classmethod
    def from_pretrained(cls, path, *, device=None, hidden_size: Optional[int] = None) -> "AutoDecoHeadsModule":
        """Load from any checkpoint form :func:`load_heads` accepts (float32 weights)."""
        module = cls.from_numpy(load_heads(path, hidden_size=hidden_size))
        return module.to(device) if device is not None else module

    def to_numpy(self, dtype=np.float32) -> AutoDecoHeads:
        tensors = {k: v.detach().cpu().float().numpy() for k, v in self.state_dict().items()}
        return AutoDecoHeads(self.config, tensors, dtype=dtype)

    def save_pretrained(self, directory, *, extra_config: Optional[dict] = None) -> Path:
        """Write ``config.json`` + ``autodeco_heads.safetensors`` (official heads-only layout)."""
        tensors = {k: v.detach().cpu().float().numpy() for k, v in self.state_dict().items()}
        return save_heads(directory, self.config, tensors, extra_config=extra_config)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def _check_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[-1] != self.hidden_size:
            raise ShapeError(
                f"hidden-size mismatch: hidden states have width {hidden.shape[-1]} but the heads expect "
                f"hidden_size={self.hidden_size}"
            )
        return hidden.float()

    def predict_temperature(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self._check_hidden(hidden)
        if self.temp_head is None:
            return h.new_full(h.shape[:-1], FALLBACK_TEMPERATURE)
        return 2.0 * self.temp_head(h)

    def predict_top_p(
        self, hidden: torch.Tensor, T: torch.Tensor, logits: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``P`` from hidden states, the raw predicted ``T`` (detached here) and the logits."""
        h = self._check_hidden(hidden)
        if self.top_p_head is None:
            return h.new_full(h.shape[:-1], FALLBACK_TOP_P)
        T = T.detach()
        features = [h, T[..., None]]
        if self.config.use_enhanced_features:
            if logits is None:
                raise ShapeError("these heads use enhanced features: the top-p head needs the logits too")
            flat = logits.reshape(-1, logits.shape[-1])
            stats = torch_ops.probability_stats(flat, T.reshape(-1), check=False)
            features.append(stats.reshape(*h.shape[:-1], 4))
        return self.top_p_head(torch.cat(features, dim=-1))

    def forward(self, hidden: torch.Tensor, logits: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        T = self.predict_temperature(hidden)
        return T, self.predict_top_p(hidden, T, logits)
