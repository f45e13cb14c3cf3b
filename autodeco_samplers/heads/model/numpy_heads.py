"""AutoDeco heads evaluated with NumPy: no torch needed (the llama.cpp path uses these).

``T = 2 * sigmoid(W2 relu(W1 h + b1) + b2)`` and, with ``x = concat[h, T, stats]`` (enhanced
features) or ``concat[h, T]``, ``P = sigmoid(W2' relu(W1' x + b1') + b2')``. The statistics
are :func:`autodeco_samplers.core.reference.probability_stats` of the logits at the *raw* predicted
``T``, computed by :mod:`autodeco_samplers.core.fast_stats` (equal, fewer passes). A disabled head
predicts the fallback ``T = 1.0`` / ``P = 1.0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np

from autodeco_samplers.core.errors import ShapeError
from autodeco_samplers.core.fast_stats import probability_stats as fast_probability_stats
from autodeco_samplers.core.reference import as_logits

from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import TEMP, TOP_P, head_key
from autodeco_samplers.heads.io.checkpoint import Tensors, read_head_checkpoint

FALLBACK_TEMPERATURE = 1.0
FALLBACK_TOP_P = 1.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-z))) never overflows, unlike 1 / (1 + exp(-z)).
    return np.exp(-np.logaddexp(0.0, -z))


class AutoDecoHeads:
    """The two AutoDeco heads as NumPy arrays.

    Build one with :func:`load_heads`; ``predict(hidden, logits)`` returns ``(T, P)``.

    Args:
        config: what the heads are (hidden size, feature mode, which heads are enabled).
        tensors: the official-layout tensors of the enabled heads.
        dtype: compute dtype, float32 (default) or float64.
    """

    def __init__(self, config: HeadsConfig, tensors: Tensors, dtype=np.float32) -> None:
        self.config = config
        self.dtype = np.dtype(dtype)
        self.tensors = {k: np.asarray(v, dtype=self.dtype) for k, v in tensors.items()}

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def needs_logits(self) -> bool:
        """Whether :meth:`predict` needs the logits (top-p head with enhanced features)."""
        return self.config.enable_top_p_head and self.config.use_enhanced_features

    def _mlp(self, head: str, x: np.ndarray) -> np.ndarray:
        t = self.tensors
        z = np.maximum(x @ t[head_key(head, "mlp.0.weight")].T + t[head_key(head, "mlp.0.bias")], 0.0)
        return _sigmoid(z @ t[head_key(head, "mlp.2.weight")].T + t[head_key(head, "mlp.2.bias")])[:, 0]

    def _hidden(self, hidden: np.ndarray) -> np.ndarray:
        h = np.asarray(hidden)
        if h.ndim == 1:
            h = h[None, :]
        if h.ndim != 2:
            raise ShapeError(f"hidden states must have shape [B, H] or [H], got {tuple(np.shape(hidden))}")
        if h.shape[1] != self.hidden_size:
            raise ShapeError(
                f"hidden-size mismatch: hidden states have width {h.shape[1]} but the heads expect "
                f"hidden_size={self.hidden_size} (from {self.config.source})"
            )
        h = h.astype(self.dtype, copy=False)
        if not np.isfinite(h).all():
            raise ShapeError("hidden states contain NaN or inf")
        return h

    def predict_temperature(self, hidden: np.ndarray) -> np.ndarray:
        """Predicted ``T`` per row, shape ``[B]`` (``1.0`` if the temperature head is disabled)."""
        h = self._hidden(hidden)
        if not self.config.enable_temperature_head:
            return np.full(h.shape[0], FALLBACK_TEMPERATURE, dtype=self.dtype)
        return 2.0 * self._mlp(TEMP, h)

    def predict(
        self, hidden: np.ndarray, logits: Optional[np.ndarray] = None, *, statistics: Optional[Callable] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Predict ``(T, P)`` for ``hidden`` ``[B, H]`` and ``logits`` ``[B, V]``.

        ``logits`` may be omitted only when the top-p head does not use enhanced features
        (see :attr:`needs_logits`). ``statistics(logits, T) -> [B, 4]`` computes the top-p
        head's features: by default :func:`autodeco_samplers.core.fast_stats.probability_stats`,
        equal to the specification :func:`autodeco_samplers.core.reference.probability_stats`
        (property-tested) in a third of its passes; pass the latter to use the spec itself.
        """
        h = self._hidden(hidden)
        T = self.predict_temperature(h)
        if not self.config.enable_top_p_head:
            return T, np.full(h.shape[0], FALLBACK_TOP_P, dtype=self.dtype)
        features = [h, T[:, None]]
        if self.config.use_enhanced_features:
            if logits is None:
                raise ShapeError("these heads use enhanced features: predict() needs the logits too")
            arr = as_logits(logits)
            if arr.shape[0] != h.shape[0]:
                raise ShapeError(f"batch mismatch: hidden has {h.shape[0]} rows, logits have {arr.shape[0]}")
            stats = (statistics or fast_probability_stats)(arr, T.astype(arr.dtype))
            features.append(stats.astype(self.dtype))
        P = self._mlp(TOP_P, np.concatenate(features, axis=1))
        return T, P

    def __repr__(self) -> str:
        c = self.config
        return (
            f"AutoDecoHeads(hidden_size={c.hidden_size}, temperature={c.enable_temperature_head}, "
            f"top_p={c.enable_top_p_head}, enhanced={c.use_enhanced_features}, source={c.source!r})"
        )


def load_heads(
    path: Union[str, Path], *, dtype=np.float32, hidden_size: Optional[int] = None
) -> AutoDecoHeads:
    """Load AutoDeco heads as NumPy from a checkpoint folder, a ``.safetensors`` file or a
    ``.gguf`` sidecar (see :mod:`autodeco_samplers.heads.io.checkpoint` for the accepted forms).

    Args:
        path: checkpoint folder or file.
        dtype: compute dtype of the heads (float32 or float64).
        hidden_size: if given, the heads must read hidden states of this width (the
            backbone's), else :class:`ShapeError`.
    """
    config, tensors = read_head_checkpoint(path)
    if hidden_size is not None and int(hidden_size) != config.hidden_size:
        raise ShapeError(
            f"hidden-size mismatch: the model has hidden_size={hidden_size} but the heads in {path} "
            f"expect {config.hidden_size}"
        )
    return AutoDecoHeads(config, tensors, dtype=dtype)
