"""Decoding strategies compared on a chat model's task items (the real-model evaluation).

The toy-model evaluation (:mod:`autodeco_samplers.research.evaluation.toy`) scores one synthetic task;
this module scores *task families* with verifiable answers, asked through the model's chat
template (for SmolLM2-135M-Instruct: :mod:`autodeco_samplers.models.smollm2.tasks`), against the
samplers users pick instead of AutoDeco.

Strategies (:func:`default_strategies`):

* ``greedy`` (``T = 0``: argmax, ties to the lowest id; deterministic, so one sample per item
  and the same numbers for every seed);
* ``default T=1 P=1`` and a static ``T x P`` grid (the canonical rule with fixed ``(T, P)``);
  the grid point with the best ``score`` *on the evaluation items themselves* is the
  ``oracle`` (an upper bound for any static setting);
* the baselines of :mod:`autodeco_samplers.research.baselines.numpy_baselines` (min-p, llama.cpp's dynamic
  temperature, EDT, top-nσ), each drawn from its own distribution;
* ``mean-static``: ``T`` and ``P`` fixed at the mean of the heads' own predictions over every
  token AutoDeco generated in the same run ("token-level control or just a better mean?");
* ``autodeco``: the heads' per-token ``(T, P)`` through the default policy, canonical rule
  (:func:`autodeco_samplers.core.step.torch_step_sample`).

Metrics per strategy and evaluation seed: each family's ``accuracy`` (the family's verifier,
:func:`tasks.check`); on open families (many right answers) ``distinct``, the number of
distinct valid answers per item among its ``n_open`` samples, averaged over items; the
frontier axes are ``closed_accuracy`` (the mean of the closed families' accuracies, equal
weight) and ``distinct``; ``score = closed_accuracy * distinct / n_open``. Rows report the
mean over seeds, ``se`` (standard error over seeds, ``std(ddof=1) / sqrt(n)``), the values
per seed and, for accuracies, the pooled binomial SE.

Position against the static frontier (:func:`frontier_position`,
:mod:`autodeco_samplers.research.evaluation.report`): a static point (greedy,
default or the grid) *dominates* a strategy when its ``closed_accuracy`` and ``distinct`` are
both at least the strategy's and one is strictly higher (means over seeds). A strategy is
``beyond_frontier`` when no static point dominates it. ``accuracy_gap`` = its accuracy minus
the best accuracy of a static point at least as diverse, ``distinct_gap`` = its distinct count
minus the best distinct count of a static point at least as accurate (negative: dominated by
that much; None when no static point qualifies).

Sampling is batched (every item x its samples in one batch) with the model's KV cache through
the shared decode loop (:func:`autodeco_samplers.research.evaluation.decode.generate_rows`): the
prompts are prefilled once and that cache is shared by every strategy and seed; finished rows
(an end-of-sequence token) leave the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from autodeco_samplers.research.baselines.numpy_baselines import Baseline
from autodeco_samplers.research.evaluation import report as rep
from autodeco_samplers.research.evaluation.decode import Generated, Segment, generate_rows, prefill
from autodeco_samplers.research.evaluation.strategies import (
    AUTODECO,
    STATIC_GROUPS,
    Strategy,
    mean_static_strategy,
    static_strategies,
)

__all__ = [
    "DEFAULT_TEMPERATURES",
    "DEFAULT_TOP_PS",
    "DEFAULT_BASELINES",
    "AXES",
    "default_strategies",
    "evaluate_items",
    "frontier_position",
    "static_frontier",
    "verdict",
    "format_table",
    "format_markdown",
    "plot_frontier",
]

DEFAULT_TEMPERATURES: Tuple[float, ...] = (0.3, 0.6, 1.0, 1.3)
DEFAULT_TOP_PS: Tuple[float, ...] = (0.8, 0.95, 1.0)
DEFAULT_BASELINES: Tuple[Baseline, ...] = (
    Baseline("min_p", {"min_p": 0.05}),
    Baseline("min_p", {"min_p": 0.1}),
    # llama.cpp: --temp 1 --dynatemp-range 0.5 --dynatemp-exp 1
    Baseline("dynatemp", {"T": 1.0, "delta": 0.5, "exponent": 1.0}),
    # EDT with the paper's N = 0.8, T0 = 1, theta = 1 (not tuned here)
    Baseline("edt", {"T0": 1.0, "N": 0.8, "theta": 1.0}),
    Baseline("top_n_sigma", {"n": 1.0}),
)
#: the chat report's frontier: ``closed_accuracy`` and ``distinct``; the oracle's criterion ``score``
AXES = rep.FrontierAxes(accuracy=lambda r: r["closed_accuracy"]["mean"], diversity=lambda r: r["distinct"]["mean"],
                        score=lambda r: r["score"]["mean"])


def default_strategies(temperatures: Sequence[float] = DEFAULT_TEMPERATURES, top_ps: Sequence[float] = DEFAULT_TOP_PS,
                       baselines: Sequence[Baseline] = DEFAULT_BASELINES) -> List[Strategy]:
    """greedy, default, the grid (without ``T=1 P=1``, which is ``default``), the baselines.
    ``mean-static`` and ``autodeco`` are added by :func:`evaluate_items`."""
    return static_strategies(temperatures, top_ps) + [Strategy(b.name, "baseline", group="baseline", baseline=b)
                                                      for b in baselines]


def static_frontier(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Names of the static points (greedy, default, grid) no other static point dominates,
    by increasing ``distinct`` (:func:`report.static_frontier` on :data:`AXES`)."""
    return rep.static_frontier(rows, AXES)


