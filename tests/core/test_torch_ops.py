"""The torch implementation agrees with the NumPy reference (docs/design.md sections 3 and 4).

Agreement is the conformance checker's definition: identical kept sets except tokens whose
exclusive prefix sum lies within eps = 1e-5 of P, and total-variation distance at most
1e-4. Why those numbers: both sides compute in float32 but with different exp and summation
orders (NumPy pairwise, torch vectorised scans), which moves each probability by a few ulp
(~1e-7 relative) and a prefix sum over up to 4096 terms by at most ~1e-6; eps and tol leave a
10x margin over that and are still far below any real rule difference (a dropped token or a
swapped order moves TV by its whole mass).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import autodeco_samplers as ad
from autodeco_samplers.core import reference as ref
from autodeco_samplers.core import torch_ops
from autodeco_samplers.conformance.checker import check_distribution
from autodeco_samplers.conformance.stats import draws_fit_pvalue
from autodeco_samplers.conformance.strategies import decoding_cases


@given(decoding_cases())
def test_torch_distribution_agrees_with_reference(case):
    probs = torch_ops.next_token_distribution(torch.from_numpy(case.logits), torch.from_numpy(case.T), torch.from_numpy(case.P))
    assert probs.dtype == torch.float32
    verdict = check_distribution(case.logits, case.T, case.P, probs.numpy())
    assert verdict.ok, verdict.describe("torch")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@given(case=decoding_cases(shapes=("gaussian", "peaked", "ties", "plateau", "sparse_inf", "integers")))
def test_half_precision_inputs_are_upcast(dtype, case):
    low = torch.from_numpy(case.logits).to(dtype)
    probs = torch_ops.next_token_distribution(low, torch.from_numpy(case.T), torch.from_numpy(case.P))
    # the reference sees the very same (rounded) values, upcast to float32
    verdict = check_distribution(low.float().numpy(), case.T, case.P, probs.numpy())
    assert verdict.ok, verdict.describe(f"torch {dtype}")


@given(decoding_cases())
def test_rule_logits_are_the_reference_rule(case):
    """``torch_rule_logits`` against the reference: finite everywhere (``OUTSIDE_NUCLEUS``, never
    -inf, off the nucleus), ``(l - max l) / T`` on the kept tokens (only the argmax, at 0, in a
    greedy row), and its plain softmax the reference distribution."""
    logits = torch.from_numpy(case.logits)
    masked = torch_ops.torch_rule_logits(logits, torch.from_numpy(case.T), torch.from_numpy(case.P))
    assert torch.isfinite(masked).all()  # large finite negative, never -inf
    verdict = check_distribution(case.logits, case.T, case.P, torch.softmax(masked.double(), dim=-1).numpy())
    assert verdict.ok, verdict.describe("torch rule logits")
    kept = (masked > ref.OUTSIDE_NUCLEUS).numpy()
    assert (masked.numpy()[~kept] == ref.OUTSIDE_NUCLEUS).all()
    greedy = case.T < np.float32(ref.GREEDY_TEMPERATURE)
    scaled = (case.logits - case.logits.max(axis=-1, keepdims=True)) / np.where(greedy, 1.0, case.T)[:, None]
    for b in range(case.logits.shape[0]):
        if greedy[b]:
            assert np.flatnonzero(kept[b]).tolist() == [int(np.argmax(case.logits[b]))]
            assert masked[b].max().item() == 0.0
        else:
            np.testing.assert_allclose(masked.numpy()[b, kept[b]], scaled[b, kept[b]], rtol=1e-6, atol=1e-6)


@given(decoding_cases(vocab_sizes=st.integers(1, 200)))
def test_probability_stats_agree(case):
    T = np.maximum(case.T, 1e-3)
    got = torch_ops.probability_stats(torch.from_numpy(case.logits), torch.from_numpy(T)).numpy()
    want = ref.probability_stats(case.logits, T)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


@settings(max_examples=12)
@given(decoding_cases(max_batch=6, vocab_sizes=st.sampled_from([32_000, 152_064])))
def test_probability_stats_agree_at_full_vocabularies(case):
    # at these sizes the sums run over several column blocks (B * V > 2**19) and -inf entries,
    # ties and flat rows reach the features in every block
    T = np.maximum(case.T, 1e-3)
    got = torch_ops.probability_stats(torch.from_numpy(case.logits), torch.from_numpy(T)).numpy()
    want = ref.probability_stats(case.logits, T)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


@given(decoding_cases(vocab_sizes=st.integers(1, 200), shapes=("gaussian", "peaked", "ties", "flat")))
def test_soft_top_p_agrees_and_is_differentiable(case):
    T = np.maximum(case.T, 0.05)
    q_np = ref.temperature_probs(case.logits, T)
    q = torch.from_numpy(q_np).requires_grad_(True)
    P = torch.from_numpy(case.P).requires_grad_(True)
    out = torch_ops.soft_top_p(q, P)
    np.testing.assert_allclose(out.detach().numpy(), ref.soft_top_p(q_np, case.P), rtol=1e-4, atol=1e-6)
    out[:, 0].sum().backward()
    assert torch.isfinite(P.grad).all() and torch.isfinite(q.grad).all()


def test_soft_top_p_gradient_raises_p_when_the_label_is_cut():
    q = torch.tensor([[0.5, 0.3, 0.2]])
    P = torch.tensor([0.5], requires_grad=True)
    nll = -torch.log(torch_ops.soft_top_p(q, P)[0, 2] + 1e-9)
    nll.backward()
    assert P.grad.item() < 0  # increasing P lowers the loss of a token outside the nucleus


def test_greedy_rows_and_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    probs = torch_ops.next_token_distribution(logits, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]))
    np.testing.assert_array_equal(probs[0].numpy(), [0, 1, 0])
    np.testing.assert_allclose(probs[1].numpy(), [0.5, 0.5, 0.0])  # c = 0, 1/3, 2/3 < .5 keeps ids 0, 1


def test_no_host_sync_path_accepts_scalars_and_columns():
    logits = torch.randn(3, 10)
    a = torch_ops.next_token_distribution(logits, 0.7, 0.9, check=False)
    b = torch_ops.next_token_distribution(logits, torch.full((3, 1), 0.7), torch.full((3,), 0.9))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "logits, match",
    [
        (torch.tensor([[0.0, float("nan")]]), "NaN"),
        (torch.tensor([[0.0, 1.0], [float("-inf"), float("-inf")]]), "row 1 of 2 is all -inf"),
        (torch.tensor([[float("inf"), 0.0]]), r"\+inf"),
        (torch.zeros(2, 3, 4), "shape"),
    ],
)
def test_bad_logits_are_named(logits, match):
    with pytest.raises(ad.AutoDecoError, match=match):
        torch_ops.next_token_distribution(logits, 1.0, 1.0)


def test_bad_parameters_are_named():
    with pytest.raises(ad.InvalidParameterError, match="top_p"):
        torch_ops.next_token_distribution(torch.zeros(1, 3), 1.0, 1.5)
    with pytest.raises(ad.InvalidParameterError, match="temperature"):
        torch_ops.next_token_distribution(torch.zeros(1, 3), -1.0, 0.5)


def test_sampling_is_seeded_and_follows_the_nucleus():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.08, 0.02]])).repeat(20000, 1)
    probs = torch_ops.next_token_distribution(logits, 1.0, 0.85)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = torch_ops.sample_tokens(probs, g1), torch_ops.sample_tokens(probs, g2)
    assert torch.equal(a, b)
    counts = np.bincount(a.numpy(), minlength=5)
    assert counts[3] == 0 and counts[4] == 0
    assert draws_fit_pvalue(counts, probs[0].double().numpy()) > 1e-3


@settings(max_examples=12)
@given(decoding_cases(max_batch=6, vocab_sizes=st.sampled_from([32_000, 152_064])))
def test_one_block_per_row_as_on_a_gpu_agrees(case):
    """Off the CPU a row is one column block (``torch_nucleus.BLOCKED_DEVICES``): forced here,
    the statistics and the rule still agree with the reference at full vocabularies."""
    from unittest import mock

    from autodeco_samplers.core import torch_nucleus

    T = np.maximum(case.T, 1e-3)
    logits = torch.from_numpy(case.logits)
    with mock.patch.object(torch_nucleus, "BLOCKED_DEVICES", set()):
        assert len(list(torch_nucleus.column_blocks(logits))) == 1
        got = torch_ops.probability_stats(logits, torch.from_numpy(T)).numpy()
        masked = torch_ops.torch_rule_logits(logits, torch.from_numpy(T), torch.from_numpy(case.P), sync=False)
    np.testing.assert_allclose(got, ref.probability_stats(case.logits, T), rtol=2e-4, atol=1e-6)
    verdict = check_distribution(case.logits, T, case.P, torch.softmax(masked.double(), dim=-1).numpy())
    assert verdict.ok, verdict.describe("one block")
