"""The sampler mlx-lm calls once per decoding step, running the core NumPy step.

mlx-lm's ``generate_step`` calls ``sampler(logprobs)`` with ``logprobs = l - logsumexp(l)``
``[B, V]`` (``l``: the model's logits of the scored position after the caller's logits
processors), right after the model call that produced them, and expects ``[B]`` token ids.
:class:`AutoDecoSampler` reads the hidden state of that same call from the
:class:`~autodeco_samplers.adapters.mlx.tap.HiddenTap`, hands both rows to the host (one copy
each; on Apple silicon the memory is shared) and calls
:func:`autodeco_samplers.core.step.numpy_step_sample`: ``T_pred, P_pred = heads(h, logprobs)``,
``T, P = policy.apply(...)`` with the request's multipliers, the canonical distribution
``softmax((l - max l) / T)`` on the nucleus (exclusive prefix sum ``< P``, ties by lower id),
one draw from ``rng``. ``logprobs`` differ from ``l`` by a per-row constant, which changes
neither the canonical distribution nor the heads' features (statistics of
``softmax(l / T_pred)``). No rule is written here.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import numpy as np

from autodeco_samplers.core.errors import ShapeError
from autodeco_samplers.core.interfaces import NumpyStep, TokenStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.step import numpy_step_sample

__all__ = ["AutoDecoSampler"]

OnStep = Callable[[np.ndarray, np.ndarray, NumpyStep], None]
"""``on_step(hidden [B, H], logprobs [B, V], step)`` after each draw (float32 NumPy)."""


def to_numpy(array: Any) -> np.ndarray:
    """An ``mx.array`` as float32 NumPy (evaluates it; bfloat16/float16 are upcast in MLX first,
    NumPy has no bfloat16)."""
    import mlx.core as mx

    if array.dtype != mx.float32:
        array = array.astype(mx.float32)
    return np.asarray(array)


class AutoDecoSampler:
    """``sampler(logprobs) -> token ids`` for mlx-lm's ``generate`` / ``stream_generate`` /
    ``generate_step``.

    Attributes:
        trace: one :class:`TokenStep` per draw, in order (token id, ``T_pred``, ``P_pred`` and
            the ``T``/``P`` used). mlx-lm computes one step ahead of what it yields, so after a
            generation the trace holds one draw more than the tokens returned: token ``i`` of
            the output is ``trace[i]``.
        policy: the deployment's policy with the request's multipliers applied
            (:meth:`DecodingPolicy.for_request`).
    """

    def __init__(self, tap, heads, policy: DecodingPolicy, *, seed: Optional[int] = None,
                 exact: bool = False, on_step: Optional[OnStep] = None) -> None:
        self.tap = tap
        self.heads = heads
        self.policy = policy
        self.exact = exact
        self.on_step = on_step
        self.rng = np.random.default_rng(seed)
        self.trace: List[TokenStep] = []

    def reset(self, seed: Optional[int] = None) -> None:
        """Empty the trace and reseed the generator (before a new generation)."""
        self.trace = []
        self.rng = np.random.default_rng(seed)

    def __call__(self, logprobs: Any) -> Any:
        import mlx.core as mx

        if self.tap.hidden is None:
            raise ShapeError("the AutoDeco sampler was called before the tapped model ran: pass it to "
                             "generate() with the model given to attach()")
        lp = to_numpy(logprobs)
        lp = lp.reshape(1, -1) if lp.ndim == 1 else lp
        hidden = to_numpy(self.tap.hidden)
        if hidden.shape[0] != lp.shape[0]:
            raise ShapeError(f"batch mismatch: the tapped hidden state has {hidden.shape[0]} rows, the sampler "
                             f"got {lp.shape[0]} rows of log-probabilities")
        st = numpy_step_sample(hidden, lp, self.heads, self.policy, self.rng, exact=self.exact)
        for b, tok in enumerate(st.token_ids):
            self.trace.append(TokenStep(int(tok), float(st.T_pred[b]), float(st.P_pred[b]), float(st.T[b]), float(st.P[b])))
        if self.on_step is not None:
            self.on_step(hidden, lp, st)
        return mx.array(st.token_ids.astype(np.uint32))
