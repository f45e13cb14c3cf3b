"""autodeco-samplers: decode the AutoDeco way on any serving stack.

Two tiny heads read the model's final hidden state and predict, per token, the
temperature ``T`` and top-p ``P`` to sample with. This package holds the engine-agnostic
core (NumPy reference and torch implementation of the canonical semantics, the heads and
their checkpoints, the decoding policy, the CLI); engine adapters live in
:mod:`autodeco_samplers.adapters` and import their engine only when used.

Two levels of NumPy API (docs/design.md section 3): the rule on a ``(T, P)`` you already
have (:func:`next_token_distribution`, :func:`sample`), and the step from hidden states and
logits through heads and policy (:func:`numpy_step_distribution`, :func:`numpy_step_sample`).

>>> import numpy as np, autodeco_samplers as ad
>>> ad.next_token_distribution(np.log([0.5, 0.3, 0.2]), T=1.0, P=0.6).round(3).tolist()
[0.625, 0.375, 0.0]
"""

from autodeco_samplers.core.errors import (
    AutoDecoError,
    CheckpointError,
    InvalidLogitsError,
    InvalidParameterError,
    ShapeError,
    UnsafeCheckpointError,
)
from autodeco_samplers.heads import AutoDecoHeads, HeadsConfig, load_heads
from autodeco_samplers.core.interfaces import GenerationResult, Heads, NumpyStep, TokenStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import (
    GREEDY_TEMPERATURE,
    next_token_distribution,
    nucleus_mask,
    probability_stats,
    sample,
    soft_top_p,
    temperature_probs,
)
from autodeco_samplers.core.step import numpy_step_distribution, numpy_step_sample

__version__ = "0.1.0"

__all__ = [
    "AutoDecoError",
    "AutoDecoHeads",
    "CheckpointError",
    "DecodingPolicy",
    "GREEDY_TEMPERATURE",
    "GenerationResult",
    "Heads",
    "HeadsConfig",
    "InvalidLogitsError",
    "InvalidParameterError",
    "ShapeError",
    "NumpyStep",
    "TokenStep",
    "UnsafeCheckpointError",
    "load_heads",
    "next_token_distribution",
    "nucleus_mask",
    "numpy_step_distribution",
    "numpy_step_sample",
    "probability_stats",
    "sample",
    "soft_top_p",
    "temperature_probs",
]
