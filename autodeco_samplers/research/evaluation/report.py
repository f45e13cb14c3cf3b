"""What both evaluations do with their per-seed metrics: statistics over evaluation seeds, the
static frontier, and the tables and plots of a report.

Statistics: a metric over seeds is its mean and the standard error of that mean,
``std(ddof=1) / sqrt(n)`` (None with one seed, :func:`mean_and_se`); a pooled accuracy's
binomial SE is ``sqrt(p (1 - p) / n)`` over all ``n`` samples (:func:`binomial_se`); a paired
comparison of two strategies is the SE of their per-seed differences (:func:`paired_se`).

The frontier, on a report's two axes (:class:`FrontierAxes`: an accuracy and a diversity,
both higher-is-better, means over seeds): the *static points* are the rows of the groups
:data:`~autodeco_samplers.research.evaluation.strategies.STATIC_GROUPS` (greedy, default, the
grid). A row *dominates* another when both its axes are at least the other's and one is
strictly higher. The static frontier is the static points no other static point dominates; a
strategy is *beyond the frontier* when no static point dominates it (:func:`frontier_position`).
The *oracle* is the grid point (default included) with the best score, ties to the higher
accuracy (:func:`oracle`): the best static setting chosen on the evaluation prompts themselves.

Item-level statistics (the item-paired analysis, :mod:`.analysis`): bootstrap draws over items
within their family and over seeds inside each item (:class:`Resampler`), percentile intervals
(:func:`interval`), paired differences on shared draws (:func:`paired_interval`), the items a
gap needs (:func:`items_needed`), two-fold cross-fitting (:func:`halves`, :func:`cross_fit`)
and frontier membership decided with CIs (:func:`ci_dominates`); the rules are stated in each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from autodeco_samplers.research.evaluation.strategies import STATIC_GROUPS

__all__ = [
    "mean_and_se",
    "seed_stat",
    "binomial_se",
    "paired_se",
    "nanmean",
    "FrontierAxes",
    "dominates",
    "static_frontier",
    "frontier_position",
    "oracle",
    "Column",
    "fixed_width_table",
    "markdown_table",
    "FrontierPlot",
    "plot_frontier",
    "load_pyplot",
    "save_figure",
    "ItemMetric",
    "Resampler",
    "interval",
    "metric_interval",
    "paired_interval",
    "excludes_zero",
    "items_needed",
    "resolvable_gap",
    "paired_item_sd",
    "halves",
    "cross_fit",
    "ci_dominates",
]

Row = Dict[str, Any]

# ----------------------------------------------------------------------------- statistics over seeds


def mean_and_se(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """``(mean, standard error of the mean)``; the SE is ``std(ddof=1) / sqrt(n)``, None for n < 2."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_and_se needs at least one value")
    if arr.size < 2:
        return float(arr.mean()), None
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size))


def seed_stat(values: Sequence[float]) -> Dict[str, Any]:
    """``{"mean", "se", "per_seed"}`` of one metric's per-seed values (:func:`mean_and_se`)."""
    m, se = mean_and_se(values)
    return {"mean": m, "se": se, "per_seed": list(values)}


def binomial_se(p: float, n: int) -> Optional[float]:
    """``sqrt(p (1 - p) / n)``, the SE of an accuracy ``p`` pooled over ``n`` samples (None for n = 0)."""
    return math.sqrt(p * (1 - p) / n) if n else None


def paired_se(a: Sequence[float], b: Sequence[float]) -> Tuple[float, Optional[float]]:
    """``(mean, SE)`` of the per-seed differences ``a - b`` (:func:`mean_and_se`)."""
    return mean_and_se([x - y for x, y in zip(a, b)])


