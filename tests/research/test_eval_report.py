"""The parts both evaluations share: statistics over seeds, the frontier on a report's axes,
the table renderers (autodeco_samplers.research.evaluation.report) and the strategies' rules."""

from __future__ import annotations

import math

import pytest

from autodeco_samplers.core.reference import GREEDY_TEMPERATURE
from autodeco_samplers.research.evaluation import Strategy
from autodeco_samplers.research.evaluation import report as rep
from autodeco_samplers.research.evaluation.choosers import is_greedy
from autodeco_samplers.research.evaluation.strategies import mean_static_strategy, static_strategies

AXES = rep.FrontierAxes(accuracy=lambda r: r["acc"], diversity=lambda r: r["div"], score=lambda r: r["acc"] * r["div"])


def _row(name, group, acc, div):
    return {"name": name, "group": group, "acc": acc, "div": div}


def test_frontier_on_any_axes():
    rows = [_row("g", "greedy", 0.9, 0.0), _row("a", "grid", 0.6, 0.5), _row("b", "grid", 0.5, 0.4),
            _row("c", "default", 0.3, 0.9), _row("m", "mean_static", 0.95, 0.95), _row("x", "autodeco", 0.55, 0.45)]
    assert rep.dominates(rows[1], rows[2], AXES) and not rep.dominates(rows[1], rows[1], AXES)
    # mean-static dominates everything but is no static point; b is dominated by a
    assert rep.static_frontier(rows, AXES) == ["g", "a", "c"]
    pos = rep.frontier_position(rows, rows[-1], AXES)
    assert pos["dominated_by"] == ["a"] and not pos["beyond_frontier"]
    assert pos["accuracy_gap"] == pytest.approx(0.55 - 0.6) and pos["distinct_gap"] == pytest.approx(0.45 - 0.5)
    assert rep.oracle(rows, AXES)["name"] == "a"  # 0.30 > 0.27 (c) > 0.20 (b); greedy is not a candidate
    assert rep.oracle(rows[:1], AXES) is None


def test_statistics_over_seeds():
    assert rep.seed_stat([1.0, 3.0]) == {"mean": 2.0, "se": pytest.approx(1.0), "per_seed": [1.0, 3.0]}
    assert rep.binomial_se(0.25, 12) == pytest.approx(math.sqrt(0.25 * 0.75 / 12)) and rep.binomial_se(0.5, 0) is None
    m, se = rep.paired_se([0.5, 0.7, 0.9], [0.4, 0.4, 0.4])
    assert m == pytest.approx(0.3) and se == pytest.approx(0.2 / math.sqrt(3))
    assert rep.nanmean([float("nan"), 1.0, 2.0]) == 1.5 and rep.nanmean([float("nan")]) is None
    with pytest.raises(ValueError, match="at least one"):
        rep.mean_and_se([])


def test_tables():
    rows = [_row("greedy", "greedy", 0.9, 0.0), _row("autodeco", "autodeco", 0.55, 0.45)]
    cols = [rep.Column("strategy", lambda r: r["name"], 10, left=True), rep.Column("acc", lambda r: f"{r['acc']:.2f}", 6)]
    text = rep.fixed_width_table(rows, cols, lambda r: "best" if r["acc"] > 0.8 else "", footer="(footer)")
    assert text.splitlines() == ["strategy      acc  note", "greedy       0.90  best", "autodeco     0.55  ", "(footer)"]
    assert rep.markdown_table(rows, cols).splitlines() == ["| strategy | acc |", "|---|---|", "| greedy | 0.90 |",
                                                            "| autodeco | 0.55 |"]


def test_strategies_and_greedy_rule():
    names = [s.name for s in static_strategies((0.5, 1.0), (0.9, 1.0))]
    assert names == ["greedy", "default T=1 P=1", "static T=0.5 P=0.9", "static T=0.5 P=1", "static T=1 P=0.9"]
    assert Strategy("greedy", "static", 0.0).deterministic and not Strategy("s", "static", GREEDY_TEMPERATURE).deterministic
    assert is_greedy(GREEDY_TEMPERATURE / 2) and not is_greedy(GREEDY_TEMPERATURE)
    assert mean_static_strategy(0.81234, 0.9).name == "mean-static T=0.812 P=0.900"
    assert not Strategy("b", "baseline").deterministic
    with pytest.raises(ValueError, match="unknown strategy kind"):
        Strategy("z", "nonsense").chooser()
    with pytest.raises(ValueError, match="needs heads"):
        Strategy("autodeco", "autodeco").chooser(None)
