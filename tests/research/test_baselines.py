"""The baseline samplers (autodeco_samplers.research.baselines.numpy_baselines) against their published definitions.

Each definition is written again here, row by row in float64 Python (``math``, loops), from
the papers and llama.cpp's documented rule, independent of the module's vectorised code;
min-p is also checked against transformers' ``MinPLogitsWarper`` at real vocabulary sizes.
The torch twins (autodeco_samplers.research.baselines.torch_baselines) are checked against the NumPy rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from autodeco_samplers.research.baselines import numpy_baselines as bl
from autodeco_samplers.core.errors import InvalidLogitsError, InvalidParameterError

torch = pytest.importorskip("torch")
from autodeco_samplers.research.baselines import torch_baselines as tbl  # noqa: E402

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- brute force


def bf_softmax(row, T=1.0):
    """softmax(l / T) in Python floats; T < 1e-6: one-hot argmax, ties to the lowest id."""
    finite = [x for x in row if x != NEG_INF]
    if T < 1e-6:
        best = min(range(len(row)), key=lambda i: (-row[i], i))
        return [1.0 if i == best else 0.0 for i in range(len(row))]
    m = max(finite)
    e = [0.0 if x == NEG_INF else math.exp((x - m) / T) for x in row]
    s = sum(e)
    return [x / s for x in e]


def bf_entropy(row):
    return -sum(p * math.log(p) for p in bf_softmax(row) if p > 0)


def bf_renorm(q, keep):
    s = sum(x for x, k in zip(q, keep) if k)
    return [x / s if k else 0.0 for x, k in zip(q, keep)]


def bf_min_p(row, min_p, T):
    """Nguyen et al.: after temperature, keep p_i >= min_p * p_max."""
    q = bf_softmax(row, T)
    top = max(q)
    return bf_renorm(q, [x >= min_p * top for x in q]), [x >= min_p * top for x in q], q, min_p * top


def bf_dynatemp_T(row, T, delta, exponent):
    """llama.cpp temp_ext: T_lo + (T_hi - T_lo) * (H / log N) ** exponent over N candidates."""
    n = sum(1 for x in row if x != NEG_INF)
    if delta <= 0 or n <= 1:
        return T
    lo, hi = max(0.0, T - delta), T + delta
    return lo + (hi - lo) * (bf_entropy(row) / math.log(n)) ** exponent


def bf_edt_T(row, T0, N, theta):
    """Zhang et al. 2024: T = T0 * N ** (theta / H)."""
    h = bf_entropy(row)
    return 0.0 if h <= 0 else T0 * N ** (theta / h)


def bf_top_n_sigma_keep(row, n):
    """Tang et al. 2024: keep l_i >= max - n * sigma, sigma the population std of the logits."""
    finite = [x for x in row if x != NEG_INF]
    mean = sum(finite) / len(finite)
    sigma = math.sqrt(sum((x - mean) ** 2 for x in finite) / len(finite))
    thr = max(finite) - n * sigma
    return [x != NEG_INF and x >= thr for x in row], thr


# ----------------------------------------------------------------------------- strategies


@st.composite
def logit_rows(draw, max_v: int = 12, allow_neg_inf: bool = True):
    """[B, V] float64 logits, B 1..3, V 1..max_v, values in [-20, 20] on a 1/8 grid (so ties
    happen), some -inf (never a whole row)."""
    B = draw(st.integers(1, 3))
    V = draw(st.integers(1, max_v))
    vals = st.integers(-160, 160).map(lambda k: k / 8.0)
    rows = []
    for _ in range(B):
        row = draw(st.lists(vals, min_size=V, max_size=V))
        if allow_neg_inf and V > 1:
            holes = draw(st.lists(st.integers(0, V - 1), max_size=V - 1, unique=True))
            for h in holes:
                row[h] = NEG_INF
        rows.append(row)
    return np.array(rows, dtype=np.float64)


temperatures = st.sampled_from([0.0, 1e-7, 0.3, 0.7, 1.0, 1.5, 3.0])


# ----------------------------------------------------------------------------- min-p


@given(logit_rows(), st.floats(0.0, 1.0), temperatures)
def test_min_p_equals_definition(logits, min_p, T):
    got = bl.min_p_distribution(logits, min_p, T)
    for b, row in enumerate(logits.tolist()):
        want, keep, q, thr = bf_min_p(row, min_p, T)
        # a token within float rounding of the threshold may go either way; none of the others
        near = [abs(x - thr) <= 1e-12 * max(thr, 1e-300) for x in q]
        assume(not any(near))
        np.testing.assert_allclose(got[b], want, atol=1e-12)
        assert [bool(x) for x in got[b] > 0] == [k and x > 0 for k, x in zip(keep, q)]


def test_min_p_threshold_ties_are_kept():
    q = np.array([[0.5, 0.25, 0.25, 0.125]])  # exact binary fractions: 0.25 == 0.5 * 0.5
    assert bl.min_p_mask(q, 0.5).tolist() == [[True, True, True, False]]
    # tied maxima survive min_p = 1
    logits = np.array([[2.0, 2.0, 1.0, 2.0]])
    np.testing.assert_allclose(bl.min_p_distribution(logits, 1.0), [[1 / 3, 1 / 3, 0.0, 1 / 3]], rtol=1e-6)
    # min_p = 0 keeps every token of positive probability; -inf stays at 0
    np.testing.assert_allclose(bl.min_p_distribution(np.array([0.0, NEG_INF, 0.0]), 0.0), [0.5, 0.0, 0.5])


def _hf_min_p_keep(logits: np.ndarray, min_p: float, T: float) -> np.ndarray:
    from transformers.generation.logits_process import LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper

    chain = LogitsProcessorList([TemperatureLogitsWarper(T), MinPLogitsWarper(min_p)])
    scores = chain(torch.zeros((logits.shape[0], 1), dtype=torch.long), torch.tensor(logits))
    return torch.isfinite(scores).numpy()


def _lm_like_logits(rng: np.random.Generator, B: int, V: int) -> np.ndarray:
    """Logits shaped like a language model's: a Gaussian bulk and a few strong candidates."""
    out = rng.normal(0.0, 2.5, size=(B, V))
    for b in range(B):
        top = rng.choice(V, size=8, replace=False)
        out[b, top] += rng.uniform(6.0, 14.0, size=8)
    return out.astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("V", [49152, 152064])