def frontier_position(rows: Sequence[Dict[str, Any]], target: Dict[str, Any]) -> Dict[str, Any]:
    """Where ``target`` stands against the static points (module docstring,
    :func:`report.frontier_position` on :data:`AXES`)."""
    return rep.frontier_position(rows, target, AXES)


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class _Scored:
    """One generated answer: the item it answers, whether the verifier accepts it, and its
    canonical valid answer on an open item (None when invalid or closed)."""

    item: int
    ok: bool
    answer: Optional[str]


def _score_rows(items, row_item: Sequence[int], texts: Sequence[str], checker) -> List[_Scored]:
    check, canonical = checker
    return [_Scored(i, bool(check(items[i], text)), canonical(items[i], text) if items[i].open else None)
            for i, text in zip(row_item, texts)]


def _seed_metrics(items, scored: Sequence[_Scored], n_open: int) -> Dict[str, Any]:
    """One run's metrics: per family ``accuracy`` / ``n`` / ``correct``, open families'
    ``distinct`` (mean distinct valid answers per item), ``closed_accuracy``, ``score``."""
    fam: Dict[str, List[bool]] = {}
    answers: Dict[int, set] = {}
    for s in scored:
        it = items[s.item]
        fam.setdefault(it.family, []).append(s.ok)
        if it.open:
            answers.setdefault(s.item, set())
            if s.answer is not None:
                answers[s.item].add(s.answer)
    families = {f: {"accuracy": sum(v) / len(v), "n": len(v), "correct": int(sum(v))} for f, v in fam.items()}
    open_items = sorted(answers)
    closed = [f for f in families if not any(items[i].open for i in range(len(items)) if items[i].family == f)]
    distinct = float(np.mean([len(answers[i]) for i in open_items])) if open_items else 0.0
    closed_acc = float(np.mean([families[f]["accuracy"] for f in closed])) if closed else 0.0
    return {"families": families, "distinct": distinct, "closed_accuracy": closed_acc,
            "score": closed_acc * distinct / max(n_open, 1),
            "answers": {str(items[i].key): sorted(answers[i]) for i in open_items}}


