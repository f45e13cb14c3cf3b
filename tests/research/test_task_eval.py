"""The choice-then-derive task (data, held-out split, scoring) and the evaluation loop."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from autodeco_samplers.research.evaluation import toy_task as task

SPEC = task.TaskSpec()


def test_prompt_completion_and_derivation():
    assert task.derive("blue") == "e u l b"
    assert task.make_completion("fox") == " fox -> x o f"
    assert task.make_prompt(("red", "fox", "owl")) == "pick one of red fox owl and spell it backwards:"


def test_heldout_sets_never_in_training():
    train, held = task.split_sets(SPEC)
    assert len(train) + len(held) == math.comb(len(SPEC.words), SPEC.k)
    assert not set(train) & set(held) and len(held) >= 1
    recs = task.training_records(SPEC, 2000, seed=4)
    seen = {tuple(sorted(r["prompt"].split(" and ")[0].split()[3:])) for r in recs}
    assert not seen & {tuple(sorted(s)) for s in held}
    for prompt, opts in task.eval_prompts(SPEC):
        assert tuple(sorted(opts)) in {tuple(sorted(s)) for s in held}
        assert prompt == task.make_prompt(opts)


def test_training_choices_are_uniform_and_correct():
    recs = task.training_records(SPEC, 6000, seed=1)
    positions = Counter()
    for r in recs:
        opts = r["prompt"].split(" and ")[0].split()[3:]
        s = task.score_completion(r["completion"], opts)
        assert s.correct
        positions[opts.index(s.choice)] += 1
    # chi-square against uniform over the k positions, fixed seed; 2 dof: 13.8 = p 0.001
    expected = len(recs) / SPEC.k
    chi2 = sum((c - expected) ** 2 / expected for c in positions.values())
    assert chi2 < 13.8, positions


@pytest.mark.parametrize(
    "text,correct,valid,choice",
    [
        (" fox -> x o f", True, True, "fox"),
        ("fox->x o f ", True, True, "fox"),
        (" fox -> x f o", False, True, "fox"),
        (" cat -> t a c", False, False, "cat"),  # right derivation, but not a listed word
        (" fox x o f", False, False, None),
        ("", False, False, None),
    ],
)
def test_score_completion(text, correct, valid, choice):
    s = task.score_completion(text, ("red", "fox", "owl"))
    assert (s.correct, s.valid_choice, s.choice) == (correct, valid, choice)


def test_summarize_extremes():
    opts = [("red", "fox", "owl")] * 2
    same = [[" red -> d e r"] * 6] * 2
    m = task.summarize(same, opts)
    assert m["accuracy"] == 1.0 and m["diversity"] == 0.0 and m["score"] == 0.0
    uniform = [[" red -> d e r", " fox -> x o f", " owl -> l w o"] * 2] * 2
    m = task.summarize(uniform, opts)
    assert m["accuracy"] == 1.0 and m["diversity"] == pytest.approx(1.0) and m["score"] == pytest.approx(1.0)
    wrong = [[" red -> d r e", " fox -> x o f", " owl -> l w o"] * 2] * 2
    m = task.summarize(wrong, opts)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["diversity"] == pytest.approx(1.0)


@settings(max_examples=60)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6))
def test_normalized_entropy_bounds_and_symmetry(counts):
    k = max(2, len(counts))
    h = task.normalized_entropy(counts, k)
    assert -1e-12 <= h <= 1 + 1e-12
    assert h == pytest.approx(task.normalized_entropy(list(reversed(counts)), k))


def test_expected_uniform_diversity_increases_with_n():
    a, b = task.expected_uniform_diversity(3, 6), task.expected_uniform_diversity(3, 48)
    assert 0.5 < a < b < 1.0


# --------------------------------------------------------------------------- sampling loop

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded():
    from autodeco_samplers.models import default_model
    from autodeco_samplers.research.evaluation.toy import load_model_and_heads

    return load_model_and_heads(default_model.base_path(), default_model.heads_path())


def _ids(tok, text):
    return tok(text)["input_ids"]


def test_greedy_batch_matches_hf_generate_with_left_padding(loaded):
    from autodeco_samplers.research.evaluation import Strategy
    from autodeco_samplers.research.evaluation.toy import sample_batch

    model, tok, heads = loaded
    prompts = [_ids(tok, p) for p, _ in task.eval_prompts(SPEC, 3)] + [_ids(tok, "pick one of red")]
    batch = sample_batch(model, tok, heads, prompts, Strategy("greedy", "static", 0.0, 1.0), max_new_tokens=10)
    for ids, got in zip(prompts, batch.token_ids):
        x = torch.tensor([ids])
        with torch.no_grad():
            ref = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=10,
                                 pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert got == ref


def test_batched_sampling_follows_the_canonical_distribution(loaded):
    """First-token frequencies over 4000 rows vs next_token_distribution (G-test, fixed seed)."""
    from scipy.stats import chi2

    from autodeco_samplers.core import torch_ops
    from autodeco_samplers.research.evaluation import Strategy
    from autodeco_samplers.research.evaluation.toy import sample_batch

    model, tok, heads = loaded
    ids = _ids(tok, task.eval_prompts(SPEC, 1)[0][0])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[:, -1].float()
    for strategy in (Strategy("s", "static", 1.3, 0.9), Strategy("a", "autodeco")):
        batch = sample_batch(model, tok, heads, [ids] * 4000, strategy, max_new_tokens=1, seed=1)
        T, P = float(batch.T_used[0, 0]), float(batch.P_used[0, 0])
        probs = torch_ops.next_token_distribution(logits, T, P)[0].numpy().astype(np.float64)
        counts = np.bincount([r[0] for r in batch.token_ids], minlength=probs.size)
        assert counts[probs == 0].sum() == 0  # nothing outside the nucleus
        keep = probs > 0
        exp = probs[keep] * counts.sum()
        obs = counts[keep]
        g = 2 * np.sum(np.where(obs > 0, obs * np.log(np.maximum(obs, 1) / exp), 0.0))
        assert g < chi2.ppf(0.999, max(1, keep.sum() - 1)), (strategy, g)
    # autodeco rows use the heads' predictions unchanged under the default policy
    np.testing.assert_allclose(batch.T_used, batch.T_pred)
    np.testing.assert_allclose(batch.P_used, np.clip(batch.P_pred, 0, 1))


def test_evaluate_report_plots_and_cli(tmp_path):
    from autodeco_samplers.models import default_model
    from autodeco_samplers.frontends.cli import main
    from autodeco_samplers.research.evaluation.toy import evaluate, format_table, plot_frontier, plot_token_trace

    rep = evaluate(default_model.base_path(), default_model.heads_path(), spec=default_model.task_spec(), n_prompts=4,
                   n_samples=4, temperatures=(0.5, 1.0), top_ps=(0.7, 1.0), max_new_tokens=10)
    json.dumps(rep)
    groups = Counter(r["group"] for r in rep["strategies"])
    assert groups == {"greedy": 1, "default": 1, "grid": 3, "mean_static": 1, "autodeco": 1}
    ad = next(r for r in rep["strategies"] if r["group"] == "autodeco")
    ms = next(r for r in rep["strategies"] if r["group"] == "mean_static")
    assert ms["T"] == pytest.approx(rep["mean_static"]["T"]) and 0 < ms["T"] < 2 and 0 < ms["P"] <= 1
    greedy = next(r for r in rep["strategies"] if r["group"] == "greedy")
    assert greedy["diversity"] == 0.0
    assert sum(r["oracle"] for r in rep["strategies"]) == 1
    assert rep["autodeco_beyond_frontier"] == (not rep["autodeco_dominated_by"])
    assert len(rep["trace"]["tokens"]) == len(rep["trace"]["T"]) == len(rep["trace"]["P"]) > 0
    assert "autodeco" in format_table(rep)
    png = b"\x89PNG\r\n\x1a\n"
    assert plot_frontier(rep, tmp_path / "f.png").read_bytes()[:8] == png
    assert plot_token_trace(rep, tmp_path / "t.png").read_bytes()[:8] == png
    assert ad["samples"] == 16

    rc = main(["eval", "--prompts", "2", "--samples", "2", "--temperatures", "1", "--top-ps", "1",
               "--plot-dir", str(tmp_path / "plots"), "--json"])
    assert rc == 0
    assert (tmp_path / "plots" / "accuracy_vs_diversity.png").is_file()


# --------------------------------------------------------------------------- spread over evaluation seeds


@settings(max_examples=40)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=12))
def test_mean_and_se_matches_statistics(values):
    import statistics

    from autodeco_samplers.research.evaluation.report import mean_and_se

    m, se = mean_and_se(values)
    assert m == pytest.approx(statistics.fmean(values), abs=1e-9)
    if len(values) < 2:
        assert se is None
    else:
        assert se == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)), rel=1e-9, abs=1e-12)


def test_evaluate_over_seeds_aggregates_single_seed_runs():
    import statistics

    from autodeco_samplers.models import default_model
    from autodeco_samplers.research.evaluation.toy import evaluate, standing_line

    kw = dict(spec=default_model.task_spec(), n_prompts=3, n_samples=4, temperatures=(1.0,), top_ps=(0.5, 1.0),
              max_new_tokens=10)
    base, heads = default_model.base_path(), default_model.heads_path()
    cache: dict = {}
    multi = evaluate(base, heads, seeds=(0, 1, 2), static_cache=cache, **kw)
    singles = [evaluate(base, heads, seed=s, **kw) for s in (0, 1, 2)]
    assert multi["settings"]["seeds"] == [0, 1, 2]
    by_name = [{r["name"]: r for r in rep["strategies"]} for rep in singles]
    for row in multi["strategies"]:
        if row["group"] == "mean_static":
            continue  # its (T, P) is the mean over all three seeds' AutoDeco tokens, not one seed's
        for metric in ("score", "accuracy", "diversity"):
            per = [b[row["name"]][metric] for b in by_name]
            assert row["per_seed"][metric] == pytest.approx(per)
            assert row[metric] == pytest.approx(statistics.fmean(per))
            assert row["spread"][metric] == pytest.approx(statistics.stdev(per) / math.sqrt(3), abs=1e-12)
        assert row["samples"] == 3 * 3 * 4
    ad = next(r for r in multi["strategies"] if r["group"] == "autodeco")
    oracle = next(r for r in multi["strategies"] if r["oracle"])
    diffs = [a - o for a, o in zip(ad["per_seed"]["score"], oracle["per_seed"]["score"])]
    assert multi["autodeco_vs_oracle_score"] == pytest.approx(statistics.fmean(diffs))
    assert multi["autodeco_vs_oracle_score_se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(3), abs=1e-12)
    assert oracle["score"] == max(r["score"] for r in multi["strategies"] if r["group"] in ("grid", "default"))
    assert singles[0]["autodeco_vs_oracle_score_se"] is None
    # the static cache: a rerun samples no static strategy again and reports the same rows
    n_cached = len(cache)
    assert n_cached == 3 * 4  # (greedy, default, grid T=1 P=0.5, mean-static) x 3 seeds (T=1 P=1 is the default)
    again = evaluate(base, heads, seeds=(0, 1, 2), static_cache=cache, **kw)
    assert len(cache) == n_cached  # same heads, same mean-static (T, P): nothing new was sampled
    for a, b in zip(multi["strategies"], again["strategies"]):
        assert a["per_seed"] == b["per_seed"]
    # the one-line standing names every baseline with its score
    line = standing_line(multi)
    rows = {r["group"]: r for r in multi["strategies"]}
    for label, group in (("greedy", "greedy"), ("default", "default"), ("mean-static", "mean_static"), ("score", "autodeco")):
        assert f"{label} {rows[group]['score']:.3f}" in line
    assert f"oracle {oracle['score']:.3f}" in line and f"± {multi['autodeco_vs_oracle_score_se']:.3f}" in line
    with pytest.raises(ValueError, match="distinct"):
        evaluate(base, heads, seeds=(1, 1), **kw)


def test_eval_cli_eval_seeds(capsys, tmp_path):
    from autodeco_samplers.frontends.cli import main

    rc = main(["eval", "--prompts", "2", "--samples", "2", "--temperatures", "1", "--top-ps", "1", "--eval-seeds", "3,4",
               "--no-plots", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["settings"]["seeds"] == [3, 4]
    assert all(len(r["per_seed"]["score"]) == 2 for r in rep["strategies"])
    with pytest.raises(SystemExit):
        main(["eval", "--eval-seeds", "1,1", "--no-plots"])


def test_train_split_prompts_never_touch_heldout_sets():
    train, held = task.split_sets(SPEC)
    got = task.eval_prompts(SPEC, split="train")
    assert len(got) == len(held)
    sets = [frozenset(o) for _, o in got]
    assert len(set(sets)) == len(sets)
    assert set(sets) <= {frozenset(s) for s in train} and not set(sets) & {frozenset(s) for s in held}
    for prompt, opts in got:
        assert prompt == task.make_prompt(opts)
    assert task.eval_prompts(SPEC) == task.eval_prompts(SPEC, split="heldout")
    with pytest.raises(ValueError, match="split"):
        task.eval_prompts(SPEC, split="test")
