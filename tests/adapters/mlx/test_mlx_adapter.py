"""The MLX adapter on real mlx-lm (MLX's CPU build here), checked against transformers + reference.

The reference side never uses the adapter: the token path mlx-lm generated is fed through the
transformers model built from the same seeded folder (teacher forcing), the NumPy heads
predict (T, P) from *those* hidden states and logits, and
:func:`autodeco_samplers.core.reference.next_token_distribution` gives the distribution.
"""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from _hf_util import assert_same_distribution, g_test_pvalue

from autodeco_samplers import DecodingPolicy, load_heads
from autodeco_samplers.adapters.mlx import attach, generate
from autodeco_samplers.adapters.mlx.sampler import AutoDecoSampler
from autodeco_samplers.conformance.engines import ConformanceEngine
from autodeco_samplers.conformance.engines.mlx import MLXEngine
from autodeco_samplers.conformance.runner import run_engine
from autodeco_samplers.core.errors import InvalidParameterError, ShapeError
from autodeco_samplers.core.reference import next_token_distribution

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

    root = tmp_path_factory.mktemp("mlx")
    model_dir = save_tiny_model(root / "model", "llama", seed=0)
    heads_dir = save_tiny_heads(root / "heads", 64, seed=1)
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt_ids = AutoTokenizer.from_pretrained(model_dir).encode(PROMPT)
    return dict(root=root, model_dir=model_dir, heads_dir=heads_dir, heads=load_heads(heads_dir), hf=hf,
                prompt_ids=prompt_ids)


@pytest.fixture()
def loaded(tiny):
    model, tokenizer = mlx_lm.load(str(tiny["model_dir"]))
    return model, tokenizer


