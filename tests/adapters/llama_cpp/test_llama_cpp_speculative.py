"""Speculative decoding in the llama.cpp adapter (``AutoDecoLlama.stream(..., speculative=...)``).

Real llama.cpp on the seeded tiny GGUF (no mocks). The expected distributions never use
speculation: each prefix is decoded afresh by the plain adapter (a one-token generation whose
``on_step`` record holds that position's hidden state and logits), the NumPy heads read them, and
:func:`autodeco_samplers.core.reference.next_token_distribution` gives the distribution; the joint
of the first two tokens is the product along each path. One llama.cpp thread: on a busy
2-core machine a second spinning thread makes every decode 100x slower.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from _hf_util import joint_g_pvalue
from _llama_util import assets, step_after

from autodeco_samplers import DecodingPolicy, load_heads
from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama, SpeculativeConfig, load_llama
from autodeco_samplers.adapters.llama_cpp import decode as decode_mod
from autodeco_samplers.adapters.llama_cpp import speculative as spec_mod
from autodeco_samplers.core.errors import InvalidParameterError
from autodeco_samplers.core.reference import next_token_distribution
from autodeco_samplers.core.speculative import Verdict

# a deployment policy with a clamp, and request multipliers (the nucleus stays small: P x 0.72)
POLICY = DecodingPolicy(temperature=0.9, top_p=0.8, max_temperature=0.5)
REQUEST = dict(temperature=0.9, top_p=0.9)
N_RUNS = 1500
REPEAT_PROMPT = "a b c d a b c d a b c d a b"


def _llm(kind: str = "gguf_f32"):
    return load_llama(assets()[kind], n_ctx=256, f32_kv_cache=True, n_threads=1)


@pytest.fixture(scope="module")
def gen():
    return AutoDecoLlama(_llm(), load_heads(assets()["heads_gguf"]), policy=POLICY, seed=0)


@pytest.fixture(scope="module")
def draft_llm():
    """The same network with f16 weights: its plain softmax is near the target's logits' softmax
    but not AutoDeco's distribution, so its drafts are accepted often and rejected sometimes."""
    return _llm("gguf_f16")


@pytest.fixture(scope="module")
def cyclic_prompt(gen):
    """The repeating prompt followed by its own greedy continuation (which ends in a cycle), so
    that sampled runs with prompt lookup get drafts accepted as well as rejected."""
    prompt = gen.tokenize(REPEAT_PROMPT)
    return prompt + gen.generate(prompt, max_new_tokens=64, temperature=0).token_ids


def _fresh(gen, prefix):
    """``(hidden, logits)`` copies after decoding ``prefix`` afresh with the plain adapter."""
    rec = step_after(gen, prefix)
    return rec.hidden, rec.logits


def _canonical(gen, prefix, policy):
    """The reference next-token distribution ``[V]`` after ``prefix`` and the (T_pred, P_pred, T, P) used."""
    hidden, logits = _fresh(gen, prefix)
    T_pred, P_pred = gen.heads.predict(hidden[None], logits[None])
    T, P = policy.apply(T_pred.astype(np.float64), P_pred.astype(np.float64))
    return next_token_distribution(logits.astype(np.float64), float(T[0]), float(P[0])), (T_pred[0], P_pred[0], T[0], P[0])


def _exact_joint(gen, prompt, policy):
    """``{(x1, x2): probability}`` of the first two tokens of plain AutoDeco sampling."""
    p1, _ = _canonical(gen, prompt, policy)
    joint = {}
    for x in np.flatnonzero(p1 > 0):
        p2, _ = _canonical(gen, prompt + [int(x)], policy)
        for y in np.flatnonzero(p2 > 0):
            joint[(int(x), int(y))] = float(p1[x] * p2[y])
    return joint


