"""The decoding policy: how predicted (T, P) and a request's knobs become the (T, P) used.

The rule (docs/design.md section 3, following the official AutoDeco inference code):

* ``T_base`` is ``fixed_temperature`` when set, else the predicted ``T``; it is clamped to
  ``[min_temperature, max_temperature]`` when those are set;
  ``T_used = T_base * temperature``. A request ``temperature`` of 0 makes every step greedy.
* ``P_base`` is ``fixed_top_p`` when set, else the predicted ``P``;
  ``P_used = clamp(P_base * top_p, 0, 1)``.

The policy's ``temperature`` and ``top_p`` are therefore *multipliers* with default 1.0,
which gives exactly the heads' predictions.

One request-knob rule for every engine (docs/design.md section 3): a policy is the
deployment's setting (a server's or an attachment's); a request's own ``temperature`` /
``top_p`` *multiply* the policy's multipliers and never replace them, and an absent request
knob is 1.0. :meth:`DecodingPolicy.for_request` gives the policy of one request; batched
engines pass per-row request multipliers to :meth:`DecodingPolicy.apply`, which composes them
by the same product. Disabling one head is ``fixed_temperature=1.0``
(or ``fixed_top_p=1.0``). The head *inputs* always see the raw predicted ``T``; the policy
changes only what is used for sampling. Works on NumPy arrays and torch tensors alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from autodeco_samplers.core.errors import InvalidParameterError

__all__ = ["DecodingPolicy", "KNOB_MAX", "check_knob"]

#: The largest knob :func:`check_knob` accepts. A used temperature is at most the predicted T
#: times two multipliers (the deployment's and the request's), so it stays far inside float32
#: (max 3.4e38) for every engine; a larger value is refused, never overflowed to infinity.
KNOB_MAX = 1e6


def check_knob(name: str, value: Any) -> float:
    """The one rule for a request knob (``temperature`` / ``top_p``, a multiplier): a finite
    number >= 0 and <= :data:`KNOB_MAX` (1e6). Returns ``float(value)``; raises
    :class:`InvalidParameterError` naming ``name`` and the limit for a negative, too large, NaN,
    infinite or non-numeric value. Every place that accepts a knob calls it:
    :meth:`DecodingPolicy.for_request`, the server's request schema, the CLI's flags and vLLM's
    ``vllm_xargs``.

    >>> check_knob("temperature", "0.5")
    0.5
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or not 0 <= number <= KNOB_MAX:
        raise InvalidParameterError(f"{name} must be a finite number greater than or equal to 0 and at most "
                                    f"{KNOB_MAX:g}, got {value!r}")
    return number


def _clip(x: Any, lo: Optional[float], hi: Optional[float]) -> Any:
    if lo is None and hi is None:
        return x
    if hasattr(x, "clamp"):  # torch tensor: stays on its device, no host sync
        return x.clamp(min=lo, max=hi)
    import numpy as np

    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def _fill(like: Any, value: float) -> Any:
    if hasattr(like, "clamp"):
        return like.new_full(like.shape, value)
    import numpy as np

    return np.full(np.shape(like), value, dtype=np.asarray(like).dtype)


@dataclass(frozen=True)
class DecodingPolicy:
    """Request-level knobs applied on top of the heads' predictions.

    Args:
        temperature: multiplier of the predicted temperature (0 means greedy).
        top_p: multiplier of the predicted top-p; the product is clamped to [0, 1].
        min_temperature, max_temperature: optional clamp of the (predicted or fixed) T
            before the multiplier.
        fixed_temperature, fixed_top_p: optional overrides replacing a head's prediction.

    >>> import numpy as np
    >>> DecodingPolicy(top_p=2.0).apply(np.array([0.8]), np.array([0.7]))
    (array([0.8]), array([1.]))
    """

    temperature: float = 1.0
    top_p: float = 1.0
    min_temperature: Optional[float] = None
    max_temperature: Optional[float] = None
    fixed_temperature: Optional[float] = None
    fixed_top_p: Optional[float] = None

    def __post_init__(self) -> None:
        def check(name: str, value: Optional[float], allow_none: bool = True) -> None:
            if value is None and allow_none:
                return
            check_knob(name, value)

        check("temperature", self.temperature, allow_none=False)
        check("top_p", self.top_p, allow_none=False)
        for name in ("min_temperature", "max_temperature", "fixed_temperature", "fixed_top_p"):
            check(name, getattr(self, name))
        if (
            self.min_temperature is not None
            and self.max_temperature is not None
            and self.min_temperature > self.max_temperature
        ):
            raise InvalidParameterError(
                f"min_temperature ({self.min_temperature}) exceeds max_temperature ({self.max_temperature})"
            )
        if self.fixed_top_p is not None and self.fixed_top_p > 1:
            raise InvalidParameterError(f"fixed_top_p must lie in [0, 1], got {self.fixed_top_p}")

    @property
    def is_default(self) -> bool:
        """True when the policy uses the heads' predictions unchanged."""
        return self == DecodingPolicy()

    def for_request(self, temperature: Optional[float] = None, top_p: Optional[float] = None) -> "DecodingPolicy":
        """The policy one request decodes with: this policy's multipliers times the request's.

        ``None`` (the request does not set the knob) is 1.0. Raises
        :class:`InvalidParameterError` for a negative, NaN or infinite request knob
        (:func:`check_knob`).

        >>> DecodingPolicy(temperature=0.5, top_p=0.9).for_request(temperature=2.0)
        DecodingPolicy(temperature=1.0, top_p=0.9, min_temperature=None, max_temperature=None, fixed_temperature=None, fixed_top_p=None)
        """
        t = 1.0 if temperature is None else check_knob("request temperature", temperature)
        p = 1.0 if top_p is None else check_knob("request top_p", top_p)
        if t == 1.0 and p == 1.0:
            return self
        return replace(self, temperature=self.temperature * t, top_p=self.top_p * p)

    def apply(self, T_pred: Any, P_pred: Any, temperature: Any = None, top_p: Any = None) -> tuple[Any, Any]:
        """Return ``(T_used, P_used)`` for predicted ``[B]`` arrays or tensors.

        ``temperature`` / ``top_p``, when given, are per-row ``[B]`` request multipliers (one
        per request of a batched engine) that multiply this policy's scalar ones, exactly as
        :meth:`for_request` does for one request; the caller guarantees they are finite and
        >= 0 (a row with temperature 0 is greedy).
        """
        t_mult = self.temperature if temperature is None else temperature * self.temperature
        p_mult = self.top_p if top_p is None else top_p * self.top_p
        T_base = T_pred if self.fixed_temperature is None else _fill(T_pred, self.fixed_temperature)
        T_used = _clip(T_base, self.min_temperature, self.max_temperature) * t_mult
        P_base = P_pred if self.fixed_top_p is None else _fill(P_pred, self.fixed_top_p)
        P_used = _clip(P_base * p_mult, 0.0, 1.0)
        return T_used, P_used
