"""The NumPy reference against an independent, loop-based reading of docs/design.md sections 3 and 4."""

import numpy as np
import pytest
from autodeco_samplers.conformance.stats import draws_fit_pvalue
from hypothesis import given, strategies as st

import autodeco_samplers as ad
from autodeco_samplers.core import reference as ref
from autodeco_samplers.conformance.strategies import decoding_cases


def brute_force_distribution(logits_row, T, P):
    """docs/design.md section 3, row by row in float64 with Python sorting (independent of the code)."""
    l = np.asarray(logits_row, dtype=np.float64)
    V = len(l)
    if T < 1e-6:
        best = min(range(V), key=lambda i: (-l[i], i))
        out = np.zeros(V)
        out[best] = 1.0
        return out
    z = (l - l.max()) / T
    q = np.exp(z)
    q /= q.sum()
    order = sorted(range(V), key=lambda i: (-q[i], i))
    keep = np.zeros(V, dtype=bool)
    acc = 0.0
    for rank, i in enumerate(order):
        if rank == 0 or acc < P:
            keep[i] = True
        acc += q[i]
    out = np.where(keep, q, 0.0)
    return out / out.sum()


@given(decoding_cases())
def test_reference_equals_brute_force_in_float64(case):
    logits = case.logits.astype(np.float64)
    T = case.T.astype(np.float64)
    P = case.P.astype(np.float64)
    got = ad.next_token_distribution(logits, T, P)
    assert got.dtype == np.float64
    for b in range(logits.shape[0]):
        want = brute_force_distribution(logits[b], T[b], P[b])
        np.testing.assert_allclose(got[b], want, atol=1e-12)


@given(decoding_cases())
def test_rows_are_distributions_with_kept_top_token(case):
    probs = ad.next_token_distribution(case.logits, case.T, case.P)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()
    # the most likely token under q (lowest id among ties) is always kept
    top = np.argmax(ad.temperature_probs(case.logits, case.T), axis=1)
    assert (probs[np.arange(len(top)), top] > 0).all()


def test_exact_boundary_keeps_only_strictly_below():
    q = np.array([[0.5, 0.25, 0.25]])
    logits = np.log(q)
    # c = [0, 0.5, 0.75]: with P = 0.5 only the first token has c < P
    np.testing.assert_allclose(ad.next_token_distribution(logits, 1.0, 0.5), [[1.0, 0.0, 0.0]])
    # just above 0.5 the second token (lowest id among the tie) joins, not the third
    np.testing.assert_allclose(ad.next_token_distribution(logits, 1.0, 0.5000001), [[2 / 3, 1 / 3, 0.0]])
    # the crossing token is kept: P = 0.6 keeps two tokens although 0.5 + 0.25 > 0.6
    assert (ad.next_token_distribution(logits, 1.0, 0.6) > 0).sum() == 2


def test_ties_resolved_by_ascending_token_id():
    logits = np.log(np.array([[0.2, 0.4, 0.2, 0.2]]))
    probs = ad.next_token_distribution(logits, 1.0, 0.5)  # order 1, 0, 2, 3; c = 0, .4, .6, .8
    np.testing.assert_allclose(probs, [[1 / 3, 2 / 3, 0.0, 0.0]], rtol=1e-6)


def test_greedy_below_threshold_with_ties_to_lowest_id():
    logits = np.array([[1.0, 3.0, 3.0, -np.inf]])
    for T in (0.0, 1e-7, 9.9e-7):
        np.testing.assert_array_equal(ad.next_token_distribution(logits, T, 1.0), [[0, 1, 0, 0]])
    # just above the threshold the two tied tokens share the mass
    np.testing.assert_allclose(ad.next_token_distribution(logits, 1e-5, 1.0)[0, 1:3], [0.5, 0.5])


def test_top_p_zero_and_one_and_single_token():
    logits = np.array([[0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(ad.next_token_distribution(logits, 1.0, 0.0), [[0, 0, 1]])
    q = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(ad.next_token_distribution(logits, 1.0, 1.0), q, rtol=1e-6)
    np.testing.assert_array_equal(ad.next_token_distribution(np.array([[5.0]]), 0.3, 0.2), [[1.0]])


def test_huge_logits_stay_finite():
    logits = np.array([[3e38, -3e38, 1e38]], dtype=np.float32)
    probs = ad.next_token_distribution(logits, 0.5, 1.0)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0]])