@pytest.fixture(scope="module")
def lookup_case(gen):
    """A prompt whose prompt-lookup draft has canonical probability in [0.3, 0.7] (accepted on
    some runs, rejected on others) and whose two-token joint has 6 to 40 cells. The prompt ends
    in a token ``a`` that occurred once before, followed by ``d``: the draft is ``d``, taken
    from the nucleus after ``base + [a]`` and kept if it stays plausible once placed after ``a``."""
    policy = POLICY.for_request(**REQUEST)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        base = [int(t) for t in rng.integers(10, gen.n_vocab, size=8)]
        a = base[2]
        if a in base[3:]:
            continue
        p0, _ = _canonical(gen, base + [a], policy)
        for d in np.flatnonzero(p0 > 0).tolist():
            prompt = base[:3] + [d] + base[4:] + [a]
            if d == a or spec_mod.prompt_lookup_drafts(prompt, 1) != [d]:
                continue
            p1, _ = _canonical(gen, prompt, policy)
            if 0.3 <= p1[d] <= 0.7:
                joint = _exact_joint(gen, prompt, policy)
                if 6 <= len(joint) <= 40:
                    return prompt, d, float(p1[d]), joint
    raise AssertionError("test setup: no prompt with a plausible draft and a joint support of 6 to 40 pairs")


def _sample_pairs(gen, prompt, n_runs, config):
    pairs, drafted, accepted = [], 0, 0
    for seed in range(n_runs):
        res = gen.generate(prompt, max_new_tokens=2, seed=seed, stop_at_eos=False, speculative=config, **REQUEST)
        pairs.append(tuple(res.token_ids))
        drafted += gen.last_speculation.drafted
        accepted += gen.last_speculation.accepted
    return pairs, accepted / max(drafted, 1)


def test_prompt_lookup_sampling_follows_the_canonical_joint_distribution(gen, lookup_case):
    prompt, _, p_draft, joint = lookup_case
    pairs, rate = _sample_pairs(gen, prompt, N_RUNS, SpeculativeConfig(num_draft_tokens=2, min_ngram=1))
    # one draft per run (max_new_tokens=2 leaves room for one); accepted with probability p(draft)
    assert 0.1 < rate < 0.9, f"test setup: the draft should be accepted sometimes, got {rate}"
    assert abs(rate - p_draft) < 0.05
    assert joint_g_pvalue(pairs, joint) > 1e-3


def test_draft_model_sampling_follows_the_canonical_joint_distribution(gen, draft_llm, lookup_case):
    prompt, _, _, joint = lookup_case
    pairs, rate = _sample_pairs(gen, prompt, N_RUNS, SpeculativeConfig(num_draft_tokens=2, draft_model=draft_llm))
    assert 0.05 < rate < 0.95, f"test setup: drafts should be accepted sometimes, got {rate}"
    assert joint_g_pvalue(pairs, joint) > 1e-3


@pytest.mark.parametrize("drafter", ["lookup", "draft_model"])
def test_a_wrong_acceptance_rule_fails_the_same_test(gen, draft_llm, lookup_case, monkeypatch, drafter):
    """Accept every draft whatever the target says: the same G test must reject it, so it can
    tell an exact rule from a wrong one."""
    prompt, _, _, joint = lookup_case

    def accept_all(targets, drafts, rng, draft_rows=None):
        ids, probs = targets[len(drafts)]
        bonus = int(ids[np.searchsorted(np.cumsum(probs), rng.random() * probs.sum(), side="right").clip(max=len(ids) - 1)])
        return Verdict([int(d) for d in drafts] + [bonus], len(drafts))

    monkeypatch.setattr(decode_mod, "verify_drafts", accept_all)
    config = SpeculativeConfig(num_draft_tokens=2, min_ngram=1, draft_model=draft_llm if drafter == "draft_model" else None)
    pairs, rate = _sample_pairs(gen, prompt, 400, config)
    assert rate == 1.0
    assert joint_g_pvalue(pairs, joint) < 1e-3


