"""The core step functions (torch and NumPy) against the NumPy reference itself.

Every fast path (the torch candidate nucleus, the torch threshold search, the NumPy candidate
nucleus, both draws) is compared with :mod:`autodeco_samplers.core.reference` through the
conformance checker's one definition of agreement: kept sets equal except tokens whose
exclusive prefix sum lies within 1e-5 of ``P``, probabilities within TV 1e-4.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autodeco_samplers.core import reference as R
from autodeco_samplers.core import torch_nucleus as N
from autodeco_samplers.conformance.checker import check_distribution
from autodeco_samplers.conformance.stats import draws_fit_pvalue
from autodeco_samplers.core.errors import InvalidLogitsError, InvalidParameterError
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS
from autodeco_samplers.core.step import numpy_step_distribution, numpy_step_sample, torch_step_logits, torch_step_sample
from autodeco_samplers.core.torch_ops import torch_rule_logits, torch_rule_sample

QWEN_V = 152_064


def _row(rng, V, kind, scale):
    if kind == "normal":
        return rng.standard_normal(V) * scale
    if kind == "ties":
        return rng.integers(-3, 3, V).astype(np.float64)  # many exact ties, also at the boundary
    if kind == "peaked":
        l = rng.standard_normal(V)
        l[rng.integers(V)] += 30
        return l
    if kind == "flat":
        return np.zeros(V)
    if kind == "zipf":  # LM-like: a few likely tokens and a long tail
        return -1.2 * np.log(rng.permutation(V) + 1.0) * scale
    l = rng.standard_normal(V) * 3  # "neginf": half the vocabulary masked
    l[rng.random(V) < 0.5] = -np.inf
    l[rng.integers(V)] = 0.0
    return l


@st.composite
def batches(draw, max_v=3000):
    V = draw(st.one_of(st.integers(1, 40), st.integers(41, max_v)))
    B = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kinds = [draw(st.sampled_from(["normal", "ties", "peaked", "flat", "zipf", "neginf"])) for _ in range(B)]
    scale = draw(st.floats(0.1, 20))
    logits = np.stack([_row(rng, V, k, scale) for k in kinds]).astype(np.float32)
    T = np.array([draw(T_values) for _ in range(B)], np.float32)
    P = np.array([draw(P_values) for _ in range(B)], np.float32)
    return logits, T, P


T_values = st.one_of(st.sampled_from([0.0, 1e-7, 1e-6, 2e-6, 2.0]), st.floats(0.05, 2.0))
P_values = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.9, 0.999999]), st.floats(0.0, 1.0))


def _agrees(logits, T, P, probs):
    verdict = check_distribution(logits, T, P, probs)
    assert verdict.ok, verdict.describe()


# ---------------------------------------------------------------------------- torch rule


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.booleans())
def test_torch_logits_match_the_reference(batch, sync):
    logits, T, P = batch
    out = torch_rule_logits(torch.from_numpy(logits), torch.from_numpy(T), torch.from_numpy(P), sync=sync)
    assert torch.isfinite(out).all(), "masked logits must be finite everywhere"
    _agrees(logits, T, P, torch.softmax(out.double(), dim=-1).numpy())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_threshold_search_matches_the_reference(batch):
    """The sync-free fallback on every row (not only those the candidates cannot prove)."""
    logits, T, P = batch
    T = np.where(T < 1e-6, 1.0, T).astype(np.float32)  # the search works on non-greedy rows
    z = (torch.from_numpy(logits) - torch.from_numpy(logits).amax(-1, keepdim=True)) / torch.from_numpy(T)[:, None]
    q = torch.softmax(z, dim=-1)
    mask = N.threshold_nucleus(q, torch.from_numpy(P)).numpy()
    kept = np.where(mask, q.double().numpy(), 0.0)
    _agrees(logits, T, P, kept / kept.sum(axis=1, keepdims=True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from(["probabilities", "logits"]))
def test_candidates_prove_only_what_the_reference_keeps(batch, ranked_by):
    """Rows the candidate search calls proven have exactly the reference's kept set, whether
    the chunks are ranked by probability (candidate_nucleus) or by logit (logit_candidates,
    the step's, which evaluates q only at the gathered tokens). Each batch gets one extra row
    that must be proven (one token holds almost all the mass, P = 0.5), so the test fails when
    the search proves nothing at all."""
    logits, T, P = batch
    peaked = np.zeros((1, logits.shape[1]), np.float32)
    peaked[0, logits.shape[1] // 2] = 40.0
    logits = np.concatenate([logits, peaked]).astype(np.float32)
    T = np.append(np.where(T < 1e-6, 1.0, T), 1.0).astype(np.float32)
    P = np.append(P, 0.5).astype(np.float32)
    arr, Tt, Pt = torch.from_numpy(logits), torch.from_numpy(T), torch.from_numpy(P)
    z = (arr - arr.amax(-1, keepdim=True)) / Tt[:, None]
    q = torch.softmax(z, dim=-1)
    small = dict(k=8, chunks=4, chunk=16, small_v=0)  # tiny sizes: both outcomes, every path
    if ranked_by == "probabilities":
        cand = N.candidate_nucleus(q, Pt, **small)
    else:
        cmax = N.chunk_max(arr, 16)
        cand = N.logit_candidates(arr, cmax.amax(-1), Tt, Pt, cmax, **small)
    for b in range(len(P)):
        if not bool(cand.proven[b]):
            continue
        dense = np.zeros(logits.shape[1])
        ids = cand.ids[b][cand.keep[b]].numpy()
        dense[ids] = q[b].double().numpy()[ids]
        _agrees(logits[b:b + 1], T[b:b + 1], P[b:b + 1], (dense / dense.sum())[None])
    assert bool(cand.proven[-1]), "the peaked row must be proven"


@pytest.mark.slow
@pytest.mark.parametrize("rank", ["probabilities", "logits"])
def test_candidates_prove_many_rows_exactly(rank):
    """A fixed sweep where proofs are frequent and the chunk floor decides them: tiny chunks
    (16 tokens, 4 gathered, 8 candidates) over 400 rows of 100-3000 tokens. Every proven row
    has the reference's kept set, and proofs are common (the test is not vacuous)."""
    rng = np.random.default_rng(20261201)
    proven = 0
    for _ in range(200):
        V = int(rng.integers(100, 3000))
        logits = torch.from_numpy(np.stack([_row(rng, V, k, 3.0) for k in ("normal", "zipf")]).astype(np.float32))
        T = torch.from_numpy(rng.uniform(0.3, 2.0, 2).astype(np.float32))
        P = torch.from_numpy(rng.uniform(0.0, 0.9, 2).astype(np.float32))
        small = dict(k=8, chunks=4, chunk=16, small_v=0)
        if rank == "probabilities":
            cand = N.candidate_nucleus(torch.softmax((logits - logits.amax(-1, keepdim=True)) / T[:, None], -1), P, **small)
        else:
            cmax = N.chunk_max(logits, 16)
            cand = N.logit_candidates(logits, cmax.amax(-1), T, P, cmax, **small)
        want = R.nucleus_mask(R.temperature_probs(logits.numpy(), T.numpy()), P.numpy())
        for b in range(2):
            if bool(cand.proven[b]):
                proven += 1
                assert sorted(cand.ids[b][cand.keep[b]].tolist()) == np.flatnonzero(want[b]).tolist()
    assert proven >= 100, f"only {proven} of 400 rows proven: the sweep no longer tests the proof"


@pytest.mark.parametrize("kind,T,P", [
    ("zipf", 1.0, 0.9), ("peaked", 0.7, 0.95), ("normal", 1.0, 0.5), ("normal", 2.0, 0.99),
    ("neginf", 1.0, 1.0), ("ties", 1.0, 0.5), ("zipf", 1e-6, 0.9), ("zipf", 2.0, 1.0), ("flat", 1.0, 0.3),
])
def test_qwen_vocabulary_rows(kind, T, P):
    rng = np.random.default_rng(zlib.crc32(kind.encode()))  # str hash() differs per process
    logits = np.stack([_row(rng, QWEN_V, kind, 1.0) for _ in range(2)]).astype(np.float32)
    Tv, Pv = np.full(2, T, np.float32), np.full(2, P, np.float32)
    out = torch_rule_logits(torch.from_numpy(logits), torch.from_numpy(Tv), torch.from_numpy(Pv))
    assert torch.isfinite(out).all()
    _agrees(logits, Tv, Pv, torch.softmax(out.double(), dim=-1).numpy())
    for b in range(2):
        ids, probs = numpy_step_distribution(np.zeros((1, 4)), logits[b], _FixedHeads(T, P)).rows[0]
        dense = np.zeros(QWEN_V)
        dense[ids] = probs
        _agrees(logits[b:b + 1], Tv[b:b + 1], Pv[b:b + 1], dense[None])


def test_vocabulary_of_one():
    out = torch_rule_logits(torch.tensor([[3.0]]), 0.7, 0.0)
    assert out.tolist() == [[0.0]]
    assert torch_rule_sample(torch.tensor([[3.0], [-1.0]]), 1.0, 1.0).tolist() == [0, 0]


def test_exact_tie_at_the_boundary_keeps_the_lowest_ids():
    # four equal tokens, P = 0.5: exclusive sums 0, .25, .5, .75 -> keep ids 0 and 1 only
    for V in (4, 4096):
        logits = torch.full((1, V), -50.0)
        logits[0, [7 % V, 1, 2, 3]] = 0.0
        out = torch_rule_logits(logits, 1.0, 0.5)
        kept = (out[0] > OUTSIDE_NUCLEUS / 2).nonzero()[:, 0].tolist()
        assert kept == sorted([7 % V, 1, 2, 3])[:2]


# ---------------------------------------------------------------------------- semantics fixes


def _float32_rows_summing_above_one(n):
    """Rows whose float32 probabilities sum above 1 in float64 (common at large V)."""
    out = []
    rng = np.random.default_rng(1)
    while len(out) < n:
        l = (rng.standard_normal(5000) * 2).astype(np.float32)
        q = R.temperature_probs(l, 1.0)
        if q.astype(np.float64).sum() > 1.0:
            out.append(l)
    return np.stack(out)


def test_top_p_one_keeps_every_positive_token():
    """P = 1 keeps the whole support even when float32 rounding makes the prefix sums reach 1
    before the tail (the old rule dropped tail tokens on these rows)."""
    logits = _float32_rows_summing_above_one(5)
    q = R.temperature_probs(logits, 1.0)
    ref = R.next_token_distribution(logits, 1.0, 1.0)
    assert ((ref > 0) == (q > 0)).all()
    torch_out = torch_rule_logits(torch.from_numpy(logits), 1.0, 1.0)
    assert ((torch_out > OUTSIDE_NUCLEUS / 2).numpy() == (q > 0)).all()
    for b in range(len(logits)):
        ids, _ = numpy_step_distribution(np.zeros((1, 4)), logits[b], _FixedHeads(1.0, 1.0)).rows[0]
        assert ids.tolist() == np.flatnonzero(q[b] > 0).tolist()


def test_masked_logits_are_finite_with_neginf_inputs():
    rng = np.random.default_rng(2)
    for _ in range(20):
        l = rng.standard_normal((4, 300)).astype(np.float32) * 3
        l[rng.random(l.shape) < 0.3] = -np.inf
        for sync in (True, False):
            out = torch_rule_logits(torch.from_numpy(l), torch.ones(4), torch.ones(4), sync=sync)
            assert torch.isfinite(out).all()
            assert ((out > OUTSIDE_NUCLEUS / 2).numpy() == np.isfinite(l)).all()


@pytest.mark.parametrize("T,P,match", [
    (float("nan"), 0.5, "temperature"), (float("inf"), 0.5, "temperature"), (-0.5, 0.5, "temperature"),
    (1.0, float("nan"), "top_p"), (1.0, 1.5, "top_p"),
])
def test_check_rejects_bad_parameters(T, P, match):
    logits = torch.zeros(2, 10)
    with pytest.raises(InvalidParameterError, match=match):
        torch_rule_logits(logits, torch.tensor([1.0, T]), torch.tensor([0.5, P]), check=True)
    with pytest.raises(InvalidParameterError, match=match):
        torch_rule_sample(logits, torch.tensor([1.0, T]), torch.tensor([0.5, P]), check=True)


def test_check_rejects_bad_logits():
    for bad, match in [(float("nan"), "NaN"), (float("inf"), r"\+inf")]:
        logits = torch.zeros(2, 10)
        logits[1, 3] = bad
        with pytest.raises(InvalidLogitsError, match=match):
            torch_rule_logits(logits, 1.0, 0.5, check=True)


def test_step_check_rejects_a_nan_temperature_from_the_policy_inputs():
    heads = _TorchFixedHeads(float("nan"), 0.5)
    with pytest.raises(InvalidParameterError, match="temperature"):
        torch_step_sample(torch.zeros(1, 4), torch.zeros(1, 10), heads, check=True)


# ---------------------------------------------------------------------------- draws


class _FixedHeads:
    """NumPy heads predicting constant (T, P)."""

    def __init__(self, T, P):
        self.T, self.P = T, P

    def predict(self, hidden, logits):
        B = np.atleast_2d(logits).shape[0]
        return np.full(B, self.T, np.float32), np.full(B, self.P, np.float32)


class _TorchFixedHeads(torch.nn.Module):
    def __init__(self, T, P):
        super().__init__()
        self.T, self.P = T, P

    def forward(self, hidden, logits):
        B = logits.shape[0]
        return torch.full((B,), self.T), torch.full((B,), self.P)


@pytest.mark.slow
@pytest.mark.parametrize("V,T,P,seed", [(50, 0.8, 0.9, 0), (3000, 0.5, 0.8, 1), (3000, 1.0, 0.95, 4), (300, 1.5, 1.0, 2), (40, 1.0, 0.5, 3)])
def test_torch_draw_follows_the_canonical_distribution(V, T, P, seed):
    """G-test (fixed seeds) of 20,000 draws against the reference distribution; V = 3000 goes
    through the chunked candidates, P = 1 through the full-row draw."""
    rng = np.random.default_rng(seed)
    row = _row(rng, V, "zipf" if V > 100 else "normal", 1.0).astype(np.float32)
    ref = R.next_token_distribution(row, T, P).astype(np.float64)
    n = 20_000 if V < 1000 else 5_000
    gen = torch.Generator().manual_seed(seed)
    heads = _TorchFixedHeads(T, P)
    tokens = torch_step_sample(torch.zeros(n, 4), torch.from_numpy(row).expand(n, -1).contiguous(), heads, DecodingPolicy(), gen).token_ids
    counts = np.bincount(tokens.numpy(), minlength=V)
    assert draws_fit_pvalue(counts, ref) > 1e-3
    # the sync-free form draws the same tokens from the same generator state
    gen2 = torch.Generator().manual_seed(seed)
    tokens2 = torch_rule_sample(torch.from_numpy(row).expand(n, -1).contiguous(), T, P, gen2, sync=False)
    assert torch.equal(tokens, tokens2)


@pytest.mark.slow
@pytest.mark.parametrize("T,P,seed", [(0.8, 0.9, 0), (1.2, 1.0, 1)])
def test_numpy_draw_follows_the_canonical_distribution(T, P, seed):
    rng = np.random.default_rng(seed)
    row = rng.standard_normal(60).astype(np.float32)
    ref = R.next_token_distribution(row, T, P).astype(np.float64)
    draw_rng = np.random.default_rng(seed + 100)
    heads = _FixedHeads(T, P)
    tokens = [int(numpy_step_sample(np.zeros((1, 4)), row[None], heads, DecodingPolicy(), draw_rng).token_ids[0]) for _ in range(8000)]
    assert draws_fit_pvalue(np.bincount(tokens, minlength=60), ref) > 1e-3


def test_numpy_fast_and_exact_steps_agree_and_draw_the_reference_tokens():
    """The NumPy step's sort-free nucleus against ``exact=True`` (the reference's full sort):
    the same kept sets and probabilities; the same tokens for the same generator, which are
    the reference's own draw (one uniform per row)."""
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((3, 500)) * 3).astype(np.float32)
    hidden, heads = np.zeros((3, 4)), _FixedHeads(0.8, 0.9)
    fast = numpy_step_distribution(hidden, logits, heads)
    exact = numpy_step_distribution(hidden, logits, heads, exact=True)
    assert fast.probs is None and exact.probs.shape == (3, 500)
    _agrees(logits, fast.T, fast.P, fast.dense(500))
    for (a_ids, a_p), (b_ids, b_p) in zip(fast.rows, exact.rows):
        assert a_ids.tolist() == b_ids.tolist()
        np.testing.assert_allclose(a_p, b_p, rtol=1e-5)
    a = numpy_step_sample(hidden, logits, heads, rng=np.random.default_rng(3))
    b = numpy_step_sample(hidden, logits, heads, rng=np.random.default_rng(3), exact=True)
    assert a.token_ids.tolist() == b.token_ids.tolist() == R.sample(logits, fast.T, fast.P, np.random.default_rng(3)).tolist()
    assert a.rows is not None and a.row(0).token_id == int(a.token_ids[0])