def test_min_p_matches_transformers_warper_at_real_vocab_sizes(V):
    pytest.importorskip("transformers")
    rng = np.random.default_rng(V)
    logits = _lm_like_logits(rng, 4, V)
    logits[0, :100] = NEG_INF  # masked tokens (a grammar, a bias) stay out of both
    logits[1, 7] = logits[1, 9] = logits[1].max() + 1.0  # tied maxima
    for min_p in (0.05, 0.1, 0.3):
        for T in (0.7, 1.0, 1.5):
            ours = bl.min_p_distribution(logits, min_p, T)
            keep = _hf_min_p_keep(logits, min_p, T)
            q = bl.min_p_distribution(logits, 0.0, T)
            thr = min_p * q.max(axis=1, keepdims=True)
            near = np.abs(q - thr) <= 1e-5 * thr  # two softmax implementations round differently
            assert near.sum() <= 2
            assert ((ours > 0) == keep)[~near].all(), (min_p, T)
            assert keep.sum() > 1  # the comparison is not trivial
            # the renormalised distribution equals softmax of the warped scores
            from transformers.generation.logits_process import MinPLogitsWarper, TemperatureLogitsWarper

            s = MinPLogitsWarper(min_p)(None, TemperatureLogitsWarper(T)(None, torch.tensor(logits)))
            if not near.any():
                np.testing.assert_allclose(ours, torch.softmax(s, -1).numpy(), atol=2e-6)


# ----------------------------------------------------------------------------- dynamic temperature


@given(logit_rows(), st.floats(0.0, 2.0), st.floats(0.0, 1.5), st.floats(0.0, 3.0))
def test_dynatemp_temperature_equals_llama_cpp_rule(logits, T, delta, exponent):
    got = bl.dynatemp_temperature(logits, T, delta, exponent)
    for b, row in enumerate(logits.tolist()):
        assert got[b] == pytest.approx(bf_dynatemp_T(row, T, delta, exponent), rel=1e-9, abs=1e-12)
        lo, hi = max(0.0, T - delta), T + delta
        assert lo - 1e-12 <= got[b] <= hi + 1e-12


@given(logit_rows(), st.floats(0.0, 2.0), st.floats(0.0, 1.5))
def test_dynatemp_distribution_is_softmax_at_that_temperature(logits, T, delta):
    got = bl.dynatemp_distribution(logits, T, delta, 1.0)
    for b, row in enumerate(logits.tolist()):
        np.testing.assert_allclose(got[b], bf_softmax(row, bf_dynatemp_T(row, T, delta, 1.0)), atol=1e-9)