def _assert_same_result(fast, plain):
    """Same tokens, text and finish reason; per-token records equal up to float noise (a batched
    decode of several positions and one-token decodes round differently)."""
    assert fast.token_ids == plain.token_ids and fast.text == plain.text
    assert fast.finish_reason == plain.finish_reason
    assert len(fast.steps) == len(plain.steps)
    for a, b in zip(fast.steps, plain.steps):
        assert a.token_id == b.token_id and a.T == pytest.approx(b.T, rel=1e-5, abs=1e-6)
        assert a.T_pred == pytest.approx(b.T_pred, rel=1e-5, abs=1e-6)
        assert a.P_pred == pytest.approx(b.P_pred, rel=1e-5, abs=1e-6)
        assert a.P == pytest.approx(b.P, rel=1e-5, abs=1e-6)


def _greedy(gen, prompt, **kwargs):
    return gen.generate(prompt, max_new_tokens=64, temperature=0, **kwargs)


@pytest.mark.parametrize(
    "config",
    [
        SpeculativeConfig(num_draft_tokens=3, min_ngram=1),
        SpeculativeConfig(num_draft_tokens=5, max_ngram=2, min_ngram=2),
        "draft_model_greedy",
        "draft_model_sampled",
        "draft_model_path",
    ],
    ids=["lookup-k3", "lookup-k5-bigram", "draft-model-argmax", "draft-model-sampled", "draft-model-gguf-path"],
)
def test_greedy_with_speculation_equals_greedy_without(gen, draft_llm, config):
    if config == "draft_model_greedy":
        config = SpeculativeConfig(num_draft_tokens=4, draft_model=draft_llm, draft_temperature=0.0)
    elif config == "draft_model_sampled":
        config = SpeculativeConfig(num_draft_tokens=4, draft_model=draft_llm)
    elif config == "draft_model_path":  # opened once by the adapter, with the target's n_ctx and threads
        config = SpeculativeConfig(num_draft_tokens=4, draft_model=assets()["gguf_f16"], draft_temperature=0.0)
    plain = _greedy(gen, REPEAT_PROMPT)
    fast = _greedy(gen, REPEAT_PROMPT, speculative=config)
    stats = gen.last_speculation
    # one record per emitted token, from the position that produced it
    _assert_same_result(fast, plain)
    assert fast.finish_reason == "length" and all(s.T == 0.0 for s in fast.steps)
    assert stats.accepted > 0, "test setup: some drafts must be accepted"
    assert stats.rounds < len(plain.token_ids) and stats.emitted == len(plain.token_ids)


def test_greedy_exact_path_and_streaming(gen):
    config = SpeculativeConfig(num_draft_tokens=3)  # the default min_ngram=2
    plain = _greedy(gen, REPEAT_PROMPT)
    exact = AutoDecoLlama(gen.llm, gen.heads, policy=POLICY, exact=True)  # reference full sort per position
    assert _greedy(exact, REPEAT_PROMPT, speculative=config).token_ids == plain.token_ids
    stream = gen.stream(REPEAT_PROMPT, max_new_tokens=64, temperature=0, speculative=config)
    items = list(stream)
    assert [i.token_id for i in items] == plain.token_ids and [i.index for i in items] == list(range(64))
    assert "".join(i.released for i in items) == stream.result.text == plain.text
    assert stream.speculation is gen.last_speculation and stream.speculation.accepted > 0


def _dropped(stats) -> int:
    """Tokens the verifications produced but the loop did not emit (after EOS / a stop string)."""
    return sum(a + 1 for a in stats.accepted_per_round) - stats.emitted