def test_greedy_rows_return_the_lowest_argmax():
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 0.0, 0.0]])
    heads = _TorchFixedHeads(0.5, 0.9)
    st = torch_step_sample(torch.zeros(2, 4), logits, heads, DecodingPolicy(temperature=0.0), torch.Generator().manual_seed(0))
    assert st.token_ids.tolist() == [1, 0]
    out = torch_step_logits(torch.zeros(2, 4), logits, heads, DecodingPolicy(temperature=0.0)).logits
    f = float(torch.tensor(OUTSIDE_NUCLEUS))  # the fill as float32
    assert out.tolist() == [[f, 0.0, f, f], [0.0, f, f, f]]


def test_per_row_multipliers_reach_the_rule():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    heads = _TorchFixedHeads(1.0, 0.6)
    st = torch_step_logits(torch.zeros(2, 4), logits, heads, temperature=torch.tensor([1.0, 0.0]), top_p=torch.tensor([1.0, 2.0]))
    assert st.T.tolist() == [1.0, 0.0] and st.P.tolist() == pytest.approx([0.6, 1.0])
    probs = torch.softmax(st.logits, dim=-1)
    assert probs[0].tolist() == pytest.approx([0.625, 0.375, 0.0])
    assert probs[1].tolist() == [1.0, 0.0, 0.0]


