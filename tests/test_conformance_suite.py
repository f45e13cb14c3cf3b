"""The conformance suite itself: real engines pass, deliberately wrong rules fail, the CLI
prints the table, skipped engines show as skipped, outsiders can run it with pytest."""

import json
import subprocess
import sys

import numpy as np
import pytest

from autodeco_samplers.cli import main
from autodeco_samplers.conformance import assert_conforms, check_distribution
from autodeco_samplers.conformance.engines import ConformanceEngine, KernelOutput, WrongRuleEngine, engine_names
from autodeco_samplers.conformance.runner import ConformanceFailure, run_engine


@pytest.mark.parametrize("name", ["numpy", "torch-cpu"])
def test_shipped_engines_conform(name):
    results = run_engine(name, ("kernel", "sampling"), examples=60)
    assert [r.verdict for r in results] == ["pass", "pass"], results


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
            from autodeco_samplers.reference import descending_order, temperature_probs

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
            return KernelOutput(probs / probs.sum(1, keepdims=True), T_pred, P_pred, T, P)

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


def test_pytest_pyargs_runs_the_shipped_suite(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "autodeco_samplers.conformance", "-q", "-rs", "-p", "no:cacheprovider",
         "--autodeco-engines", "numpy", "torch-cuda", "--autodeco-examples", "20"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout and "torch-cuda: no CUDA device" in res.stdout


@pytest.mark.parametrize("name", engine_names())
def test_every_registered_engine_passes_every_level_it_implements(name):
    """CI runs the suite over every engine present; only a missing device may skip."""
    results = run_engine(name, ("kernel", "sampling", "end-to-end"), examples=40)
    for r in results:
        if r.verdict == "skipped" and name == "vllm":
            pytest.skip(f"vllm runs in .venv-vllm (tests/vllm_adapter/test_units.py): {r.reason}")
        if r.verdict == "skipped":
            assert name == "torch-cuda", f"{name} was skipped here: {r.reason}"
            continue
        assert r.verdict in ("pass", "not supported"), f"{r.engine} / {r.level}: {r.verdict}\n{r.reason}"
    implemented = [r.level for r in results if r.verdict == "pass"]
    if name != "torch-cuda":
        assert "kernel" in implemented