def _aggregate(per_seed: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per family and per frontier metric: mean, SE and values over seeds; per family also
    the pooled binomial SE and the number of samples."""
    fams = {}
    for f in per_seed[0]["families"]:
        n = sum(d["families"][f]["n"] for d in per_seed)
        k = sum(d["families"][f]["correct"] for d in per_seed)
        fams[f] = {**rep.seed_stat([d["families"][f]["accuracy"] for d in per_seed]),
                   "binomial_se": rep.binomial_se(k / n, n) if n else None, "samples": n}
    return {"families": fams, **{m: rep.seed_stat([d[m] for d in per_seed]) for m in ("closed_accuracy", "distinct", "score")}}


# ----------------------------------------------------------------------------- sampling


class _ChatRun:
    """The items of one evaluation, prefilled once, sampled by groups of strategies over the
    evaluation seeds; every (strategy, seed) run is one segment of a batch of at most
    ``max_batch`` rows (:func:`generate_rows`)."""

    def __init__(self, model, tokenizer, heads, items, *, checker, n_samples: int, n_open: int, seeds: List[int],
                 max_new_tokens: int, eos_ids: List[int], max_batch: int, say: Callable[[str], None]) -> None:
        self.model, self.tokenizer, self.heads, self.items, self.checker = model, tokenizer, heads, items, checker
        self.n_samples, self.n_open, self.seeds = n_samples, n_open, seeds
        self.max_new_tokens, self.eos_ids, self.max_batch, self.say = max_new_tokens, eos_ids, max_batch, say
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        prompt_ids = [tokenizer(it.prompt, add_special_tokens=False)["input_ids"] for it in items]
        tp = time.perf_counter()
        self.pre = prefill(model, prompt_ids, pad)
        say(f"prefill: {len(items)} prompts in {time.perf_counter() - tp:.1f} s")
        self.sampled_rows = [i for i, it in enumerate(items) for _ in range(n_open if it.open else n_samples)]
        self.greedy_rows = list(range(len(items)))

    def rows_of(self, st: Strategy) -> List[int]:
        """Greedy (deterministic) answers once per item, the others per sample."""
        return self.greedy_rows if st.deterministic else self.sampled_rows

    def seeds_of(self, st: Strategy) -> List[int]:
        """Greedy runs once (its samples are the same for every seed)."""
        return self.seeds[:1] if st.deterministic else self.seeds

    def texts(self, gen: Generated) -> List[str]:
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in gen.answer_ids()]

    def _packed(self, group: Sequence[Strategy]) -> List[List[Tuple[int, int]]]:
        """Every (strategy index, seed) run of ``group``, in order, packed into batches of at
        most ``max_batch`` rows (a run larger than that is a batch of its own)."""
        batches: List[List[Tuple[int, int]]] = [[]]
        size = 0
        for k, st in enumerate(group):
            n = len(self.rows_of(st))
            for seed in self.seeds_of(st):
                if batches[-1] and size + n > self.max_batch:
                    batches.append([])
                    size = 0
                batches[-1].append((k, seed))
                size += n
        return [b for b in batches if b]

    def generate(self, group: Sequence[Strategy]) -> Dict[Tuple[int, int], Generated]:
        """Every run of ``group``: ``(strategy index, seed) -> Generated``."""
        choosers = [st.chooser(self.heads) for st in group]
        results: Dict[Tuple[int, int], Generated] = {}
        for batch in self._packed(group):
            ts = time.perf_counter()
            segs = [Segment(tuple(self.rows_of(group[k])), choosers[k], seed) for k, seed in batch]
            gens = generate_rows(self.model, self.pre, segs, eos_ids=self.eos_ids, max_new_tokens=self.max_new_tokens)
            results.update(zip(batch, gens))
            names = sorted({group[k].name for k, _ in batch}, key=[st.name for st in group].index)
            self.say(f"batch of {sum(len(s.row_prompt) for s in segs)} rows ({len(batch)} strategy x seed runs: "
                     f"{', '.join(names)}) in {time.perf_counter() - ts:.0f} s")
        return results

    def row(self, st: Strategy, gens: List[Generated]) -> Dict[str, Any]:
        """The report row of ``st`` from its runs (one per seed; greedy's one run stands for every seed)."""
        rows_ = self.rows_of(st)
        per_seed = [_seed_metrics(self.items, _score_rows(self.items, rows_, self.texts(g), self.checker), self.n_open)
                    for g in gens]
        per_seed += [per_seed[0]] * (len(self.seeds) - len(per_seed))
        flat = lambda key: [v for g in gens for row in getattr(g, key) for v in row]  # noqa: E731
        once = st.deterministic
        row = {"name": st.name, "kind": st.kind, "group": st.group,
               "params": (dict(st.baseline.params, rule=st.baseline.kind) if st.baseline else
                          {"T": st.temperature, "P": st.top_p}),
               "T_mean": rep.nanmean(flat("T")), "P_mean": rep.nanmean(flat("P")),
               "samples_per_item": {"closed": 1 if once else self.n_samples, "open": 1 if once else self.n_open},
               **_aggregate(per_seed),
               "open_answers_seed0": per_seed[0]["answers"]}
        self.say(f"{st.name:<34} closed acc {row['closed_accuracy']['mean']:.3f}  distinct {row['distinct']['mean']:.2f}")
        return row

    def run(self, group: Sequence[Strategy]) -> List[Tuple[Dict[str, Any], List[Generated]]]:
        """Every strategy of ``group`` sampled (in shared batches) and scored: its row and runs."""
        results = self.generate(group)
        out = []
        for k, st in enumerate(group):
            gens = [results[(k, seed)] for seed in self.seeds_of(st)]
            out.append((self.row(st, gens), gens))
        return out

    def examples(self, gen: Generated) -> List[Dict[str, Any]]:
        """The first sampled answer of each family in ``gen`` with its per-token T and P."""
        seen: set = set()
        out = []
        texts = self.texts(gen)
        for r, i in enumerate(self.sampled_rows):
            it = self.items[i]
            if it.family not in seen:
                seen.add(it.family)
                out.append({"family": it.family, "question": it.question, "answer": texts[r], "T": gen.T[r], "P": gen.P[r]})
        return out


# ----------------------------------------------------------------------------- the evaluation


def _check_settings(seeds: Sequence[int], n_samples: int, n_open: int) -> List[int]:
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if n_open < 1 or n_samples < 1:
        raise ValueError("n_samples and n_open must be >= 1")
    return seeds


def _run_strategies(run: _ChatRun, strategies: List[Strategy]) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """AutoDeco first when there are heads (mean-static needs its predictions), then
    ``strategies`` and mean-static; the rows in report order (AutoDeco last) and the examples."""
    if run.heads is None:
        return [row for row, _ in run.run(strategies)], {}
    ((ad_row, ad_gens),) = run.run([AUTODECO])
    T_mean = rep.nanmean([v for g in ad_gens for row in g.T_pred for v in row])
    P_mean = rep.nanmean([v for g in ad_gens for row in g.P_pred for v in row])
    rows = [row for row, _ in run.run(strategies + [mean_static_strategy(T_mean, P_mean)])]
    return rows + [ad_row], {"autodeco": run.examples(ad_gens[0])}


def _position_rows(rows: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Marks the oracle row and gives every non-static row its frontier ``position``; the oracle."""
    best = rep.oracle(rows, AXES)
    for r in rows:
        r["oracle"] = r is best
        if r["group"] not in STATIC_GROUPS:
            r["position"] = frontier_position(rows, r)
    return best


def _paired(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    """Per-seed paired differences ``a - b`` of score, closed accuracy and distinct (mean, SE)."""
    out = {}
    for key in ("score", "closed_accuracy", "distinct"):
        m, se = rep.paired_se(a[key]["per_seed"], b[key]["per_seed"])
        out[key] = {"mean": m, "se": se}
    return out


def _autodeco_summary(rows: List[Dict[str, Any]], best: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """AutoDeco's position, the mean-static setting and the paired comparisons."""
    ad_row = next(r for r in rows if r["group"] == "autodeco")
    mean_row = next(r for r in rows if r["group"] == "mean_static")
    return {"autodeco_position": ad_row["position"],
            "mean_static": {"name": mean_row["name"], "T": mean_row["params"]["T"], "P": mean_row["params"]["P"]},
            "autodeco_vs_oracle": _paired(ad_row, best) if best else None,
            "autodeco_vs_mean_static": _paired(ad_row, mean_row)}


def evaluate_items(
    model,
    tokenizer,
    heads,
    items: Sequence[Any],
    *,
    checker: Tuple[Callable[[Any, str], bool], Callable[[Any, str], Optional[str]]],
    n_samples: int = 4,
    n_open: int = 12,
    seeds: Sequence[int] = (0, 1, 2),
    max_new_tokens: int = 16,
    strategies: Optional[Sequence[Strategy]] = None,
    eos_ids: Optional[Sequence[int]] = None,
    max_batch: int = 512,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Run every strategy on ``items`` (objects with ``prompt``, ``family``, ``key``, ``open``);
    returns the JSON-ready report (module docstring). ``checker = (check, canonical_answer)``
    scores a completion (for SmolLM2: ``tasks.check`` and ``tasks.canonical_open_answer``).
    Closed items get ``n_samples`` samples, open items ``n_open``; greedy gets one per item.
    ``heads``: an :class:`AutoDecoHeadsModule` (the autodeco and mean-static rows need it).
    Every (strategy, seed) run is one segment of a batch of at most ``max_batch`` rows
    (:func:`generate_rows`)."""
    t0 = time.perf_counter()
    seeds = _check_settings(seeds, n_samples, n_open)
    strategies = list(strategies) if strategies is not None else default_strategies()
    eos_ids = list(eos_ids) if eos_ids is not None else [tokenizer.eos_token_id]
    run = _ChatRun(model, tokenizer, heads, items, checker=checker, n_samples=n_samples, n_open=n_open, seeds=seeds,
                   max_new_tokens=max_new_tokens, eos_ids=eos_ids, max_batch=max_batch, say=progress or (lambda s: None))
    rows, examples = _run_strategies(run, strategies)
    best = _position_rows(rows)
    families = sorted({it.family for it in items}, key=[it.family for it in items].index)
    report = {
        "families": families,
        "open_families": sorted({it.family for it in items if it.open}),
        "n_items": {f: sum(1 for it in items if it.family == f) for f in families},
        "settings": {"n_samples": n_samples, "n_open": n_open, "seeds": seeds, "max_new_tokens": max_new_tokens,
                     "eos_ids": eos_ids, "max_batch": max_batch},
        "strategies": rows,
        "oracle": best["name"] if best else None,
        "static_frontier": static_frontier(rows),
        "examples": examples,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if heads is not None:
        report.update(_autodeco_summary(rows, best))
        report["verdict"] = verdict(report)
    return report


def verdict(report: Dict[str, Any]) -> str:
    """One line: AutoDeco beyond the static frontier, or dominated and by how much."""
    pos = report["autodeco_position"]
    ad = next(r for r in report["strategies"] if r["group"] == "autodeco")
    head = (f"AutoDeco: closed-task accuracy {ad['closed_accuracy']['mean']:.3f}, "
            f"{ad['distinct']['mean']:.2f} distinct valid answers per open item")
    if pos["beyond_frontier"]:
        return head + ": beyond the static frontier (no static (T, P) is both as accurate and as diverse)"
    gaps = []
    if pos["accuracy_gap"] is not None:
        gaps.append(f"{-pos['accuracy_gap']:.3f} accuracy below the best static point at least as diverse")
    if pos["distinct_gap"] is not None:
        gaps.append(f"{-pos['distinct_gap']:.2f} distinct answers below the best static point at least as accurate")
    return head + f": dominated by {len(pos['dominated_by'])} static point(s); " + "; ".join(gaps)


# ----------------------------------------------------------------------------- presentation


def _notes(report: Dict[str, Any], r: Dict[str, Any], bold: str = "") -> str:
    """A row's notes: oracle, frontier, its position (``bold`` wraps "beyond frontier")."""
    note = []
    if r.get("oracle"):
        note.append("oracle")
    if r["name"] in report["static_frontier"]:
        note.append("frontier")
    if "position" in r:
        p = r["position"]
        note.append(f"{bold}beyond frontier{bold}" if p["beyond_frontier"] else f"dominated by {len(p['dominated_by'])}")
    return ", ".join(note)


def _mean_used(key: str) -> Callable[[Dict[str, Any]], str]:
    return lambda r: "" if r[key] is None else f"{r[key]:.2f}"


def _with_se(key: str, digits: int, sep: str, width: int = 0) -> Callable[[Dict[str, Any]], str]:
    return lambda r: f"{r[key]['mean']:{width}.{digits}f}{sep}{(r[key]['se'] or 0):.{digits}f}"


def _family_cell(f: str, sep: str) -> Callable[[Dict[str, Any]], str]:
    return lambda r: f"{r['families'][f]['mean']:.3f}{sep}{(r['families'][f]['se'] or 0):.3f}"


def format_table(report: Dict[str, Any]) -> str:
    """Fixed-width table: per family accuracy (mean ± SE over seeds), closed accuracy,
    distinct valid answers per open item, score, and notes (oracle, frontier, position)."""
    columns = ([rep.Column("strategy", lambda r: r["name"], 32, left=True), rep.Column("T", _mean_used("T_mean"), 5),
                rep.Column("P", _mean_used("P_mean"), 5)]
               + [rep.Column(f, _family_cell(f, "±"), 12) for f in report["families"]]
               + [rep.Column("closed acc", _with_se("closed_accuracy", 3, "±"), 13),
                  rep.Column("distinct", _with_se("distinct", 2, "±", 5), 11),
                  rep.Column("score", lambda r: f"{r['score']['mean']:6.3f}", 6)])
    s = report["settings"]
    footer = (f"(mean ± SE over {len(s['seeds'])} seed(s); {s['n_samples']} samples per closed item, {s['n_open']} per "
              f"open item, greedy 1; distinct = distinct valid answers per open item; closed acc = mean of the closed "
              f"families; score = closed acc x distinct / {s['n_open']}; T, P = mean used)")
    return rep.fixed_width_table(report["strategies"], columns, lambda r: _notes(report, r), footer)


def format_markdown(report: Dict[str, Any]) -> str:
    """The table of :func:`format_table` as Markdown (for docs): per family accuracy and the
    frontier axes as ``mean ± SE`` over seeds, and each row's position."""
    columns = ([rep.Column("strategy", lambda r: f"**{r['name']}**" if r["group"] == "autodeco" else r["name"]),
                rep.Column("T", _mean_used("T_mean")), rep.Column("P", _mean_used("P_mean"))]
               + [rep.Column(f, _family_cell(f, " ± ")) for f in report["families"]]
               + [rep.Column("closed acc", _with_se("closed_accuracy", 3, " ± ")),
                  rep.Column("distinct", _with_se("distinct", 2, " ± ")),
                  rep.Column("position", lambda r: _notes(report, r, bold="**"))])
    return rep.markdown_table(report["strategies"], columns)


def plot_frontier(report: Dict[str, Any], path: Union[str, Path], *, title: str = "") -> Path:
    """PNG: closed-task accuracy against distinct valid answers per open item, every strategy;
    the static grid coloured by T, the static frontier dashed, baselines and AutoDeco marked,
    with their SEs over seeds as error bars (:func:`report.plot_frontier`)."""
    style = rep.FrontierPlot(
        xlabel=f"distinct valid answers per open item ({report['settings']['n_open']} samples)",
        ylabel="accuracy on the closed task families", title=title or "static (T, P), baselines and AutoDeco",
        grid_label="static (T, P) grid", grid_T=lambda r: r["params"]["T"], colorbar="static T",
        marks={"greedy": ("s", "tab:gray"), "mean_static": ("^", "tab:orange"), "autodeco": ("*", "tab:red")},
        errors=lambda r: (r["distinct"]["se"] or 0, r["closed_accuracy"]["se"] or 0))
    return rep.plot_frontier(report, path, AXES, style)