def test_candidates_do_not_claim_a_nucleus_larger_than_themselves():
    """A flat row whose nucleus is far larger than the candidate set is not proven."""
    q = torch.full((1, 3000), 1 / 3000)
    cand = N.candidate_nucleus(q, torch.tensor([0.9]))
    assert not bool(cand.proven[0])
    peaked = torch.softmax(torch.tensor([[10.0, 9.0] + [0.0] * 2998]), dim=-1)
    assert bool(N.candidate_nucleus(peaked, torch.tensor([0.9])).proven[0])


def test_no_host_synchronisation_off_the_cpu():
    """On a device other than the CPU the step reads no tensor value on the host (what a CUDA
    graph needs). Meta tensors have no values at all: any ``.item()``/``bool()``/``nonzero``
    would raise, and does with ``sync=True``."""
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    heads = AutoDecoHeadsModule.create(16, width=8, seed=0).requires_grad_(False).to("meta")
    hidden, logits = torch.empty(3, 16, device="meta"), torch.empty(3, 5000, device="meta")
    with torch.no_grad():
        assert torch_step_logits(hidden, logits, heads).logits.shape == (3, 5000)
        assert torch_step_sample(hidden, logits, heads).token_ids.shape == (3,)
        with pytest.raises(RuntimeError, match="meta"):
            torch_step_logits(hidden, logits, heads, sync=True)