def test_dynatemp_extremes():
    flat = np.zeros((1, 10))
    assert bl.dynatemp_temperature(flat, 1.0, 0.5) == pytest.approx([1.5])  # maximal entropy -> T_hi
    peaked = np.array([[0.0] + [-800.0] * 9])
    assert bl.dynatemp_temperature(peaked, 1.0, 0.5) == pytest.approx([0.5])  # zero entropy -> T_lo
    assert bl.dynatemp_temperature(flat, 0.8, 0.0) == pytest.approx([0.8])  # delta 0: plain temperature
    # -inf tokens are not candidates: a uniform pair among -inf is maximal entropy (N = 2)
    pair = np.array([[0.0, 0.0] + [NEG_INF] * 8])
    assert bl.dynatemp_temperature(pair, 1.0, 0.5) == pytest.approx([1.5])
    assert bl.dynatemp_temperature(np.array([[3.0, NEG_INF]]), 1.0, 0.5) == pytest.approx([1.0])  # N = 1
    # T_lo = 0 at zero entropy: greedy
    np.testing.assert_array_equal(bl.dynatemp_distribution(np.array([[0.0, -900.0, -900.0]]), 0.5, 0.5), [[1, 0, 0]])


# ----------------------------------------------------------------------------- EDT


@given(logit_rows(), st.floats(0.0, 2.0), st.floats(0.05, 0.95), st.floats(0.01, 3.0))
def test_edt_temperature_equals_definition(logits, T0, N, theta):
    got = bl.edt_temperature(logits, T0, N, theta)
    for b, row in enumerate(logits.tolist()):
        h = bf_entropy(row)
        assume(h == 0 or h > 1e-9)  # below that the exponent theta / H amplifies rounding
        assert got[b] == pytest.approx(bf_edt_T(row, T0, N, theta), rel=1e-7, abs=1e-12)
        assert 0.0 <= got[b] <= T0 + 1e-12


@given(logit_rows(), st.floats(0.05, 0.95), st.floats(0.01, 3.0))
def test_edt_distribution_is_softmax_at_that_temperature(logits, N, theta):
    got = bl.edt_distribution(logits, 1.0, N, theta)
    for b, row in enumerate(logits.tolist()):
        np.testing.assert_allclose(got[b], bf_softmax(row, bf_edt_T(row, 1.0, N, theta)), atol=1e-7)


def test_edt_monotone_in_entropy():
    sharp, flat = np.array([[5.0, 0.0, 0.0, 0.0]]), np.array([[0.5, 0.0, 0.0, 0.0]])
    assert bl.edt_temperature(sharp)[0] < bl.edt_temperature(flat)[0] < 1.0
    assert bl.edt_temperature(np.array([[1.0, NEG_INF]]))[0] == 0.0  # one candidate: H = 0, greedy


# ----------------------------------------------------------------------------- top-n sigma


@given(logit_rows(), st.floats(0.0, 4.0), temperatures)
def test_top_n_sigma_equals_definition(logits, n, T):
    got = bl.top_n_sigma_distribution(logits, n, T)
    mask = bl.top_n_sigma_mask(logits, n)
    for b, row in enumerate(logits.tolist()):
        keep, thr = bf_top_n_sigma_keep(row, n)
        assume(all(x == NEG_INF or abs(x - thr) > 1e-9 for x in row) or n == 0)
        assert mask[b].tolist() == keep
        masked = [x if k else NEG_INF for x, k in zip(row, keep)]
        np.testing.assert_allclose(got[b], bf_softmax(masked, T), atol=1e-12)


