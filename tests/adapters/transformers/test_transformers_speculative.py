"""Speculative decoding (assistant model, prompt lookup) with AutoDeco heads in transformers.

The expected distributions are enumerated independently of the adapter: teacher-forced
forwards of every prefix, the NumPy heads and :func:`autodeco_samplers.core.reference.next_token_distribution`
(``_hf_util``). The generated side is an ordinary ``model.generate(..., assistant_model=...)``
or ``prompt_lookup_num_tokens=...`` call, seeded per run.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _hf_util import joint_g_pvalue, reference_steps

from autodeco_samplers import load_heads
from autodeco_samplers.core.errors import AutoDecoError
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.models.tiny_models import build_tiny_model, build_tokenizer, save_tiny_heads
from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach

VOCAB = 256
HIDDEN = 64
# a deployment policy and request multipliers that are not the defaults (the nucleus stays small)
POLICY = DecodingPolicy(temperature=0.9, top_p=0.8, max_temperature=1.2)
REQUEST = dict(temperature=0.8, top_p=0.75)
N_RUNS = 1200


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(VOCAB)


@pytest.fixture(scope="module")
def heads_dir(tmp_path_factory):
    return save_tiny_heads(tmp_path_factory.mktemp("heads"), HIDDEN, seed=3)


@pytest.fixture(scope="module")
def model(tok, heads_dir):
    m = build_tiny_model("llama", seed=0, tokenizer=tok)
    attach(m, heads_dir, policy=POLICY)
    return m


@pytest.fixture(scope="module")
def assistant(tok):
    """A separate model with the target's weights: its plain softmax is close to, not equal to,
    the canonical distribution, so its drafts are accepted often and rejected sometimes."""
    return build_tiny_model("llama", seed=0, tokenizer=tok)


def _ones(ids):
    return torch.ones_like(ids)


def _canonical(model, heads, policy, rows, ban):
    """Canonical next-token distributions ``[len(rows), V]`` after each (equal-length) prefix."""
    seqs = torch.tensor(rows, dtype=torch.long)
    ref = reference_steps(model, heads, policy, seqs, _ones(seqs), seqs.shape[1], 1, ban=ban)
    return ref[0][0]


def _exact_joint(model, heads, policy, prompt, ban):
    """``{(x1, x2): probability}`` of the first two tokens of plain AutoDeco sampling."""
    p1 = _canonical(model, heads, policy, [prompt], ban)[0]
    first = np.nonzero(p1 > 0)[0]
    p2 = _canonical(model, heads, policy, [prompt + [int(x)] for x in first], ban)
    return {(int(x), int(y)): float(p1[x] * p2[i, y]) for i, x in enumerate(first) for y in np.nonzero(p2[i] > 0)[0]}


def _lookup_prompts(model, heads, policy, ban):
    """Prompts whose prompt-lookup draft has a canonical probability in [0.25, 0.75], so drafts
    are accepted on some runs and rejected on others. The prompt ends in token ``a`` that
    occurred before, followed by ``d``: the draft is ``d``; ``d`` is chosen by scanning."""
    for seed in range(50):
        rng = np.random.default_rng(seed)
        base = [int(t) for t in rng.integers(10, VOCAB, size=8)]
        a = base[2]
        if a in base[4:]:
            continue
        rows = [base[:3] + [d] + base[4:] + [a] for d in range(10, VOCAB)]
        probs = _canonical(model, heads, policy, rows, ban)
        for i, d in enumerate(range(10, VOCAB)):
            if 0.25 <= probs[i, d] <= 0.75 and d != a:
                yield rows[i], d, float(probs[i, d])


def _sample_pairs(model, prompt, n_runs, **kwargs):
    ids = torch.tensor([prompt], dtype=torch.long)
    pairs = []
    for seed in range(n_runs):
        torch.manual_seed(seed)
        proc = AutoDecoLogitsProcessor(model)
        out = model.generate(input_ids=ids, attention_mask=_ones(ids), do_sample=True, max_new_tokens=2,
                             min_new_tokens=2, logits_processor=[proc], **REQUEST, **kwargs)
        pairs.append(tuple(int(t) for t in out[0, len(prompt):]))
    return pairs


@pytest.fixture(scope="module")
def lookup_case(model, tok, heads_dir):
    heads = load_heads(heads_dir)
    policy = POLICY.for_request(**REQUEST)
    ban = [tok.eos_token_id]  # min_new_tokens=2 bans EOS for both tokens
    for prompt, draft, p_draft in _lookup_prompts(model, heads, policy, ban):
        joint = _exact_joint(model, heads, policy, prompt, ban)
        if len(joint) >= 6:  # several pairs, so the G test has cells to compare
            return prompt, draft, p_draft, joint
    raise AssertionError("test setup: no prompt with a plausible draft and a joint support of 6 pairs")


@pytest.mark.slow
def test_prompt_lookup_sampling_follows_the_canonical_joint_distribution(model, lookup_case):
    prompt, draft, p_draft, joint = lookup_case
    pairs = _sample_pairs(model, prompt, N_RUNS, prompt_lookup_num_tokens=2)
    accepted = sum(p[0] == draft for p in pairs) / len(pairs)
    assert 0.1 < accepted < 0.9, f"test setup: the draft should be accepted sometimes, got {accepted}"
    assert abs(accepted - p_draft) < 0.06
    assert joint_g_pvalue(pairs, joint) > 1e-3


@pytest.mark.slow
def test_assistant_model_sampling_follows_the_canonical_joint_distribution(model, assistant, lookup_case, monkeypatch):
    from transformers.generation import utils

    prompt, _, _, joint = lookup_case
    verdicts = []
    real = utils._speculative_sampling

    def recorded(*args, **kwargs):
        tokens, n_matches = real(*args, **kwargs)
        verdicts.append((int(n_matches), int(args[2])))
        return tokens, n_matches

    monkeypatch.setattr(utils, "_speculative_sampling", recorded)
    pairs = _sample_pairs(model, prompt, N_RUNS, assistant_model=assistant)
    accepted = sum(n for n, _ in verdicts) / sum(k for _, k in verdicts)
    assert 0.1 < accepted < 0.95, f"test setup: drafts should be accepted sometimes, got {accepted}"
    assert joint_g_pvalue(pairs, joint) > 1e-3


@pytest.mark.slow
def test_a_wrong_acceptance_rule_fails_the_same_test(model, assistant, lookup_case, monkeypatch):
    """Accept every draft (the draft's own tokens, whatever the target says): the G test above
    must reject it, so it can tell an exact rule from a wrong one."""
    from transformers.generation import utils

    prompt, _, _, joint = lookup_case

    def accept_all(candidate_input_ids, candidate_logits, candidate_length, new_logits, **kw):
        drafts = candidate_input_ids[:, -candidate_length:]
        bonus = torch.multinomial(new_logits[0, candidate_length].softmax(-1), 1)[None, :]
        return torch.cat([drafts, bonus], dim=1), torch.tensor(candidate_length)

    monkeypatch.setattr(utils, "_speculative_sampling", accept_all)
    pairs = _sample_pairs(model, prompt, 300, assistant_model=assistant)
    assert joint_g_pvalue(pairs, joint) < 1e-3


def _greedy(model, ids, **kwargs):
    proc = AutoDecoLogitsProcessor(model)
    out = model.generate(input_ids=ids, attention_mask=_ones(ids), do_sample=False, max_new_tokens=24,
                         logits_processor=[proc], **kwargs)
    return out, proc.trace


@pytest.mark.parametrize("how", ["prompt_lookup", "assistant"])
def test_greedy_with_speculation_equals_greedy_without(model, assistant, tok, how):
    ids = tok(["a b c d a b c d a b c d a b"], return_tensors="pt")["input_ids"]
    kwargs = {"prompt_lookup_num_tokens": 3} if how == "prompt_lookup" else {"assistant_model": assistant}
    plain, plain_trace = _greedy(model, ids)
    fast, fast_trace = _greedy(model, ids, **kwargs)
    assert fast.tolist() == plain.tolist()
    # the trace holds one record per emitted token, from the position that emitted it
    assert fast_trace.token_ids.tolist() == plain_trace.token_ids.tolist()
    for field in ("T_pred", "P_pred", "T", "P"):
        np.testing.assert_allclose(getattr(fast_trace, field).numpy(), getattr(plain_trace, field).numpy(), atol=1e-5)


def test_multipliers_and_clamps_act_the_same_with_and_without_speculation(model, tok, heads_dir):
    """Sampled traces: at every emitted token, T and P are the policy's rule applied to the
    heads' prediction, with and without speculation, and the clamp binds somewhere."""
    ids = tok(["a b c d a b c d a b c d a b"], return_tensors="pt")["input_ids"]
    policy = POLICY.for_request(**REQUEST)
    clamped = []
    for kwargs in ({}, {"prompt_lookup_num_tokens": 3}):
        torch.manual_seed(3)
        proc = AutoDecoLogitsProcessor(model)
        model.generate(input_ids=ids, attention_mask=_ones(ids), do_sample=True, max_new_tokens=24,
                       logits_processor=[proc], **REQUEST, **kwargs)
        tr = proc.trace
        T, P = policy.apply(tr.T_pred.double().numpy(), tr.P_pred.double().numpy())
        np.testing.assert_allclose(tr.T.numpy(), T, rtol=1e-5)
        np.testing.assert_allclose(tr.P.numpy(), P, rtol=1e-5)
        clamped.append(bool((tr.T_pred.numpy() > POLICY.max_temperature).any()))
    assert all(clamped), "test setup: the max_temperature clamp should bind in both runs"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"assistant_early_exit": 1}, "assistant_early_exit"),
        ({"assistant_ensemble_weight": 0.5}, "ensemble"),
    ],
)
def test_inexact_drafting_is_refused(model, assistant, tok, kwargs, match):
    ids = tok(["a b c"], return_tensors="pt")["input_ids"]
    proc = AutoDecoLogitsProcessor(model)
    extra = {} if "assistant_early_exit" in kwargs else {"assistant_model": assistant}
    with pytest.raises(AutoDecoError, match=match):
        model.generate(input_ids=ids, do_sample=True, max_new_tokens=2, logits_processor=[proc], **kwargs, **extra)
    with pytest.raises(AutoDecoError, match="own assistant"):
        model.generate(input_ids=ids, do_sample=True, max_new_tokens=2, logits_processor=[proc], assistant_model=model)
