"""The transformers adapter on tiny seeded random models (no hub, no downloads).

The independent side (``_hf_util``) recomputes every step from a teacher-forced forward with
``output_hidden_states`` + NumPy heads + the NumPy reference; the adapter side is an ordinary
``model.generate(..., do_sample=True, logits_processor=[proc])``.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _hf_util import assert_same_distribution, ban_tokens, g_test_pvalue, reference_steps

from autodeco_samplers import load_heads
from autodeco_samplers.core.errors import AutoDecoError, CheckpointError, InvalidParameterError, ShapeError
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import next_token_distribution
from autodeco_samplers.models.tiny_models import ARCHITECTURES, build_tiny_model, build_tokenizer, save_tiny_heads
from autodeco_samplers.adapters.transformers import (
    AutoDecoLogitsProcessor,
    attach,
    detach,
    from_pretrained,
    get_attachment,
)

VOCAB = 256
HIDDEN = 64


@pytest.fixture(scope="module")
def tok():
    t = build_tokenizer(VOCAB)
    t.padding_side = "left"
    return t


@pytest.fixture(scope="module")
def heads_dir(tmp_path_factory):
    return save_tiny_heads(tmp_path_factory.mktemp("heads"), HIDDEN, seed=3)


def _model(arch, tok, heads_dir, seed=0, **kw):
    model = build_tiny_model(arch, seed=seed, tokenizer=tok, **kw)
    attach(model, heads_dir)
    return model


def _enc(tok, texts):
    return tok(texts, return_tensors="pt", padding=True)


PROMPTS = ["The quick brown", "alpha beta gamma delta epsilon", "red"]


def _check_against_reference(model, tok, heads_dir, enc, out, proc, policy, n):
    heads = load_heads(heads_dir)
    prompt_len = enc["input_ids"].shape[1]
    mask = torch.cat([enc["attention_mask"], torch.ones(out.sequences.shape[0], n, dtype=torch.long)], dim=1)
    ref = reference_steps(model, heads, policy, out.sequences, mask, prompt_len, n, ban=[tok.eos_token_id])
    tr = proc.trace
    for s, (probs, T_pred, P_pred, T_used, P_used, logits) in enumerate(ref):
        np.testing.assert_allclose(tr.T_pred[:, s].numpy(), T_pred, atol=1e-4)
        np.testing.assert_allclose(tr.P_pred[:, s].numpy(), P_pred, atol=1e-4)
        np.testing.assert_allclose(tr.T[:, s].numpy(), T_used, atol=1e-4)
        np.testing.assert_allclose(tr.P[:, s].numpy(), P_used, atol=1e-4)
        got = torch.softmax(out.scores[s].double(), dim=-1).numpy()
        for b in range(got.shape[0]):
            assert_same_distribution(got[b], probs[b], logits[b], float(T_used[b]), float(P_used[b]))
            # the drawn token lies in the canonical support
            assert probs[b, int(out.sequences[b, prompt_len + s])] > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_step_samples_the_canonical_distribution(arch, tok, heads_dir):
    model = _model(arch, tok, heads_dir)
    enc = _enc(tok, PROMPTS)
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(1)
    n = 6
    out = model.generate(
        **enc, do_sample=True, max_new_tokens=n, min_new_tokens=n, logits_processor=[proc],
        output_scores=True, return_dict_in_generate=True,
    )
    assert proc.trace.token_ids.shape == (3, n)
    assert torch.equal(proc.trace.token_ids, out.sequences[:, -n:])
    _check_against_reference(model, tok, heads_dir, enc, out, proc, DecodingPolicy(), n)


@pytest.mark.slow
def test_compiled_attachment_samples_the_canonical_distribution(tok, heads_dir, monkeypatch):
    """``attach(..., compiled=True)``: every step runs the compiled step (torch.compile); the
    scores are the canonical distribution and the seeded tokens equal the eager attachment's."""
    from autodeco_samplers.core import step as step_module

    real, calls = step_module.compiled_step, []
    monkeypatch.setattr(step_module, "compiled_step", lambda kind: calls.append(kind) or real(kind))
    runs = {}
    for compiled in (False, True):
        model = build_tiny_model("llama", seed=0, tokenizer=tok)
        attach(model, heads_dir, compiled=compiled)
        enc = _enc(tok, PROMPTS)
        proc = AutoDecoLogitsProcessor(model)
        torch.manual_seed(1)
        out = model.generate(**enc, do_sample=True, max_new_tokens=4, min_new_tokens=4, logits_processor=[proc],
                             output_scores=True, return_dict_in_generate=True)
        runs[compiled] = out.sequences
    _check_against_reference(model, tok, heads_dir, enc, out, proc, DecodingPolicy(), 4)
    assert torch.equal(runs[True], runs[False])
    assert calls == ["logits"] * 4  # the compiled run only, one call per step