def _spread_heads(seed: int, hidden_size: int = 48, **kwargs):
    """Seeded torch heads whose last layers are widened so T and P spread over their range."""
    from autodeco_samplers.heads.model.init import init_heads
    from autodeco_samplers.heads.model.numpy_heads import AutoDecoHeads
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    config, tensors = init_heads(hidden_size, width=32, seed=seed, **kwargs)
    tensors = {k: (v * 6.0).astype(np.float32) if k.endswith("mlp.2.weight") else v for k, v in tensors.items()}
    return AutoDecoHeadsModule.from_numpy(AutoDecoHeads(config, tensors)).requires_grad_(False)


@pytest.mark.parametrize(
    "policy",
    [DecodingPolicy(), DecodingPolicy(top_p=1.5), DecodingPolicy(temperature=0.0),
     DecodingPolicy(temperature=0.7, top_p=0.9, min_temperature=0.2, max_temperature=1.5, fixed_top_p=0.8)],
    ids=["default", "top-p-multiplier", "greedy", "all-knobs"],
)
@pytest.mark.parametrize("enhanced", [True, False])
@pytest.mark.parametrize("V", [160, 5000])
def test_sync_free_step_compiles_to_one_graph(policy, enhanced, V):
    """``torch.compile(fullgraph=True, dynamic=False)`` refuses any graph break: a ``.item()``,
    ``.tolist()``, data-dependent Python branch or data-dependent output shape (``nonzero``,
    boolean indexing) would raise. That is the set of operations a CUDA-graph capture cannot
    replay, so this CPU test guards the ``sync=False`` step SGLang's logits processor runs
    inside captured graphs: one static graph, the eager step's values exactly."""
    heads = _spread_heads(1, use_enhanced_features=enhanced)

    def step(logits, hidden):
        out = torch_step_logits(hidden, logits, heads, policy, sync=False)
        return out.logits, out.T_pred, out.P_pred, out.T, out.P

    compiled = torch.compile(step, fullgraph=True, backend="eager", dynamic=False)
    g = torch.Generator().manual_seed(0)
    logits, hidden = torch.randn(4, V, generator=g) * 3, torch.randn(4, 48, generator=g)
    for got, want in zip(compiled(logits, hidden), step(logits, hidden)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    z = step(logits, hidden)[0]
    assert torch.isfinite(z).all() and (z == OUTSIDE_NUCLEUS).any()


def test_bfloat16_logits_and_hidden_are_upcast():
    heads = _spread_heads(2)
    g = torch.Generator().manual_seed(1)
    logits, hidden = torch.randn(3, 160, generator=g) * 3, torch.randn(3, 48, generator=g)
    low = torch_step_logits(hidden.bfloat16(), logits.bfloat16(), heads, sync=False)
    assert low.logits.dtype == torch.float32 and low.T.dtype == torch.float32
    ref = torch_step_logits(hidden.bfloat16().float(), logits.bfloat16().float(), heads, sync=False)
    torch.testing.assert_close(low.logits, ref.logits, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_step_matches_the_reference_and_the_eager_draw():
    """``compiled=True`` (torch.compile with inductor, C++ on the CPU): the masked logits give
    the canonical distribution on peaked rows (candidates prove them), flat rows (threshold
    search) and a greedy row; the compiled draw, fed the same uniforms, returns the eager
    step's tokens; a new batch size reuses the dynamic-shape graph."""
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.core.step import numpy_heads_policy

    heads = AutoDecoHeadsModule.create(32, width=8, seed=0).requires_grad_(False)
    numpy_heads = heads.to_numpy()
    g = torch.Generator().manual_seed(3)
    for batch in (4, 6):
        logits = torch.randn(batch, 3000, generator=g) * torch.tensor([8.0, 1.0, 3.0, 0.5] + [2.0] * (batch - 4))[:, None]
        hidden = torch.randn(batch, 32, generator=g)
        temperature = torch.ones(batch)
        temperature[2] = 0.0  # a greedy row
        with torch.no_grad():
            got = torch_step_logits(hidden, logits, heads, DecodingPolicy(), temperature=temperature, compiled=True)
            ref = numpy_heads_policy(hidden.numpy(), logits.numpy(), numpy_heads, DecodingPolicy(),
                                     temperature=temperature.numpy())
            np.testing.assert_allclose(got.T.numpy(), ref.T, rtol=1e-5, atol=1e-6)
            _agrees(logits.numpy(), got.T.numpy(), got.P.numpy(), torch.softmax(got.logits, -1).double().numpy())
            a = torch_step_sample(hidden, logits, heads, DecodingPolicy(), torch.Generator().manual_seed(9), compiled=True)
            e = torch_step_sample(hidden, logits, heads, DecodingPolicy(), torch.Generator().manual_seed(9))
        assert a.token_ids.tolist() == e.token_ids.tolist()


@pytest.mark.slow
def test_compiled_step_with_opaque_scans_matches_the_eager_step(monkeypatch):
    """The GPU form of the compiled step (prefix sums as the opaque ``autodeco_samplers::cumsum``,
    which inductor does not generate code for) forced onto the CPU: the operator is really in
    the graph, and the logits and the draw equal the eager step's."""
    from autodeco_samplers.core import step as step_mod
    from autodeco_samplers.core import torch_nucleus
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    monkeypatch.setattr(torch_nucleus, "OPAQUE_SCAN_DEVICES", {"cpu", "cuda"})
    monkeypatch.setattr(step_mod, "_COMPILED", {})
    torch._dynamo.reset()
    heads = AutoDecoHeadsModule.create(32, width=8, seed=0).requires_grad_(False)
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 3000, generator=g) * torch.tensor([8.0, 1.0, 3.0, 0.5])[:, None]
    hidden = torch.randn(4, 32, generator=g)
    calls = []
    real = torch_nucleus.register_opaque_scan()

    def counted(x, dim):
        calls.append(tuple(x.shape))
        return real(x, dim)

    monkeypatch.setattr(torch_nucleus, "_OPAQUE_CUMSUM", counted)
    with torch.no_grad():
        got = torch_step_logits(hidden, logits, heads, DecodingPolicy(), compiled=True)
        want = torch_step_logits(hidden, logits, heads, DecodingPolicy())
        a = torch_step_sample(hidden, logits, heads, DecodingPolicy(), torch.Generator().manual_seed(9), compiled=True)
        e = torch_step_sample(hidden, logits, heads, DecodingPolicy(), torch.Generator().manual_seed(9))
    assert calls, "the compiled graph did not route its prefix sums through the opaque operator"
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-6, atol=1e-6)
    assert a.token_ids.tolist() == e.token_ids.tolist()
    torch._dynamo.reset()