def hf_forward(tiny, ids):
    with torch.no_grad():
        out = tiny["hf"](torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[-1][0].numpy(), out.logits[0].numpy()


def record(model, tokenizer, heads, tiny, steps=12, seed=0, **kwargs):
    recs = []
    autodeco = attach(model, heads, seed=seed, on_step=lambda h, lp, st: recs.append((h.copy(), lp.copy(), st)), **kwargs)
    result = generate(autodeco, tokenizer, tiny["prompt_ids"], max_tokens=steps, seed=seed, stop_at_eos=False)
    return autodeco, result, recs[: len(result.token_ids)]


def test_each_step_is_the_reference_on_the_transformers_forward(tiny, loaded):
    model, tokenizer = loaded
    autodeco, result, recs = record(model, tokenizer, tiny["heads"], tiny, steps=16)
    assert len(result.token_ids) == 16 and result.engine == "mlx" and result.finish_reason == "length"
    hidden, logits = hf_forward(tiny, tiny["prompt_ids"] + result.token_ids)
    P0 = len(tiny["prompt_ids"])
    for s, (h, lp, st) in enumerate(recs):
        # the tap kept the post-norm hidden state of the scored position
        np.testing.assert_allclose(h[0], hidden[P0 + s - 1], rtol=1e-4, atol=1e-4)
        T_ref, P_ref = tiny["heads"].predict(hidden[P0 + s - 1][None], logits[P0 + s - 1][None])
        np.testing.assert_allclose(st.T_pred, T_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(st.P_pred, P_ref, rtol=1e-4, atol=1e-5)
        ref = next_token_distribution(logits[P0 + s - 1][None], st.T, st.P)[0]
        assert_same_distribution(st.dense(lp.shape[1])[0], ref, logits[P0 + s - 1], float(st.T[0]), float(st.P[0]))
        step = result.steps[s]
        assert step.token_id == result.token_ids[s] == int(st.token_ids[0])
        assert (step.T_pred, step.P_pred, step.T, step.P) == (float(st.T_pred[0]), float(st.P_pred[0]), float(st.T[0]), float(st.P[0]))
    autodeco.detach()


def test_the_tap_changes_no_output_and_detach_restores_the_class(tiny, loaded):
    model, _ = loaded
    ids = mx.array([tiny["prompt_ids"]])
    before = np.array(model(ids))
    cls = type(model.model)
    autodeco = attach(model, tiny["heads"])
    assert type(model.model) is not cls and isinstance(model.model, cls)
    after = np.array(model(ids))
    assert np.array_equal(before, after)
    assert autodeco.tap.hidden.shape == (1, 64)
    # the row kept is the last position's post-norm hidden state (a multi-token call)
    hidden, _ = hf_forward(tiny, tiny["prompt_ids"])
    np.testing.assert_allclose(np.array(autodeco.tap.hidden)[0], hidden[-1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ShapeError, match="already has an AutoDeco tap"):
        attach(model, tiny["heads"])
    autodeco.detach()
    assert type(model.model) is cls


def test_mlx_lm_generate_with_the_sampler_is_seeded_and_traced(tiny, loaded):
    model, tokenizer = loaded
    autodeco = attach(model, tiny["heads"], seed=3)
    a = mlx_lm.generate(model, tokenizer, PROMPT, max_tokens=10, sampler=autodeco.sampler)
    trace_a = list(autodeco.trace)
    autodeco.reset(3)
    b = mlx_lm.generate(model, tokenizer, PROMPT, max_tokens=10, sampler=autodeco.sampler)
    assert a == b and autodeco.trace == trace_a
    assert len(trace_a) >= 10  # one draw ahead of what mlx-lm yields
    result = generate(autodeco, tokenizer, PROMPT, max_tokens=10, seed=3, stop_at_eos=False)
    assert [s.token_id for s in trace_a[:10]] == result.token_ids
    autodeco.detach()


def test_request_multipliers_and_policy(tiny, loaded):
    model, tokenizer = loaded
    base, _, recs = record(model, tokenizer, tiny["heads"], tiny, steps=6)
    base.detach()
    half, _, recs_half = record(model, tokenizer, tiny["heads"], tiny, steps=6, top_p=0.5)
    half.detach()
    # the same first hidden state, so the same prediction; P is the product with the multiplier
    np.testing.assert_allclose(recs_half[0][2].P, np.minimum(recs[0][2].P_pred * 0.5, 1.0), rtol=1e-6)
    greedy, result, recs_g = record(model, tokenizer, tiny["heads"], tiny, steps=8, temperature=0.0)
    greedy.detach()
    for (h, lp, st), tok in zip(recs_g, result.token_ids):
        assert float(st.T[0]) == 0.0 and tok == int(np.argmax(lp[0]))
    capped, _, recs_c = record(model, tokenizer, tiny["heads"], tiny, steps=6, policy=DecodingPolicy(max_temperature=0.05))
    capped.detach()
    assert all(float(st.T[0]) <= 0.05 + 1e-7 for _, _, st in recs_c)


def test_bad_input_is_refused_with_a_clear_error(tiny, loaded, tmp_path):
    model, _ = loaded
    from autodeco_samplers.models.tiny_models import save_tiny_heads

    with pytest.raises(ShapeError, match="hidden_size=64"):
        attach(model, save_tiny_heads(tmp_path / "h48", 48, seed=0))
    with pytest.raises(InvalidParameterError, match="temperature"):
        attach(model, tiny["heads"], temperature=-1.0)
    with pytest.raises(InvalidParameterError, match="heads must be"):
        attach(model, object())
    assert type(model.model).__name__ == "LlamaModel"  # nothing was tapped on failure


def test_draws_follow_the_canonical_distribution(tiny):
    """G-test of 4000 seeded draws of the sampler on one step against the reference."""
    rng = np.random.default_rng(7)
    h = rng.standard_normal((1, 64)).astype(np.float32)
    lg = (rng.standard_normal((1, 40)) * 2).astype(np.float32)
    heads = tiny["heads"]
    T, P = heads.predict(h, lg)
    probs = next_token_distribution(lg, T, P)[0]

    class Row:
        hidden = mx.array(h)

    sampler = AutoDecoSampler(Row(), heads, DecodingPolicy(), seed=11)
    row = mx.array(lg)
    draws = np.array([int(sampler(row)[0]) for _ in range(4000)])
    assert set(draws) <= set(np.flatnonzero(probs > 0))
    assert g_test_pvalue(np.bincount(draws, minlength=40), probs) > 1e-3


def test_the_conformance_engine_passes_every_level():
    results = run_engine(MLXEngine(), ("kernel", "sampling", "end-to-end"), examples=25)
    assert {r.level: r.verdict for r in results} == {"kernel": "pass", "sampling": "pass", "end-to-end": "pass"}, results
    assert MLXEngine().supports("end-to-end") and isinstance(MLXEngine(), ConformanceEngine)


def test_load_passes_the_rope_theta_mlx_lm_misreads(tmp_path):
    """transformers 5 writes ``rope_parameters``; mlx-lm 0.32 alone falls back to rope_theta
    10000 (a different model), :func:`load` passes the folder's own value."""
    import json

    from transformers import AutoModelForCausalLM

    from autodeco_samplers.adapters.mlx import load, rope_overrides
    from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

    folder = save_tiny_model(tmp_path / "model", "llama", seed=2)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] = 100000.0  # SmolLM2's value
    (folder / "config.json").write_text(json.dumps(config))
    assert "rope_theta" not in config and config["rope_parameters"]["rope_theta"] == 100000.0
    assert rope_overrides(folder) == {"rope_theta": 100000.0}
    ids = list(range(3, 40))
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(folder).eval()(torch.tensor([ids])).logits[0].numpy()
    plain, _ = mlx_lm.load(str(folder))
    model, _, autodeco = load(folder, save_tiny_heads(tmp_path / "heads", 64, seed=0))
    assert not np.allclose(np.array(plain(mx.array([ids])))[0], ref, atol=1e-3)
    np.testing.assert_allclose(np.array(model(mx.array([ids])))[0], ref, rtol=1e-4, atol=1e-4)
    autodeco.detach()
