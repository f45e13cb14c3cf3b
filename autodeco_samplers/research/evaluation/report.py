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
    k = 0
    for r in rows:
        if r["group"] in style.marks:
            m, colour = style.marks[r["group"]]
        elif r["group"] == "baseline":
            m, colour = _BASELINE_MARKERS[k % len(_BASELINE_MARKERS)], _BASELINE_COLOURS[k % len(_BASELINE_COLOURS)]
            k += 1
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
