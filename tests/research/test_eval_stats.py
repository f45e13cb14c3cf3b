"""The item-paired statistics of an evaluation (autodeco_samplers.research.evaluation.report,
item-level part) and the analysis built on them (analysis.py): known cases, properties with
Hypothesis, and the coverage of the bootstrap CI on synthetic data (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from autodeco_samplers.research.evaluation import analysis as an
from autodeco_samplers.research.evaluation import report as rep


def test_item_metric_is_the_mean_of_family_means():
    m = rep.ItemMetric(((0, 1, 2), (3,)))
    v = np.array([1.0, 0.0, 0.5, 0.25])
    assert float(m(v)) == pytest.approx((0.5 + 0.25) / 2)
    assert m(np.stack([v, v])).shape == (2,)
    assert math.isnan(float(rep.ItemMetric(())(v)))


def test_resampler_keeps_strata_and_is_reproducible():
    strata = ["a", "a", "b", "b", "b", "c"]
    rs = rep.Resampler(strata, 3, n_boot=50, seed=7)
    for p, lab in enumerate(strata):
        assert all(strata[i] == lab for i in rs.items[:, p])
    assert (rs.items[:, 5] == 5).all()  # a stratum of one item always draws it
    again = rep.Resampler(strata, 3, n_boot=50, seed=7)
    assert (again.items == rs.items).all() and (again.seeds == rs.seeds).all()
    M = np.arange(18.0).reshape(6, 3)
    R = rs.resample(M)
    assert R.shape == (50, 6) and ((R >= 0) & (R <= 17)).all()
    with pytest.raises(ValueError, match=r"\[6, 3\] matrix"):
        rs.resample(np.zeros((6, 2)))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 3), st.floats(-2, 2), st.integers(0, 2**31 - 1))
def test_paired_difference_properties(n, n_seeds, shift, seed):
    rng = np.random.default_rng(seed)
    A = rng.random((n, n_seeds))
    rs = rep.Resampler(rng.integers(0, 2, size=n).tolist(), n_seeds, n_boot=64, seed=seed)
    metric = rep.ItemMetric((tuple(range(n)),))
    same = rep.paired_interval(A, A, metric, rs)
    assert same["mean"] == 0.0 and same["ci"] == [0.0, 0.0] and rep.excludes_zero(same) == 0
    # a constant shift moves the difference and its CI by exactly that shift
    d = rep.paired_interval(A + shift, A, metric, rs)
    assert d["mean"] == pytest.approx(shift) and d["ci"] == pytest.approx([shift, shift])
    single = rep.metric_interval(A, metric, rs)
    assert single["ci"][0] <= single["ci"][1] and single["mean"] == pytest.approx(A.mean())


def test_bootstrap_ci_covers_a_known_difference_at_its_rate():
    """200 synthetic evaluations (60 items of varying difficulty, 3 seeds x 4 samples each, a
    true gain of 0.1): the paired 95 % CI covers 0.1 in 88 to 99 % of them."""
    rng = np.random.default_rng(2024)
    n_items, n_seeds, samples, delta, covered, reps = 60, 3, 4, 0.1, 0, 200
    fam = ["x"] * 30 + ["y"] * 30
    metric = rep.ItemMetric((tuple(range(30)), tuple(range(30, 60))))
    for r in range(reps):
        p = rng.uniform(0.2, 0.7, size=n_items)
        A = rng.binomial(samples, np.repeat((p + delta)[:, None], n_seeds, 1)) / samples
        B = rng.binomial(samples, np.repeat(p[:, None], n_seeds, 1)) / samples
        ci = rep.paired_interval(A, B, metric, rep.Resampler(fam, n_seeds, n_boot=300, seed=r))["ci"]
        covered += ci[0] <= delta <= ci[1]
    assert 0.88 <= covered / reps <= 0.99


def test_items_needed_known_case_and_inverse():
    z = 1.959963984540054 + 0.8416212335729143
    assert rep.items_needed(0.5, 0.1) == math.ceil((z * 0.5 / 0.1) ** 2) == 197
    assert rep.items_needed(0.5, -0.1) == 197 and rep.items_needed(0.5, 0.0) is None and rep.items_needed(None, 0.1) is None
    assert rep.items_needed(0.5, 0.1, power=0.5) == math.ceil((1.959963984540054 * 5) ** 2)
    assert rep.resolvable_gap(0.5, 197) == pytest.approx(z * 0.5 / math.sqrt(197))
    assert rep.resolvable_gap(0.5, 197) <= 0.1 <= rep.resolvable_gap(0.5, 196)


def test_paired_item_sd():
    A = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    B = np.zeros((3, 2))
    assert rep.paired_item_sd(A, B, [0, 1, 2]) == pytest.approx(np.std([0.5, 1.0, 0.0], ddof=1))
    assert rep.paired_item_sd(A, B, [0]) is None


def test_halves_and_cross_fit():
    strata = ["a"] * 5 + ["b"] * 4
    first = rep.halves(strata, seed=3)
    assert first[:5].sum() == 3 and first[5:].sum() == 2
    assert (rep.halves(strata, seed=3) == first).all()
    # "good1" is best on the first fold only, "good2" on the second only
    n = len(strata)
    g1 = np.where(first, 1.0, 0.0)[:, None].repeat(2, 1)
    g2 = np.where(first, 0.0, 0.9)[:, None].repeat(2, 1)
    score = lambda v, mask: float(v[mask].mean())  # noqa: E731
    combined, chosen = rep.cross_fit({"good1": g1, "good2": g2}, score, first)
    assert chosen == ["good1", "good2"]
    # each fold is scored with the candidate chosen on the other: good2 on fold 1, good1 on fold 2
    assert (combined[first] == 0.0).all() and (combined[~first] == 0.0).all() and combined.shape == (n, 2)
    with pytest.raises(ValueError, match="at least one candidate"):
        rep.cross_fit({}, score, first)


def test_ci_dominates_labels():
    up = {"ci": [0.01, 0.2]}
    zero = {"ci": [-0.1, 0.2]}
    assert rep.ci_dominates(False, [up]) == "no"
    assert rep.ci_dominates(True, [zero, up]) == "dominated"
    assert rep.ci_dominates(True, [zero, zero]) == "within noise"
    assert rep.excludes_zero({"ci": [-0.3, -0.1]}) == -1 and rep.excludes_zero(None) == 0


def _rows():
    return [{"name": "greedy", "group": "greedy"}, {"name": "g1", "group": "grid"}, {"name": "g2", "group": "grid"},
            {"name": "near", "group": "baseline"}, {"name": "far", "group": "baseline"},
            {"name": "autodeco", "group": "autodeco"}]


def test_analysis_frontier_labels_oracles_and_subsets():
    rng = np.random.default_rng(0)
    n_closed, n_open, seeds = 40, 10, 2
    fam = ["c1"] * 20 + ["c2"] * 20 + ["o"] * n_open
    is_open = [f == "o" for f in fam]
    held = [f != "c1" for f in fam]

    def mat(acc, div, noise=0.05):
        M = np.empty((n_closed + n_open, seeds))
        M[:n_closed] = np.clip(acc + rng.normal(0, noise, (n_closed, seeds)), 0, 1)
        M[n_closed:] = np.clip(div + rng.normal(0, noise, (n_open, seeds)), 0, 4)
        return M

    mats = {"greedy": mat(0.9, 1.0), "g1": mat(0.7, 2.5), "g2": mat(0.5, 3.0),
            "near": mat(0.69, 2.49, 0.2),  # a hair below g1: within noise
            "far": mat(0.3, 1.0),  # far below g1 on both axes: dominated
            "autodeco": mat(0.8, 2.8)}  # beyond
    out = an.analyse(_rows(), mats, fam, is_open, held, n_open=4, n_boot=300, boot_seed=1)
    assert set(out) == {"all", "heldout_families", "trained_families"}
    a = out["all"]
    assert a["frontier"]["far"]["label"] == "dominated" and "g1" in a["frontier"]["far"]["dominated_by"]
    assert a["frontier"]["autodeco"]["label"] == "beyond the frontier"
    near = a["frontier"]["near"]
    assert near["label"] in ("on the frontier within noise", "beyond the frontier")
    assert a["oracle_in_sample"] == "g1" and a["oracle_cross_fit"]["chosen_on_fold_1"] == "g1"
    vs = a["autodeco_vs"]
    assert set(vs) == {"greedy", "g1", "g2", "near", "far", an.CROSS_FIT}
    assert vs["far"]["closed_accuracy"]["ci"][0] > 0.4 and vs["far"]["power"]["items_needed"] >= 1
    assert a["n_items"] == {"closed": 40, "open": 10}
    # the trained subset holds only c1 (closed): no distinct axis, the frontier on accuracy alone
    tr = out["trained_families"]
    assert tr["n_items"] == {"closed": 20, "open": 0} and "distinct" not in tr["strategies"]["g1"]
    assert an.subsets([None, None]) == {"all": [0, 1]} and set(an.subsets([True, False])) == {
        "all", "heldout_families", "trained_families"}
