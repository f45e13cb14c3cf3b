"""The reference sampler: heads + policy + the reference's dense distribution + a seeded draw.

:class:`AutoDecoSampler` runs the specification itself (:func:`reference.reference_step`,
a full sort per row): slow at large vocabularies, exact by definition. Engines use the fast
step functions of :mod:`autodeco_samplers.core.step` (NumPy: :func:`~autodeco_samplers.core.step.numpy_step`).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from autodeco_samplers.core.interfaces import Heads, NumpyStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import next_token_distribution, reference_step, sample_tokens

__all__ = ["AutoDecoSampler", "sample"]


def sample(logits: np.ndarray, T, P, rng: np.random.Generator) -> np.ndarray:
    """Draw one token per row from :func:`next_token_distribution` ``(logits, T, P)``.

    >>> rng = np.random.default_rng(0)
    >>> int(sample(np.array([0.0, 5.0, 1.0]), 1.0, 0.1, rng)[0])
    1
    """
    return sample_tokens(np.atleast_2d(next_token_distribution(logits, T, P)), rng)


class AutoDecoSampler:
    """Per-step AutoDeco decoding with NumPy heads.

    Args:
        heads: anything implementing :class:`~autodeco_samplers.core.interfaces.Heads`.
        policy: request knobs (multipliers, clamps, overrides); default = the heads as-is.
        seed: seed of the ``numpy.random.Generator`` used for draws (or pass ``rng``).
    """

    def __init__(
        self,
        heads: Heads,
        policy: Optional[DecodingPolicy] = None,
        *,
        seed: Optional[int] = None,
        rng: Optional[np.random.Generator] = None,
    ) -> None:
        self.heads = heads
        self.policy = policy or DecodingPolicy()
        self.rng = rng if rng is not None else np.random.default_rng(seed)

    def distribution(self, hidden: np.ndarray, logits: np.ndarray) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]:
        """``(probs [B, V], (T_pred, P_pred, T_used, P_used))`` for one step."""
        st = reference_step(hidden, logits, self.heads, self.policy)
        return st.probs, (st.T_pred, st.P_pred, st.T, st.P)

    def step(self, hidden: np.ndarray, logits: np.ndarray) -> NumpyStep:
        """Predict, apply the policy, and draw one token per row."""
        probs, (T_pred, P_pred, T_used, P_used) = self.distribution(hidden, logits)
        ids = sample_tokens(np.atleast_2d(probs), self.rng)
        return NumpyStep(T_pred, P_pred, T_used, P_used, token_ids=ids)
