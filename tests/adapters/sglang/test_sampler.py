"""SGLang's real ``Sampler`` (pytorch backend) drawing from AutoDeco logits.

The sampler runs after the model with the request's own sampling parameters. These tests
pin down what a request's ``temperature`` / ``top_p`` do (docs/sglang.md, "Request knobs"):

* defaults (temperature 1, top_p 1, top_k off): draws follow the canonical distribution;
* temperature 0 (SGLang turns it into top_k = 1): the argmax of the raw logits;
* temperature t: draws follow ``softmax(z / t)`` where ``z`` are the AutoDeco logits, i.e.
  ``T_used * t`` inside the nucleus chosen at ``T_used``; never a token outside it;
* top_p p < 1: SGLang's own top-p on the AutoDeco distribution, an extra truncation.

Statistical checks: G-test p-value above 1e-4 with fixed seeds, and zero draws outside
the expected support.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autodeco_samplers.core import reference
from autodeco_samplers.conformance.stats import draws_fit_pvalue
from autodeco_samplers.core.policy import DecodingPolicy

from _helpers import H, V, decode_metadata, lm_head, numpy_heads, processor

N_DRAWS = 6000
SCALE = 0.15  # logits of std ~1: nuclei of a few to a few dozen tokens


def sampling_info(n: int, **request):
    """A real ``SamplingBatchInfo`` for ``n`` rows of one request's parameters, built from
    SGLang's own ``SamplingParams`` normalisation the way ``from_schedule_batch`` does."""
    from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo
    from sglang.srt.sampling.sampling_params import TOP_K_ALL, SamplingParams

    sp = SamplingParams(**request)
    sp.verify(V)
    col = lambda v, dt: torch.full((n,), v, dtype=dt)  # noqa: E731
    return SamplingBatchInfo(
        temperatures=col(sp.temperature, torch.float).view(-1, 1),
        top_ps=col(sp.top_p, torch.float),
        top_ks=col(sp.top_k, torch.int32),
        min_ps=col(sp.min_p, torch.float),
        is_all_greedy=sp.top_k <= 1,
        is_any_greedy=sp.top_k <= 1,
        need_top_p_sampling=sp.top_p != 1.0,
        need_top_k_sampling=sp.top_k != TOP_K_ALL,
        need_min_p_sampling=sp.min_p > 0,
        vocab_size=V,
        device="cpu",
    )


def _one_step(seed: int = 11, policy: DecodingPolicy = DecodingPolicy(), scale: float = SCALE):
    rng = np.random.default_rng(seed)
    heads = numpy_heads(seed=seed)
    proc = processor(heads, policy)
    head, W = lm_head(seed=seed, scale=scale)
    hidden = rng.standard_normal((1, H)).astype(np.float32)
    out = proc(torch.zeros(1, dtype=torch.long), torch.from_numpy(hidden), head, decode_metadata())
    step = proc.last_step
    raw = (torch.from_numpy(hidden) @ torch.from_numpy(W.T.astype(np.float32)))[0]
    return out.next_token_logits[0].clone(), raw, float(step.T[0]), float(step.P[0])


def _draw(z: torch.Tensor, n: int, seed: int, **request) -> np.ndarray:
    from sglang.srt.layers.logits_processor import LogitsProcessorOutput
    from sglang.srt.layers.sampler import Sampler

    torch.manual_seed(seed)
    out = LogitsProcessorOutput(next_token_logits=z.expand(n, -1).clone())
    ids = Sampler()(out, sampling_info(n, **request), False, [0] * n, [None] * n, torch.zeros(n, dtype=torch.long))
    return ids.long().numpy()


def _fit(tokens: np.ndarray, probs: np.ndarray) -> float:
    counts = np.bincount(tokens, minlength=V)
    assert counts[probs <= 0].sum() == 0, f"drew token(s) {np.flatnonzero((probs <= 0) & (counts > 0))} outside the support"
    return draws_fit_pvalue(counts, probs)


def test_defaults_draw_the_canonical_distribution():
    z, raw, T, P = _one_step()
    expected = reference.next_token_distribution(raw.double().numpy()[None], T, P)[0]
    assert 3 <= (expected > 0).sum() < V  # a real, truncated nucleus
    assert _fit(_draw(z, N_DRAWS, seed=0), expected) > 1e-4


def test_server_policy_is_exact_official_semantics():
    policy = DecodingPolicy(temperature=0.7, top_p=0.6)
    z, raw, T, P = _one_step(seed=12, policy=policy)
    # T, P are the *used* values: T_pred * 0.7 and clamp(P_pred * 0.6)
    expected = reference.next_token_distribution(raw.double().numpy()[None], T, P)[0]
    assert _fit(_draw(z, N_DRAWS, seed=1), expected) > 1e-4


def test_request_temperature_zero_is_greedy():
    z, raw, _, _ = _one_step(seed=13)
    tokens = _draw(z, 50, seed=2, temperature=0.0)
    assert (tokens == int(raw.argmax())).all()


@pytest.mark.parametrize("t", [0.5, 1.6])
def test_request_temperature_rescales_inside_the_nucleus(t):
    """Documented composition: softmax(z / t) -- T_used * t on the nucleus chosen at T_used."""
    z, raw, T, P = _one_step(seed=14)
    nucleus = reference.next_token_distribution(raw.double().numpy()[None], T, P)[0] > 0
    q = reference.temperature_probs(raw.double().numpy()[None], T * t)[0]
    expected = np.where(nucleus, q, 0.0)
    expected /= expected.sum()
    assert _fit(_draw(z, N_DRAWS, seed=3, temperature=t), expected) > 1e-4


def test_request_top_p_truncates_the_autodeco_distribution_again():
    """Documented composition: SGLang's top-p ``p`` applied on top of the AutoDeco
    distribution. In terms of the temperature probabilities ``q`` this keeps token ``(i)`` iff
    ``c_i <= p * S`` with ``S`` the mass of the AutoDeco nucleus (``S >= P_used``), where the
    official multiplier rule keeps ``c_i < p * P_used``: the same except for tokens whose prefix
    sum falls in ``[p * P_used, p * S]``."""
    z, raw, T, P = _one_step(seed=15)
    logits = raw.double().numpy()[None]
    canonical = reference.next_token_distribution(logits, T, P)[0]
    q = reference.temperature_probs(logits, T)[0]
    S = q[canonical > 0].sum()
    order = np.argsort(-q, kind="stable")
    c = np.empty_like(q)
    c[order] = np.cumsum(q[order]) - q[order]
    keep = c <= 0.5 * S
    expected = np.where(keep, q, 0.0) / q[keep].sum()
    assert 1 < keep.sum() < (canonical > 0).sum()
    assert _fit(_draw(z, N_DRAWS, seed=4, top_p=0.5), expected) > 1e-4