def test_one_dimensional_input_round_trips():
    assert ad.next_token_distribution(np.zeros(4), 1.0, 1.0).shape == (4,)


@pytest.mark.parametrize(
    "logits, T, P, match",
    [
        ([[0.0, np.nan]], 1.0, 1.0, "NaN"),
        ([[0.0, np.inf]], 1.0, 1.0, r"\+inf"),
        ([[0.0, 1.0], [-np.inf, -np.inf]], 1.0, 1.0, "row 1 of 2 is all -inf"),
        ([[0.0, 1.0]], -0.5, 1.0, "temperature"),
        ([[0.0, 1.0]], np.nan, 1.0, "temperature"),
        ([[0.0, 1.0]], 1.0, 1.5, "top_p"),
        ([[0.0, 1.0]], 1.0, -0.1, "top_p"),
        ([[0.0, 1.0]], [1.0, 1.0], 1.0, r"shape \[1\]"),
        (np.zeros((2, 2, 2)), 1.0, 1.0, "shape"),
    ],
)
def test_bad_input_is_named(logits, T, P, match):
    with pytest.raises(ad.AutoDecoError, match=match):
        ad.next_token_distribution(np.asarray(logits, dtype=np.float64), T, P)


def stats_by_formula(logits_row, T):
    l = np.asarray(logits_row, dtype=np.float64) / (T + 1e-8)
    q = np.exp(l - l.max())
    q /= q.sum()
    V = len(q)
    var = sum((x - q.mean()) ** 2 for x in q) / (V - 1) if V > 1 else 0.0
    return [q.max(), -(q * np.log(q + 1e-8)).sum(), var, sum(sorted(q, reverse=True)[:5])]


@given(decoding_cases(vocab_sizes=st.integers(1, 50), shapes=("gaussian", "peaked", "ties", "flat")))
def test_probability_stats_match_their_formulas(case):
    T = np.maximum(case.T, 0.05).astype(np.float64)
    got = ad.probability_stats(case.logits.astype(np.float64), T)
    for b in range(case.logits.shape[0]):
        np.testing.assert_allclose(got[b], stats_by_formula(case.logits[b], T[b]), rtol=1e-9, atol=1e-12)


def test_soft_top_p_limits_pin_the_train_inference_gap():
    q = np.array([[0.5, 0.3, 0.15, 0.05]])
    P = 0.6  # inclusive sums .5, .8, .95, 1: the crossing token is id 1
    sharp = ref.soft_top_p(q, P, alpha=1e6)
    np.testing.assert_allclose(sharp, [[1.0, 0.0, 0.0, 0.0]], atol=1e-6)  # soft rule drops it
    hard = ad.next_token_distribution(np.log(q), 1.0, P)
    np.testing.assert_allclose(hard, [[0.625, 0.375, 0.0, 0.0]], rtol=1e-6)  # hard rule keeps it
    np.testing.assert_allclose(ref.soft_top_p(q, P, alpha=0.0), q, rtol=1e-8)  # alpha 0: no mask
    soft = ref.soft_top_p(q, P)  # alpha 30: m = [1, exp(-6), exp(-10.5), exp(-12)]
    m = np.exp(-30 * np.maximum(np.cumsum(q[0]) - P, 0))
    np.testing.assert_allclose(soft[0], q[0] * m / ((q[0] * m).sum() + 1e-9), rtol=1e-10)


@given(decoding_cases(vocab_sizes=st.integers(1, 60), shapes=("gaussian", "peaked", "ties")))
def test_soft_top_p_approaches_the_keep_below_rule(case):
    q = ad.temperature_probs(case.logits.astype(np.float64), np.maximum(case.T, 0.05))
    soft = ref.soft_top_p(q, case.P, alpha=1e9)
    order = ref.descending_order(q)
    inclusive = np.cumsum(np.take_along_axis(q, order, axis=1), axis=1)
    for b in range(q.shape[0]):
        C = np.empty_like(inclusive[b])
        C[order[b]] = inclusive[b]
        clear = np.abs(C - case.P[b]) > 1e-6
        kept = (C <= case.P[b]) & clear
        dropped = (C > case.P[b]) & clear
        assert np.all(soft[b][dropped] < 1e-6)
        if kept.any():  # below the threshold the mask is exactly 1: soft = q / Z on kept tokens
            ratio = soft[b][kept] / q[b][kept]
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)


