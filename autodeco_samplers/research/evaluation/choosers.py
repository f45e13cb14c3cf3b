"""Choosers: how one decoding strategy turns a batch's last logits and hidden states into
tokens (the per-step draw :func:`~autodeco_samplers.research.evaluation.decode.generate_rows`
calls). Every chooser draws with the core rules from the uniforms it is given (one per row,
float64 in ``[0, 1)``: the inverse CDF crosses it at the drawn token), no Python loop over rows.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from autodeco_samplers.core.reference import GREEDY_TEMPERATURE

__all__ = ["Choice", "Chooser", "is_greedy", "static_chooser", "autodeco_chooser", "baseline_chooser"]


class Choice(NamedTuple):
    """One step's draw for ``b`` rows, every field ``[b]``: the ``tokens``, the ``T``/``P``
    the draw used and the heads' predictions ``T_pred``/``P_pred`` (NaN where a field is not
    defined or not recorded)."""

    tokens: Any
    T: Any
    P: Any
    T_pred: Any
    P_pred: Any


#: ``choose(hidden [b, H], logits [b, V], uniforms [b]) -> Choice``
Chooser = Callable[[Any, Any, Any], Choice]


def is_greedy(temperature: float) -> bool:
    """The core's greedy rule: a temperature below ``GREEDY_TEMPERATURE`` is argmax (ties to
    the lowest id), so its samples are the same for every seed."""
    return temperature < GREEDY_TEMPERATURE


def _nan(logits):
    import torch

    return torch.full((logits.shape[0],), float("nan"), device=logits.device)


def static_chooser(temperature: float, top_p: float, heads=None) -> Chooser:
    """The canonical rule with fixed ``(temperature, top_p)``
    (:func:`~autodeco_samplers.core.torch_ops.torch_rule_sample`; ``T = 0`` is greedy). With
    ``heads`` the heads' predictions are recorded (they do not change the draw)."""
    import torch

    from autodeco_samplers.core.torch_ops import torch_rule_sample

    def choose(hidden, logits, u) -> Choice:
        B = logits.shape[0]
        T = torch.full((B,), float(temperature), device=logits.device)
        P = torch.full((B,), float(top_p), device=logits.device)
        T_pred, P_pred = heads(hidden, logits) if heads is not None else (_nan(logits), _nan(logits))
        return Choice(torch_rule_sample(logits, T, P, uniforms=u), T, P, T_pred, P_pred)

    return choose


def autodeco_chooser(heads, policy=None) -> Chooser:
    """The heads' per-token ``(T, P)`` through ``policy`` (default: ``DecodingPolicy()``),
    canonical rule (:func:`~autodeco_samplers.core.step.torch_step_sample`)."""
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_sample

    if heads is None:
        raise ValueError("the autodeco strategy needs heads")
    policy = policy if policy is not None else DecodingPolicy()

    def choose(hidden, logits, u) -> Choice:
        st = torch_step_sample(hidden, logits, heads, policy, uniforms=u)
        return Choice(st.token_ids, st.T, st.P, st.T_pred, st.P_pred)

    return choose


def baseline_chooser(baseline) -> Chooser:
    """A :class:`~autodeco_samplers.research.baselines.numpy_baselines.Baseline` drawn from its
    own distribution; ``T`` records the temperature it used (its dynamic one for dynatemp and
    EDT, else its ``T`` parameter, default 1), ``P`` is NaN."""
    import torch

    from autodeco_samplers.core.torch_ops import sample_tokens
    from autodeco_samplers.research.baselines import torch_baselines as tbl

    temperature_of = {"dynatemp": tbl.dynatemp_temperature, "edt": tbl.edt_temperature}.get(baseline.kind)

    def choose(hidden, logits, u) -> Choice:
        B = logits.shape[0]
        T = temperature_of(logits, **baseline.params).float() if temperature_of else torch.full(
            (B,), float(baseline.params.get("T", 1.0)), device=logits.device)
        return Choice(sample_tokens(baseline.torch_distribution(logits), uniforms=u), T, _nan(logits), _nan(logits), _nan(logits))

    return choose