def nanmean(values: Sequence[float]) -> Optional[float]:
    """The mean of the values that are not NaN (None when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)] if arr.size else arr
    return float(arr.mean()) if arr.size else None


# ----------------------------------------------------------------------------- the static frontier


@dataclass(frozen=True)
class FrontierAxes:
    """How a report reads a row: its ``accuracy`` and ``diversity`` (the frontier's axes)
    and its ``score`` (the oracle's criterion), all means over seeds."""

    accuracy: Callable[[Row], float]
    diversity: Callable[[Row], float]
    score: Callable[[Row], float]


def dominates(a: Row, b: Row, axes: FrontierAxes) -> bool:
    """``a`` is at least ``b`` on both axes and strictly higher on one."""
    aa, ad, ba, bd = axes.accuracy(a), axes.diversity(a), axes.accuracy(b), axes.diversity(b)
    return aa >= ba and ad >= bd and (aa > ba or ad > bd)


def _static_points(rows: Sequence[Row], but: Optional[Row] = None) -> List[Row]:
    return [r for r in rows if r["group"] in STATIC_GROUPS and r is not but]


def static_frontier(rows: Sequence[Row], axes: FrontierAxes) -> List[str]:
    """Names of the static points no other static point dominates, by increasing diversity
    (ties: higher accuracy first)."""
    static = _static_points(rows)
    front = [r for r in static if not any(dominates(o, r, axes) for o in static if o is not r)]
    return [r["name"] for r in sorted(front, key=lambda r: (axes.diversity(r), -axes.accuracy(r)))]


def frontier_position(rows: Sequence[Row], target: Row, axes: FrontierAxes) -> Dict[str, Any]:
    """Where ``target`` stands against the static points of ``rows``: ``dominated_by`` (their
    names, in row order), ``beyond_frontier`` (none dominates it), ``accuracy_gap`` = its
    accuracy minus the best accuracy of a static point at least as diverse, ``distinct_gap`` =
    its diversity minus the best diversity of a static point at least as accurate (negative:
    dominated by that much; None when no static point qualifies)."""
    static = _static_points(rows, but=target)
    acc, div = axes.accuracy(target), axes.diversity(target)
    as_diverse = [axes.accuracy(r) for r in static if axes.diversity(r) >= div]
    as_accurate = [axes.diversity(r) for r in static if axes.accuracy(r) >= acc]
    dominated_by = [r["name"] for r in static if dominates(r, target, axes)]
    return {"dominated_by": dominated_by, "beyond_frontier": not dominated_by,
            "accuracy_gap": acc - max(as_diverse) if as_diverse else None,
            "distinct_gap": div - max(as_accurate) if as_accurate else None}


def oracle(rows: Sequence[Row], axes: FrontierAxes) -> Optional[Row]:
    """The grid or default row with the best score (ties: higher accuracy); None without one."""
    grid_like = [r for r in rows if r["group"] in ("grid", "default")]
    return max(grid_like, key=lambda r: (axes.score(r), axes.accuracy(r))) if grid_like else None


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """A table column: its ``header``, the ``cell`` text of a row, and for fixed-width
    tables its ``width`` (header and cells right-aligned to it, or left with ``left``)."""

    header: str
    cell: Callable[[Row], str]
    width: int = 0
    left: bool = False

    def pad(self, text: str) -> str:
        return text.ljust(self.width) if self.left else text.rjust(self.width)


def fixed_width_table(rows: Sequence[Row], columns: Sequence[Column], note: Callable[[Row], str],
                      footer: str = "") -> str:
    """One line per row: the columns separated by a space, two spaces, the row's ``note``;
    a header line first and ``footer`` (when given) last."""
    lines = [" ".join(c.pad(c.header) for c in columns) + "  note"]
    lines += [" ".join(c.pad(c.cell(r)) for c in columns) + "  " + note(r) for r in rows]
    return "\n".join(lines + ([footer] if footer else []))


def markdown_table(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    """The columns as a Markdown table (widths ignored)."""
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return "\n".join([line([c.header for c in columns]), "|" + "---|" * len(columns)]
                     + [line([c.cell(r) for c in columns]) for r in rows])


# ----------------------------------------------------------------------------- plots


def load_pyplot():
    """matplotlib's pyplot on the Agg backend (no display), or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the install
        from autodeco_samplers.core.errors import AutoDecoError

        raise AutoDecoError("plots need matplotlib: pip install 'autodeco-samplers[eval]' (or pass --no-plots)") from None
    return plt


def save_figure(plt, fig, path: Union[str, Path]) -> Path:
    """Lay out ``fig``, write it to ``path`` (folders created), close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_BASELINE_MARKERS = ("o", "v", "P", "X", "D", "h", "<", ">")
_BASELINE_COLOURS = ("tab:blue", "tab:cyan", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "black")


@dataclass(frozen=True)
class FrontierPlot:
    """What a report's frontier plot shows beyond its axes: labels, the grid's colour (the
    static ``T`` of a row), the ``marks`` (marker, colour) of the groups drawn one point per
    row (baselines get their own), optional error bars ``(x SE, y SE)`` of a row, a colour
    bar label, and fixed limits ``[-0.03, 1.03]`` on both axes when ``unit_square``."""

    xlabel: str
    ylabel: str
    title: str
    grid_label: str
    grid_T: Callable[[Row], float]
    marks: Mapping[str, Tuple[str, str]]
    errors: Optional[Callable[[Row], Tuple[float, float]]] = None
    colorbar: Optional[str] = None
    unit_square: bool = False
    figsize: Tuple[float, float] = (7.5, 5.2)
    legend_loc: str = "best"


_VARIANT_COLOURS = ("gold", "tab:olive", "deeppink", "tab:cyan", "lime", "sienna", "navy")


def plot_frontier(report: Mapping[str, Any], path: Union[str, Path], axes: FrontierAxes, style: FrontierPlot) -> Path:
    """PNG: every strategy of ``report`` at (diversity, accuracy); the static grid coloured by
    its ``T``, the static frontier dashed, the marked groups and the baselines as points, the
    oracle annotated."""
    plt = load_pyplot()
    rows = report["strategies"]
    by_name = {r["name"]: r for r in rows}
    x, y = axes.diversity, axes.accuracy
    fig, ax = plt.subplots(figsize=style.figsize, dpi=110)
    grid = [r for r in rows if r["group"] in ("grid", "default")]
    sc = ax.scatter([x(r) for r in grid], [y(r) for r in grid], c=[style.grid_T(r) for r in grid], cmap="viridis", s=30,
                    label=style.grid_label)
    if style.colorbar:
        fig.colorbar(sc, ax=ax, label=style.colorbar)
    front = [by_name[n] for n in report["static_frontier"]]
    ax.plot([x(r) for r in front], [y(r) for r in front], "k--", lw=1, label="static frontier")
    k = v = 0
    for r in rows:
        if r["group"] in style.marks:
            m, colour = style.marks[r["group"]]
        elif r["group"] == "baseline":
            m, colour = _BASELINE_MARKERS[k % len(_BASELINE_MARKERS)], _BASELINE_COLOURS[k % len(_BASELINE_COLOURS)]
            k += 1
        elif r["group"] == "autodeco_variant":  # other heads: stars of their own colours
            m, colour = "*", _VARIANT_COLOURS[v % len(_VARIANT_COLOURS)]
            v += 1
        else:
            continue
        xerr, yerr = style.errors(r) if style.errors else (None, None)
        ax.errorbar([x(r)], [y(r)], xerr=None if xerr is None else [xerr], yerr=None if yerr is None else [yerr], fmt=m,
                    ms=14 if r["group"] == "autodeco" else 8, color=colour, mec="k", zorder=5, label=r["name"])
    if report.get("oracle"):
        o = by_name[report["oracle"]]
        ax.annotate("oracle", (x(o), y(o)), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xlabel(style.xlabel)
    ax.set_ylabel(style.ylabel)
    ax.set_title(style.title, fontsize=10)
    if style.unit_square:
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc=style.legend_loc)
    return save_figure(plt, fig, path)


# ----------------------------------------------------------------------------- item-level statistics
#
# The rules below are the statistics of an item-paired evaluation (docs/evaluation.md, "The
# statistics"). A strategy's results are a matrix ``M [n_items, n_seeds]``: item ``i``'s value
# under evaluation seed ``j`` (its accuracy over the samples of a closed item, its number of
# distinct valid answers on an open item). A *metric* maps the per-item values (the mean over
# seeds, or one bootstrap draw of them) to one number: the mean over its *strata* (the task
# families it counts) of the mean over the stratum's items (:class:`ItemMetric`).


@dataclass(frozen=True)
class ItemMetric:
    """A metric over item positions: the mean over ``strata`` (each a tuple of item
    positions, in practice one task family) of the mean of the values at its positions."""

    strata: Tuple[Tuple[int, ...], ...]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """``values [..., n_items]`` -> ``[...]`` (NaN when the metric has no stratum)."""
        if not self.strata:
            return np.full(values.shape[:-1], np.nan)
        return np.mean([values[..., list(s)].mean(-1) for s in self.strata], axis=0)


class Resampler:
    """A fixed set of bootstrap draws over items and, inside each drawn item, over seeds.

    Draw ``b``, position ``p``: an item drawn uniformly with replacement from the items of
    ``p``'s stratum (so every stratum keeps its size: ``strata`` are the task families, and a
    metric's equal family weights stay fixed), then ``n_seeds`` seed indices drawn uniformly
    with replacement; the value at ``p`` is the mean of that item's values at those seeds. The
    same draws serve every strategy, so a difference between two strategies is *paired* (same
    items, same seeds). ``numpy.random.default_rng(seed)`` makes the draws reproducible."""

    def __init__(self, strata: Sequence[Any], n_seeds: int, *, n_boot: int = 2000, seed: int = 0) -> None:
        if n_boot < 1 or n_seeds < 1:
            raise ValueError("Resampler needs n_boot >= 1 and n_seeds >= 1")
        labels = list(strata)
        rng = np.random.default_rng(seed)
        self.n_items, self.n_seeds, self.n_boot, self.seed = len(labels), n_seeds, n_boot, seed
        self.items = np.empty((n_boot, len(labels)), dtype=np.int64)
        for lab in dict.fromkeys(labels):
            pos = np.array([i for i, x in enumerate(labels) if x == lab])
            self.items[:, pos] = pos[rng.integers(0, pos.size, size=(n_boot, pos.size))]
        self.seeds = rng.integers(0, n_seeds, size=(n_boot, len(labels), n_seeds))

    def resample(self, M: np.ndarray) -> np.ndarray:
        """``M [n_items, n_seeds]`` -> ``[n_boot, n_items]`` per-position values of every draw."""
        M = np.asarray(M, dtype=np.float64)
        if M.shape != (self.n_items, self.n_seeds):
            raise ValueError(f"expected a [{self.n_items}, {self.n_seeds}] matrix, got {list(M.shape)}")
        return M[self.items[..., None], self.seeds].mean(-1)


def interval(point: float, draws: np.ndarray, level: float = 0.95) -> Dict[str, Any]:
    """``{"mean": point, "ci": [lo, hi], "se"}``: the percentile interval of the bootstrap
    ``draws`` (the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles) and their SD."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[~np.isnan(draws)]
    if not draws.size or point is None or math.isnan(point):
        return {"mean": None, "ci": None, "se": None}
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(point), "ci": [float(lo), float(hi)], "se": float(draws.std(ddof=1)) if draws.size > 1 else 0.0}


def metric_interval(M: np.ndarray, metric: ItemMetric, rs: Resampler, level: float = 0.95) -> Dict[str, Any]:
    """A strategy's metric (point: on the per-item means over seeds) with its bootstrap CI."""
    return interval(float(metric(np.asarray(M, dtype=np.float64).mean(1))), metric(rs.resample(M)), level)


def paired_interval(A: np.ndarray, B: np.ndarray, metric: Callable[[np.ndarray], np.ndarray], rs: Resampler,
                    level: float = 0.95) -> Dict[str, Any]:
    """``metric(A) - metric(B)`` with the bootstrap CI of the paired difference (both
    strategies on the same draws of items and seeds). ``metric`` may be any function of the
    per-position values (:class:`ItemMetric`, or a product of metrics such as a score)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    point = float(metric(A.mean(1)) - metric(B.mean(1)))
    return interval(point, metric(rs.resample(A)) - metric(rs.resample(B)), level)


def excludes_zero(ci: Optional[Dict[str, Any]]) -> int:
    """+1 when the interval lies above zero, -1 below, 0 when it contains zero (or is missing)."""
    if not ci or ci.get("ci") is None:
        return 0
    lo, hi = ci["ci"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def items_needed(sd: float, gap: float, *, alpha: float = 0.05, power: float = 0.8) -> Optional[int]:
    """Items a paired comparison needs to resolve a true difference ``gap`` with a two-sided
    level-``alpha`` test of the given ``power``: ``n = ((z_(1 - alpha/2) + z_power) * sd / gap)^2``
    rounded up, ``sd`` the SD over items of the per-item paired differences (None when
    ``gap`` is 0, or ``sd`` is unknown or 0: no variation seen, the formula cannot say)."""
    from statistics import NormalDist

    if sd is None or not gap or math.isnan(sd) or sd == 0:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(1, math.ceil((z * sd / abs(gap)) ** 2))


def resolvable_gap(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> Optional[float]:
    """The smallest difference ``n`` items resolve (the inverse of :func:`items_needed`):
    ``(z_(1 - alpha/2) + z_power) * sd / sqrt(n)``."""
    from statistics import NormalDist

    if sd is None or n < 1 or math.isnan(sd):
        return None
    return (NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)) * sd / math.sqrt(n)


def paired_item_sd(A: np.ndarray, B: np.ndarray, positions: Sequence[int]) -> Optional[float]:
    """SD (``ddof=1``) over the items at ``positions`` of the per-item differences of the
    means over seeds (None with fewer than two items)."""
    if len(positions) < 2:
        return None
    d = (np.asarray(A, dtype=np.float64).mean(1) - np.asarray(B, dtype=np.float64).mean(1))[list(positions)]
    return float(d.std(ddof=1))


def halves(strata: Sequence[Any], *, seed: int = 0) -> np.ndarray:
    """Boolean ``[n_items]``: a random half of every stratum (``ceil(size / 2)`` items of it,
    ``numpy.random.default_rng(seed)``), the first fold of a two-fold cross-fit."""
    labels = list(strata)
    rng = np.random.default_rng(seed)
    first = np.zeros(len(labels), dtype=bool)
    for lab in dict.fromkeys(labels):
        pos = np.array([i for i, x in enumerate(labels) if x == lab])
        first[rng.permutation(pos)[: (pos.size + 1) // 2]] = True
    return first


def cross_fit(candidates: Mapping[str, np.ndarray], score: Callable[[np.ndarray, np.ndarray], float],
              first: np.ndarray) -> Tuple[np.ndarray, List[str]]:
    """The cross-fitted choice among ``candidates`` (name -> ``M [n_items, n_seeds]``):
    ``score(values, mask)`` rates a candidate's per-item means on the items of ``mask``; the
    candidate best on the first fold (ties: first in order) is scored on the second fold and
    the one best on the second fold on the first. Returns the combined matrix (each item's
    rows from the candidate chosen on the *other* fold), to be read like any strategy's, and
    the two names ``[chosen on fold 1, chosen on fold 2]``."""
    if not candidates:
        raise ValueError("cross_fit needs at least one candidate")
    names = list(candidates)
    means = {n: np.asarray(candidates[n], dtype=np.float64).mean(1) for n in names}
    chosen = [max(names, key=lambda n: (score(means[n], mask), -names.index(n))) for mask in (first, ~first)]
    combined = np.where(first[:, None], candidates[chosen[1]], candidates[chosen[0]]).astype(np.float64)
    return combined, chosen


def ci_dominates(point_dominates: bool, diffs: Sequence[Optional[Dict[str, Any]]]) -> str:
    """How a static point stands against a strategy, with CIs: ``"dominated"`` when its means
    dominate (:func:`dominates`) and at least one axis's paired difference (static minus
    strategy) has a CI above zero; ``"within noise"`` when its means dominate but no CI
    excludes zero; ``"no"`` otherwise."""
    if not point_dominates:
        return "no"
    return "dominated" if any(excludes_zero(d) > 0 for d in diffs) else "within noise"
