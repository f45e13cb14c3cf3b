"""The engines' own samplers, run for real, against the canonical rule (docs/design.md section 8)."""

import importlib.util

import numpy as np
import pytest

from autodeco_samplers.conformance import check_distribution, native
from autodeco_samplers.conformance.native import NATIVE, _cases, hf_warpers, llama_cpp_native, native_findings, native_report
from autodeco_samplers.conformance.strategies import SHAPES
from autodeco_samplers.core.reference import next_token_distribution

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


def test_hf_warpers_on_tied_tokens_are_judged_by_which_ids_they_keep():
    """Five tied tokens, P = 0.6: the canonical nucleus is ids 0, 1, 2 (lowest ids first).
    transformers keeps three of them too; the verdict depends only on whether they are those
    three (transformers picks its own subset today; a fix would pass, not break, this test)."""
    flat = np.zeros(5, np.float32)
    hf = hf_warpers(flat, 1.0, 0.6)
    canonical = next_token_distribution(flat[None].astype(np.float64), 1.0, 0.6)[0]
    assert (canonical > 0).tolist() == [True, True, True, False, False]
    assert (hf > 0).sum() == 3 and np.allclose(hf[hf > 0], 1 / 3)
    verdict = check_distribution(flat[None], 1.0, 0.6, hf[None])
    assert verdict.ok == ((hf > 0) == (canonical > 0)).all()


@pytest.fixture(scope="module")
def findings():
    return {f.engine: f for f in native_findings(n_per_shape=6)}


def _reference_sampler(row, T, P):
    return next_token_distribution(row[None].astype(np.float64), T, P)[0]


def _top_p_before_temperature(row, T, P):
    """A deliberately wrong sampler: the nucleus of the T = 1 distribution, then temperature."""
    keep = _reference_sampler(row, 1.0, P) > 0
    z = np.where(keep, row.astype(np.float64) / T, -np.inf)
    e = np.exp(z - z[keep].max())
    return e / e.sum()


def test_the_report_measures_departures_from_the_rule(monkeypatch):
    """With known samplers in place of the engines': the rule itself never departs, a wrong
    order departs, and the report counts, locates and shows exactly those cases."""
    monkeypatch.setattr(native, "NATIVE", {"exact": ("numpy", _reference_sampler),
                                           "top-p-first": ("numpy", _top_p_before_temperature)})
    found = {f.engine: f for f in native_findings(n_per_shape=6)}
    n = 6 * len(SHAPES)
    exact, wrong = found["exact"], found["top-p-first"]
    assert exact.skipped is None and exact.cases == n and exact.disagreements == 0 and not exact.examples
    departs = [(shape, row, T, P) for shape, row, T, P in _cases(6, 0)
               if not check_distribution(row[None], np.float32(T), np.float32(P), _top_p_before_temperature(row, T, P)[None]).ok]
    assert wrong.cases == n and wrong.disagreements == len(departs) > 0
    assert all(T != 1.0 for _, _, T, _ in departs)  # at T = 1 the order does not matter
    assert wrong.by_shape == {s: sum(d[0] == s for d in departs) for s in {d[0] for d in departs}}
    assert len(wrong.examples) == len(departs)
    text = native_report(n_per_shape=6)
    assert f"| exact | {n} | 0 | - |" in text
    assert f"| top-p-first | {n} | {len(departs)} |" in text and "**top-p-first**, smallest diverging examples" in text
    assert "**exact**" not in text


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
    # what the report says about the engine is what the checker finds on each case (the counts
    # are the engine's own business: a fixed engine reports 0); a counted case really differs
    # from the rule's distribution
    fn = NATIVE[name][1]
    departs = []
    for shape, row, T, P in _cases(6, 0):
        probs = fn(row, T, P)
        if not check_distribution(row[None], np.float32(T), np.float32(P), probs[None]).ok:
            departs.append(shape)
            assert np.abs(probs - _reference_sampler(row, T, P)).max() > 1e-6
    assert f.disagreements == len(departs) == len(f.examples) == sum(f.by_shape.values())
    assert f.by_shape == {s: departs.count(s) for s in set(departs)}
    text = native_report(n_per_shape=1)
    assert f"| {name} | {len(SHAPES)} |" in text
