"""The conformance suite itself: real engines pass, deliberately wrong rules fail, the CLI
prints the table, skipped engines show as skipped, outsiders can run it with pytest.

``KERNEL_EXAMPLES`` (default 2000, ``$AUTODECO_CONFORMANCE_EXAMPLES``) Hypothesis kernel cases
run per registered engine, plus the fixed real-size cases; Hypothesis is seeded afresh on
every run (the seed is in a failure's message; ``$AUTODECO_CONFORMANCE_SEED`` replays it).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from autodeco_samplers.frontends.cli import main
from autodeco_samplers.conformance import assert_conforms, check_distribution
from autodeco_samplers.conformance.engines import ConformanceEngine, WrongRuleEngine, engine_names
from autodeco_samplers.core.interfaces import NumpyStep
from autodeco_samplers.conformance.runner import ConformanceFailure, format_table, run_engine, run_kernel
from autodeco_samplers.conformance.strategies import REAL_VOCAB_SIZES, heads_cases, real_size_cases

KERNEL_EXAMPLES = int(os.environ.get("AUTODECO_CONFORMANCE_EXAMPLES", "2000"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """torch on one thread: 4x faster for these small per-case tensors on a shared machine."""
    yield


def test_kernel_cases_reach_real_vocabulary_sizes():
    from hypothesis import given, seed, settings

    sizes = []

    @seed(0)
    @settings(max_examples=1000, database=None, deadline=None, derandomize=False)
    @given(heads_cases())
    def collect(case):
        sizes.append(case.logits.shape[1])

    collect()
    sizes = np.array(sizes)
    assert sizes.min() == 1 and (sizes <= 300).mean() > 0.8
    assert ((sizes > 1025) & (sizes <= 4096)).any()  # the transformers candidate path's range
    assert np.isin(sizes, REAL_VOCAB_SIZES).sum() >= 3  # ~1% at 32k..152k
    assert np.isin(sizes, REAL_VOCAB_SIZES).mean() < 0.03  # big cases stay a small fraction
    fixed = {case.logits.shape[1] for case, _ in real_size_cases()}
    assert fixed == {32000, 152064}


def test_the_seed_is_reported_and_replays_a_failure():
    engine = WrongRuleEngine("drop_crossing")
    a = run_kernel(engine, 100, seed=1234, real_sizes=False)
    b = run_kernel(engine, 100, seed=1234, real_sizes=False)
    assert a.verdict == b.verdict == "FAIL" and a.seed == b.seed == 1234
    assert a.reason == b.reason  # the same shrunk reproducer
    assert "Hypothesis seed 1234" in a.reason and "AUTODECO_CONFORMANCE_SEED=1234" in a.reason
    assert "seed(s): 1234" in format_table([a])
    # not derandomised: without a seed, each run draws its own
    seeds = {run_kernel(engine, 1, real_sizes=False).seed for _ in range(3)}
    assert len(seeds) == 3


def test_the_seed_comes_from_the_environment(monkeypatch):
    """$AUTODECO_CONFORMANCE_SEED picks the kernel level's cases: a wrong rule's failure under it
    is the one ``seed=77`` replays, and an engine other than the reference passes under it."""
    engine = WrongRuleEngine("drop_crossing")
    replay = run_kernel(engine, 50, seed=77)
    monkeypatch.setenv("AUTODECO_CONFORMANCE_SEED", "77")
    (from_env,) = run_engine(engine, ("kernel",), 50)
    assert from_env.seed == 77 and from_env.verdict == replay.verdict == "FAIL"
    assert from_env.reason == replay.reason and "Hypothesis seed 77" in from_env.reason  # the same shrunk case
    (result,) = run_engine("torch-cpu", ("kernel",), 5)
    assert result.seed == 77 and result.verdict == "pass" and result.cases == 5 + len(real_size_cases())


@pytest.mark.parametrize("rule", ["top_p_before_temperature", "drop_crossing"])
def test_wrong_rules_fail_at_kernel_and_sampling_level(rule):
    results = run_engine(WrongRuleEngine(rule), ("kernel", "sampling"), examples=100)
    assert [r.verdict for r in results] == ["FAIL", "FAIL"]
    kernel = results[0]
    assert "Failing test case" in kernel.reason or "HeadsCase" in kernel.reason  # a shrunk reproducer
    assert "outside the canonical nucleus" in kernel.reason or "that the canonical nucleus keeps" in kernel.reason


def test_boundary_tokens_may_fall_either_side_but_nothing_else():
    q = np.array([[0.5, 0.3, 0.2]])
    logits = np.log(q)
    P = np.float64(0.8)  # c = 0, .5, .8: token 2 sits exactly on the boundary
    keep2 = np.array([[0.5, 0.3, 0.2]])
    drop2 = np.array([[0.625, 0.375, 0.0]])
    assert check_distribution(logits, 1.0, P, keep2).ok
    assert check_distribution(logits, 1.0, P, drop2).ok
    wrong = np.array([[1.0, 0.0, 0.0]])
    verdict = check_distribution(logits, 1.0, P, wrong)
    assert not verdict.ok and verdict.rows[0].missing == [1]


def test_an_outsider_engine_with_an_off_by_one_is_caught():
    class KeepsOneMore(ConformanceEngine):
        """Keeps the token after the crossing one too (c_i <= P instead of < P, plus one)."""

        name = "outsider"

        def kernel(self, hidden, logits, heads, policy):
            from autodeco_samplers.core.reference import descending_order, temperature_probs

            T_pred, P_pred = heads.predict(hidden, logits)
            T, P = policy.apply(T_pred, P_pred)
            q = temperature_probs(logits, T)
            order = descending_order(q)
            sq = np.take_along_axis(q, order, 1)
            exclusive = np.cumsum(sq, 1) - sq
            keep_sorted = np.concatenate([np.ones((len(q), 2), bool), exclusive[:, 1:-1] < P[:, None]], 1)[:, : q.shape[1]]
            keep = np.zeros_like(keep_sorted)
            np.put_along_axis(keep, order, keep_sorted, 1)
            probs = np.where(keep, q, 0)
            return NumpyStep(T_pred, P_pred, T, P, probs=probs / probs.sum(1, keepdims=True))

    with pytest.raises(ConformanceFailure, match="outside the canonical nucleus"):
        assert_conforms(KeepsOneMore(), levels=("kernel",), examples=100)


def test_cli_table_json_and_skips(capsys):
    assert main(["conformance", "--engines", "numpy,torch-cuda", "--examples", "20", "--levels", "kernel", "--wrong-rules"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "pass" in out
    assert "torch-cuda" in out and "skipped (no CUDA device)" in out
    assert sum(line.rstrip().endswith(" FAIL") for line in out.splitlines()) == 4
    assert main(["conformance", "--engines", "torch-cpu", "--examples", "10", "--levels", "kernel", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["results"][0]["engine"] == "torch-cpu" and data["results"][0]["verdict"] == "pass"


def test_cli_exit_code_is_1_when_an_engine_fails(monkeypatch, capsys):
    from autodeco_samplers.conformance import engines

    monkeypatch.setitem(engines.BUILTIN_ENGINES, "wrong", lambda: WrongRuleEngine("drop_crossing"))
    assert main(["conformance", "--engines", "wrong", "--examples", "50", "--levels", "kernel"]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.slow  # pytest in a subprocess
def test_pytest_pyargs_runs_the_shipped_suite(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "autodeco_samplers.conformance", "-q", "-rs", "-p", "no:cacheprovider",
         "--autodeco-engines", "numpy", "torch-cuda", "--autodeco-examples", "20"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout and "torch-cuda: no CUDA device" in res.stdout


@pytest.mark.slow  # pytest in a subprocess
def test_pytest_plugin_takes_comma_separated_engines_and_names_unknown_ones(tmp_path):
    base = [sys.executable, "-m", "pytest", "--pyargs", "autodeco_samplers.conformance", "-v", "-p", "no:cacheprovider",
            "--autodeco-examples", "5"]
    ok = subprocess.run(base + ["--autodeco-engines", "numpy,torch-cpu"], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    passed = [line.split("[", 1)[1].split("]", 1)[0] for line in ok.stdout.splitlines() if " PASSED" in line]
    assert sorted(passed) == ["numpy-kernel", "numpy-sampling", "torch-cpu-kernel", "torch-cpu-sampling"], ok.stdout
    bad = subprocess.run(base + ["--autodeco-engines", "numpy,nosuch"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "unknown engine(s) nosuch" in bad.stdout + bad.stderr and "known: " in bad.stdout + bad.stderr


# The levels each registered engine implements; every one must pass ("not supported" for a
# level listed here is a failure, and a level an engine gains must be added here).
EXPECTED_LEVELS = {
    "numpy": ("kernel", "sampling"),
    "torch-cpu": ("kernel", "sampling"),
    "torch-cuda": ("kernel", "sampling"),
    "torch-cuda-triton": ("kernel", "sampling"),
    "transformers": ("kernel", "sampling", "end-to-end"),
    "llama-cpp": ("kernel", "sampling", "end-to-end"),
    "sglang-transform": ("kernel",),
    "vllm": ("kernel", "end-to-end"),
    "mlx": ("kernel", "sampling", "end-to-end"),
}


def test_the_expected_levels_name_every_registered_engine():
    assert sorted(EXPECTED_LEVELS) == sorted(engine_names())


@pytest.mark.slow  # KERNEL_EXAMPLES cases per engine
@pytest.mark.parametrize("name", engine_names())
def test_every_registered_engine_passes_every_level_it_implements(name):
    """CI runs the suite over every engine present (``KERNEL_EXAMPLES`` kernel cases each, plus
    the fixed real-size cases). Each engine must pass exactly the levels of ``EXPECTED_LEVELS``
    and report the others as not supported; only a missing device (torch-cuda) or vLLM's own
    environment may skip, with the reason."""
    results = run_engine(name, ("kernel", "sampling", "end-to-end"), examples=KERNEL_EXAMPLES)
    skipped = [r for r in results if r.verdict == "skipped"]
    if skipped and name == "vllm":
        pytest.skip(f"vllm runs in .venv-vllm (tests/adapters/vllm/test_units.py): {skipped[0].reason}")
    if skipped and name == "mlx":
        pytest.skip(f"mlx: {skipped[0].reason}")
    if skipped and name in ("torch-cuda", "torch-cuda-triton"):
        pytest.skip(f"{name}: {skipped[0].reason}")
    verdicts = {r.level: r.verdict for r in results}
    expected = {level: ("pass" if level in EXPECTED_LEVELS[name] else "not supported") for level in verdicts}
    reasons = "\n".join(f"{r.level}: {r.reason}" for r in results if r.verdict not in ("pass", "not supported"))
    assert verdicts == expected, f"{name}: {verdicts}\n{reasons}"
    kernel = next(r for r in results if r.level == "kernel")
    assert kernel.cases >= KERNEL_EXAMPLES + len(real_size_cases())