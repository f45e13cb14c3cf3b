"""``autodeco eval``: the paper's comparison on the choice-then-derive task, done honestly.

Strategies (docs/design.md section 9, :mod:`.strategies`):

* ``greedy``: ``T = 0`` (argmax, ties to the lowest id);
* ``default``: ``T = 1, P = 1`` (plain sampling);
* ``static T=.. P=..``: a grid of fixed ``(T, P)``; the grid point with the best combined
  score *on the evaluation prompts themselves* is reported as the ``oracle`` (an upper bound
  for any static setting: it has seen the test set);
* ``mean-static``: ``T`` and ``P`` fixed at the mean of the heads' own predictions over every
  token AutoDeco generated in this evaluation (the baseline of the critique "Token-level
  control or just a better mean?");
* ``autodeco``: per-token ``(T, P)`` from the heads, canonical rule, default policy.

All strategies sample the same held-out prompts ``n_samples`` times each with the same seed.
Sampling is batched (all prompts x samples in one batch) through the shared decode loop
(:func:`autodeco_samplers.research.evaluation.decode.generate_rows`, finished rows kept in the
batch), with the model's KV cache and the core rules; no Python loop over rows.
Metrics and the score are defined in :mod:`autodeco_samplers.research.evaluation.toy_task`.
The frontier axes are ``accuracy`` and ``diversity``; dominance, the static frontier and the
oracle follow :mod:`autodeco_samplers.research.evaluation.report`. ``autodeco_beyond_frontier``
is true when no static point (greedy, default and the grid) dominates AutoDeco.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from autodeco_samplers.research.evaluation import report as rep
from autodeco_samplers.research.evaluation import toy_task as task_mod
from autodeco_samplers.research.evaluation.decode import Generated, Segment, generate_rows, prefill
from autodeco_samplers.research.evaluation.strategies import AUTODECO, Strategy, mean_static_strategy, static_strategies

__all__ = [
    "portable_path",
    "SampleBatch",
    "DEFAULT_TEMPERATURES",
    "DEFAULT_TOP_PS",
    "AXES",
    "load_model_and_heads",
    "sample_batch",
    "evaluate",
    "format_table",
    "standing_line",
    "plot_frontier",
    "plot_token_trace",
]


def portable_path(path: Union[str, Path]) -> str:
    """``path`` as a results file should record it: relative to the folder holding the
    ``autodeco_samplers`` package (the repository root in a checkout) or to the working folder
    when it lies inside one of them, else its last two parts, so that no machine's own
    folders are stored in a results JSON."""
    p = Path(path).resolve()
    for root in (Path(__file__).resolve().parents[3], Path.cwd().resolve()):
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return "/".join(("...",) + p.parts[-2:])


DEFAULT_TEMPERATURES: Tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
DEFAULT_TOP_PS: Tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)
SPREAD_METRICS: Tuple[str, ...] = ("accuracy", "valid_choice", "derive_accuracy", "diversity", "score")
#: the toy report's frontier: a row's ``accuracy``, ``diversity`` and ``score`` (means over seeds)
AXES = rep.FrontierAxes(accuracy=lambda r: r["accuracy"], diversity=lambda r: r["diversity"], score=lambda r: r["score"])


@dataclass
class SampleBatch:
    """Generated ids (the end-of-sequence token included) and texts per row, the per-token
    T/P (predicted and used) ``[B, steps]`` float32 (NaN after a row's ``lengths``)."""

    token_ids: List[List[int]]
    texts: List[str]
    T_pred: np.ndarray
    P_pred: np.ndarray
    T_used: np.ndarray
    P_used: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_generated(cls, gen: Generated, tokenizer) -> "SampleBatch":
        eos = tokenizer.eos_token_id
        lengths = np.asarray([len(ids) for ids in gen.token_ids], dtype=np.int64)
        steps = int(lengths.max()) if lengths.size else 0

        def padded(values: List[List[float]]) -> np.ndarray:
            out = np.full((len(values), steps), np.nan, dtype=np.float32)
            for i, row in enumerate(values):
                out[i, : len(row)] = row
            return out

        texts = [tokenizer.decode([t for t in row if t != eos], skip_special_tokens=True) for row in gen.token_ids]
        return cls(gen.token_ids, texts, padded(gen.T_pred), padded(gen.P_pred), padded(gen.T), padded(gen.P), lengths)


def load_model_and_heads(base: Union[str, Path], heads: Union[str, Path, None], device: str = "cpu"):
    """``(model, tokenizer, heads_module or None)`` from local folders (float32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
    from autodeco_samplers.research.training.trainer import dtype_kwargs

    model = AutoModelForCausalLM.from_pretrained(str(base), **dtype_kwargs(torch.float32)).to(device).eval()
    tok = AutoTokenizer.from_pretrained(str(base))
    module = AutoDecoHeadsModule.from_pretrained(heads).to(device).eval() if heads is not None else None
    return model, tok, module


def sample_batch(
    model,
    tokenizer,
    heads,
    prompt_ids: Sequence[Sequence[int]],
    strategy: Strategy,
    *,
    max_new_tokens: int = 16,
    seed: int = 0,
    record_predictions: bool = False,
) -> SampleBatch:
    """Generate one continuation per row of ``prompt_ids`` (left-padded, KV cache) with
    ``strategy``'s chooser, one ``torch.Generator`` seeded by ``seed`` for the whole batch.

    Each step: logits and final hidden state of the last position; ``(T_pred, P_pred)`` from
    the heads (autodeco, or a static strategy with ``record_predictions``; else NaN); the
    ``(T, P)`` used = the strategy's constants, or the heads' predictions through the default
    :class:`DecodingPolicy`. Rows stop at EOS but stay in the batch until every row has
    stopped (:func:`~autodeco_samplers.research.evaluation.decode.generate_rows` with
    ``keep_finished``), so a row's draws do not depend on when the others stop.
    """
    choose = strategy.chooser(heads, record_predictions=record_predictions)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    pre = prefill(model, prompt_ids, pad)
    (gen,) = generate_rows(model, pre, [Segment(tuple(range(len(prompt_ids))), choose, seed)], eos_ids=[eos],
                           max_new_tokens=max_new_tokens, keep_finished=True, pad_id=pad)
    return SampleBatch.from_generated(gen, tokenizer)


# ----------------------------------------------------------------------------- the evaluation


def _valid_mean(values: np.ndarray, lengths: np.ndarray) -> float:
    steps = np.arange(values.shape[1])[None, :] < lengths[:, None]
    return float(values[steps].mean())


def _mean_over_seeds(batches: Sequence[SampleBatch], field: str) -> float:
    """A per-token field's mean over each seed's generated tokens, averaged over the seeds."""
    return float(np.mean([_valid_mean(getattr(b, field), b.lengths) for b in batches]))


def _aggregate(per_seed: List[Dict[str, float]]) -> Dict[str, Any]:
    """One row's metrics over evaluation seeds: the means, the pooled binomial ``accuracy_se``,
    ``spread`` (SE over seeds per metric, None with one seed) and ``per_seed`` values."""
    out: Dict[str, Any] = {m: rep.mean_and_se([d[m] for d in per_seed])[0] for m in SPREAD_METRICS}
    n = sum(d["samples"] for d in per_seed)
    out["accuracy_se"] = rep.binomial_se(out["accuracy"], n)
    out["samples"] = n
    out["spread"] = {m: rep.mean_and_se([d[m] for d in per_seed])[1] for m in SPREAD_METRICS}
    out["per_seed"] = {m: [d[m] for d in per_seed] for m in SPREAD_METRICS}
    return out


class _ToyRun:
    """The prompts of one evaluation, sampled by any strategy over the evaluation seeds."""

    def __init__(self, model, tok, heads, prompts, *, n_samples: int, max_new_tokens: int, seeds: List[int],
                 static_cache: Optional[Dict[Any, Dict[str, float]]], cache_scope: Tuple) -> None:
        self.model, self.tok, self.heads = model, tok, heads
        self.n_prompts, self.n_samples, self.max_new_tokens, self.seeds = len(prompts), n_samples, max_new_tokens, seeds
        self.options = [o for _, o in prompts]
        ids = [self._encode(p) for p, _ in prompts]
        self.rows_ids = [p for p in ids for _ in range(n_samples)]
        self.static_cache, self.cache_scope = static_cache, cache_scope

    def _encode(self, prompt: str) -> List[int]:
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        return [self.tok.bos_token_id] + ids if self.tok.bos_token_id is not None else ids

    def seed_metrics(self, strategy: Strategy, seed: int) -> Tuple[Dict[str, float], Optional[SampleBatch]]:
        """One seed's metrics (:func:`toy_task.summarize`) and batch (None when a static
        strategy's metrics came from ``static_cache``: they do not depend on the heads)."""
        key = (self.cache_scope, strategy.temperature, strategy.top_p, seed)
        cached = strategy.kind == "static" and self.static_cache is not None
        if cached and key in self.static_cache:
            return self.static_cache[key], None
        batch = sample_batch(self.model, self.tok, self.heads, self.rows_ids, strategy, max_new_tokens=self.max_new_tokens,
                             seed=seed)
        per_prompt = [batch.texts[i * self.n_samples:(i + 1) * self.n_samples] for i in range(self.n_prompts)]
        metrics = task_mod.summarize(per_prompt, self.options)
        if cached:
            self.static_cache[key] = metrics
        return metrics, batch

    def row(self, strategy: Strategy) -> Tuple[Dict[str, Any], List[Optional[SampleBatch]]]:
        """The report row of ``strategy`` (``T``/``P``: its constants, or for autodeco the mean
        used) and its batches, one per seed."""
        results = [self.seed_metrics(strategy, s) for s in self.seeds]
        batches = [b for _, b in results]
        static = strategy.kind == "static"
        row = {"name": strategy.name, "kind": strategy.kind, "group": strategy.group,
               "T": strategy.temperature if static else _mean_over_seeds(batches, "T_used"),
               "P": strategy.top_p if static else _mean_over_seeds(batches, "P_used"),
               **_aggregate([m for m, _ in results])}
        return row, batches


def _check_seeds(seed: int, seeds: Optional[Sequence[int]]) -> List[int]:
    seeds = [int(seed)] if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one evaluation seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"evaluation seeds must be distinct, got {seeds}")
    return seeds