def test_request_temperature_and_top_p_are_multipliers(tok, heads_dir):
    model = _model("qwen3", tok, heads_dir)
    enc = _enc(tok, PROMPTS[:2])
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(2)
    n = 5
    out = model.generate(
        **enc, do_sample=True, temperature=1.7, top_p=0.8, max_new_tokens=n, min_new_tokens=n,
        logits_processor=[proc], output_scores=True, return_dict_in_generate=True,
    )
    tr = proc.trace
    np.testing.assert_allclose(tr.T.numpy(), tr.T_pred.numpy() * 1.7, rtol=1e-6)
    np.testing.assert_allclose(tr.P.numpy(), np.clip(tr.P_pred.numpy() * 0.8, 0, 1), rtol=1e-6)
    _check_against_reference(model, tok, heads_dir, enc, out, proc, DecodingPolicy(temperature=1.7, top_p=0.8), n)


def test_wide_nucleus_is_not_cut_by_default_top_k(tok, heads_dir):
    """transformers' global default top_k=50 must not truncate a nucleus of > 50 tokens."""
    model = _model("llama", tok, heads_dir, seed=21)
    enc = _enc(tok, PROMPTS[:2])
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(0)
    n = 3
    out = model.generate(
        **enc, do_sample=True, temperature=40.0, top_p=5.0, max_new_tokens=n, min_new_tokens=n, logits_processor=[proc],
        output_scores=True, return_dict_in_generate=True,
    )
    assert min(int((torch.softmax(sc, -1) > 0).sum(-1).min()) for sc in out.scores) > 60
    _check_against_reference(model, tok, heads_dir, enc, out, proc, DecodingPolicy(temperature=40.0, top_p=5.0), n)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    temperature=st.floats(0.0, 3.0),
    top_p=st.floats(0.0, 1.5),
    seed=st.integers(0, 2**16),
)
def test_property_scores_are_canonical_for_any_multipliers(tok, heads_dir, temperature, top_p, seed):
    model = _shared_model(tok, heads_dir)
    enc = _enc(tok, PROMPTS[:2])
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(seed)
    out = model.generate(
        **enc, do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=3, min_new_tokens=3,
        logits_processor=[proc], output_scores=True, output_logits=True, return_dict_in_generate=True,
    )
    policy = DecodingPolicy(temperature=temperature, top_p=top_p)
    tr = proc.trace
    T_used, P_used = policy.apply(tr.T_pred.numpy().astype(np.float64), tr.P_pred.numpy().astype(np.float64))
    np.testing.assert_allclose(tr.T.numpy(), T_used, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tr.P.numpy(), P_used, rtol=1e-5, atol=1e-7)
    for s in range(3):
        logits = ban_tokens(out.logits[s].double().numpy(), [tok.eos_token_id])  # min_new_tokens
        got = torch.softmax(out.scores[s].double(), dim=-1).numpy()
        for b in range(2):
            ref = next_token_distribution(logits[b], float(tr.T[b, s]), float(tr.P[b, s]))
            assert_same_distribution(got[b], ref, logits[b], float(tr.T[b, s]), float(tr.P[b, s]))


_SHARED = {}


def _shared_model(tok, heads_dir):
    if "m" not in _SHARED:
        _SHARED["m"] = _model("llama", tok, heads_dir, seed=5)
    return _SHARED["m"]


