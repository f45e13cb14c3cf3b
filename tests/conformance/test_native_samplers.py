"""The engines' own samplers, run for real, against the canonical rule (docs/design.md section 8)."""

import importlib.util

import numpy as np
import pytest

from autodeco_samplers.conformance import check_distribution
from autodeco_samplers.conformance.native import NATIVE, hf_warpers, llama_cpp_native, native_findings, native_report
from autodeco_samplers.conformance.strategies import SHAPES

LOGITS = np.array([2.0, 1.5, 1.0, 0.2, -0.5, -1.0], np.float32)


def test_hf_warpers_agree_without_ties_or_boundary():
    for T, P in ((0.5, 0.8), (1.3, 0.9), (1.0, 0.6)):
        assert check_distribution(LOGITS[None], T, P, hf_warpers(LOGITS, T, P)[None]).ok


def test_llama_cpp_native_chain_applies_top_p_before_temperature():
    T, P = 2.0, 0.6
    native = llama_cpp_native(LOGITS, T, P)
    verdict = check_distribution(LOGITS[None], T, P, native[None])
    assert not verdict.ok and verdict.rows[0].missing  # the hotter canonical nucleus is wider
    # with T = 1 the order does not matter and the two agree
    assert check_distribution(LOGITS[None], 1.0, P, llama_cpp_native(LOGITS, 1.0, P)[None]).ok


def test_hf_warpers_pick_an_arbitrary_subset_of_tied_tokens():
    flat = np.zeros(5, np.float32)
    verdict = check_distribution(flat[None], 1.0, 0.6, hf_warpers(flat, 1.0, 0.6)[None])
    assert not verdict.ok  # canonical keeps ids 0, 1, 2 (lowest ids among the tie)


@pytest.fixture(scope="module")
def findings():
    return {f.engine: f for f in native_findings(n_per_shape=6)}


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_report_runs_every_installed_native_sampler(findings, name):
    """Each native sampler either ran on every case (and is in the report with its counts) or
    is reported *skipped* here with its reason; a skipped sampler never counts as a pass."""
    module = NATIVE[name][0]
    if importlib.util.find_spec(module) is None:
        assert findings[name].skipped and module in findings[name].skipped
        pytest.skip(f"{name}: {module} is not installed in this environment")
    f = findings[name]
    assert f.skipped is None, f"{name} crashed: {f.skipped}"
    assert f.cases == 6 * len(SHAPES)
    # ties and boundary cases: every native sampler here is known to depart somewhere
    assert f.disagreements > 0, f
    text = native_report(n_per_shape=1)
    assert f"| {name} | {len(SHAPES)} |" in text
