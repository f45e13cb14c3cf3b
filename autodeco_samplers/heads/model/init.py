"""Fresh head weights with NumPy, initialised like ``torch.nn.Linear`` (no torch needed)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from autodeco_samplers.heads.io.checkpoint import Tensors
from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import ENHANCED_EXTRA_FEATURES, PLAIN_EXTRA_FEATURES, TEMP, TOP_P, head_key


def _linear(rng: np.random.Generator, d_in: int, d_out: int) -> Tuple[np.ndarray, np.ndarray]:
    # torch.nn.Linear's default: weight and bias ~ U(-1/sqrt(d_in), 1/sqrt(d_in)).
    bound = 1.0 / np.sqrt(d_in)
    w = rng.uniform(-bound, bound, size=(d_out, d_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(d_out,)).astype(np.float32)
    return w, b


def init_heads(
    hidden_size: int,
    *,
    width: int = 256,
    use_enhanced_features: bool = True,
    enable_temperature_head: bool = True,
    enable_top_p_head: bool = True,
    base_model_name_or_path: Optional[str] = None,
    seed: int = 0,
) -> Tuple[HeadsConfig, Tensors]:
    """Return ``(config, tensors)`` of new heads in the official layout, from ``seed``."""
    rng = np.random.default_rng(seed)
    tensors: Tensors = {}
    extra = ENHANCED_EXTRA_FEATURES if use_enhanced_features else PLAIN_EXTRA_FEATURES
    for head, enabled, d_in in ((TEMP, enable_temperature_head, hidden_size), (TOP_P, enable_top_p_head, hidden_size + extra)):
        if not enabled:
            continue
        w1, b1 = _linear(rng, d_in, width)
        w2, b2 = _linear(rng, width, 1)
        tensors.update({
            head_key(head, "mlp.0.weight"): w1,
            head_key(head, "mlp.0.bias"): b1,
            head_key(head, "mlp.2.weight"): w2,
            head_key(head, "mlp.2.bias"): b2,
        })
    config = HeadsConfig(
        hidden_size=hidden_size,
        use_enhanced_features=use_enhanced_features,
        enable_temperature_head=enable_temperature_head,
        enable_top_p_head=enable_top_p_head,
        temperature_width=width if enable_temperature_head else 0,
        top_p_width=width if enable_top_p_head else 0,
        base_model_name_or_path=base_model_name_or_path,
    )
    return config, tensors
