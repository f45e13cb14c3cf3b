"""The AutoDeco step: heads -> policy -> canonical rule, once per array library.

Every engine calls one of these (transformers, evaluation, conformance, SGLang and vLLM use
torch; llama.cpp uses NumPy); nothing else wires heads to the rule. The rule itself is
:mod:`autodeco_samplers.core.reference` (the specification); the torch rule is
:mod:`autodeco_samplers.core.torch_ops` (its kept set: :func:`autodeco_samplers.core.torch_nucleus.kept_set`)
and the NumPy one :mod:`autodeco_samplers.core.fast_nucleus`, both without sorting the vocabulary
and both tested against the reference.

Per step, for ``[B, H]`` hidden states and ``[B, V]`` logits:

1. ``T_pred, P_pred = heads(hidden, logits)`` (the top-p head reads statistics of
   ``softmax(l / (T_pred + 1e-8))``);
2. ``T, P = policy.apply(T_pred, P_pred, temperature, top_p)`` where ``temperature`` /
   ``top_p`` are optional per-row ``[B]`` request multipliers that multiply the policy's
   (the one request-knob rule, :meth:`DecodingPolicy.for_request`);
3. the canonical distribution of ``(logits, T, P)``: ``softmax((l - max l) / T)`` restricted
   to the nucleus (exclusive prefix sum ``< P``, ties by lower id; ``P >= 1`` keeps every
   token of positive probability), renormalised; ``T < 1e-6`` is greedy (argmax, lowest id).

Torch gives two outputs (through :func:`~autodeco_samplers.core.torch_ops.torch_rule_logits` and
:func:`~autodeco_samplers.core.torch_ops.torch_rule_sample`): :func:`torch_step_logits`, logits whose plain softmax is that
distribution (``(l - max l) / T`` inside the nucleus, a finite ``fill`` outside, for engines
that sample themselves), and :func:`torch_step_sample`, a drawn token (inverse CDF over the
kept tokens only, one uniform per row from ``generator``). Neither synchronises with the host
on an accelerator when ``check=False`` (so both can be captured in a CUDA graph; on the CPU
they read one boolean per step, see ``sync``); ``check=True``
validates logits, ``T`` and ``P`` (NaN, +inf, negative ``T``) and does synchronise. Inside a
captured graph no check is possible: a NaN or infinite ``T`` then yields an arbitrary kept
token, so engines must validate request knobs before capture.

NumPy (one row at a time in llama.cpp) gives the same two stages as one
:class:`~autodeco_samplers.core.interfaces.NumpyStep`: :func:`numpy_step_distribution`, the
canonical distribution of each row as sparse ``(ids, probs)`` rows, and
:func:`numpy_step_sample`, the same plus a drawn token (one uniform per row from ``rng``);
``exact=True`` runs the reference's full sort instead of the sort-free nucleus. Both always
validate. :func:`numpy_heads_policy` is their shared first half (T and P only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from autodeco_samplers.core.errors import InvalidParameterError
from autodeco_samplers.core.interfaces import NumpyStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS, draw_row, next_token_distribution

__all__ = [
    "TorchStep",
    "compiled_step",
    "step_kernel",
    "torch_step_logits",
    "torch_step_sample",
    "numpy_heads_policy",
    "numpy_step_distribution",
    "numpy_step_sample",
]

_DEFAULT_POLICY = DecodingPolicy()


@dataclass(frozen=True)
class TorchStep:
    """One batched torch step: per-row predicted and used (T, P), all ``[B]``, and what the
    step produced: ``token_ids`` ``[B]`` (:func:`torch_step_sample`) or ``logits`` ``[B, V]``
    whose softmax is the canonical distribution (:func:`torch_step_logits`); the other is
    ``None``. The NumPy twin is :class:`autodeco_samplers.core.interfaces.NumpyStep`."""

    T_pred: Any
    P_pred: Any
    T: Any
    P: Any
    token_ids: Any = None
    logits: Any = None


def _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check):
    import torch

    from autodeco_samplers.core import torch_ops

    arr = torch_ops.as_logits(logits, check=check)
    h_logits = arr if head_logits is None else head_logits.float()
    T_pred, P_pred = heads(hidden, h_logits)
    T, P = policy.apply(T_pred, P_pred, temperature, top_p)
    if check:
        bad = ~torch.isfinite(T) | (T < 0) | torch.isnan(P)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise InvalidParameterError(
                f"temperature must be finite and >= 0 and top_p a number, got T={float(T[row])}, "
                f"P={float(P[row])} (row {row})"
            )
    return arr, T_pred, P_pred, T, P


def torch_step_logits(
    hidden,
    logits,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    *,
    temperature=None,
    top_p=None,
    head_logits=None,
    fill: float = OUTSIDE_NUCLEUS,
    check: bool = False,
    sync: Optional[bool] = None,
    compiled: bool = False,
    kernel: Optional[str] = None,
) -> TorchStep:
    """The step for engines that sample themselves (SGLang, vLLM, transformers' processors).

    Args:
        hidden: ``[B, H]`` post-norm hidden states that produced ``logits``.
        logits: ``[B, V]`` logits the rule applies to (upcast to float32).
        heads: a torch module, ``heads(hidden, logits) -> (T_pred, P_pred)``.
        policy: the deployment's knobs; ``temperature`` / ``top_p`` (optional ``[B]``) are
            per-row request multipliers that multiply the policy's.
        head_logits: logits the heads read when they differ from ``logits`` (default: same).
        fill: value outside the nucleus (finite; default
            :data:`~autodeco_samplers.core.reference.OUTSIDE_NUCLEUS`). ``check``/``sync``: see
            the module docstring.
        compiled: run the step through ``torch.compile`` (inductor: Triton kernels on a GPU,
            C++ on the CPU; dynamic shapes, one graph, ``sync=False``); see :func:`compiled_step`.
            Applies to the torch path; with the kernel the heads run eagerly.
        kernel: which path runs the rule after the heads (see :func:`step_kernel`): ``"auto"``
            (the default, through the environment variable ``AUTODECO_STEP_KERNEL``): the
            Triton kernel on CUDA whenever Triton imports, torch elsewhere; ``"triton"``;
            ``"torch"``.

    Returns:
        :class:`TorchStep` with ``logits`` set (see :func:`torch_rule_logits`).
    """
    if step_kernel(kernel, logits) == "triton":
        from autodeco_samplers.core.triton_step import triton_rule_logits

        arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check)
        return TorchStep(T_pred, P_pred, T, P, logits=triton_rule_logits(arr, T, P, fill=fill))
    if compiled:
        if check:
            _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, True)
        out = compiled_step("logits")(hidden, logits, heads, policy, temperature, top_p, head_logits, fill)
        return TorchStep(*out[:4], logits=out[4])
    from autodeco_samplers.core.torch_ops import torch_rule_logits

    arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check)
    out = torch_rule_logits(arr, T, P, fill=fill, check=False, sync=sync)
    return TorchStep(T_pred, P_pred, T, P, logits=out)


def torch_step_sample(
    hidden,
    logits,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    generator=None,
    *,
    temperature=None,
    top_p=None,
    head_logits=None,
    check: bool = False,
    sync: Optional[bool] = None,
    compiled: bool = False,
    kernel: Optional[str] = None,
    uniforms=None,
) -> TorchStep:
    """The step for engines that let us draw (transformers' own loop, the evaluation):
    :class:`TorchStep` with ``token`` set (see :func:`torch_rule_sample`); arguments as
    :func:`torch_step_logits`, ``generator`` a ``torch.Generator`` on the logits' device (the
    uniforms are drawn outside the compiled graph, so ``compiled`` draws the same tokens, and so
    does the Triton kernel, ``kernel``: see :func:`step_kernel`). ``uniforms`` (``[B]`` in
    ``[0, 1)``) replaces the generator's draws: the same uniforms give the same tokens on every
    path (:func:`~autodeco_samplers.core.torch_ops.row_uniforms`)."""
    from autodeco_samplers.core.torch_ops import row_uniforms

    if step_kernel(kernel, logits) == "triton":
        from autodeco_samplers.core.triton_step import triton_rule_sample_with

        arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check)
        u = row_uniforms(arr, generator, uniforms)
        return TorchStep(T_pred, P_pred, T, P, token_ids=triton_rule_sample_with(arr, T, P, u))
    if compiled:
        if check:
            _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, True)
        u = row_uniforms(logits, generator, uniforms)
        out = compiled_step("sample")(hidden, logits, heads, policy, temperature, top_p, head_logits, u)
        return TorchStep(*out[:4], token_ids=out[4])
    from autodeco_samplers.core.torch_ops import torch_rule_sample

    arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, check)
    token = torch_rule_sample(arr, T, P, generator, check=False, sync=sync, uniforms=uniforms)
    return TorchStep(T_pred, P_pred, T, P, token_ids=token)


def step_kernel(kernel: Optional[str], logits) -> str:
    """The one choice of the path after the heads for the torch step functions: ``"triton"``
    (:mod:`autodeco_samplers.core.triton_step`, one kernel launch, no host synchronisation) or
    ``"torch"`` (:mod:`autodeco_samplers.core.torch_ops`). ``kernel`` ``None`` reads the
    environment variable ``AUTODECO_STEP_KERNEL`` (``auto`` when unset). ``"auto"``: Triton for
    CUDA logits whenever Triton imports, torch on the CPU and as the fallback; ``"triton"``
    forces the kernel (on CPU tensors through Triton's interpreter, ``TRITON_INTERPRET=1``),
    falling back to torch with a warning that names why where it cannot run; ``"torch"``
    forces torch. Float64 logits always take torch. Both paths give the same kept set and,
    for the same uniforms, the same tokens
    (:func:`autodeco_samplers.core.triton_step.resolve_kernel`)."""
    from autodeco_samplers.core.triton_step import resolve_kernel

    return resolve_kernel(kernel, logits)


def _logits_graph(hidden, logits, heads, policy, temperature, top_p, head_logits, fill):
    from autodeco_samplers.core.torch_ops import torch_rule_logits

    arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, False)
    return T_pred, P_pred, T, P, torch_rule_logits(arr, T, P, fill=fill, check=False, sync=False)


def _sample_graph(hidden, logits, heads, policy, temperature, top_p, head_logits, u):
    from autodeco_samplers.core.torch_ops import rule_sample_with

    arr, T_pred, P_pred, T, P = _torch_heads_policy(hidden, logits, heads, policy, temperature, top_p, head_logits, False)
    return T_pred, P_pred, T, P, rule_sample_with(arr, T, P, u, sync=False)


_COMPILED: dict = {}
COMPILE_DYNAMIC = True
"""``dynamic`` of :func:`compiled_step`'s ``torch.compile`` (True: one graph for every batch
size above 1; False: one graph per shape)."""


def compiled_step(kind: str):
    """The ``torch.compile``-d step (``kind`` ``"logits"`` or ``"sample"``), built once per
    process: one graph (``fullgraph=True``, no host synchronisation, the threshold search
    selected on the device as with ``sync=False``), ``dynamic=True`` so that a new batch size
    or vocabulary does not recompile. Inductor fuses the step's elementwise work and
    reductions into a few kernels (Triton on a GPU, C++ on the CPU). The first call per device
    and dtype pays the compilation (bench/results/bench_compile.json has the times)."""
    if kind not in ("logits", "sample"):
        raise ValueError(f"kind must be 'logits' or 'sample', got {kind!r}")
    key = (kind, COMPILE_DYNAMIC)
    fn = _COMPILED.get(key)
    if fn is None:
        import torch

        from autodeco_samplers.core.torch_nucleus import register_opaque_scan

        register_opaque_scan()
        fn = torch.compile(_logits_graph if kind == "logits" else _sample_graph, dynamic=COMPILE_DYNAMIC, fullgraph=True)
        _COMPILED[key] = fn
    return fn


# ----------------------------------------------------------------------------- NumPy


def numpy_heads_policy(
    hidden: np.ndarray,
    logits: np.ndarray,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    *,
    temperature=None,
    top_p=None,
) -> NumpyStep:
    """Steps 1 and 2 of the NumPy step: ``T_pred, P_pred = heads.predict(hidden, logits)`` and
    ``T, P = policy.apply(T_pred, P_pred, temperature, top_p)``, a :class:`NumpyStep` without
    a distribution. For code that checks (T, P) or applies a rule of its own (the conformance
    suite); decoding calls :func:`numpy_step_distribution` or :func:`numpy_step_sample`.

    ``heads`` has ``predict(hidden, logits) -> (T_pred, P_pred)`` (NumPy heads); ``hidden``
    ``[B, H]`` or ``[H]``, ``logits`` ``[B, V]`` or ``[V]``; ``temperature`` / ``top_p`` are
    optional per-row ``[B]`` request multipliers (:meth:`DecodingPolicy.apply`).
    """
    logits = np.atleast_2d(logits)
    T_pred, P_pred = heads.predict(np.atleast_2d(hidden), logits)
    T, P = policy.apply(T_pred, P_pred, temperature, top_p)
    return NumpyStep(T_pred, P_pred, T, P)


def numpy_step_distribution(
    hidden: np.ndarray,
    logits: np.ndarray,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    *,
    temperature=None,
    top_p=None,
    exact: bool = False,
) -> NumpyStep:
    """The NumPy step without the draw: :func:`numpy_heads_policy`, then each row's canonical
    distribution as ``rows[b] = (ids, probs)``, the kept token ids (ascending) and their
    probabilities (:meth:`NumpyStep.dense` scatters them into ``[B, V]``).

    ``exact=False`` (what engines run): :func:`fast_nucleus.sparse_next_token_distribution`,
    no vocabulary sort, proved and tested equal to the reference. ``exact=True``: the
    specification itself, :func:`reference.next_token_distribution` (a full sort per row;
    ``probs`` ``[B, V]`` is set too). Validates the logits and the used ``T``/``P`` (NaN,
    +inf, negative ``T`` raise ``InvalidLogitsError`` / :class:`InvalidParameterError`).
    """
    logits = np.atleast_2d(logits)
    st = numpy_heads_policy(hidden, logits, heads, policy, temperature=temperature, top_p=top_p)
    if exact:
        probs = next_token_distribution(logits, st.T, st.P)
        rows = []
        for row in probs:
            ids = np.flatnonzero(row > 0)
            rows.append((ids, row[ids]))
        return replace(st, rows=rows, probs=probs)
    from autodeco_samplers.core.fast_nucleus import sparse_next_token_distribution

    rows = [sparse_next_token_distribution(logits[b], st.T[b], st.P[b]) for b in range(logits.shape[0])]
    return replace(st, rows=rows)


def numpy_step_sample(
    hidden: np.ndarray,
    logits: np.ndarray,
    heads,
    policy: DecodingPolicy = _DEFAULT_POLICY,
    rng: Optional[np.random.Generator] = None,
    *,
    temperature=None,
    top_p=None,
    exact: bool = False,
) -> NumpyStep:
    """The NumPy step with the draw (llama.cpp's per-token sampler):
    :func:`numpy_step_distribution`, then one token per row drawn with ``rng`` (one
    ``rng.random()`` per row in row order, inverse CDF over the kept tokens in ascending id
    order: :func:`reference.draw_row`). ``exact`` draws the same token for the same uniform
    unless it falls within float32 rounding of a CDF step. Returns the
    :class:`NumpyStep` with ``rows`` and ``token_ids``."""
    rng = rng if rng is not None else np.random.default_rng()
    st = numpy_step_distribution(hidden, logits, heads, policy, temperature=temperature, top_p=top_p, exact=exact)
    tokens = np.array([draw_row(ids, probs, rng) for ids, probs in st.rows], dtype=np.int64)
    return replace(st, token_ids=tokens)