def test_limits_and_stop_strings_end_inside_accepted_blocks_as_without(gen):
    config = SpeculativeConfig(num_draft_tokens=4, min_ngram=1)
    plain = _greedy(gen, REPEAT_PROMPT)
    for n in (0, 1, 2, 5, 17, 33, 63):
        res = gen.generate(REPEAT_PROMPT, max_new_tokens=n, temperature=0, speculative=config)
        assert res.token_ids == plain.token_ids[:n] and res.finish_reason == "length"
        assert len(res.steps) == n
    text = plain.text
    dropped = 0
    for start in range(len(text) // 2, len(text) - 2, 3):
        stop = text[start : start + 2]
        ref_stream = gen.stream(REPEAT_PROMPT, max_new_tokens=64, temperature=0, stop=stop)
        ref_items = list(ref_stream)
        stream = gen.stream(REPEAT_PROMPT, max_new_tokens=64, temperature=0, stop=stop, speculative=config)
        items = list(stream)
        _assert_same_result(stream.result, ref_stream.result)
        assert [i.released for i in items] == [i.released for i in ref_items]
        assert stream.result.finish_reason == "stop"
        dropped += _dropped(stream.speculation)
    assert dropped > 0, "test setup: some stop string should end a generation inside an accepted block"


def test_eos_inside_an_accepted_block_ends_as_without(gen, draft_llm, tmp_path):
    """The same network converted with an EOS chosen where the speculative run emits a token
    that is not the last of its verification: the tokens after it are not emitted. (Drafts of
    a draft model: prompt lookup only re-proposes tokens already seen, never a first EOS.)"""
    from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf

    config = SpeculativeConfig(num_draft_tokens=4, draft_model=draft_llm, draft_temperature=0.0)
    plain = _greedy(gen, REPEAT_PROMPT)
    _greedy(gen, REPEAT_PROMPT, speculative=config)
    ends, pos = set(), 0
    for a in gen.last_speculation.accepted_per_round:
        pos += a + 1
        ends.add(pos - 1)
    toks = plain.token_ids
    eos = next(t for i, t in enumerate(toks) if i not in ends and t not in toks[:i] and i > 3)
    folder = tmp_path / "model"
    shutil.copytree(assets()["model_dir"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["eos_token_id"] = eos
    (folder / "config.json").write_text(json.dumps(cfg))
    path = convert_llama_to_gguf(folder, tmp_path / "eos.gguf")
    g2 = AutoDecoLlama(load_llama(path, n_ctx=256, f32_kv_cache=True, n_threads=1), gen.heads, policy=POLICY)
    ref = _greedy(g2, REPEAT_PROMPT)
    res = _greedy(g2, REPEAT_PROMPT, speculative=config)
    assert ref.finish_reason == res.finish_reason == "eos"
    _assert_same_result(res, ref)
    assert res.token_ids == toks[: toks.index(eos) + 1]
    assert _dropped(g2.last_speculation) > 0


def test_full_context_ends_with_length_as_without(gen):
    n_ctx = gen.llm.n_ctx()
    prompt = [10 + i % 7 for i in range(n_ctx - 9)]  # repeats, so drafts reach the end of the context
    config = SpeculativeConfig(num_draft_tokens=4, min_ngram=1)
    for kwargs in ({"temperature": 0}, {"seed": 3}):
        res = gen.generate(prompt, max_new_tokens=100, stop_at_eos=False, speculative=config, **kwargs)
        assert res.finish_reason == "length" and len(res.token_ids) == n_ctx - len(prompt) + 1
        assert gen.last_speculation.drafted > 0
        if "temperature" in kwargs:
            plain = gen.generate(prompt, max_new_tokens=100, stop_at_eos=False, **kwargs)
            assert res.token_ids == plain.token_ids


def test_after_a_rejection_the_cache_continues_as_a_fresh_decode(gen, cyclic_prompt, monkeypatch):
    """Every verified position's logits and hidden state (recorded in the speculative loop)
    equal a fresh plain decode of that position's prefix, in rounds that follow rejections too:
    the rejected drafts were removed from the cache and the next block sits at the right place."""
    rounds = []
    real_steps = decode_mod.position_steps

    def steps(g, outputs, policy, drafts, rng, draft_rows):
        out = real_steps(g, outputs, policy, drafts, rng, draft_rows)
        rounds.append({"hidden": [h.copy() for h, _ in outputs], "logits": [l.copy() for _, l in outputs],
                       "drafts": list(drafts), "verdict": Verdict(out[1], out[2])})
        return out

    monkeypatch.setattr(decode_mod, "position_steps", steps)
    prompt = cyclic_prompt
    res = gen.generate(prompt, max_new_tokens=32, seed=0, stop_at_eos=False,
                       speculative=SpeculativeConfig(num_draft_tokens=4, min_ngram=1), **REQUEST)
    monkeypatch.undo()
    rejected = [i for i, r in enumerate(rounds[:-1]) if r["verdict"].n_accepted < len(r["drafts"])]
    assert rejected, "test setup: some draft must be rejected before the last round"
    assert any(r["verdict"].n_accepted > 0 for r in rounds), "test setup: some draft must be accepted"
    prefix, emitted = list(prompt), []
    for r in rounds:
        for i in range(len(r["drafts"]) + 1):
            hidden, logits = _fresh(gen, prefix + r["drafts"][:i])
            np.testing.assert_allclose(r["logits"][i], logits, rtol=0, atol=1e-4 * np.abs(logits).max())
            np.testing.assert_allclose(r["hidden"][i], hidden, rtol=0, atol=1e-4 * np.abs(hidden).max())
        prefix += r["verdict"].tokens
        emitted += r["verdict"].tokens
    assert emitted[: len(res.token_ids)] == res.token_ids


def test_multipliers_and_clamps_act_the_same_with_and_without_speculation(gen, draft_llm, cyclic_prompt):
    """Sampled speculative traces: every emitted token's (T_pred, P_pred, T, P) is what the plain
    adapter computes for that token's prefix (so the request multipliers and the clamp apply per
    position), and the max_temperature clamp binds somewhere."""
    policy = POLICY.for_request(**REQUEST)
    prompt = cyclic_prompt
    for config in (SpeculativeConfig(num_draft_tokens=3, min_ngram=1), SpeculativeConfig(num_draft_tokens=3, draft_model=draft_llm)):
        res = gen.generate(prompt, max_new_tokens=32, seed=0, stop_at_eos=False, speculative=config, **REQUEST)
        assert gen.last_speculation.accepted > 0
        clamped = False
        for j, step in enumerate(res.steps):
            _, (T_pred, P_pred, T, P) = _canonical(gen, prompt + res.token_ids[:j], policy)
            got = (step.T_pred, step.P_pred, step.T, step.P)
            np.testing.assert_allclose(got, (T_pred, P_pred, T, P), rtol=1e-5, atol=1e-6)
            if T_pred > POLICY.max_temperature:
                clamped = True
                assert step.T == pytest.approx(POLICY.max_temperature * policy.temperature)
        assert clamped, "test setup: the max_temperature clamp should bind"


def test_bad_configurations_are_refused(gen, tmp_path):
    from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf
    from autodeco_samplers.models.tiny_models import save_tiny_model

    for kwargs in ({"num_draft_tokens": 0}, {"min_ngram": 0}, {"min_ngram": 3, "max_ngram": 2},
                   {"draft_temperature": -1.0}):
        with pytest.raises(InvalidParameterError):
            SpeculativeConfig(**kwargs)
    with pytest.raises(InvalidParameterError, match="SpeculativeConfig"):
        gen.stream("a b", speculative={"num_draft_tokens": 2})
    with pytest.raises(InvalidParameterError, match="separate"):
        gen.generate("a b", max_new_tokens=2, speculative=SpeculativeConfig(draft_model=gen.llm))
    other = convert_llama_to_gguf(save_tiny_model(tmp_path / "v300", "llama", seed=0, vocab_size=300, hidden_size=64),
                                  tmp_path / "v300.gguf")
    with pytest.raises(InvalidParameterError, match="same vocabulary"):
        gen.generate("a b", max_new_tokens=2, speculative=SpeculativeConfig(draft_model=other))
