"""The core speculative verification rule: what it emits is distributed as the targets say.

Each case draws many verdicts with fixed seeds and compares, by a G test, the joint
distribution of the emitted tokens with the product of the target rows (the distribution of
plain sampling, token by token). A deliberately wrong rule must fail the same test.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autodeco_samplers.core import speculative
from autodeco_samplers.core.errors import InvalidParameterError
from autodeco_samplers.core.speculative import prompt_lookup_drafts, verify_drafts

V = 6
N = 6000


def _row(weights):
    w = np.asarray(weights, dtype=np.float64)
    ids = np.flatnonzero(w > 0)
    return ids, w[ids] / w[ids].sum()


def _dense(row):
    out = np.zeros(V)
    out[row[0]] = row[1]
    return out


def _g_pvalue(counts: Counter, expected: dict, n: int) -> float:
    from scipy import stats

    if any(key not in expected or expected[key] == 0 for key in counts):
        return 0.0  # an outcome of probability zero was emitted
    keys = sorted(expected)
    obs = np.array([counts.get(k, 0) for k in keys], float)
    exp = np.array([expected[k] * n for k in keys])
    big = exp >= 5
    obs = np.append(obs[big], obs[~big].sum())
    exp = np.append(exp[big], exp[~big].sum())
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    g = 2.0 * np.sum(np.where(obs > 0, obs * np.log(np.where(obs > 0, obs, 1) / exp), 0.0))
    return float(stats.chi2.sf(g, df=max(len(obs) - 1, 1)))


def _generate(P, Q, k, rng, length=2, start=0):
    """Speculative decoding of ``length`` tokens in a Markov model: the target's next-token
    row after token ``s`` is ``P[s]``; the draft proposes ``k`` tokens, sampled from ``Q[s]``
    (``Q`` given) or, with ``Q=None``, the point-mass drafts ``(s + 1) % V`` (a fixed lookup)."""
    out, last = [], start
    while len(out) < length:
        drafts, draft_rows, s = [], [] if Q is not None else None, last
        for _ in range(k):
            if Q is None:
                d = (s + 1) % V
            else:
                row = _row(Q[s])
                draft_rows.append(row)
                d = int(row[0][np.searchsorted(np.cumsum(row[1]), rng.random() * row[1].sum(), side="right")
                               .clip(max=len(row[0]) - 1)])
            drafts.append(d)
            s = d
        targets = [_row(P[t]) for t in [last] + drafts]
        v = verify_drafts(targets, drafts, rng, draft_rows)
        assert len(v.tokens) == v.n_accepted + 1 and v.tokens[: v.n_accepted] == drafts[: v.n_accepted]
        out.extend(v.tokens)
        last = out[-1]
    return tuple(out[:length])


def _expected(P, length=2, start=0):
    """The joint distribution of the first ``length`` tokens of plain sampling."""
    probs = {(): 1.0}
    for _ in range(length):
        probs = {seq + (t,): m * _dense(_row(P[seq[-1] if seq else start]))[t]
                 for seq, m in probs.items() for t in range(V)}
    return {seq: m for seq, m in probs.items() if m > 0}


def _run(P, Q, k, seed=0, n=N):
    rng = np.random.default_rng(seed)
    return Counter(_generate(P, Q, k, rng) for _ in range(n))


weights = st.lists(st.sampled_from([0.0, 0.0, 0.05, 0.2, 0.5, 1.0, 3.0]), min_size=V, max_size=V).filter(
    lambda w: sum(w) > 0
)
matrix = st.lists(weights, min_size=V, max_size=V)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 3), P=matrix, Q=st.one_of(st.none(), matrix), seed=st.integers(0, 10))
def test_emitted_tokens_follow_the_targets(k, P, Q, seed):
    counts = _run(P, Q, k, seed)
    assert _g_pvalue(counts, _expected(P), N) > 1e-4


# a target chain and a draft chain that differ; lookup drafts (s + 1) % V are often plausible
P_CASE = [[5, 3, 2, 0, 0, 1], [0, 1, 1, 2, 0, 0], [1, 0, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 2, 4], [3, 0, 0, 0, 1, 1]]
Q_CASE = [[1, 6, 3, 0, 0, 0], [0, 1, 4, 1, 0, 0], [1, 1, 1, 4, 0, 0], [1, 1, 1, 1, 3, 1], [0, 0, 0, 1, 1, 6], [6, 0, 0, 0, 0, 1]]


@pytest.mark.parametrize("drafting", ["lookup", "sampled"])
def test_the_exact_rule_passes_and_wrong_rules_fail(drafting, monkeypatch):
    Q = Q_CASE if drafting == "sampled" else None
    expected = _expected(P_CASE)
    assert _g_pvalue(_run(P_CASE, Q, 2), expected, N) > 1e-3
    # wrong: after a rejection draw from the target itself (the rejected token can come back)
    monkeypatch.setattr(speculative, "residual_row", lambda target, draft, token: target)
    assert _g_pvalue(_run(P_CASE, Q, 2), expected, N) < 1e-6
    monkeypatch.undo()
    # wrong: accept every draft
    monkeypatch.setattr(speculative, "_prob_of", lambda row, token: 1.0)
    assert _g_pvalue(_run(P_CASE, Q, 2, n=2000), expected, 2000) < 1e-6


def test_a_token_of_zero_target_mass_is_never_accepted():
    targets = [_row([1, 0, 0, 0, 0, 0]), _row([0, 1, 0, 0, 0, 0])]
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert verify_drafts(targets, [3], rng).tokens == [0]


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    row = _row([1, 1, 0, 0, 0, 0])
    with pytest.raises(InvalidParameterError, match="2 target rows"):
        verify_drafts([row], [1], rng)
    with pytest.raises(InvalidParameterError, match="draft distributions"):
        verify_drafts([row, row], [1], rng, draft_rows=[])
    with pytest.raises(InvalidParameterError, match="probability 0 under its draft"):
        verify_drafts([row, row], [4], rng, draft_rows=[row])


def test_prompt_lookup_drafts():
    # the last 2 tokens (3, 4) occurred at positions 2-3; what followed them is proposed
    assert prompt_lookup_drafts([1, 2, 3, 4, 5, 6, 3, 4], 3) == [5, 6, 3]
    # the latest earlier occurrence wins; proposals stop at the end of the sequence
    assert prompt_lookup_drafts([7, 1, 7, 2, 7], 4, max_ngram=1) == [2, 7]
    # longer n-grams are tried first: (9, 7) matches once, before the single 7 would
    assert prompt_lookup_drafts([9, 7, 5, 7, 8, 9, 7], 1) == [5]
    assert prompt_lookup_drafts([1, 2, 3], 2) == []
    assert prompt_lookup_drafts([1, 1], 0) == []


def test_with_no_drafts_verification_is_the_steps_own_draw():
    """The llama.cpp loop draws with the NumPy step when a round has no drafts and verifies
    when it has some: with no drafts the two are the same draw (one uniform, the same row)."""
    from autodeco_samplers.core.step import numpy_step_sample

    class Heads:
        def predict(self, hidden, logits):
            return np.full(len(logits), 0.9, np.float32), np.full(len(logits), 0.8, np.float32)

    logits = np.random.default_rng(0).normal(size=(1, 40)).astype(np.float32)
    for seed in range(50):
        st = numpy_step_sample(np.zeros((1, 2)), logits, Heads(), rng=np.random.default_rng(seed))
        verdict = verify_drafts(st.rows, [], np.random.default_rng(seed))
        assert verdict.tokens == st.token_ids.tolist() and verdict.n_accepted == 0