def _run_strategies(run: _ToyRun, temperatures, top_ps, progress: bool) -> Tuple[List[Dict[str, Any]], List[SampleBatch]]:
    """AutoDeco first (mean-static needs its predictions), then greedy, default, the grid and
    mean-static; the rows in report order (AutoDeco last) and AutoDeco's batches."""
    ad_row, ad_batches = run.row(AUTODECO)
    T_mean, P_mean = _mean_over_seeds(ad_batches, "T_pred"), _mean_over_seeds(ad_batches, "P_pred")
    strategies = static_strategies(temperatures, top_ps) + [mean_static_strategy(T_mean, P_mean)]
    if progress:
        from tqdm.auto import tqdm

        strategies = tqdm(strategies, desc="autodeco eval", unit="strategy")
    return [run.row(s)[0] for s in strategies] + [ad_row], ad_batches


def _comparison(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Marks the oracle row; AutoDeco against the static frontier, the oracle and mean-static
    (score differences of the means, SE of the paired per-seed differences)."""
    ad_row = next(r for r in rows if r["group"] == "autodeco")
    mean_row = next(r for r in rows if r["group"] == "mean_static")
    best = rep.oracle(rows, AXES)
    for r in rows:
        r["oracle"] = r is best
    dominated_by = rep.frontier_position(rows, ad_row, AXES)["dominated_by"]

    def paired(other: Dict[str, Any]) -> Tuple[float, Optional[float]]:
        return ad_row["score"] - other["score"], rep.paired_se(ad_row["per_seed"]["score"], other["per_seed"]["score"])[1]

    (vs_oracle, vs_oracle_se), (vs_mean, vs_mean_se) = paired(best), paired(mean_row)
    return {
        "oracle": best["name"],
        "mean_static": {"T": mean_row["T"], "P": mean_row["P"], "name": mean_row["name"]},
        "static_frontier": rep.static_frontier(rows, AXES),
        "autodeco_dominated_by": dominated_by,
        "autodeco_beyond_frontier": not dominated_by,
        "autodeco_vs_oracle_score": vs_oracle,
        "autodeco_vs_oracle_score_se": vs_oracle_se,
        "autodeco_vs_mean_static_score": vs_mean,
        "autodeco_vs_mean_static_score_se": vs_mean_se,
    }


def _trace(batch: SampleBatch, prompt: str, tok) -> Dict[str, Any]:
    """One answer's per-token trace: row 0 of ``batch``."""
    ids = batch.token_ids[0]
    n = len(ids)
    return {"prompt": prompt, "text": batch.texts[0], "tokens": [tok.decode([t]) for t in ids], "token_ids": ids,
            "T_pred": batch.T_pred[0, :n].tolist(), "P_pred": batch.P_pred[0, :n].tolist(),
            "T": batch.T_used[0, :n].tolist(), "P": batch.P_used[0, :n].tolist()}


def evaluate(
    base: Union[str, Path],
    heads: Union[str, Path],
    *,
    spec: Optional[task_mod.TaskSpec] = None,
    n_prompts: Optional[int] = None,
    n_samples: int = 24,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    top_ps: Sequence[float] = DEFAULT_TOP_PS,
    max_new_tokens: int = 12,
    seed: int = 0,
    seeds: Optional[Sequence[int]] = None,
    device: str = "cpu",
    progress: bool = False,
    static_cache: Optional[Dict[Any, Dict[str, float]]] = None,
    split: str = "heldout",
) -> Dict[str, Any]:
    """Run every strategy on the held-out prompts; returns the JSON-ready report.

    ``seeds`` (default ``[seed]``): every strategy is sampled once per evaluation seed (the
    same seeds for all strategies); a row's metrics are the means over seeds, its ``spread``
    the standard errors over seeds and ``per_seed`` the values. The oracle is the grid point
    with the best *mean* score; dominance uses the means. ``autodeco_vs_oracle_score_se`` and
    ``autodeco_vs_mean_static_score_se`` are the SEs of the *paired* per-seed differences
    (None with one seed). ``static_cache``: a dict reused across calls on the same base model
    and settings to skip re-sampling static strategies (their samples do not depend on the heads).
    ``split="train"`` evaluates on prompts from *training* sets instead of the held-out ones
    (:func:`task.eval_prompts`), for choosing settings without looking at the held-out prompts.
    The trace is the first AutoDeco sample of the first prompt (first seed).
    """
    import torch

    t0 = time.perf_counter()
    spec = spec or task_mod.TaskSpec()
    seeds = _check_seeds(seed, seeds)
    model, tok, module = load_model_and_heads(base, heads, device)
    prompts = task_mod.eval_prompts(spec, n_prompts, split=split)
    cache_scope = (str(Path(base).resolve()), json.dumps(spec.to_json(), sort_keys=True), split, len(prompts), n_samples,
                   max_new_tokens, device)
    run = _ToyRun(model, tok, module, prompts, n_samples=n_samples, max_new_tokens=max_new_tokens, seeds=seeds,
                  static_cache=static_cache, cache_scope=cache_scope)
    rows, ad_batches = _run_strategies(run, temperatures, top_ps, progress)
    comparison = _comparison(rows)
    return {
        "model": portable_path(base),
        "heads": portable_path(heads),
        "task": spec.to_json(),
        "settings": {"split": split, "n_prompts": len(prompts), "n_samples": n_samples, "max_new_tokens": max_new_tokens,
                     "seed": seeds[0], "seeds": seeds, "temperatures": list(temperatures), "top_ps": list(top_ps),
                     "device": device, "torch": torch.__version__},
        "diversity_ceiling": task_mod.expected_uniform_diversity(spec.k, n_samples),
        "strategies": rows,
        "oracle": comparison.pop("oracle"),
        **comparison,
        "trace": _trace(ad_batches[0], prompts[0][0], tok),
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- presentation


def _notes(report: Dict[str, Any], r: Dict[str, Any]) -> str:
    front, dominating = set(report["static_frontier"]), set(report["autodeco_dominated_by"])
    note = []
    if r["oracle"]:
        note.append("oracle (best static on test)")
    if r["name"] in front:
        note.append("frontier")
    if r["name"] in dominating:
        note.append("dominates AutoDeco")
    if r["group"] == "autodeco":
        note.append("beyond static frontier" if report["autodeco_beyond_frontier"] else
                    f"dominated by {len(report['autodeco_dominated_by'])} static")
    return ", ".join(note)


def format_table(report: Dict[str, Any], *, only_key: bool = False) -> str:
    """The comparison as a fixed-width text table (``only_key``: skip grid points that are neither
    on the frontier, the oracle, nor among the static points that dominate AutoDeco).

    With several evaluation seeds the score column shows ``mean±SE`` over the seeds.
    """
    shown = set(report["static_frontier"]) | set(report["autodeco_dominated_by"])
    seeds = report["settings"].get("seeds", [report["settings"]["seed"]])
    multi = len(seeds) > 1

    def score(r: Dict[str, Any]) -> str:
        se = (r.get("spread") or {}).get("score")
        return f"{r['score']:.3f}±{se:.3f}" if (multi and se is not None) else f"{r['score']:.3f}"

    columns = [rep.Column("strategy", lambda r: r["name"], 34, left=True),
               rep.Column("T", lambda r: f"{r['T']:.3f}", 6), rep.Column("P", lambda r: f"{r['P']:.3f}", 6),
               rep.Column("accuracy", lambda r: f"{r['accuracy']:.3f}±{r['accuracy_se']:.3f}", 14),
               rep.Column("derive", lambda r: f"{r['derive_accuracy']:.3f}", 6),
               rep.Column("valid", lambda r: f"{r['valid_choice']:.3f}", 6),
               rep.Column("diversity", lambda r: f"{r['diversity']:.3f}", 9),
               rep.Column("score±se" if multi else "score", score, 13 if multi else 6)]
    rows = [r for r in report["strategies"]
            if not (only_key and r["group"] == "grid" and r["name"] not in shown and not r["oracle"])]
    s = report["settings"]
    seeds_text = f" x {len(seeds)} evaluation seeds" if multi else ""
    footer = (f"({s['n_prompts']} held-out prompts x {s['n_samples']} samples{seeds_text}; diversity of an ideal uniform "
              f"sampler at this n: {report['diversity_ceiling']:.3f}; accuracy = valid choice and right derivation, "
              f"derive = accuracy among valid choices; score = accuracy x diversity; T, P of autodeco = mean used)")
    return rep.fixed_width_table(rows, columns, lambda r: _notes(report, r), footer)


def standing_line(report: Dict[str, Any]) -> str:
    """One line: AutoDeco's score against greedy, default, mean-static and the oracle, the
    paired difference to the oracle (± its SE over evaluation seeds when there are several)
    and the verdict: ``beyond the static frontier`` when no static point dominates it,
    ``within 0.01 of the oracle`` when ``autodeco_vs_oracle_score >= -0.01``, else ``below the
    oracle``."""
    rows = {r["group"]: r for r in report["strategies"] if r["group"] in ("autodeco", "greedy", "default", "mean_static")}
    oracle = next(r for r in report["strategies"] if r["oracle"])
    diff, se = report["autodeco_vs_oracle_score"], report.get("autodeco_vs_oracle_score_se")
    diff_text = f"{diff:+.3f}" + (f" ± {se:.3f}" if se is not None else "")
    if report["autodeco_beyond_frontier"]:
        verdict = "beyond the static frontier (no static (T, P) is both as accurate and as diverse)"
    elif diff >= -0.01:
        verdict = f"within 0.01 of the oracle, dominated by {len(report['autodeco_dominated_by'])} static point(s)"
    else:
        verdict = f"below the oracle, dominated by {len(report['autodeco_dominated_by'])} static point(s)"
    return (f"where AutoDeco stands: score {rows['autodeco']['score']:.3f} vs greedy {rows['greedy']['score']:.3f}, "
            f"default {rows['default']['score']:.3f}, mean-static {rows['mean_static']['score']:.3f}, "
            f"oracle {oracle['score']:.3f} ({oracle['name']}); vs oracle {diff_text}: {verdict}")


PLOT = rep.FrontierPlot(
    xlabel="diversity of the free choice (normalised entropy)", ylabel="accuracy of the determined part",
    title="choice-then-derive: static (T, P) vs AutoDeco", grid_label="static (T, P) grid (colour = T)",
    grid_T=lambda r: r["T"], unit_square=True, figsize=(7, 5), legend_loc="lower left",
    marks={"greedy": ("s", "tab:gray"), "default": ("D", "tab:blue"), "mean_static": ("^", "tab:orange"),
           "autodeco": ("*", "tab:red")})


def plot_frontier(report: Dict[str, Any], path: Union[str, Path]) -> Path:
    """PNG: accuracy against diversity for every strategy, the static frontier as a line
    (:func:`report.plot_frontier`)."""
    return rep.plot_frontier(report, path, AXES, PLOT)


def plot_token_trace(report: Dict[str, Any], path: Union[str, Path]) -> Path:
    """PNG: the T and P AutoDeco used at each token of one answer."""
    plt = rep.load_pyplot()
    tr = report["trace"]
    x = np.arange(len(tr["tokens"]))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(x) + 2), 3.8), dpi=110)
    ax.bar(x - 0.2, tr["T"], width=0.4, label="temperature T", color="tab:red")
    ax.bar(x + 0.2, tr["P"], width=0.4, label="top-p P", color="tab:blue")
    ax.set_xticks(x)
    ax.set_xticklabels([repr(t)[1:-1] for t in tr["tokens"]], rotation=0, fontsize=8)
    ax.set_ylim(0, max(1.05, max(tr["T"] + [0]) * 1.1))
    ax.set_title(f"per-token T and P: {tr['prompt']!r}", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return rep.save_figure(plt, fig, path)