_COMPILED_POLICY = DecodingPolicy(fixed_temperature=1.0, fixed_top_p=1.0)  # T and P = the row multipliers
_COMPILED_HEADS = None


def _compiled_logits(logits, T, P):
    """The compiled step's masked logits for given per-row T and P (fixed heads' values times
    the row multipliers: one policy, one heads module, so the graph is reused)."""
    global _COMPILED_HEADS
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    if _COMPILED_HEADS is None:
        _COMPILED_HEADS = AutoDecoHeadsModule.create(8, width=4, seed=0).requires_grad_(False)
    B = logits.shape[0]
    with torch.no_grad():
        st_ = torch_step_logits(torch.zeros(B, 8), torch.from_numpy(logits), _COMPILED_HEADS, _COMPILED_POLICY,
                                temperature=torch.from_numpy(T), top_p=torch.from_numpy(P), compiled=True)
    np.testing.assert_allclose(st_.T.numpy(), T, rtol=1e-6)
    return st_.logits


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_compiled_logits_match_the_reference(batch):
    """The compiled path against the reference on the same Hypothesis batches as the eager rule
    (ties at the boundary, -inf, P = 0 and 1, greedy rows; B >= 2 and V >= 2 here, the shapes
    one dynamic graph serves; batch 1 and V = 1 are further graphs, checked below)."""
    logits, T, P = batch
    if logits.shape[0] == 1:
        logits, T, P = np.repeat(logits, 2, 0), np.repeat(T, 2), np.repeat(P, 2)
    if logits.shape[1] == 1:
        logits = np.concatenate([logits, logits - 1], axis=1)
    out = _compiled_logits(logits, T, P)
    assert torch.isfinite(out).all()
    _agrees(logits, T, P, torch.softmax(out.double(), dim=-1).numpy())


