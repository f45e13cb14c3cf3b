"""The Triton kernel of the step (core/triton_step.py) is the canonical rule, and the step
chooses it as documented.

Without a GPU the kernel runs through Triton's interpreter (``TRITON_INTERPRET=1``, set only
while these tests run) on CPU tensors: kept sets against the NumPy reference (the conformance
checker), logits against the torch path, and tokens against the torch path for the same
uniforms (the same token unless the uniform falls within float rounding of a CDF step or the
two kept sets differ by a token the checker allows either way). Skipped, with the reason,
where Triton is not installed (``pip install "autodeco-samplers[triton]"``).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from autodeco_samplers.conformance.checker import check_distribution
from autodeco_samplers.conformance.strategies import DecodingCase, decoding_cases, vocab_sizes
from autodeco_samplers.core import reference as ref
from autodeco_samplers.core import step, torch_ops, triton_step

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    # Triton reads TRITON_INTERPRET when first imported: import it (and the kernel) interpreted
    # now, then leave the process's environment as it was (the fixture sets it per test)
    _before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
try:
    pytest.importorskip("triton", reason="triton is not installed (pip install 'autodeco-samplers[triton]')")
    _INTERPRETED = triton_step.interpreted()
finally:
    if DEVICE == "cpu":
        os.environ.pop("TRITON_INTERPRET") if _before is None else os.environ.__setitem__("TRITON_INTERPRET", _before)
if DEVICE == "cpu" and not _INTERPRETED:
    pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set (run this file on its own)",
                allow_module_level=True)

FILL = ref.OUTSIDE_NUCLEUS


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """Triton's interpreter for CPU tensors, only while a test of this file runs."""
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(triton_step.KERNEL_ENV, raising=False)


def _tensors(case: DecodingCase):
    return tuple(torch.from_numpy(a).to(DEVICE) for a in (case.logits, case.T, case.P))


