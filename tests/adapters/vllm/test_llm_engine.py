"""AutoDeco inside one real vLLM engine (TP=1): greedy, sampling, logprobs, batches, knobs.

One engine (session fixture ``engine_a``) serves every check here; the expectations come from
the independent side (``_reference.py``: HF transformers forward, NumPy heads, NumPy reference).
"""

from __future__ import annotations

import numpy as np
from _engine import DRAW_PROMPTS, KNOBS_DRAW, KNOBS_ROWS, N_DRAWS, PROMPTS, STEPS

from _reference import assert_canonical_logprobs, canonical_steps, hf_greedy

ALPHA = 1e-3


def _tokenize(folders, prompts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folders["served"]))
    return [tok(p)["input_ids"] for p in prompts]


def test_greedy_equals_hf_greedy(engine_a, folders, hf_model):
    ids = _tokenize(folders, PROMPTS)
    for prompt_ids, row in zip(ids, engine_a[0]):
        assert row["prompt_token_ids"] == prompt_ids
        assert row["token_ids"] == hf_greedy(hf_model, prompt_ids, STEPS)


def test_batch_of_prompts_of_different_lengths(engine_a, folders):
    lengths = {len(row["prompt_token_ids"]) for row in engine_a[1]}
    assert len(lengths) == len(PROMPTS)  # really different lengths, batched in one call
    assert all(len(row["token_ids"]) == STEPS for row in engine_a[1])


def _check_logprobs(rows, hf_model, heads, policies):
    checked = 0
    T_seen = []
    for row, policy in zip(rows, policies):
        steps = canonical_steps(hf_model, heads, policy, row["prompt_token_ids"], row["token_ids"])
        for s, tok in enumerate(row["token_ids"]):
            probs, T, P = steps[s]
            T_seen.append(T)
            assert_canonical_logprobs(row["logprobs"][s], probs, tok, f"step {s}")
            checked += 1
    assert checked == len(PROMPTS) * STEPS
    return T_seen


def test_returned_logprobs_are_canonical(engine_a, hf_model, heads, policy):
    """Along each sampled path (a batch of 4 prompts of different lengths), vLLM's returned
    logprobs equal the canonical log-probabilities at every step, over the whole vocabulary;
    tokens outside the nucleus get (practically) minus infinity."""
    T_seen = _check_logprobs(engine_a[1], hf_model, heads, [policy] * len(PROMPTS))
    # vLLM's request temperature is bounded to [0, 2]; AutoDeco's T never passes through it
    assert max(T_seen) > 1.0 and min(T_seen) < 1.0, (min(T_seen), max(T_seen))


def _g_test(draws, probs):
    from _hf_util import g_test_pvalue

    counts = np.bincount(np.asarray(draws), minlength=probs.size)
    assert counts[probs == 0].sum() == 0, f"draws outside the support: {np.nonzero(counts * (probs == 0))[0]}"
    return g_test_pvalue(counts, probs)


def test_sampled_tokens_follow_canonical_distribution(engine_a, folders, hf_model, heads, policy):
    rows = engine_a[2]
    for part, prompt in ((rows[:N_DRAWS], DRAW_PROMPTS[0]), (rows[N_DRAWS:], DRAW_PROMPTS[1])):
        ids = part[0]["prompt_token_ids"]
        probs = canonical_steps(hf_model, heads, policy, ids, [])[0][0]
        draws = [r["token_ids"][0] for r in part]
        assert (probs > 0).sum() >= 3, "test precondition: a nucleus with several tokens"
        p = _g_test(draws, probs)
        assert p > ALPHA, f"{prompt!r}: G-test p = {p:.3g}"


def _restrict(logits_scaled, support):
    z = np.where(support, logits_scaled, -np.inf)
    z = z - z[support].max()
    e = np.where(support, np.exp(z), 0.0)
    return e / e.sum()


def test_request_temperature_divides_autodeco_logits(engine_a, hf_model, heads, policy):
    """Documented knob rule: a request temperature ``t`` divides the AutoDeco logits, so the
    tokens of the AutoDeco nucleus (chosen at the heads' T, P) get ``exp((l - max l) / (T t))``."""
    ids = engine_a[3][0]["prompt_token_ids"]
    probs, T, P = canonical_steps(hf_model, heads, policy, ids, [])[0]
    import torch

    with torch.no_grad():
        logits = hf_model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy()
    expected = _restrict((logits - logits.max()) / (T * 0.5), probs > 0)
    assert (probs > 0).sum() >= 3 and np.abs(expected - probs).sum() > 0.1, "test precondition: t=0.5 matters"
    p = _g_test([r["token_ids"][0] for r in engine_a[3]], expected)
    assert p > ALPHA, f"G-test p = {p:.3g}"


def test_request_top_p_filters_autodeco_distribution(engine_a, hf_model, heads, policy):
    """Documented knob rule: a request top_p ``p`` is vLLM's own top-p applied to the canonical
    distribution (the smallest top set of mass >= p is kept, then renormalised)."""
    ids = engine_a[4][0]["prompt_token_ids"]
    probs = canonical_steps(hf_model, heads, policy, ids, [])[0][0]
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    keep = np.zeros(probs.size, bool)
    keep[order[before < 0.5]] = True
    expected = np.where(keep, probs, 0.0)
    expected /= expected.sum()
    assert keep.sum() >= 2, "test precondition: top_p 0.5 keeps several tokens"
    p = _g_test([r["token_ids"][0] for r in engine_a[4]], expected)
    assert p > ALPHA, f"G-test p = {p:.3g}"


def _with_knobs(policy, knobs):
    knobs = knobs or {}
    return policy.for_request(knobs.get("autodeco_temperature"), knobs.get("autodeco_top_p"))


def test_autodeco_multipliers_per_row_in_one_batch(engine_a, hf_model, heads, policy):
    """Four requests batched together, each with its own ``extra_args`` multipliers (none,
    temperature 0.5, top_p 0.5, temperature 0): every row's logprobs are the canonical ones
    under the official rule with that row's multipliers."""
    policies = [_with_knobs(policy, k) for k in KNOBS_ROWS]
    _check_logprobs(engine_a[6], hf_model, heads, policies)
    greedy = engine_a[6][3]
    assert all(max(step.values()) == 0.0 for step in greedy["logprobs"])  # one token, probability 1


def test_autodeco_multipliers_draws(engine_a, hf_model, heads, policy):
    ids = engine_a[5][0]["prompt_token_ids"]
    probs = canonical_steps(hf_model, heads, _with_knobs(policy, KNOBS_DRAW), ids, [])[0][0]
    base = canonical_steps(hf_model, heads, policy, ids, [])[0][0]
    assert (probs > 0).sum() >= 2 and np.abs(probs - base).sum() > 0.1, "test precondition: the knobs matter"
    p = _g_test([r["token_ids"][0] for r in engine_a[5]], probs)
    assert p > ALPHA, f"G-test p = {p:.3g}"