@pytest.mark.parametrize("dtype,cache", [(torch.bfloat16, None), (torch.float32, "static")])
def test_bfloat16_and_static_cache(tok, heads_dir, dtype, cache):
    """Heads run in float32 on bf16 hidden states; the static cache path captures the same way."""
    model = build_tiny_model("qwen3", seed=0, tokenizer=tok).to(dtype)
    attach(model, heads_dir)
    enc = _enc(tok, PROMPTS[:2])
    proc = AutoDecoLogitsProcessor(model)
    kw = {} if cache is None else {"cache_implementation": cache}
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, max_new_tokens=4, min_new_tokens=4, logits_processor=[proc],
                         output_scores=True, output_logits=True, return_dict_in_generate=True, **kw)
    tr = proc.trace
    assert tr.T_pred.dtype == torch.float32 and tr.token_ids.shape == (2, 4)
    heads = load_heads(heads_dir)
    for s in range(4):
        logits = ban_tokens(out.logits[s].double().numpy(), [tok.eos_token_id])
        got = torch.softmax(out.scores[s].double(), dim=-1).numpy()
        for b in range(2):
            ref = next_token_distribution(logits[b], float(tr.T[b, s]), float(tr.P[b, s]))
            assert_same_distribution(got[b], ref, logits[b], float(tr.T[b, s]), float(tr.P[b, s]))
    # the predictions follow the NumPy heads on a teacher-forced forward (bf16 noise allowed)
    mask = torch.cat([enc["attention_mask"], torch.ones(2, 4, dtype=torch.long)], dim=1)
    ref = reference_steps(model, heads, DecodingPolicy(), out.sequences, mask, enc["input_ids"].shape[1], 4)
    for s, (_, T_pred, P_pred, *_rest) in enumerate(ref):
        np.testing.assert_allclose(tr.T_pred[:, s].numpy(), T_pred, atol=0.05 if dtype == torch.bfloat16 else 1e-4)


def test_draws_follow_the_canonical_distribution(tok, heads_dir):
    """Many draws of one step (one prompt, num_return_sequences rows) vs the reference (G test)."""
    model = _model("llama", tok, heads_dir, seed=11)
    enc = _enc(tok, ["sigma tau"])
    policy = DecodingPolicy(temperature=2.0)  # spread the mass over several tokens
    proc = AutoDecoLogitsProcessor(model, policy)
    N = 4000
    torch.manual_seed(1234)
    out = model.generate(
        **enc, do_sample=True, max_new_tokens=1, min_new_tokens=1, num_return_sequences=N, logits_processor=[proc]
    )
    drawn = out[:, -1].numpy()
    ref = reference_steps(model, load_heads(heads_dir), policy, out[:1], torch.ones(1, out.shape[1], dtype=torch.long),
                          enc["input_ids"].shape[1], 1, ban=[tok.eos_token_id])[0][0][0]
    support = np.nonzero(ref > 0)[0]
    assert support.size >= 3, "test setup: the nucleus should hold several tokens"
    assert np.isin(drawn, support).all(), "a token outside the nucleus was drawn"
    counts = np.bincount(drawn, minlength=ref.size)
    assert g_test_pvalue(counts, ref) > 1e-3


