"""The real SGLang ``LogitsProcessor`` with the AutoDeco transform vs the canonical reference.

Reference: NumPy heads in float64 (``conformance.runner.reference_heads_float64``) and the NumPy
canonical rule, compared by ``conformance.checker.check_distribution`` (nucleus membership
exact except within ``eps`` of the boundary, total variation below ``tol``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autodeco_samplers.conformance.checker import check_distribution, check_heads
from autodeco_samplers.conformance.runner import reference_heads_float64
from autodeco_samplers.core.policy import DecodingPolicy

from _helpers import H, V, decode_metadata, extend_metadata, lm_head, numpy_heads, processor


def _check(hidden_np, W, probs, step, heads, policy):
    logits = hidden_np.astype(np.float64) @ W.T
    ref = reference_heads_float64(hidden_np, logits, heads, policy)
    T_pred, P_pred, T, P = ref.T_pred, ref.P_pred, ref.T, ref.P
    msg = check_heads(step.T_pred.numpy(), step.P_pred.numpy(), T_pred, P_pred, head_tol=1e-4)
    assert msg is None, msg
    verdict = check_distribution(logits, step.T.numpy(), step.P.numpy(), probs, eps=1e-5, tol=1e-4)
    assert verdict.ok, verdict.describe("sglang")
    return T, P


def test_decode_batch_matches_reference(rng):
    heads = numpy_heads(seed=3)
    proc = processor(heads)
    head, W = lm_head(seed=1, scale=0.6)
    hidden = rng.standard_normal((6, H)).astype(np.float32)
    out = proc(torch.zeros(6, dtype=torch.long), torch.from_numpy(hidden), head, decode_metadata())
    assert out.next_token_logits.shape == (6, V) and out.next_token_logits.dtype == torch.float32
    assert out.hidden_states is None  # capture restored to the requested NULL
    assert torch.isfinite(out.next_token_logits).all()  # -1e30 outside the nucleus, never -inf
    probs = torch.softmax(out.next_token_logits, dim=-1).numpy()
    T, P = _check(hidden, W, probs, proc.last_step, heads, DecodingPolicy())
    assert np.ptp(T) > 0.05 and np.ptp(P) > 0.05  # heads really vary per row
    assert (probs == 0).sum(axis=1).max() > 0  # some nucleus is really truncated


def test_extend_batch_uses_last_row_of_each_sequence(rng):
    heads = numpy_heads(seed=4)
    proc = processor(heads)
    head, W = lm_head(seed=2, scale=0.6)
    seq_lens = [3, 1, 5]
    hidden = rng.standard_normal((sum(seq_lens), H)).astype(np.float32)
    out = proc(torch.zeros(len(hidden), dtype=torch.long), torch.from_numpy(hidden), head, extend_metadata(seq_lens))
    last = np.cumsum(seq_lens) - 1
    assert out.next_token_logits.shape == (3, V)
    probs = torch.softmax(out.next_token_logits, dim=-1).numpy()
    _check(hidden[last], W, probs, proc.last_step, heads, DecodingPolicy())


def test_requested_last_capture_is_kept(rng):
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode

    proc = processor(numpy_heads(seed=5))
    head, _ = lm_head(seed=3)
    hidden = torch.from_numpy(rng.standard_normal((2, 5, H)).astype(np.float32).reshape(10, H))
    out = proc(torch.zeros(10, dtype=torch.long), hidden, head, extend_metadata([4, 6], CaptureHiddenMode.LAST))
    torch.testing.assert_close(out.hidden_states, hidden[[3, 9]])


@pytest.mark.parametrize(
    "policy",
    [
        DecodingPolicy(temperature=0.5, top_p=0.8),
        DecodingPolicy(min_temperature=0.6, max_temperature=0.9),
        DecodingPolicy(fixed_temperature=1.3, fixed_top_p=0.5),
        DecodingPolicy(top_p=5.0),
    ],
    ids=["multipliers", "clamps", "fixed", "top_p_clamped_to_1"],
)
def test_server_policy_matches_reference(rng, policy):
    heads = numpy_heads(seed=6)
    proc = processor(heads, policy)
    head, W = lm_head(seed=4, scale=0.6)
    hidden = rng.standard_normal((5, H)).astype(np.float32)
    out = proc(torch.zeros(5, dtype=torch.long), torch.from_numpy(hidden), head, decode_metadata())
    T, P = _check(hidden, W, torch.softmax(out.next_token_logits, -1).numpy(), proc.last_step, heads, policy)
    np.testing.assert_allclose(proc.last_step.T.numpy(), T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proc.last_step.P.numpy(), P, rtol=1e-5, atol=1e-6)


def test_temperature_zero_is_greedy_lowest_id(rng):
    heads = numpy_heads(seed=7)
    proc = processor(heads, DecodingPolicy(temperature=0.0))
    head, W = lm_head(seed=5)
    hidden = rng.standard_normal((4, H)).astype(np.float32)
    out = proc(torch.zeros(4, dtype=torch.long), torch.from_numpy(hidden), head, decode_metadata())
    probs = torch.softmax(out.next_token_logits, -1)
    expected = torch.from_numpy(hidden) @ torch.from_numpy(W.T.astype(np.float32))
    assert torch.equal(probs.argmax(-1), expected.argmax(-1))
    assert torch.equal(probs.max(-1).values, torch.ones(4))


def test_grammar_mask_after_transform_never_gives_nan(rng):
    """A later additive mask may forbid the whole nucleus; with a finite fill the row still
    normalises (mass moves to the allowed tokens) instead of turning into NaN."""
    proc = processor(numpy_heads(seed=8), DecodingPolicy(top_p=0.05))
    head, _ = lm_head(seed=6, scale=2.0)
    out = proc(torch.zeros(3, dtype=torch.long), torch.from_numpy(rng.standard_normal((3, H)).astype(np.float32)), head, decode_metadata())
    logits = out.next_token_logits.clone()
    nucleus = logits > -1e29
    logits[nucleus] = float("-inf")  # what a grammar's vocab mask does to forbidden tokens
    probs = torch.softmax(logits, dim=-1)
    assert not torch.isnan(probs).any()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_empty_batch(rng):
    proc = processor(numpy_heads(seed=9))
    head, _ = lm_head(seed=7)
    out = proc(torch.zeros(0, dtype=torch.long), torch.zeros(0, H), head, decode_metadata())
    assert out.next_token_logits.shape == (0, V)


def test_unsupported_modes_raise_clear_errors(rng):
    from sglang.srt.layers.logits_processor import LogitsMetadata
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    from autodeco_samplers.adapters.sglang import SGLangModeError

    proc = processor(numpy_heads(seed=10))
    head, _ = lm_head(seed=8)
    hidden = torch.zeros(2, H)
    ids = torch.zeros(2, dtype=torch.long)
    with pytest.raises(SGLangModeError, match="FULL hidden-state capture"):
        proc(ids, hidden, head, decode_metadata(CaptureHiddenMode.FULL))
    with pytest.raises(SGLangModeError, match="EAGLE3"):
        proc(ids, hidden, head, decode_metadata(), aux_hidden_states=[hidden])
    with pytest.raises(SGLangModeError, match="target verify"):
        proc(ids, hidden, head, LogitsMetadata(forward_mode=ForwardMode.TARGET_VERIFY))
    with pytest.raises(SGLangModeError, match="hidden_states_before_norm"):
        proc(ids, hidden, head, decode_metadata(), hidden_states_before_norm=hidden)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 5),
    scale=st.sampled_from([0.1, 0.6, 2.0]),
    enhanced=st.booleans(),
)
def test_property_decode_matches_reference(seed, batch, scale, enhanced):
    rng = np.random.default_rng(seed)
    heads = numpy_heads(seed=seed % 1000, use_enhanced_features=enhanced)
    proc = processor(heads)
    head, W = lm_head(seed=seed % 997, scale=scale)
    hidden = rng.standard_normal((batch, H)).astype(np.float32)
    out = proc(torch.zeros(batch, dtype=torch.long), torch.from_numpy(hidden), head, decode_metadata())
    _check(hidden, W, torch.softmax(out.next_token_logits, -1).numpy(), proc.last_step, heads, DecodingPolicy())


def _forward_batch(mode, n, **extra):
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    return ForwardBatch(
        forward_mode=mode,
        batch_size=n,
        input_ids=torch.zeros(n, dtype=torch.long),
        req_pool_indices=torch.arange(n),
        seq_lens=torch.full((n,), 4),
        out_cache_loc=torch.arange(n),
        seq_lens_sum=4 * n,
        **extra,
    )


def test_forward_batch_as_models_pass_it(rng):
    """SGLang's models hand the ``ForwardBatch`` itself to the logits processor."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    heads = numpy_heads(seed=12)
    proc = processor(heads)
    head, W = lm_head(seed=9, scale=0.6)
    hidden = rng.standard_normal((3, H)).astype(np.float32)
    batch = _forward_batch(ForwardMode.DECODE, 3)
    out = proc(batch.input_ids, torch.from_numpy(hidden), head, batch)
    assert out.hidden_states is None
    _check(hidden, W, torch.softmax(out.next_token_logits, -1).numpy(), proc.last_step, heads, DecodingPolicy())


