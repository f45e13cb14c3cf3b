"""The decoding strategies both evaluations compare (docs/design.md section 9).

* ``greedy`` (``T = 0``), ``default T=1 P=1`` and a static ``T x P`` grid (without
  ``T=1 P=1``, which is ``default``): the canonical rule with fixed ``(T, P)``
  (:func:`static_strategies`); these are the *static points* of the frontier;
* baselines (only the chat evaluation): a
  :class:`~autodeco_samplers.research.baselines.numpy_baselines.Baseline`'s own distribution;
* ``mean-static``: ``T`` and ``P`` fixed at the mean of the heads' own predictions over the
  tokens AutoDeco generated in the same run (:func:`mean_static_strategy`);
* ``autodeco``: the heads' per-token ``(T, P)`` through the default policy (:data:`AUTODECO`);
  ``autodeco_variant``: the same with other heads (:func:`variant_strategy`, for comparing
  recipes in one run: the same items, baselines and random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from autodeco_samplers.research.baselines.numpy_baselines import Baseline
from autodeco_samplers.research.evaluation.choosers import (
    Chooser,
    autodeco_chooser,
    baseline_chooser,
    is_greedy,
    static_chooser,
)

__all__ = ["Strategy", "STATIC_GROUPS", "AUTODECO", "static_strategies", "mean_static_strategy", "variant_strategy", "variant_label"]

#: the groups whose rows are static points of the frontier (mean-static is static but not one)
STATIC_GROUPS = ("greedy", "default", "grid")


@dataclass(frozen=True)
class Strategy:
    """A decoding strategy. ``kind``: ``"static"`` (fixed ``temperature``/``top_p``,
    canonical rule; ``T = 0`` is greedy), ``"baseline"`` (``baseline``'s own distribution) or
    ``"autodeco"`` (the heads' per-token predictions through ``DecodingPolicy()``).
    ``group`` places the row in the report (``greedy``, ``default``, ``grid``, ``baseline``,
    ``mean_static``, ``autodeco``, ``autodeco_variant``, ``mean_static_variant``). ``heads``:
    heads of its own (a variant), else the evaluation's."""

    name: str
    kind: str
    temperature: float = 1.0
    top_p: float = 1.0
    group: str = "grid"
    baseline: Optional[Baseline] = None
    heads: Any = field(default=None, compare=False, hash=False, repr=False)

    @property
    def deterministic(self) -> bool:
        """Greedy: the same samples for every seed (one run serves them all)."""
        return self.kind == "static" and is_greedy(self.temperature)

    def chooser(self, heads=None, *, record_predictions: bool = False) -> Chooser:
        """This strategy's per-step draw. ``heads``: needed by ``autodeco``; a static strategy
        records the heads' predictions only when ``record_predictions``."""
        if self.kind == "autodeco":
            return autodeco_chooser(self.heads if self.heads is not None else heads)
        if self.kind == "static":
            return static_chooser(self.temperature, self.top_p, heads if record_predictions else None)
        if self.kind == "baseline":
            return baseline_chooser(self.baseline)
        raise ValueError(f"unknown strategy kind {self.kind!r}")


AUTODECO = Strategy("autodeco", "autodeco", group="autodeco")


def static_strategies(temperatures: Sequence[float], top_ps: Sequence[float]) -> List[Strategy]:
    """``greedy``, ``default T=1 P=1`` and the grid ``static T=t P=p`` in ``temperatures x
    top_ps`` order, without ``T=1 P=1`` (which is ``default``)."""
    out = [Strategy("greedy", "static", 0.0, 1.0, "greedy"), Strategy("default T=1 P=1", "static", 1.0, 1.0, "default")]
    out += [Strategy(f"static T={t:g} P={p:g}", "static", float(t), float(p), "grid")
            for t in temperatures for p in top_ps if not (t == 1.0 and p == 1.0)]
    return out


def mean_static_strategy(T_mean: float, P_mean: float, variant: Optional[str] = None) -> Strategy:
    """The static strategy at the mean predicted ``(T, P)`` of AutoDeco's tokens (of the
    ``variant``'s tokens when given)."""
    if variant is not None:
        return Strategy(f"mean-static [{variant}] T={T_mean:.3f} P={P_mean:.3f}", "static", T_mean, P_mean,
                        "mean_static_variant")
    return Strategy(f"mean-static T={T_mean:.3f} P={P_mean:.3f}", "static", T_mean, P_mean, "mean_static")


_VARIANT_PREFIX = "autodeco ["


def variant_strategy(label: str, heads) -> Strategy:
    """AutoDeco with other ``heads`` (a recipe variant), named ``autodeco [label]``."""
    return Strategy(f"{_VARIANT_PREFIX}{label}]", "autodeco", group="autodeco_variant", heads=heads)


def variant_label(st: Strategy) -> str:
    """The label a :func:`variant_strategy` was made with."""
    return st.name[len(_VARIANT_PREFIX):-1]
