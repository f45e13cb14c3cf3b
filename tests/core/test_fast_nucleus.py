"""The sparse fast path against the reference rule (Hypothesis), including ties and edges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autodeco_samplers.core import reference as R
from autodeco_samplers.core.fast_nucleus import (
    descending_order_row,
    nucleus_candidates,
    sample_next_token,
    sparse_next_token_distribution,
)


def _logits(draw, max_v=300):
    V = draw(st.integers(1, max_v))
    kind = draw(st.sampled_from(["normal", "ties", "peaked", "flat", "neginf"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "normal":
        l = rng.standard_normal(V) * draw(st.floats(0.1, 20))
    elif kind == "ties":
        l = rng.integers(-3, 3, V).astype(np.float64)  # many exact ties
    elif kind == "peaked":
        l = rng.standard_normal(V)
        l[rng.integers(V)] += 30
    elif kind == "flat":
        l = np.zeros(V)
    else:
        l = rng.standard_normal(V) * 3
        l[rng.random(V) < 0.5] = -np.inf
        l[rng.integers(V)] = 0.0
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return l.astype(dtype)


logits_st = st.composite(_logits)
T_st = st.one_of(st.just(0.0), st.just(1e-7), st.floats(0.05, 5.0))
P_st = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.9]), st.floats(0.0, 1.0))


@given(logits_st(), T_st, P_st)
def test_kept_set_equals_reference_on_positive_tokens(logits, T, P):
    ref = R.next_token_distribution(logits, T, P)
    ids, probs = sparse_next_token_distribution(logits, T, P)
    assert np.all(np.diff(ids) > 0), "ids must be ascending"
    q = R.temperature_probs(logits, T)
    ref_kept = set(np.flatnonzero(R.nucleus_mask(q[None], np.asarray(P, logits.dtype))[0] & (q > 0)).tolist())
    assert set(ids[probs > 0].tolist()) == ref_kept
    dense = np.zeros_like(ref)
    dense[ids] = probs
    tol = 1e-6 if logits.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(dense, ref, rtol=tol, atol=tol * 1e-3)


@given(logits_st(), T_st, P_st, st.integers(0, 2**32 - 1))
def test_draw_is_the_inverse_cdf_of_the_kept_tokens(logits, T, P, seed):
    """The draw is the inverse CDF over the kept tokens (ascending ids) at one uniform number:
    the reference's token for the same number, unless that number lies within float32
    rounding (1e-6 of the mass) of a step of the reference's CDF, where either side is right."""
    ref_probs = R.next_token_distribution(logits, T, P).astype(np.float64)
    u = np.random.default_rng(seed).random()
    token, ids, probs = sample_next_token(logits, T, P, np.random.default_rng(seed))
    assert probs[np.searchsorted(ids, token)] > 0, "a token of zero probability was drawn"
    ref = R.sample_tokens(ref_probs[None], np.random.default_rng(seed))[0]
    if token != ref:
        steps = np.cumsum(ref_probs)
        assert np.min(np.abs(steps - u * steps[-1])) < 1e-6, (token, ref)


@given(st.integers(1, 500), st.integers(0, 2**32 - 1), st.booleans())
def test_descending_order_row_equals_stable_argsort(V, seed, ties):
    rng = np.random.default_rng(seed)
    q = (rng.integers(0, 5, V) / 4.0 if ties else rng.random(V)).astype(np.float32)
    assert np.array_equal(descending_order_row(q), R.descending_order(q[None])[0])


def test_large_vocab_paths_agree():
    """Peaked (candidate path) and flat (fallback sort) rows at V = 152k."""
    rng = np.random.default_rng(0)
    for scale, T, P in [(6.0, 0.8, 0.9), (1.0, 1.0, 0.99), (3.0, 1.0, 1.0), (3.0, 0.7, 0.5)]:
        l = (rng.standard_normal(152_000) * scale).astype(np.float32)
        ref = R.next_token_distribution(l, T, P)
        ids, probs = sparse_next_token_distribution(l, T, P)
        assert set(ids.tolist()) == set(np.flatnonzero(ref).tolist())
        np.testing.assert_allclose(probs, ref[ids], rtol=1e-5)


def test_exact_tie_at_the_boundary_keeps_lowest_ids():
    # four equal tokens, P = 0.5: exclusive sums 0, .25, .5, .75 -> keep the first two ids
    ids, probs = sparse_next_token_distribution(np.zeros(4, np.float32), 1.0, 0.5)
    assert ids.tolist() == [0, 1] and np.allclose(probs, 0.5)
    ids, _ = nucleus_candidates(np.full(4, 0.25), 0.5)
    assert ids.tolist() == [0, 1]


def test_rejects_batches_and_bad_p():
    with pytest.raises(ValueError):
        sparse_next_token_distribution(np.zeros((2, 3)), 1.0, 0.5)
    with pytest.raises(ValueError, match="top_p"):
        sparse_next_token_distribution(np.zeros(3), 1.0, 1.5)