def test_multi_item_scoring_is_refused():
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from autodeco_samplers.adapters.sglang import SGLangModeError

    proc = processor(numpy_heads(seed=13))
    head, _ = lm_head(seed=10)
    batch = _forward_batch(ForwardMode.EXTEND, 1, is_prefill_only=True, multi_item_delimiter_indices=torch.tensor([1, 3]))
    with pytest.raises(SGLangModeError, match="multi-item"):
        proc(torch.zeros(4, dtype=torch.long), torch.zeros(4, H), head, batch)


def test_extend_with_input_logprobs(rng):
    """Prefill that also returns prompt logprobs takes SGLang's pruning path with
    ``sample_indices``; the sampled rows must still be the last token of each sequence, and
    prompt logprobs stay those of the stock model."""
    from sglang.srt.layers.logits_processor import LogitsMetadata
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    heads = numpy_heads(seed=14)
    proc = processor(heads)
    head, W = lm_head(seed=11, scale=0.6)
    seq_lens, starts = [4, 3], [1, 0]
    n = sum(seq_lens)
    hidden = rng.standard_normal((n, H)).astype(np.float32)
    input_ids = torch.from_numpy(rng.integers(0, V, size=n))
    meta = LogitsMetadata(
        forward_mode=ForwardMode.EXTEND,
        capture_hidden_mode=CaptureHiddenMode.NULL,
        extend_return_logprob=True,
        extend_seq_lens=torch.tensor(seq_lens),
        extend_seq_lens_cpu=seq_lens,
        extend_logprob_start_lens_cpu=starts,
        extend_logprob_pruned_lens_cpu=[l - s for l, s in zip(seq_lens, starts)],
        top_logprobs_nums=[0, 0],
        token_ids_logprobs=[None, None],
        extend_input_logprob_token_ids_gpu=torch.cat([input_ids[1:], torch.zeros(1, dtype=torch.long)]),
    )
    out = proc(input_ids, torch.from_numpy(hidden), head, meta)
    last = np.cumsum(seq_lens) - 1
    assert out.next_token_logits.shape == (2, V) and out.hidden_states is None
    _check(hidden[last], W, torch.softmax(out.next_token_logits, -1).numpy(), proc.last_step, heads, DecodingPolicy())
    assert out.input_token_logprobs is not None and torch.isfinite(torch.as_tensor(out.input_token_logprobs)).all()
