"""Independent reference side for the transformers adapter tests.

Everything here avoids the adapter: hidden states come from a teacher-forced forward with
``output_hidden_states=True`` (not from the adapter's hook), the heads are the NumPy ones and
the distribution is :func:`autodeco_samplers.core.reference.next_token_distribution`.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import next_token_distribution, temperature_probs

BOUNDARY_EPS = 1e-5


def teacher_forced(model, sequences, attention_mask):
    """``(hidden [B, L, H], logits [B, L, V])`` as float64 NumPy from one full forward; position
    ids follow the attention mask as ``generate`` does under left padding."""
    import torch

    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=sequences, attention_mask=attention_mask, position_ids=pos, output_hidden_states=True)
    return out.hidden_states[-1].double().numpy(), out.logits.double().numpy()


def reference_steps(
    model, heads, policy: DecodingPolicy, sequences, attention_mask, prompt_len: int, n_steps: int, ban=()
) -> List[Tuple[np.ndarray, ...]]:
    """Per generated step ``s``: ``(probs [B, V], T_pred, P_pred, T_used, P_used, logits)``,
    computed from the position ``prompt_len + s - 1`` of a teacher-forced forward. The heads
    read the model's logits; ``ban`` token ids (e.g. EOS under ``min_new_tokens``) are set to
    ``-inf`` in the logits the distribution is computed from (and returned)."""
    hidden, logits = teacher_forced(model, sequences, attention_mask)
    out = []
    for s in range(n_steps):
        t = prompt_len + s - 1
        h, lg = hidden[:, t], logits[:, t]
        T_pred, P_pred = heads.predict(h.astype(np.float32), lg.astype(np.float32))
        T_used, P_used = policy.apply(T_pred.astype(np.float64), P_pred.astype(np.float64))
        masked = ban_tokens(lg, ban)
        out.append((next_token_distribution(masked, T_used, P_used), T_pred, P_pred, T_used, P_used, masked))
    return out


def ban_tokens(logits: np.ndarray, ban) -> np.ndarray:
    out = np.array(logits, dtype=np.float64, copy=True)
    if len(ban):
        out[..., list(ban)] = -np.inf
    return out


def boundary_tokens(logits: np.ndarray, T: float, P: float, eps: float = BOUNDARY_EPS) -> np.ndarray:
    """Token ids whose exclusive prefix sum lies within ``eps`` of ``P`` (either choice is legal)."""
    q = temperature_probs(logits[None, :], T)[0]
    order = np.lexsort((np.arange(q.size), -q))
    c = np.cumsum(q[order]) - q[order]
    return order[np.abs(c - P) < eps]


def assert_same_distribution(
    got: np.ndarray, ref: np.ndarray, logits: np.ndarray, T: float, P: float, atol=2e-4, eps: float = BOUNDARY_EPS
):
    """``got`` equals ``ref`` up to float noise; supports may differ only on boundary tokens
    (exclusive prefix sum within ``eps`` of ``P``, computed from ``logits``, ``T``, ``P``).

    When the supports differ (each differing token must be a boundary token), ``got`` is
    compared with the reference's tempered probabilities renormalised over ``got``'s own
    support, so its probabilities are checked in every case, never skipped.
    """
    got = np.asarray(got, np.float64)
    got_support = got > 0
    ref_support = ref > 0
    differ = np.nonzero(got_support != ref_support)[0]
    if differ.size:
        allowed = set(boundary_tokens(logits, T, P, eps).tolist())
        bad = [int(i) for i in differ if int(i) not in allowed]
        assert not bad, f"supports differ on non-boundary tokens {bad[:10]} (T={T}, P={P})"
        q = temperature_probs(np.asarray(logits, np.float64)[None, :], T)[0]
        expected = np.where(got_support, q, 0.0)
        assert expected.sum() > 0, "the engine's support has no reference mass"
        ref = expected / expected.sum()
    np.testing.assert_allclose(got, ref, atol=atol, rtol=0)


def joint_g_pvalue(draws, joint: dict) -> float:
    """G test of observed outcomes (hashable, e.g. tuples of tokens) against the exact
    distribution ``joint`` (``{outcome: probability}``); 0 when an outcome outside its support
    was observed (an impossible outcome rejects outright)."""
    if any(d not in joint for d in draws):
        return 0.0
    cells = sorted(joint)
    index = {c: i for i, c in enumerate(cells)}
    counts = np.bincount([index[d] for d in draws], minlength=len(cells))
    return g_test_pvalue(counts, np.array([joint[c] for c in cells]))


def g_test_pvalue(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """p-value of the G test of ``counts`` against ``probs``; bins with expected count below
    ``min_expected`` are pooled into one."""
    from scipy import stats

    n = counts.sum()
    expected = probs * n
    big = expected >= min_expected
    obs = list(counts[big]) + ([counts[~big].sum()] if (~big).any() else [])
    exp = list(expected[big]) + ([expected[~big].sum()] if (~big).any() else [])
    obs, exp = np.asarray(obs, float), np.asarray(exp, float)
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 2.0 * np.sum(np.where(obs > 0, obs * np.log(obs / exp), 0.0))
    return float(stats.chi2.sf(g, df=max(len(obs) - 1, 1)))
