"""The item-paired analysis of a task evaluation (:func:`analyse`): from every strategy's
per-item results, bootstrap CIs, paired differences of AutoDeco against every strategy, the
cross-fitted static oracle, frontier membership decided with the CIs and the number of items a
gap needs. The statistics themselves are :mod:`autodeco_samplers.research.evaluation.report`'s;
this module only says which are computed on what (docs/evaluation.md, "The statistics").

Input: ``matrices`` (strategy name -> ``M [n_items, n_seeds]``: a closed item's accuracy over
its samples, an open item's number of distinct valid answers, per evaluation seed), the report
rows (name, group, params), each item's family and whether it is open, and optionally whether
its family was held out of the heads' training.

Metrics: ``closed_accuracy`` = mean over closed families of the family's mean item accuracy;
``distinct`` = mean over open items of the distinct valid answers; ``score`` = ``closed_accuracy
x distinct / n_open`` (closed accuracy alone without open items, ``distinct / n_open`` alone
without closed ones). Every interval is a percentile bootstrap (:class:`report.Resampler`:
items resampled within their family, seeds resampled inside each drawn item), the same draws
for every strategy, so differences are paired.

The *in-sample oracle* is the grid or default point with the best score on all the items;
the *cross-fitted oracle* picks the best grid/default point on one random half of every family
and is scored on the other half, both ways (:func:`report.cross_fit`); its CI does not include
the choice's own variability.

Frontier with CIs (axes ``closed_accuracy`` and ``distinct``, or the one present): a static
point (greedy, default, grid) *dominates* a strategy when its means dominate and at least one
axis's paired difference has a CI above zero (:func:`report.ci_dominates`). A strategy is
``"dominated"`` when a static point dominates it, ``"on the frontier within noise"`` when some
static point's means dominate it but no CI confirms it, else ``"beyond the frontier"``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from autodeco_samplers.research.evaluation import report as rep
from autodeco_samplers.research.evaluation.strategies import STATIC_GROUPS

__all__ = ["CROSS_FIT", "analyse", "subsets"]

#: the name of the cross-fitted oracle's pseudo-row in an analysis
CROSS_FIT = "oracle (cross-fitted)"
AXES = ("closed_accuracy", "distinct")


class _Metrics:
    """The three metrics of one item subset, as :class:`report.ItemMetric` functions."""

    def __init__(self, families: Sequence[str], is_open: Sequence[bool], n_open: int) -> None:
        closed = [f for f in dict.fromkeys(families) if not any(o for g, o in zip(families, is_open) if g == f)]
        self.closed = rep.ItemMetric(tuple(tuple(i for i, g in enumerate(families) if g == f) for f in closed))
        open_pos = tuple(i for i, o in enumerate(is_open) if o)
        self.distinct = rep.ItemMetric((open_pos,) if open_pos else ())
        self.n_open = n_open
        self.closed_positions = [i for s in self.closed.strata for i in s]
        self.open_positions = list(open_pos)
        self.present = [a for a, m in zip(AXES, (self.closed, self.distinct)) if m.strata]

    def score(self, v: np.ndarray) -> np.ndarray:
        acc = self.closed(v) if self.closed.strata else 1.0
        div = self.distinct(v) / max(self.n_open, 1) if self.distinct.strata else 1.0
        return acc * div

    def masked_score(self, v: np.ndarray, mask: np.ndarray) -> float:
        """The score on the items of ``mask`` only (each family's mean over its masked items)."""
        def mean_of(metric):
            parts = [v[[i for i in s if mask[i]]].mean() for s in metric.strata if any(mask[i] for i in s)]
            return float(np.mean(parts)) if parts else None
        acc, div = mean_of(self.closed), mean_of(self.distinct)
        return (1.0 if acc is None else acc) * (1.0 if div is None else div / max(self.n_open, 1))

    def by_name(self, key: str):
        return {"closed_accuracy": self.closed, "distinct": self.distinct, "score": self.score}[key]


def subsets(heldout_family: Sequence[Optional[bool]]) -> Dict[str, List[int]]:
    """Item positions of each analysed subset: ``all``, and when the items mark both held-out
    and trained families, ``heldout_families`` and ``trained_families`` apart."""
    out = {"all": list(range(len(heldout_family)))}
    marks = [bool(h) for h in heldout_family]
    if any(marks) and not all(marks) and all(h is not None for h in heldout_family):
        out["heldout_families"] = [i for i, h in enumerate(marks) if h]
        out["trained_families"] = [i for i, h in enumerate(marks) if not h]
    return out


def _power(A, B, positions: Sequence[int], gap: float, alpha: float, power: float) -> Dict[str, Any]:
    sd = rep.paired_item_sd(A, B, positions)
    return {"paired_sd": sd, "gap": gap, "items_needed": rep.items_needed(sd, gap, alpha=alpha, power=power),
            "resolvable_gap": rep.resolvable_gap(sd, len(positions), alpha=alpha, power=power),
            "n_items": len(positions), "alpha": alpha, "power": power}


def _analyse_subset(rows: Sequence[Dict[str, Any]], matrices: Mapping[str, np.ndarray], families: Sequence[str],
                    is_open: Sequence[bool], *, n_open: int, n_boot: int, boot_seed: int, level: float,
                    gap: float, alpha: float, power: float) -> Dict[str, Any]:
    met = _Metrics(families, is_open, n_open)
    n_seeds = next(iter(matrices.values())).shape[1]
    rs = rep.Resampler(families, n_seeds, n_boot=n_boot, seed=boot_seed)
    keys = met.present + ["score"]
    mats = dict(matrices)
    grid = {r["name"]: mats[r["name"]] for r in rows if r["group"] in ("grid", "default")}
    out: Dict[str, Any] = {"n_items": {"closed": len(met.closed_positions), "open": len(met.open_positions)},
                           "families": list(dict.fromkeys(families)), "bootstrap": {"draws": n_boot, "seed": boot_seed,
                                                                                      "level": level}}
    if grid:
        first = rep.halves(families, seed=boot_seed)
        combined, chosen = rep.cross_fit(grid, met.masked_score, first)
        mats[CROSS_FIT] = combined
        means = {n: m.mean(1) for n, m in grid.items()}
        out["oracle_in_sample"] = max(grid, key=lambda n: (float(met.score(means[n])), -list(grid).index(n)))
        out["oracle_cross_fit"] = {"chosen_on_fold_1": chosen[0], "chosen_on_fold_2": chosen[1],
                                   "fold_1_items": int(first.sum()), "fold_2_items": int((~first).sum())}
    # each strategy's metrics on every draw ([n_boot] per metric; the draws are shared, so a
    # paired difference is the difference of two strategies' draws)
    point = {n: m.mean(1) for n, m in mats.items()}
    draws = {}
    for n, m in mats.items():
        r = rs.resample(m)
        draws[n] = {k: met.by_name(k)(r) for k in keys}

    def single(n, key):
        return rep.interval(float(met.by_name(key)(point[n])), draws[n][key], level)

    def paired(a, b, key):
        f = met.by_name(key)
        return rep.interval(float(f(point[a]) - f(point[b])), draws[a][key] - draws[b][key], level)

    out["strategies"] = {n: {k: single(n, k) for k in keys} for n in mats}
    ad = next((r["name"] for r in rows if r["group"] == "autodeco"), None)
    if ad is not None:
        acc_pos = met.closed_positions or met.open_positions
        acc_gap = gap if met.closed_positions else gap * n_open
        out["autodeco_vs"] = {n: {**{k: paired(ad, n, k) for k in keys},
                                  "power": _power(mats[ad], mats[n], acc_pos, acc_gap, alpha, power)}
                              for n in mats if n != ad}
    variants = [r["name"] for r in rows if r["group"] == "autodeco_variant"]
    if variants:
        out["variants_vs"] = {v: {n: {k: paired(v, n, k) for k in keys} for n in mats if n != v} for v in variants}
    statics = [r["name"] for r in rows if r["group"] in STATIC_GROUPS]
    frontier = {}
    for r in rows:
        if r["group"] in STATIC_GROUPS:
            continue
        t = r["name"]
        labels = {}
        for s in statics:
            pm = {k: float(met.by_name(k)(point[s])) - float(met.by_name(k)(point[t])) for k in met.present}
            point_dom = all(v >= 0 for v in pm.values()) and any(v > 0 for v in pm.values())
            labels[s] = rep.ci_dominates(point_dom, [paired(s, t, k) for k in met.present] if point_dom else [])
        dom = [s for s, lab in labels.items() if lab == "dominated"]
        noise = [s for s, lab in labels.items() if lab == "within noise"]
        frontier[t] = {"label": "dominated" if dom else "on the frontier within noise" if noise else "beyond the frontier",
                       "dominated_by": dom, "within_noise_of": noise}
    out["frontier"] = frontier
    return out


def analyse(rows: Sequence[Dict[str, Any]], matrices: Mapping[str, np.ndarray], families: Sequence[str],
            is_open: Sequence[bool], heldout_family: Optional[Sequence[Optional[bool]]] = None, *, n_open: int,
            n_boot: int = 2000, boot_seed: int = 0, level: float = 0.95, gap: float = 0.03, alpha: float = 0.05,
            power: float = 0.8) -> Dict[str, Any]:
    """The analysis (module docstring) of every subset (:func:`subsets`): per subset the
    strategies' metrics with CIs, the oracles, ``autodeco_vs`` (AutoDeco minus every other
    strategy and the cross-fitted oracle, paired CIs, and the items needed to resolve ``gap``
    in closed accuracy, or ``gap * n_open`` distinct answers without closed items, at the
    stated ``alpha`` and ``power``), ``variants_vs`` (each ``autodeco_variant`` row minus every
    other strategy, paired CIs) and ``frontier`` (every non-static strategy's label)."""
    marks = list(heldout_family) if heldout_family is not None else [None] * len(families)
    out = {}
    for name, pos in subsets(marks).items():
        sub = {n: np.asarray(m, dtype=np.float64)[pos] for n, m in matrices.items()}
        out[name] = _analyse_subset(rows, sub, [families[i] for i in pos], [is_open[i] for i in pos], n_open=n_open,
                                    n_boot=n_boot, boot_seed=boot_seed, level=level, gap=gap, alpha=alpha, power=power)
    return out
