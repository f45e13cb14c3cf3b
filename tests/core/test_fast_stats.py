"""fast_stats.probability_stats equals the reference's statistics (the specification)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from autodeco_samplers.core import fast_stats
from autodeco_samplers.core import reference as ref
from autodeco_samplers.conformance.strategies import decoding_cases
from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule


def _agree(logits, T):
    got = fast_stats.probability_stats(logits, T)
    want = ref.probability_stats(logits, T)
    assert got.dtype == want.dtype and got.shape == want.shape
    # both add in float32 (pairwise) but in other orders and through other exps: a few ulps of
    # each sum; the variance is ~1/V^2 small, hence the absolute floor
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


@given(decoding_cases(vocab_sizes=st.integers(1, 300)))
def test_statistics_agree_with_the_reference(case):
    _agree(case.logits, case.T)  # T = 0, 1e-7 and 2 included: T + 1e-8 scales by up to 1e8


@settings(max_examples=12)
@given(decoding_cases(max_batch=3, vocab_sizes=st.sampled_from([32_000, 152_064])))
def test_statistics_agree_at_full_vocabularies(case):
    _agree(case.logits, np.maximum(case.T, 1e-3))


def test_float64_logits_stay_float64():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 500))
    _agree(logits, np.array([0.7, 1.3]))


@pytest.mark.parametrize("V", [1, 2, 5, 6])
def test_tiny_vocabularies(V):
    logits = np.linspace(-1.0, 1.0, V, dtype=np.float32)[None]
    _agree(logits, np.array([0.9], np.float32))


def test_heads_predict_the_same_through_either_statistics():
    rng = np.random.default_rng(1)
    heads = AutoDecoHeadsModule.create(64, width=32, seed=3).to_numpy()
    hidden = rng.standard_normal((3, 64)).astype(np.float32)
    logits = (rng.standard_normal((3, 4096)) * 6).astype(np.float32)
    fast = heads.predict(hidden, logits)
    spec = heads.predict(hidden, logits, statistics=ref.probability_stats)
    np.testing.assert_allclose(fast[0], spec[0], rtol=0, atol=0)
    np.testing.assert_allclose(fast[1], spec[1], rtol=1e-5, atol=1e-6)