def test_top_n_sigma_kept_set_ignores_temperature_and_keeps_max_ties():
    logits = np.array([[3.0, 3.0, 1.0, 0.0, -2.0, NEG_INF]])
    assert bl.top_n_sigma_mask(logits, 0.0).tolist() == [[True, True, False, False, False, False]]
    for T in (0.5, 1.0, 2.0):
        assert ((bl.top_n_sigma_distribution(logits, 1.0, T) > 0) == bl.top_n_sigma_mask(logits, 1.0)).all()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [
    lambda l: bl.min_p_distribution(l, 0.1), lambda l: bl.dynatemp_distribution(l), lambda l: bl.edt_distribution(l),
    lambda l: bl.top_n_sigma_distribution(l), lambda l: bl.entropy(l),
])
def test_bad_logits_raise(fn):
    with pytest.raises(InvalidLogitsError, match="NaN"):
        fn(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(InvalidLogitsError, match=r"\+inf"):
        fn(np.array([[0.0, np.inf]]))
    with pytest.raises(InvalidLogitsError, match="all -inf"):
        fn(np.array([[NEG_INF, NEG_INF]]))


_TORCH_ARR = [[0.0, 1.0, 2.0]]


@pytest.mark.parametrize("numpy_call, torch_call, name", [
    (lambda l: bl.min_p_distribution(l, 1.5), lambda t: tbl.min_p_distribution(t, 1.5), "min_p"),
    (lambda l: bl.min_p_distribution(l, np.nan), lambda t: tbl.min_p_distribution(t, float("nan")), "min_p"),
    (lambda l: bl.dynatemp_temperature(l, 1.0, -0.1), lambda t: tbl.dynatemp_temperature(t, 1.0, -0.1), "delta"),
    (lambda l: bl.dynatemp_temperature(l, -1.0, 0.5), lambda t: tbl.dynatemp_temperature(t, -1.0, 0.5), "temperature"),
    (lambda l: bl.edt_temperature(l, 1.0, 1.0), lambda t: tbl.edt_temperature(t, 1.0, 1.0), "N"),
    (lambda l: bl.edt_temperature(l, 1.0, 0.8, 0.0), lambda t: tbl.edt_temperature(t, 1.0, 0.8, 0.0), "theta"),
    (lambda l: bl.top_n_sigma_mask(l, -1.0), lambda t: tbl.top_n_sigma_mask(t, -1.0), "n"),
    (lambda l: bl.top_n_sigma_mask(l, np.inf), lambda t: tbl.top_n_sigma_mask(t, float("inf")), "n"),
])
def test_bad_parameters_raise_naming_them(numpy_call, torch_call, name):
    with pytest.raises(InvalidParameterError, match=name):
        numpy_call(np.array(_TORCH_ARR))
    with pytest.raises(InvalidParameterError, match=name):
        torch_call(torch.tensor(_TORCH_ARR))


def test_torch_twins_refuse_nan():
    for fn in (tbl.min_p_distribution, tbl.dynatemp_distribution, tbl.edt_distribution, tbl.top_n_sigma_distribution):
        args = (0.1,) if fn is tbl.min_p_distribution else ()
        with pytest.raises(InvalidLogitsError, match="NaN"):
            fn(torch.tensor([[0.0, float("nan")]]), *args)


# ----------------------------------------------------------------------------- named baselines, torch twins


ALL = [
    bl.Baseline("static", {"T": 0.7, "P": 0.9}),
    bl.Baseline("min_p", {"min_p": 0.05}),
    bl.Baseline("min_p", {"min_p": 0.1, "T": 1.5}),
    bl.Baseline("dynatemp", {"T": 1.0, "delta": 0.5, "exponent": 1.0}),
    bl.Baseline("edt", {"T0": 1.0, "N": 0.8, "theta": 1.0}),
    bl.Baseline("top_n_sigma", {"n": 1.0}),
]


def test_baseline_names_and_dispatch():
    assert [b.name for b in ALL] == ["static T=0.7 P=0.9", "min-p 0.05", "min-p 0.1 T=1.5", "dynatemp T=0.5..1.5 exp=1",
                                     "EDT T0=1 N=0.8 theta=1", "top-nσ n=1"]
    logits = np.array([[1.0, 0.5, -1.0, 2.0]])
    np.testing.assert_array_equal(ALL[1].distribution(logits), bl.min_p_distribution(logits, 0.05))
    with pytest.raises(ValueError, match="unknown baseline"):
        bl.Baseline("typical", {})
    with pytest.raises(ValueError, match="unknown p"):
        bl.Baseline("min_p", {"p": 0.1})


@given(logit_rows(max_v=40), st.sampled_from(ALL))
def test_torch_twins_equal_numpy_small(logits, baseline):
    want = baseline.distribution(logits.astype(np.float32))
    got = baseline.torch_distribution(torch.tensor(logits, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("V", [49152, 152064])
def test_torch_twins_equal_numpy_at_real_vocab_sizes(V):
    rng = np.random.default_rng(V + 1)
    logits = _lm_like_logits(rng, 3, V)
    logits[2, :50] = NEG_INF
    t = torch.tensor(logits)
    np.testing.assert_allclose(tbl.dynatemp_temperature(t).numpy(), bl.dynatemp_temperature(logits), rtol=1e-12)
    np.testing.assert_allclose(tbl.edt_temperature(t).numpy(), bl.edt_temperature(logits), rtol=1e-12)
    assert (tbl.top_n_sigma_mask(t, 1.0).numpy() == bl.top_n_sigma_mask(logits, 1.0)).all()
    for b in ALL:
        # the core's torch and NumPy temperature steps (float32 sums over V) agree to ~2e-5 relative
        # at 152k tokens (tests/core/test_torch_ops.py allows 2e-4)
        np.testing.assert_allclose(b.torch_distribution(t).numpy(), b.distribution(logits), rtol=1e-4, atol=1e-7)
