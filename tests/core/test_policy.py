"""The decoding policy: request knobs as multipliers, clamps, overrides (docs/design.md section 3)."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import autodeco_samplers as ad
from autodeco_samplers.conformance.strategies import policies

preds = st.lists(st.tuples(st.floats(0, 2), st.floats(0, 1)), min_size=1, max_size=8)


@given(policies(), preds)
def test_policy_rule_on_numpy_and_torch(policy, rows):
    T_pred = np.array([r[0] for r in rows])
    P_pred = np.array([r[1] for r in rows])
    T, P = policy.apply(T_pred, P_pred)
    # the rule, written out
    T_base = np.full_like(T_pred, policy.fixed_temperature) if policy.fixed_temperature is not None else T_pred
    lo = -np.inf if policy.min_temperature is None else policy.min_temperature
    hi = np.inf if policy.max_temperature is None else policy.max_temperature
    np.testing.assert_allclose(T, np.clip(T_base, lo, hi) * policy.temperature)
    P_base = np.full_like(P_pred, policy.fixed_top_p) if policy.fixed_top_p is not None else P_pred
    np.testing.assert_allclose(P, np.clip(P_base * policy.top_p, 0, 1))
    Tt, Pt = policy.apply(torch.from_numpy(T_pred), torch.from_numpy(P_pred))
    np.testing.assert_allclose(Tt.numpy(), T)
    np.testing.assert_allclose(Pt.numpy(), P)


def test_defaults_are_the_heads_unchanged():
    policy = ad.DecodingPolicy()
    assert policy.is_default
    T, P = policy.apply(np.array([0.3, 1.7]), np.array([0.2, 0.99]))
    np.testing.assert_array_equal(T, [0.3, 1.7])
    np.testing.assert_array_equal(P, [0.2, 0.99])


def test_request_temperature_zero_is_greedy():
    T, P = ad.DecodingPolicy(temperature=0.0).apply(np.array([1.3]), np.array([0.9]))
    logits = np.array([[0.1, 2.0, 2.0, -1.0]])
    np.testing.assert_array_equal(ad.next_token_distribution(logits, T, P), [[0, 1, 0, 0]])


def test_per_row_multipliers_multiply_the_scalar_ones():
    """A request's multipliers compose with the policy's by a product (the one request-knob
    rule): per-row ``apply`` and ``for_request`` give the same T and P."""
    policy = ad.DecodingPolicy(temperature=3.0, top_p=0.5, max_temperature=1.5)
    T_pred = np.array([0.5, 2.0, 1.0])
    P_pred = np.array([0.5, 0.9, 0.8])
    t_req, p_req = np.array([1.0, 0.5, 0.0]), np.array([1.0, 2.0, 0.5])
    T, P = policy.apply(T_pred, P_pred, t_req, p_req)
    # T: clamp(T_pred, max 1.5) * 3.0 * request; P: clamp(P_pred * 0.5 * request, 0, 1)
    np.testing.assert_allclose(T, [0.5 * 3.0, 1.5 * 3.0 * 0.5, 0.0])
    np.testing.assert_allclose(P, [0.25, 0.9, 0.2])
    for b in range(3):
        Tb, Pb = policy.for_request(t_req[b], p_req[b]).apply(T_pred[b:b + 1], P_pred[b:b + 1])
        np.testing.assert_allclose([Tb[0], Pb[0]], [T[b], P[b]])
    Tt, Pt = policy.apply(torch.from_numpy(T_pred), torch.from_numpy(P_pred), torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64), None)
    np.testing.assert_allclose(Tt.numpy(), [1.5, 2.25, 0.0])
    np.testing.assert_allclose(Pt.numpy(), [0.25, 0.45, 0.4])


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_for_request_refuses_bad_knobs_by_name(bad):
    policy = ad.DecodingPolicy()
    with pytest.raises(ad.InvalidParameterError, match="temperature"):
        policy.for_request(temperature=bad)
    with pytest.raises(ad.InvalidParameterError, match="top_p"):
        policy.for_request(top_p=bad)
    assert policy.for_request() is policy
    assert policy.for_request(0.0).temperature == 0.0


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "x", None])
def test_check_knob_is_the_one_knob_rule(bad):
    from autodeco_samplers.core.policy import check_knob

    assert check_knob("temperature", 0) == 0.0 and check_knob("top_p", "1.5") == 1.5
    with pytest.raises(ad.InvalidParameterError, match="autodeco_top_p must be a finite number greater than or equal to 0"):
        check_knob("autodeco_top_p", bad)
    with pytest.raises(ad.InvalidParameterError, match="min_temperature"):
        ad.DecodingPolicy(min_temperature=bad if bad is not None else -1.0)