def _check_case(case: DecodingCase, seed: int = 0) -> None:
    logits, T, P = _tensors(case)
    got = triton_step.triton_rule_logits(logits, T, P, fill=FILL)
    assert torch.isfinite(got).all()
    verdict = check_distribution(case.logits, case.T, case.P, torch.softmax(got.double(), dim=-1).cpu().numpy())
    assert verdict.ok, verdict.describe("triton kernel")
    want = torch_ops.torch_rule_logits(logits, T, P, fill=FILL)
    kept, kept_torch = got > FILL, want > FILL
    # the kept tokens carry the torch path's values (the same (l - max l) / T)
    both = kept & kept_torch
    torch.testing.assert_close(got[both], want[both], rtol=0, atol=0)

    u = torch.rand(logits.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(DEVICE)
    token = triton_step.triton_rule_sample_with(logits, T, P, u)
    token_torch = torch_ops.rule_sample_with(logits, T, P, u)
    assert bool(kept.gather(-1, token[:, None]).all()), "drew a token outside the kept set"
    for b in np.flatnonzero((token != token_torch).cpu().numpy()):
        if not torch.equal(kept[b], kept_torch[b]):
            continue  # a boundary token the checker accepts either way
        q = torch.softmax(torch.where(kept[b], got[b].double(), -torch.inf), dim=-1).cpu().numpy()
        cdf = np.cumsum(q)
        gap = np.abs(cdf - u[b].item()).min()
        assert gap < 1e-6, f"row {b}: token {int(token[b])} != torch {int(token_torch[b])} (u={u[b].item()})"


@settings(deadline=None)
@given(decoding_cases(vocab_sizes=vocab_sizes(max_vocab=4096)), st.integers(0, 2**31 - 1))
def test_kernel_is_the_reference_rule(case, seed):
    """Hypothesis batches of the eager rule (ties, plateaus, -inf, huge/tiny, greedy, P at 0 and 1)."""
    _check_case(case, seed)


def _case(rows, T, P) -> DecodingCase:
    return DecodingCase(np.asarray(rows, dtype=np.float32), np.asarray(T, dtype=np.float32), np.asarray(P, dtype=np.float32))


def test_edge_rows():
    V = 300
    rng = np.random.default_rng(1)
    inf = -np.inf
    one_left = np.full(V, inf)
    one_left[123] = 2.0
    sparse = rng.normal(0, 3, V)
    sparse[rng.random(V) < 0.8] = inf
    ties = np.repeat(np.arange(10.0), V // 10)
    cases = [
        _case([np.zeros(V)] * 4, [1.0, 1.0, 1.0, 0.0], [0.5, 1.0, 0.0, 0.5]),  # all tied: the lowest ids
        _case([one_left, sparse, sparse, one_left], [1.0, 0.5, 1.0, 0.0], [0.9, 1.0, 0.3, 1.0]),
        _case([ties, ties, ties], [1.0, 1e-6, 5e-7], [0.37, 0.999999, 0.5]),  # greedy below 1e-6 only
        _case([rng.normal(0, 1, V) * 1e30, rng.normal(0, 1, V) * 1e-30], [1.0, 2.0], [0.9, 0.999999]),
    ]
    for case in cases:
        _check_case(case)
    # exact kept sets where no rounding is involved
    logits, T, P = _tensors(cases[0])
    kept = triton_step.triton_rule_logits(logits, T, P, fill=FILL) > FILL
    assert kept[0].nonzero()[:, 0].tolist() == list(range(V // 2))  # c_i = i / V < 0.5
    assert kept[1].all() and kept[2].nonzero()[:, 0].tolist() == [0] and kept[3].nonzero()[:, 0].tolist() == [0]
    logits, T, P = _tensors(cases[2])
    got = triton_step.triton_rule_sample_with(logits, T, P, torch.full((3,), 0.999, dtype=torch.float64))
    assert got[2].item() == 270  # greedy: the lowest id of the maximum 9.0
    assert got[1].item() != 270  # T = 1e-6 is not greedy


def test_full_vocabulary_row():
    """One 152k row each: a peaked one and a flat one near P = 1 (the longest search)."""
    rng = np.random.default_rng(7)
    V = 152_064
    peaked = rng.normal(0, 1, V)
    peaked[rng.integers(V)] += 12
    _check_case(_case([peaked, rng.normal(0, 0.5, V)], [0.8, 1.0], [0.9, 0.999]))


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(decoding_cases(max_batch=3, vocab_sizes=st.sampled_from([32_000, 152_064])), st.integers(0, 2**31 - 1))
def test_kernel_at_full_vocabularies(case, seed):
    _check_case(case, seed)


# ----------------------------------------------------------------------------- the switch


def test_auto_picks_torch_on_cpu_and_forced_triton_runs_interpreted(monkeypatch):
    """auto: torch on the CPU (Triton on CUDA); triton: the kernel wherever it can run (CPU
    tensors through the interpreter)."""
    x = torch.zeros(2, 8)
    assert triton_step.resolve_kernel(None, x) == "torch"
    assert triton_step.resolve_kernel("auto", x) == "torch"
    if DEVICE == "cuda":
        assert triton_step.resolve_kernel(None, x.to(DEVICE)) == "triton"
        x = x.to(DEVICE)
    assert triton_step.resolve_kernel("triton", x) == "triton"
    assert triton_step.resolve_kernel("triton", x.double()) == "torch"  # float64 stays on torch
    monkeypatch.setenv(triton_step.KERNEL_ENV, "triton")
    assert triton_step.resolve_kernel(None, x) == "triton"
    assert triton_step.resolve_kernel("torch", x) == "torch"  # the keyword wins over the variable
    monkeypatch.setenv(triton_step.KERNEL_ENV, "cuda")
    with pytest.raises(ValueError, match=f"{triton_step.KERNEL_ENV} must be one of"):
        triton_step.resolve_kernel(None, x)
    with pytest.raises(ValueError, match="kernel must be one of"):
        triton_step.resolve_kernel("fast", x)


def test_forced_triton_that_cannot_run_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # CPU tensors without the interpreter
    monkeypatch.setattr(triton_step, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="TRITON_INTERPRET=1.*torch step"):
        assert triton_step.resolve_kernel("triton", torch.zeros(1, 4)) == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton_step, "_IMPORT", (None, "triton does not import (ImportError: test)"))
    with pytest.warns(RuntimeWarning, match="triton does not import"):
        assert triton_step.resolve_kernel("triton", torch.zeros(1, 4)) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert triton_step.resolve_kernel("auto", torch.zeros(1, 4)) == "torch"  # auto: silent


class _Heads(torch.nn.Module):
    """Heads that predict a fixed per-row (T, P), so the step's rule is what is compared."""

    def __init__(self, T, P):
        super().__init__()
        self.T, self.P = torch.as_tensor(T), torch.as_tensor(P)

    def forward(self, hidden, logits):
        return self.T, self.P


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_step_functions_take_the_kernel(monkeypatch, compiled):
    """``torch_step_logits`` / ``torch_step_sample`` with ``kernel="triton"`` (and the
    environment variable) give the torch step's logits and tokens, compiled or not."""
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(0, 3, (3, 2000)).astype(np.float32)).to(DEVICE)
    hidden = torch.zeros(3, 4, device=DEVICE)
    heads = _Heads(torch.tensor([1.0, 0.0, 0.7], device=DEVICE), torch.tensor([0.9, 0.5, 1.0], device=DEVICE))
    calls = []
    real = triton_step._launch
    monkeypatch.setattr(triton_step, "_launch", lambda *a: calls.append(1) or real(*a))
    a = step.torch_step_logits(hidden, logits, heads, kernel="triton", compiled=compiled)
    b = step.torch_step_logits(hidden, logits, heads, kernel="torch")
    assert calls and torch.equal(a.logits, b.logits) and torch.equal(a.T, b.T) and torch.equal(a.P, b.P)
    monkeypatch.setenv(triton_step.KERNEL_ENV, "triton")
    s = step.torch_step_sample(hidden, logits, heads, generator=torch.Generator(DEVICE).manual_seed(5), compiled=compiled)
    t = step.torch_step_sample(hidden, logits, heads, generator=torch.Generator(DEVICE).manual_seed(5), kernel="torch")
    assert len(calls) == 2 and torch.equal(s.token_ids, t.token_ids)


_COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from autodeco_samplers.core import _triton_kernel as k, triton_step as ts
sig = {"logits_ptr": "*fp32", "stride": "i32", "T_ptr": "*fp32", "P_ptr": "*fp32", "u_ptr": "*fp64",
       "out_ptr": "*fp32", "out_stride": "i32", "tok_ptr": "*i64", "V": "i32", "fill": "fp32",
       "SAMPLE": "constexpr", "BLOCK": "constexpr", "RADIX": "constexpr", "GREEDY": "constexpr"}
for sample in (True, False):
    src = ASTSource(fn=k.step_kernel, signature=sig, constexprs={
        "SAMPLE": sample, "BLOCK": ts.BLOCK_GPU, "RADIX": ts.RADIX, "GREEDY": 1e-6})
    out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": ts.NUM_WARPS})
    assert "ld.local" not in out.asm["ptx"], "register spills"
print("compiled")
"""


def test_kernel_compiles_for_an_h100_without_a_gpu():
    """The interpreter accepts code the compiler refuses (non-constexpr globals, loop-carried
    types): compile both forms ahead of time for sm_90 (H100/H200) down to a cubin, no GPU
    needed, in a fresh process (this one imported Triton interpreted)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", _COMPILE_FOR_H100], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0 and "compiled" in res.stdout, res.stderr[-3000:]