def test_left_padded_batch_matches_rows_alone(tok, heads_dir):
    model = _model("mistral", tok, heads_dir, seed=2)
    n = 6
    proc = AutoDecoLogitsProcessor(model)
    enc = _enc(tok, PROMPTS)
    batch = model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n, logits_processor=[proc])
    bt = proc.trace
    for b, text in enumerate(PROMPTS):
        alone_proc = AutoDecoLogitsProcessor(model)
        one = _enc(tok, [text])
        alone = model.generate(**one, do_sample=False, max_new_tokens=n, min_new_tokens=n, logits_processor=[alone_proc])
        assert alone[0, -n:].tolist() == batch[b, -n:].tolist()
        at = alone_proc.trace
        np.testing.assert_allclose(bt.T_pred[b].numpy(), at.T_pred[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(bt.P_pred[b].numpy(), at.P_pred[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(bt.P[b].numpy(), at.P[0].numpy(), atol=1e-4)
        assert bt.prompt_ids[b] == one["input_ids"][0].tolist()


def test_greedy_and_temperature_zero(tok, heads_dir):
    model = build_tiny_model("qwen2", seed=4, tokenizer=tok)
    enc = _enc(tok, PROMPTS[:2])
    n = 8
    plain = model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n)
    with attach(model, heads_dir):
        proc = AutoDecoLogitsProcessor(model)
        greedy = model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n, logits_processor=[proc])
        assert torch.equal(greedy, plain)
        assert (proc.trace.T == 0).all() and (proc.trace.T_pred > 0).all()
        proc0 = AutoDecoLogitsProcessor(model)
        torch.manual_seed(0)
        t0 = model.generate(
            **enc, do_sample=True, temperature=0.0, max_new_tokens=n, min_new_tokens=n, logits_processor=[proc0]
        )
        assert torch.equal(t0, plain)
        assert (proc0.trace.T == 0).all()
        # a policy temperature of 0 is greedy too
        proc_p = AutoDecoLogitsProcessor(model, DecodingPolicy(temperature=0.0))
        tp = model.generate(**enc, do_sample=True, max_new_tokens=n, min_new_tokens=n, logits_processor=[proc_p])
        assert torch.equal(tp, plain)


def test_unsupported_modes_raise(tok, heads_dir):
    model = _model("llama", tok, heads_dir, seed=6)
    enc = _enc(tok, PROMPTS[:1])
    proc = AutoDecoLogitsProcessor(model)
    with pytest.raises(AutoDecoError, match="beam"):
        model.generate(**enc, do_sample=True, num_beams=2, max_new_tokens=3, logits_processor=[proc])
    with pytest.raises(AutoDecoError, match="beam"):
        model.generate(**enc, do_sample=False, num_beams=2, max_new_tokens=3, logits_processor=[proc])
    # (assisted decoding is supported: tests/adapters/transformers/test_transformers_speculative.py)
    with pytest.raises(InvalidParameterError, match="top_k"):
        model.generate(**enc, do_sample=True, top_k=20, max_new_tokens=3, logits_processor=[proc])
    with pytest.raises(InvalidParameterError, match="min_p"):
        model.generate(**enc, do_sample=True, min_p=0.1, max_new_tokens=3, logits_processor=[proc])
    # the processor must be last
    other = transformers.RepetitionPenaltyLogitsProcessor(1.2)
    with pytest.raises(AutoDecoError, match="last"):
        model.generate(**enc, do_sample=True, max_new_tokens=3, logits_processor=[proc, other])


def test_model_generation_config_defaults_are_neutralised(tok, heads_dir):
    """Static sampling defaults of the model (Qwen3-style) must not act on AutoDeco's output."""
    model = _model("qwen3", tok, heads_dir, seed=8)
    enc = _enc(tok, PROMPTS[:2])

    def run():
        proc = AutoDecoLogitsProcessor(model)
        torch.manual_seed(5)
        out = model.generate(**enc, do_sample=True, max_new_tokens=4, logits_processor=[proc],
                             output_scores=True, return_dict_in_generate=True)
        return out, proc

    base_out, base_proc = run()
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.5
    model.generation_config.top_k = 2
    model.generation_config.min_p = 0.3
    out, proc = run()
    assert torch.equal(out.sequences, base_out.sequences)
    for a, b in zip(out.scores, base_out.scores):
        assert torch.equal(a, b)
    assert proc.policy_used == DecodingPolicy()


def test_hooks_are_removable(tok, heads_dir):
    model = build_tiny_model("gpt2", seed=9, tokenizer=tok)
    lm_head = model.get_output_embeddings()
    before = dict(lm_head._forward_pre_hooks)
    with attach(model, heads_dir) as att:
        assert get_attachment(model) is att
        assert len(lm_head._forward_pre_hooks) == len(before) + 1
        proc = AutoDecoLogitsProcessor(model)
        with pytest.raises(AutoDecoError, match="already attached"):
            attach(model, heads_dir)
    assert dict(lm_head._forward_pre_hooks) == before
    assert "generate" not in model.__dict__ and get_attachment(model) is None
    with pytest.raises(AutoDecoError):  # a stale processor refuses to run
        model.generate(**_enc(tok, ["red"]), do_sample=True, max_new_tokens=2, logits_processor=[proc])
    with pytest.raises(AutoDecoError, match="no AutoDeco heads"):
        AutoDecoLogitsProcessor(model)
    att2 = attach(model, heads_dir)
    detach(model)
    detach(model)  # idempotent
    assert not att2.attached and get_attachment(model) is None


def test_two_models_and_threads_do_not_interfere(tok, heads_dir, tmp_path):
    heads_b = save_tiny_heads(tmp_path / "hb", 48, seed=4)
    a = _model("llama", tok, heads_dir, seed=1)
    b = build_tiny_model("qwen2", seed=2, tokenizer=tok, hidden_size=48, num_heads=4, num_kv_heads=2)
    attach(b, heads_b)
    n = 12
    jobs = [(a, "The quick brown"), (b, "alpha beta"), (a, "red green blue cyan"), (b, "The")]

    def run(model, text):
        proc = AutoDecoLogitsProcessor(model)
        out = model.generate(**_enc(tok, [text]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             logits_processor=[proc])
        return out[0].tolist(), proc.trace.T_pred.clone(), proc.trace.P_pred.clone()

    sequential = [run(m, t) for m, t in jobs]
    with pytest.raises(AutoDecoError, match="another model"):
        b.generate(**_enc(tok, ["x"]), do_sample=True, max_new_tokens=2, logits_processor=[AutoDecoLogitsProcessor(a)])
    results = [None] * (2 * len(jobs))
    errors = []

    def worker(i):
        try:
            results[i] = run(*jobs[i % len(jobs)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (ids, T, P) in enumerate(results):
        s_ids, s_T, s_P = sequential[i % len(jobs)]
        assert ids == s_ids
        torch.testing.assert_close(T, s_T, atol=1e-5, rtol=0)
        torch.testing.assert_close(P, s_P, atol=1e-5, rtol=0)


class _ForceEos:
    """Forces EOS in row 0 at generated step ``at`` (placed before the AutoDeco processor)."""

    def __init__(self, prompt_len, at, eos):
        self.prompt_len, self.at, self.eos = prompt_len, at, eos

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len == self.at:
            scores = scores.clone()
            scores[0] = -float("inf")
            scores[0, self.eos] = 0.0
        return scores


class _StopRowAfter(transformers.StoppingCriteria):
    def __init__(self, prompt_len, row, after):
        self.prompt_len, self.row, self.after = prompt_len, row, after

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        if input_ids.shape[1] - self.prompt_len >= self.after:
            done[self.row] = True
        return done


def test_eos_and_stopping_criteria_in_the_trace(tok, heads_dir):
    model = _model("llama", tok, heads_dir, seed=3)
    eos = tok.eos_token_id
    enc = _enc(tok, PROMPTS)
    L = enc["input_ids"].shape[1]
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(0)
    # ban EOS elsewhere so that only the forced one ends a row
    ban = transformers.SuppressTokensLogitsProcessor([eos])

    class BanExceptForced:
        def __call__(self, input_ids, scores):
            return scores if input_ids.shape[1] - L == 2 else ban(input_ids, scores)

    out = model.generate(
        **enc, do_sample=True, max_new_tokens=7, logits_processor=[BanExceptForced(), _ForceEos(L, 2, eos), proc],
        stopping_criteria=transformers.StoppingCriteriaList([_StopRowAfter(L, 1, 4)]),
    )
    tr = proc.trace
    assert tr.lengths() == [3, 4, 7]
    assert tr.finish_reasons == ["eos", "stop", "length"]
    steps0 = tr.steps(0)
    assert steps0[-1].token_id == eos and out[0, L + 2] == eos
    assert (out[0, L + 3:] == tok.pad_token_id).all() and (out[1, L + 4:] == tok.pad_token_id).all()
    assert [s.token_id for s in tr.steps(2)] == out[2, L:].tolist()
    res = tr.results(tok)
    assert [r.finish_reason for r in res] == ["eos", "stop", "length"]
    assert res[0].to_dict()["token_ids"][-1] == eos and len(res[0].to_dict()["steps"]) == 3
    # special tokens: in token_ids, never in text (the policy of every engine)
    assert tok.eos_token not in res[0].text and res[0].text == tok.decode(res[0].token_ids[:-1])


def test_streamer_kv_cache_and_batch_size(tok, heads_dir):
    model = _model("qwen2", tok, heads_dir, seed=10)

    class Collect(transformers.generation.BaseStreamer):
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value.clone())

        def end(self):
            self.done = True

    enc = _enc(tok, ["The quick"])
    streamer = Collect()
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(3)
    out = model.generate(**enc, do_sample=True, max_new_tokens=6, min_new_tokens=6, streamer=streamer,
                         logits_processor=[proc])
    streamed = torch.cat([c.reshape(-1) for c in streamer.chunks[1:]]).tolist()
    assert streamed == out[0, -6:].tolist() == [s.token_id for s in proc.trace.steps(0)]
    assert streamer.done
    # KV cache on and off give the same greedy tokens and predictions
    traces = []
    for use_cache in (True, False):
        p = AutoDecoLogitsProcessor(model)
        model.generate(**_enc(tok, PROMPTS), do_sample=False, max_new_tokens=5, min_new_tokens=5, use_cache=use_cache,
                       logits_processor=[p])
        traces.append(p.trace)
    assert torch.equal(traces[0].token_ids, traces[1].token_ids)
    torch.testing.assert_close(traces[0].T_pred, traces[1].T_pred, atol=1e-4, rtol=0)
    # batch of 8 with num_return_sequences
    p = AutoDecoLogitsProcessor(model)
    out = model.generate(**_enc(tok, PROMPTS[:2] * 2), do_sample=True, num_return_sequences=2, max_new_tokens=3,
                         min_new_tokens=3, logits_processor=[p])
    assert p.trace.token_ids.shape == (8, 3) and len(p.trace.prompt_ids) == 8


def test_hidden_size_mismatch_on_attach(tok, tmp_path):
    model = build_tiny_model("llama", seed=0, tokenizer=tok)
    wrong = save_tiny_heads(tmp_path / "h32", 32, seed=0)
    with pytest.raises(ShapeError, match="hidden-size mismatch.*64.*32"):
        attach(model, wrong)
    assert get_attachment(model) is None and "generate" not in model.__dict__


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from autodeco_samplers.heads.io.merged import merge_checkpoint
    from autodeco_samplers.models.tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("ckpt")
    base = save_tiny_model(root / "base", "qwen2", seed=12, vocab_size=VOCAB)
    heads = save_tiny_heads(root / "heads", HIDDEN, seed=13)
    merged = merge_checkpoint(base, heads, root / "merged")
    return base, heads, merged


def test_from_pretrained_merged_and_base_plus_heads(checkpoints):
    base, heads, merged = checkpoints
    m1 = from_pretrained(merged)
    m2 = from_pretrained(base, heads)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(base))
    assert type(m1) is type(ref) and type(m1).__name__ == "Qwen2ForCausalLM"
    sd_ref = ref.state_dict()
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(v, sd_ref[k], atol=0, rtol=0)
    h1, h2 = get_attachment(m1).heads.state_dict(), get_attachment(m2).heads.state_dict()
    for k in h1:
        torch.testing.assert_close(h1[k], h2[k], atol=0, rtol=0)
    with pytest.raises(CheckpointError, match="not a merged"):
        from_pretrained(base)


def _cli(argv, capsys):
    from autodeco_samplers.frontends.cli import main

    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_json_and_human(checkpoints, capsys):
    base, heads, merged = checkpoints
    rc, out, err = _cli(["generate", "--engine", "transformers", "--model", str(merged), "--prompt", "The quick",
                         "--max-new-tokens", "5", "--seed", "3", "--json"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    assert set(data) == {"engine", "prompt_ids", "token_ids", "text", "finish_reason", "steps"}
    assert data["engine"] == "transformers" and len(data["token_ids"]) == len(data["steps"]) >= 1
    assert [s["token_id"] for s in data["steps"]] == data["token_ids"]
    assert all(set(s) == {"token_id", "T_pred", "P_pred", "T", "P"} for s in data["steps"])
    # same seed, base + --heads, prompt ids: the same tokens
    rc, out2, err = _cli(["generate", "--engine", "transformers", "--model", str(base), "--heads", str(heads),
                          "--prompt-ids", ",".join(map(str, data["prompt_ids"])), "--max-new-tokens", "5",
                          "--seed", "3", "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out2)["token_ids"] == data["token_ids"]
    # multipliers reach the used values
    rc, out3, _ = _cli(["generate", "--engine", "transformers", "--model", str(merged), "--prompt-ids", "5,6,7",
                        "--max-new-tokens", "3", "--temperature", "0", "--top-p", "0.5", "--json"], capsys)
    steps = json.loads(out3)["steps"]
    assert all(s["T"] == 0 and abs(s["P"] - min(1.0, s["P_pred"] * 0.5)) < 1e-6 for s in steps)
    rc, human, _ = _cli(["generate", "--engine", "transformers", "--model", str(merged), "--prompt", "red",
                         "--max-new-tokens", "4"], capsys)
    assert rc == 0 and "T_pred" in human and "engine: transformers" in human and "text:" in human
    rc, _, err = _cli(["generate", "--engine", "transformers", "--model", str(base), "--prompt", "red"], capsys)
    assert rc == 2 and "--heads" in err


# --------------------------------------------------------------------------- the core step


def test_step_logits_large_vocab_match_reference():
    """The processor's rule (:func:`autodeco_samplers.core.torch_ops.torch_rule_logits`, sort-free) at a
    large vocabulary; the property tests against the reference are in tests/core/test_step.py."""
    from autodeco_samplers.core.torch_ops import torch_rule_logits

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 50000, generator=g) * 6
    T = torch.tensor([0.3, 0.9, 1.5, 4.0])
    P = torch.tensor([0.5, 0.9, 0.95, 0.99])
    got = torch.softmax(torch_rule_logits(x, T, P), dim=-1).double().numpy()
    for b in range(4):
        ref = next_token_distribution(x[b].double().numpy(), float(T[b]), float(P[b]))
        assert_same_distribution(got[b], ref, x[b].double().numpy(), float(T[b]), float(P[b]), atol=1e-6)


def test_attachment_step_reads_the_transformed_model_logits(tok, heads_dir):
    """``AutoDecoAttachment.step`` (what the processor runs each step, and the conformance
    engine's kernel): the heads read ``lm_head``'s output through the model's final logit
    transform (Gemma2's softcap), the rule applies to ``scores``; ``greedy`` uses T = 0; rows
    that do not match raise."""
    model = _model("gemma2", tok, heads_dir)
    att = get_attachment(model)
    cap = float(model.config.final_logit_softcapping)
    heads = load_heads(heads_dir)
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(3, HIDDEN, generator=g)
    lm_out = torch.randn(3, VOCAB, generator=g) * 4 * cap  # far into the softcap's bend
    scores = torch.randn(3, VOCAB, generator=g) * 3
    st = att.step(hidden, scores, lm_out=lm_out)
    T_pred, P_pred = heads.predict(hidden.numpy(), (torch.tanh(lm_out / cap) * cap).numpy())
    np.testing.assert_allclose(st.T_pred.numpy(), T_pred, atol=1e-4)
    np.testing.assert_allclose(st.P_pred.numpy(), P_pred, atol=1e-4)
    _, raw_P = heads.predict(hidden.numpy(), lm_out.numpy())
    assert np.abs(raw_P - P_pred).max() > 1e-3  # the transform matters for these rows
    probs = torch.softmax(st.logits.double(), dim=-1).numpy()
    for b in range(3):
        ref = next_token_distribution(scores[b].double().numpy(), float(st.T[b]), float(st.P[b]))
        assert_same_distribution(probs[b], ref, scores[b].double().numpy(), float(st.T[b]), float(st.P[b]))
    greedy = att.step(hidden, scores, greedy=True)
    assert greedy.T.tolist() == [0.0, 0.0, 0.0]
    assert greedy.logits.argmax(-1).tolist() == scores.argmax(-1).tolist()
    with pytest.raises(ShapeError, match="batch mismatch"):
        att.step(hidden[:2], scores)
    detach(model)


def test_conformance_suite_passes_for_the_transformers_engine():
    from autodeco_samplers.conformance.engines.transformers import TransformersEngine
    from autodeco_samplers.conformance.runner import run_engine

    results = run_engine(TransformersEngine(), examples=40)
    assert [(r.level, r.verdict) for r in results] == [("kernel", "pass"), ("sampling", "pass"), ("end-to-end", "pass")], [
        r.reason for r in results
    ]


def test_stop_strings_end_rows_in_the_trace(tok, heads_dir):
    model = _model("llama", tok, heads_dir, seed=0)
    enc = _enc(tok, ["The quick brown", "red", "alpha"])
    L = enc["input_ids"].shape[1]
    proc = AutoDecoLogitsProcessor(model)
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, temperature=3.0, max_new_tokens=12, logits_processor=[proc],
                         stop_strings=["e"], tokenizer=tok)
    tr = proc.trace
    assert "stop" in tr.finish_reasons
    for b, (n, reason) in enumerate(zip(tr.lengths(), tr.finish_reasons)):
        ids = [s.token_id for s in tr.steps(b)]
        text = tok.decode(ids)
        if reason == "stop":
            assert "e" in text and "e" not in tok.decode(ids[:-1])
            assert (out[b, L + n:] == tok.pad_token_id).all()
        else:
            assert n == out.shape[1] - L and "e" not in text


def test_docs_quick_start_runs(checkpoints, capsys):
    """The quick start of docs/transformers.md, run as written on a tiny merged checkpoint."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "transformers.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    _, _, merged = checkpoints
    code = code.replace('"path/to/merged-autodeco-checkpoint"', repr(str(merged)))
    exec(compile(code, "docs/transformers.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert 1 <= len(lines) <= 32 and all("->" in line for line in lines)