@pytest.mark.slow
def test_compiled_logits_at_qwen_size_and_edge_shapes():
    rng = np.random.default_rng(7)
    logits = np.stack([_row(rng, QWEN_V, kind, 1.0) for kind in ("zipf", "neginf", "ties")]).astype(np.float32)
    T, P = np.array([1.0, 0.7, 1.0], np.float32), np.array([0.9, 1.0, 0.5], np.float32)
    _agrees(logits, T, P, torch.softmax(_compiled_logits(logits, T, P).double(), -1).numpy())
    one = np.array([[3.0]], np.float32)  # batch 1 and a vocabulary of one
    assert _compiled_logits(one, np.array([0.7], np.float32), np.array([0.0], np.float32)).tolist() == [[0.0]]


def test_caller_uniforms_draw_the_tokens_the_generator_would():
    """``uniforms=`` is the generator's own stream when given the same numbers, on the step,
    the rule and a plain distribution; the token of each row is where the reference CDF of its
    kept set crosses its uniform; bad uniforms are refused with the problem named."""
    from autodeco_samplers.core.torch_ops import sample_tokens

    rng = np.random.default_rng(5)
    logits = torch.from_numpy(rng.standard_normal((6, 300)).astype(np.float32) * 3)
    T, P = torch.tensor([0.3, 0.7, 1.0, 1.3, 0.9, 0.5]), torch.tensor([0.5, 0.9, 1.0, 0.95, 0.8, 0.99])
    heads = _TorchFixedHeads(1.0, 1.0)
    u = torch.rand(6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    by_gen = torch_step_sample(torch.zeros(6, 4), logits, heads, DecodingPolicy(), torch.Generator().manual_seed(11),
                               temperature=T, top_p=P).token_ids
    by_u = torch_step_sample(torch.zeros(6, 4), logits, heads, DecodingPolicy(), temperature=T, top_p=P, uniforms=u).token_ids
    assert torch.equal(by_gen, by_u)
    assert torch.equal(torch_rule_sample(logits, T, P, uniforms=u), by_u)
    for b in range(6):
        cdf = np.cumsum(R.next_token_distribution(logits[b].numpy(), float(T[b]), float(P[b])).astype(np.float64))
        assert int(by_u[b]) == int(np.searchsorted(cdf, float(u[b]), side="right"))
    probs = torch.softmax(logits, -1)
    assert torch.equal(sample_tokens(probs, torch.Generator().manual_seed(11)), sample_tokens(probs, uniforms=u))
    with pytest.raises(InvalidParameterError, match=r"shape \[6\]"):
        torch_rule_sample(logits, T, P, uniforms=u[:5])
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\)"):
        torch_rule_sample(logits, T, P, uniforms=torch.full((6,), 1.0, dtype=torch.float64))