@pytest.mark.parametrize("prefix", ref.SOFT_TOP_P_PREFIXES)
@given(case=decoding_cases(vocab_sizes=st.integers(1, 200), shapes=("gaussian", "peaked", "ties", "flat")),
       alpha=st.sampled_from([0.0, 1.0, ref.SOFT_TOP_P_ALPHA, 1e3]))
def test_soft_top_p_numpy_and_torch_agree_for_both_prefixes(prefix, case, alpha):
    """docs/design.md: both libraries have both prefix variants; NumPy in float64 against the
    torch mask (float64 too), the same formula."""
    torch = pytest.importorskip("torch")
    from autodeco_samplers.core import torch_ops

    q = ref.temperature_probs(case.logits.astype(np.float64), np.maximum(case.T, 0.05))
    got = ref.soft_top_p(q, case.P, alpha=alpha, prefix=prefix)
    assert got.dtype == np.float64
    want = torch_ops.soft_top_p(torch.from_numpy(q), torch.from_numpy(case.P.astype(np.float64)), alpha, prefix=prefix)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-12)


def test_exclusive_soft_top_p_limit_is_the_hard_rule():
    q = np.array([[0.5, 0.3, 0.15, 0.05]])
    P = 0.6  # exclusive sums 0, .5, .8, .95: the hard rule keeps ids 0 and 1, the crossing token included
    sharp = ref.soft_top_p(q, P, alpha=1e6, prefix="exclusive")
    np.testing.assert_allclose(sharp, ad.next_token_distribution(np.log(q), 1.0, P), atol=1e-6)
    m = np.exp(-30 * np.maximum(np.cumsum(q[0]) - q[0] - P, 0))
    np.testing.assert_allclose(ref.soft_top_p(q, P, prefix="exclusive")[0], q[0] * m / ((q[0] * m).sum() + 1e-9),
                               rtol=1e-10)
    with pytest.raises(ad.InvalidParameterError, match="prefix"):
        ref.soft_top_p(q, P, prefix="middle")


def test_draw_row_draws_what_the_dense_row_draws():
    """The sparse draw (kept ids ascending) and the dense draw give the same token for the
    same uniform: zeros add nothing to the CDF."""
    dense = np.array([0.0, 0.2, 0.0, 0.0, 0.5, 0.3, 0.0])
    ids = np.flatnonzero(dense)
    for seed in range(200):
        a = ref.draw_row(ids, dense[ids], np.random.default_rng(seed))
        b = int(ref.sample_tokens(dense[None], np.random.default_rng(seed))[0])
        assert a == b and dense[a] > 0


def test_sampler_draws_follow_the_distribution():
    rng = np.random.default_rng(1234)
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.08, 0.02]]))
    probs = ad.next_token_distribution(logits, 1.0, 0.85)  # c = 0, .4, .7, .9, .98: keeps 3 tokens
    n = 20000
    draws = ad.sample(np.repeat(logits, n, axis=0), 1.0, 0.85, rng)
    counts = np.bincount(draws, minlength=5)
    assert counts[3] == 0 and counts[4] == 0
    assert draws_fit_pvalue(counts, probs[0]) > 1e-3
    # the same draws reject a wrong rule that drops the crossing token (keeps ids 0, 1 only)
    assert draws_fit_pvalue(counts[:3], np.array([0.4, 0.3, 0.0])) == 0.0
    # and a rule applying top-p before a temperature of 0.5 (different proportions)
    sharp = np.array([0.4, 0.3, 0.2]) ** 2
    assert draws_fit_pvalue(counts[:3], sharp) < 1e-6


def test_sample_tokens_never_draws_zero_probability():
    rng = np.random.default_rng(0)
    probs = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]] * 1000)
    draws = ref.sample_tokens(probs, rng)
    assert set(np.unique(draws)) == {1, 3}


def test_seeded_sampling_is_reproducible():
    logits = np.random.default_rng(0).normal(size=(8, 100))
    a = ad.sample(logits, 0.8, 0.9, np.random.default_rng(7))
    b = ad.sample(logits, 0.8, 0.9, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
