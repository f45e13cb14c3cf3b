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

Every generated answer is kept as a record (``report["records"]``: item id, family, strategy,
seed, sample index, answer text, correct, and on open items the canonical valid answer), and
``report["analysis"]`` is the item-paired analysis of :mod:`.analysis` (bootstrap CIs over
items and seeds, AutoDeco minus every strategy, the cross-fitted oracle, frontier labels
decided with the CIs, held-out families apart, items needed for a gap). min-p 0.1 and top-nσ
also run at AutoDeco's mean T and at the in-sample oracle's T (:data:`MATCHED_BASELINES`).
:func:`evaluate_on_engine` runs all of it on another engine (the llama.cpp one of
:mod:`.llama_engine`) with the same scoring.

Sampling is batched (every item x its samples in one batch) with the model's KV cache through
the shared decode loop (:func:`autodeco_samplers.research.evaluation.decode.generate_rows`): the
prompts are prefilled once and that cache is shared by every strategy and seed; finished rows
(an end-of-sequence token) leave the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from autodeco_samplers.research.baselines.numpy_baselines import Baseline
from autodeco_samplers.research.evaluation import report as rep
from autodeco_samplers.research.evaluation.analysis import CROSS_FIT, analyse
from autodeco_samplers.research.evaluation.decode import Generated, Segment, generate_rows, prefill
from autodeco_samplers.research.evaluation.strategies import (
    AUTODECO,
    STATIC_GROUPS,
    Strategy,
    mean_static_strategy,
    static_strategies,
    variant_label,
    variant_strategy,
)

__all__ = [
    "DEFAULT_TEMPERATURES",
    "DEFAULT_TOP_PS",
    "DEFAULT_BASELINES",
    "MATCHED_BASELINES",
    "matched_strategies",
    "AXES",
    "default_strategies",
    "evaluate_items",
    "evaluate_on_engine",
    "TransformersEngine",
    "frontier_position",
    "static_frontier",
    "verdict",
    "format_analysis",
    "format_table",
    "format_markdown",
    "format_ablation",
    "format_subset",
    "ablation_rows",
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
#: run again at AutoDeco's mean T and at the oracle's T (matched temperature)
MATCHED_BASELINES: Tuple[Baseline, ...] = (Baseline("min_p", {"min_p": 0.1}), Baseline("top_n_sigma", {"n": 1.0}))
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
    score = (closed_acc if closed else 1.0) * (distinct / max(n_open, 1) if open_items else 1.0)
    return {"families": families, "distinct": distinct, "closed_accuracy": closed_acc, "score": score,
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


class TransformersEngine:
    """Sampling on a transformers model: the prompts prefilled once, every (strategy, seed)
    run one segment of a batch of at most ``max_batch`` rows (:func:`generate_rows`)."""

    name = "transformers"

    def __init__(self, model, tokenizer, items, *, eos_ids: List[int], max_batch: int = 512,
                 say: Callable[[str], None] = lambda s: None) -> None:
        self.model, self.tokenizer, self.eos_ids, self.max_batch, self.say = model, tokenizer, eos_ids, max_batch, say
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        prompt_ids = [list(it.prompt_ids) if getattr(it, "prompt_ids", None) is not None else
                      tokenizer(it.prompt, add_special_tokens=False)["input_ids"] for it in items]
        tp = time.perf_counter()
        self.pre = prefill(model, prompt_ids, pad)
        say(f"prefill: {len(items)} prompts in {time.perf_counter() - tp:.1f} s")

    def texts(self, gen: Generated) -> List[str]:
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in gen.answer_ids()]

    def _packed(self, run: "_ChatRun", group: Sequence[Strategy]) -> List[List[Tuple[int, int]]]:
        """Every (strategy index, seed) run of ``group``, in order, packed into batches of at
        most ``max_batch`` rows (a run larger than that is a batch of its own)."""
        batches: List[List[Tuple[int, int]]] = [[]]
        size = 0
        for k, st in enumerate(group):
            n = len(run.rows_of(st))
            for seed in run.seeds_of(st):
                if batches[-1] and size + n > self.max_batch:
                    batches.append([])
                    size = 0
                batches[-1].append((k, seed))
                size += n
        return [b for b in batches if b]

    def generate(self, run: "_ChatRun", group: Sequence[Strategy], max_new_tokens: int) -> Dict[Tuple[int, int], Generated]:
        """Every run of ``group``: ``(strategy index, seed) -> Generated``."""
        choosers = [st.chooser(run.heads) for st in group]
        results: Dict[Tuple[int, int], Generated] = {}
        for batch in self._packed(run, group):
            ts = time.perf_counter()
            segs = [Segment(tuple(run.rows_of(group[k])), choosers[k], seed) for k, seed in batch]
            gens = generate_rows(self.model, self.pre, segs, eos_ids=self.eos_ids, max_new_tokens=max_new_tokens)
            results.update(zip(batch, gens))
            names = sorted({group[k].name for k, _ in batch}, key=[st.name for st in group].index)
            self.say(f"batch of {sum(len(s.row_prompt) for s in segs)} rows ({len(batch)} strategy x seed runs: "
                     f"{', '.join(names)}) in {time.perf_counter() - ts:.0f} s")
        return results


class _ChatRun:
    """The items of one evaluation, sampled by groups of strategies over the evaluation seeds
    on an ``engine`` (:class:`TransformersEngine`, or the llama.cpp engine of
    :mod:`.llama_engine`: ``generate(run, group, max_new_tokens)`` and ``texts(gen)``), and
    scored the one way of this module."""

    def __init__(self, engine, heads, items, *, checker, n_samples: int, n_open: int, seeds: List[int],
                 max_new_tokens: int, say: Callable[[str], None]) -> None:
        self.engine, self.heads, self.items, self.checker = engine, heads, items, checker
        self.n_samples, self.n_open, self.seeds = n_samples, n_open, seeds
        self.max_new_tokens, self.say = max_new_tokens, say
        self.sampled_rows = [i for i, it in enumerate(items) for _ in range(n_open if it.open else n_samples)]
        self.greedy_rows = list(range(len(items)))
        self.all_records: List[Dict[str, Any]] = []
        self.matrices: Dict[str, np.ndarray] = {}

    def rows_of(self, st: Strategy) -> List[int]:
        """Greedy (deterministic) answers once per item, the others per sample."""
        return self.greedy_rows if st.deterministic else self.sampled_rows

    def seeds_of(self, st: Strategy) -> List[int]:
        """Greedy runs once (its samples are the same for every seed)."""
        return self.seeds[:1] if st.deterministic else self.seeds

    def texts(self, gen: Generated) -> List[str]:
        return gen.texts if gen.texts is not None else self.engine.texts(gen)

    def generate(self, group: Sequence[Strategy]) -> Dict[Tuple[int, int], Generated]:
        """Every run of ``group``: ``(strategy index, seed) -> Generated``."""
        return self.engine.generate(self, group, self.max_new_tokens)

    def records(self, st: Strategy, gens: List[Generated], scored: List[List[_Scored]]) -> List[Dict[str, Any]]:
        """One record per generated answer (docs/evaluation.md, "Per-item records")."""
        out = []
        for seed, g, sc in zip(self.seeds_of(st), gens, scored):
            count: Dict[int, int] = {}
            for text, s in zip(self.texts(g), sc):
                it = self.items[s.item]
                count[s.item] = count.get(s.item, -1) + 1
                rec = {"item": str(it.key), "item_index": s.item, "family": it.family, "strategy": st.name,
                       "seed": seed, "sample": count[s.item], "answer": text, "correct": s.ok}
                if it.open:
                    rec["valid_answer"] = s.answer
                out.append(rec)
        return out

    def matrix(self, scored: List[List[_Scored]]) -> np.ndarray:
        """``[n_items, n_seeds]``: a closed item's accuracy over its samples, an open item's
        number of distinct valid answers, per seed (one run stands for every seed)."""
        M = np.zeros((len(self.items), len(scored)))
        for j, sc in enumerate(scored):
            ok: Dict[int, List[bool]] = {}
            valid: Dict[int, set] = {}
            for s in sc:
                ok.setdefault(s.item, []).append(s.ok)
                if s.answer is not None:
                    valid.setdefault(s.item, set()).add(s.answer)
            for i, it in enumerate(self.items):
                M[i, j] = len(valid.get(i, ())) if it.open else float(np.mean(ok[i]))
        return np.repeat(M, len(self.seeds), axis=1) if len(scored) == 1 and len(self.seeds) > 1 else M

    def row(self, st: Strategy, gens: List[Generated]) -> Dict[str, Any]:
        """The report row of ``st`` from its runs (one per seed; greedy's one run stands for every seed)."""
        rows_ = self.rows_of(st)
        scored = [_score_rows(self.items, rows_, self.texts(g), self.checker) for g in gens]
        self.all_records += self.records(st, gens, scored)
        self.matrices[st.name] = self.matrix(scored)
        per_seed = [_seed_metrics(self.items, sc, self.n_open) for sc in scored]
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


def matched_strategies(baselines: Sequence[Baseline], temperatures: Dict[str, float],
                       taken: Sequence[str] = ()) -> List[Strategy]:
    """Every baseline at every matched temperature (``temperatures``: what it matches ->
    ``T``, rounded to 3 decimals), skipping names already ``taken`` (a baseline at ``T = 1``
    is the usual baseline row)."""
    out: List[Strategy] = []
    for b in baselines:
        for label, T in temperatures.items():
            mb = Baseline(b.kind, {**b.params, "T": round(float(T), 3)})
            if mb.name not in taken and mb.name not in [s.name for s in out]:
                out.append(Strategy(mb.name, "baseline", group="baseline", baseline=mb))
    return out


def _predicted_means(gens: List[Generated]) -> Tuple[Optional[float], Optional[float]]:
    """The mean predicted T and P over every token of ``gens``."""
    return (rep.nanmean([v for g in gens for row in g.T_pred for v in row]),
            rep.nanmean([v for g in gens for row in g.P_pred for v in row]))


def _run_strategies(run: _ChatRun, strategies: List[Strategy], matched: Sequence[Baseline],
                    variants: Sequence[Strategy] = ()) -> Tuple[List[Dict[str, Any]], Dict[str, Any], Dict[str, Any],
                                                                Dict[str, Any]]:
    """AutoDeco (and the ``variants``) first when there are heads (mean-static needs their
    predictions), then ``strategies`` and the mean-static rows, then the ``matched`` baselines
    at AutoDeco's mean T and the in-sample oracle's T; the rows in report order (AutoDeco and
    the variants last), the examples, the matched temperatures and per variant row its label,
    mean-static row and mean predictions."""
    temps: Dict[str, float] = {}
    variant_info: Dict[str, Any] = {}
    if run.heads is None:
        rows = [row for row, _ in run.run(strategies)]
        ad_rows, examples = [], {}
    else:
        ran = run.run([AUTODECO, *variants])
        (ad_row, ad_gens), var_runs = ran[0], ran[1:]
        T_mean, P_mean = _predicted_means(ad_gens)
        statics = [mean_static_strategy(T_mean, P_mean)]
        for st, (row, gens) in zip(variants, var_runs):
            vT, vP = _predicted_means(gens)
            ms = mean_static_strategy(vT, vP, variant=variant_label(st))
            statics.append(ms)
            variant_info[st.name] = {"mean_static": ms.name, "T_pred_mean": vT, "P_pred_mean": vP}
        rows = [row for row, _ in run.run(strategies + statics)]
        ad_rows, examples = [ad_row] + [row for row, _ in var_runs], {"autodeco": run.examples(ad_gens[0])}
        if T_mean is not None:
            temps["autodeco_mean_T"] = T_mean
    best = rep.oracle(rows, AXES)
    if best is not None:
        temps["oracle_T"] = best["params"]["T"]
    extra = matched_strategies(matched, {k: v for k, v in temps.items() if v > 0}, [r["name"] for r in rows])
    if extra:
        rows += [row for row, _ in run.run(extra)]
    info = {"temperatures": temps, "strategies": [s.name for s in extra]}
    return rows + ad_rows, examples, info, variant_info


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
    matched_baselines: Sequence[Baseline] = MATCHED_BASELINES,
    records: bool = True,
    n_boot: int = 2000,
    boot_seed: int = 0,
    gap: float = 0.03,
    power: float = 0.8,
    variants: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Run every strategy on ``items`` (objects with ``prompt``, ``family``, ``key``, ``open``);
    returns the JSON-ready report (module docstring). ``checker = (check, canonical_answer)``
    scores a completion (for SmolLM2: ``tasks.check`` and ``tasks.canonical_open_answer``).
    Closed items get ``n_samples`` samples, open items ``n_open``; greedy gets one per item.
    ``heads``: an :class:`AutoDecoHeadsModule` (the autodeco and mean-static rows need it).
    Every (strategy, seed) run is one segment of a batch of at most ``max_batch`` rows
    (:func:`generate_rows`).

    ``matched_baselines`` also run at AutoDeco's mean T and at the in-sample oracle's T.
    The report's ``analysis`` is :func:`analysis.analyse` (bootstrap with ``n_boot`` draws
    and seed ``boot_seed``, items needed for ``gap`` at ``power``); ``records`` (one per
    generated answer) is in the report unless ``records=False``. An item may carry
    ``heldout_family`` (bool) and ``prompt_ids`` (token ids used instead of ``prompt``).
    ``variants`` (label -> heads module): other heads run beside ``heads`` in the same run,
    each with its own mean-static row (report ``variants``; the analysis compares each with
    every strategy, ``variants_vs``)."""
    t0 = time.perf_counter()
    _check_settings(seeds, n_samples, n_open)
    eos_ids = list(eos_ids) if eos_ids is not None else [tokenizer.eos_token_id]
    say = progress or (lambda s: None)
    engine = TransformersEngine(model, tokenizer, items, eos_ids=eos_ids, max_batch=max_batch, say=say)
    report = evaluate_on_engine(engine, heads, items, checker=checker, n_samples=n_samples, n_open=n_open, seeds=seeds,
                                max_new_tokens=max_new_tokens, strategies=strategies, progress=progress,
                                matched_baselines=matched_baselines, records=records, n_boot=n_boot,
                                boot_seed=boot_seed, gap=gap, power=power, variants=variants)
    report["settings"].update(eos_ids=eos_ids, max_batch=max_batch)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def evaluate_on_engine(
    engine,
    heads,
    items: Sequence[Any],
    *,
    checker: Tuple[Callable[[Any, str], bool], Callable[[Any, str], Optional[str]]],
    n_samples: int = 4,
    n_open: int = 12,
    seeds: Sequence[int] = (0, 1, 2),
    max_new_tokens: int = 16,
    strategies: Optional[Sequence[Strategy]] = None,
    progress: Optional[Callable[[str], None]] = None,
    matched_baselines: Sequence[Baseline] = MATCHED_BASELINES,
    records: bool = True,
    n_boot: int = 2000,
    boot_seed: int = 0,
    gap: float = 0.03,
    power: float = 0.8,
    variants: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """:func:`evaluate_items` on any sampling ``engine`` (:class:`TransformersEngine`, or
    :class:`~autodeco_samplers.research.evaluation.llama_engine.LlamaCppEngine`): the same
    strategies, scoring, records, analysis and report. ``heads``: None when the engine has
    no heads (no autodeco and mean-static rows), else what the engine draws with (the heads
    module for transformers; any other value for an engine that holds its heads itself)."""
    t0 = time.perf_counter()
    seeds = _check_settings(seeds, n_samples, n_open)
    strategies = list(strategies) if strategies is not None else default_strategies()
    supports = getattr(engine, "supports", None)
    left_out = {}
    if supports is not None:
        left_out = {st.name: supports(st) for st in strategies if supports(st) is not None}
        strategies = [st for st in strategies if st.name not in left_out]
        matched_left = [b for b in matched_baselines if supports(Strategy(b.name, "baseline", baseline=b)) is not None]
        left_out.update({f"{b.name} at matched T": supports(Strategy(b.name, "baseline", baseline=b)) for b in matched_left})
        matched_baselines = [b for b in matched_baselines if b not in matched_left]
    run = _ChatRun(engine, heads, items, checker=checker, n_samples=n_samples, n_open=n_open, seeds=seeds,
                   max_new_tokens=max_new_tokens, say=progress or (lambda s: None))
    variant_strategies = [variant_strategy(label, h) for label, h in (variants or {}).items()]
    if variant_strategies and heads is None:
        raise ValueError("variants need the evaluation's own heads too")
    rows, examples, matched_info, variant_info = _run_strategies(run, strategies, matched_baselines, variant_strategies)
    best = _position_rows(rows)
    analysis = analyse(rows, run.matrices, [it.family for it in items], [bool(it.open) for it in items],
                       [getattr(it, "heldout_family", None) for it in items], n_open=n_open, n_boot=n_boot,
                       boot_seed=boot_seed, gap=gap, power=power)
    families = sorted({it.family for it in items}, key=[it.family for it in items].index)
    report = {
        "families": families,
        "open_families": sorted({it.family for it in items if it.open}),
        "n_items": {f: sum(1 for it in items if it.family == f) for f in families},
        "settings": {"engine": engine.name, "n_samples": n_samples, "n_open": n_open, "seeds": seeds,
                     "max_new_tokens": max_new_tokens},
        "strategies": rows,
        "oracle": best["name"] if best else None,
        "static_frontier": static_frontier(rows),
        "examples": examples,
        "matched_temperature": matched_info,
        "left_out": left_out,
        "variants": variant_info,
        "analysis": analysis,
        "items": [{"item": str(it.key), "family": it.family, "open": bool(it.open),
                   "heldout_family": getattr(it, "heldout_family", None)} for it in items],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if records:
        report["records"] = run.all_records
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
    label = report.get("analysis", {}).get("all", {}).get("frontier", {}).get(ad["name"])
    if label is not None and label["label"] != "dominated":
        if label["label"] == "beyond the frontier":
            return head + ": beyond the static frontier (no static (T, P) is both as accurate and as diverse)"
        return head + (": on the static frontier within noise (static points with higher means: "
                       f"{', '.join(label['within_noise_of'])}; no paired CI excludes zero)")
    if pos["beyond_frontier"]:
        return head + ": beyond the static frontier (no static (T, P) is both as accurate and as diverse)"
    gaps = []
    if pos["accuracy_gap"] is not None:
        gaps.append(f"{-pos['accuracy_gap']:.3f} accuracy below the best static point at least as diverse")
    if pos["distinct_gap"] is not None:
        gaps.append(f"{-pos['distinct_gap']:.2f} distinct answers below the best static point at least as accurate")
    n_dom = len(label["dominated_by"]) if label is not None else len(pos["dominated_by"])
    return head + f": dominated by {n_dom} static point(s)" + (" (paired CI)" if label is not None else "") + "; " + "; ".join(gaps)


# ----------------------------------------------------------------------------- presentation


def _notes(report: Dict[str, Any], r: Dict[str, Any], bold: str = "") -> str:
    """A row's notes: oracle, frontier, its position (``bold`` wraps "beyond frontier")."""
    note = []
    if r.get("oracle"):
        note.append("oracle")
    if r["name"] in report["static_frontier"]:
        note.append("frontier")
    label = report.get("analysis", {}).get("all", {}).get("frontier", {}).get(r["name"])
    if label is not None:  # decided with the CIs (analysis.py)
        if label["label"] == "beyond the frontier":
            note.append(f"{bold}beyond frontier{bold}")
        elif label["label"] == "dominated":
            note.append(f"dominated by {len(label['dominated_by'])} (CI)")
        else:
            note.append(f"on the frontier within noise ({len(label['within_noise_of'])})")
    elif "position" in r:
        p = r["position"]
        note.append(f"{bold}beyond frontier{bold}" if p["beyond_frontier"] else f"dominated by {len(p['dominated_by'])}")
    return ", ".join(note)


def _ci(d: Optional[Dict[str, Any]], digits: int) -> str:
    if not d or d.get("mean") is None:
        return "-"
    lo, hi = d["ci"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


SUBSET_TITLES = {"all": "all items", "heldout_families": "held-out families (the heads never trained on them)",
                 "trained_families": "held-out items of trained families"}


def format_analysis(report: Dict[str, Any]) -> str:
    """The item-paired analysis as text, per subset: the oracles, AutoDeco minus every
    strategy (paired bootstrap CIs; the items a gap needs), each strategy's frontier label."""
    out = []
    for name, a in report["analysis"].items():
        n = a["n_items"]
        b = a["bootstrap"]
        out.append(f"== {SUBSET_TITLES.get(name, name)}: {n['closed']} closed, {n['open']} open items "
                   f"({b['level']:.0%} CIs: bootstrap over items within family and seeds, {b['draws']} draws, seed {b['seed']})")
        if "oracle_in_sample" in a:
            cf = a["oracle_cross_fit"]
            out.append(f"oracle in sample: {a['oracle_in_sample']}; cross-fitted: {cf['chosen_on_fold_1']} (chosen on fold 1, "
                       f"scored on fold 2) / {cf['chosen_on_fold_2']} (chosen on fold 2, scored on fold 1)")
        vs = a.get("autodeco_vs")
        if vs:
            keys = [k for k in ("closed_accuracy", "distinct", "score") if k in next(iter(vs.values()))]
            pw = next(iter(vs.values()))["power"]
            cols = [rep.Column("AutoDeco minus", lambda r: r["name"], 34, left=True)]
            cols += [rep.Column(k.replace("_", " "), (lambda k: lambda r: _ci(r[k], 3 if k != "distinct" else 2))(k), 26)
                     for k in keys]
            cols.append(rep.Column(f"items for {pw['gap']:g}", lambda r: str(r["power"]["items_needed"] or "-"), 14))
            rows = [{"name": nm, **d} for nm, d in vs.items()]
            sd = lambda r: "" if r["power"]["paired_sd"] is None else f"paired SD {r['power']['paired_sd']:.3f}"  # noqa: E731
            resolves = [d["power"]["resolvable_gap"] for d in vs.values() if d["power"]["resolvable_gap"]]
            out.append(rep.fixed_width_table(rows, cols, sd, footer=(
                f"(items for a gap: paired n = ((z_a + z_b) sd / gap)^2, alpha {pw['alpha']:g} two-sided, "
                f"power {pw['power']:g}, on closed accuracy ({'distinct answers x n_open' if not n['closed'] else 'per item'}); "
                + (f"these {pw['n_items']} items resolve gaps of {min(resolves):.3f} to {max(resolves):.3f})" if resolves
                   else "no variation seen)"))))
        for t, lab in a["frontier"].items():
            extra = lab["dominated_by"] or lab["within_noise_of"]
            out.append(f"  {t}: {lab['label']}" + (f" ({', '.join(extra)})" if extra else ""))
    return "\n".join(out)


def ablation_rows(report: Dict[str, Any], subset: str = "all", key: str = "closed_accuracy") -> List[Dict[str, Any]]:
    """One row per AutoDeco heads (the evaluation's, then each variant): its ``key`` with CI
    and its paired difference (CI) from its own mean-static, the cross-fitted and in-sample
    oracles, greedy and every matched-temperature baseline, on the ``subset`` of the analysis."""
    a = report["analysis"][subset]
    ad = next(r for r in report["strategies"] if r["group"] == "autodeco")
    heads = [(ad["name"], report["mean_static"]["name"], a.get("autodeco_vs", {}))]
    heads += [(name, v["mean_static"], a.get("variants_vs", {}).get(name, {})) for name, v in report.get("variants", {}).items()]
    targets = {"own mean-static": None, "oracle (cross-fitted)": CROSS_FIT, "oracle (in sample)": a.get("oracle_in_sample"),
               "greedy": "greedy", **{n: n for n in report.get("matched_temperature", {}).get("strategies", [])}}
    out = []
    for name, mean_static, vs in heads:
        row = {"heads": name, key: a["strategies"][name][key]}
        for label, other in targets.items():
            other = mean_static if label == "own mean-static" else other
            row[label] = vs.get(other, {}).get(key) if other else None
        out.append(row)
    return out


def format_subset(report: Dict[str, Any], subset: str = "all") -> str:
    """One subset of the analysis as a Markdown table: every strategy's closed accuracy,
    distinct answers and score with their CIs, AutoDeco minus it (paired CI, closed accuracy
    and score) and its frontier label (static points: blank)."""
    a = report["analysis"][subset]
    vs = a.get("autodeco_vs", {})
    keys = [k for k in ("closed_accuracy", "distinct", "score") if k in next(iter(a["strategies"].values()))]
    names = [r["name"] for r in report["strategies"]] + ([CROSS_FIT] if CROSS_FIT in a["strategies"] else [])
    rows = [{"name": n, **a["strategies"][n], "vs": vs.get(n, {}), "label": a["frontier"].get(n, {}).get("label", "")}
            for n in names]
    cols = [rep.Column("strategy", lambda r: f"**{r['name']}**" if r["name"] == "autodeco" else r["name"])]
    cols += [rep.Column(k.replace("_", " "), (lambda k: lambda r: _ci(r[k], 2 if k == "distinct" else 3).lstrip("+"))(k))
             for k in keys]
    cols += [rep.Column(f"AutoDeco minus it: {k.replace('_', ' ')}", (lambda k: lambda r: _ci(r["vs"].get(k), 3))(k))
             for k in keys if k != "distinct"]
    cols.append(rep.Column("frontier (CI)", lambda r: r["label"]))
    return rep.markdown_table(rows, cols)


def format_ablation(report: Dict[str, Any], subset: str = "all", key: str = "closed_accuracy") -> str:
    """:func:`ablation_rows` as a Markdown table (``mean [lo, hi]``, 3 decimals)."""
    rows = ablation_rows(report, subset, key)
    digits = 2 if key == "distinct" else 3
    cols = [rep.Column("heads", lambda r: r["heads"]), rep.Column(key.replace("_", " "), lambda r: _ci(r[key], digits).lstrip("+"))]
    cols += [rep.Column(f"minus {label}", (lambda lab: lambda r: _ci(r[lab], digits))(label))
             for label in rows[0] if label not in ("heads", key)]
    return rep.markdown_table(rows, cols)


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
    with their bootstrap SEs (over items and seeds; over seeds without an analysis) as error
    bars (:func:`report.plot_frontier`)."""
    style = rep.FrontierPlot(
        xlabel=f"distinct valid answers per open item ({report['settings']['n_open']} samples)",
        ylabel="accuracy on the closed task families", title=title or "static (T, P), baselines and AutoDeco",
        grid_label="static (T, P) grid", grid_T=lambda r: r["params"]["T"], colorbar="static T",
        marks={"greedy": ("s", "tab:gray"), "mean_static": ("^", "tab:orange"), "autodeco": ("*", "tab:red")},
        errors=lambda r: _error_bars(report, r))
    return rep.plot_frontier(report, path, AXES, style)


def _error_bars(report: Dict[str, Any], r: Dict[str, Any]) -> Tuple[float, float]:
    """A row's (distinct, closed accuracy) error bars: the bootstrap SE over items and seeds
    of the analysis when the report has one, else the SE over seeds."""
    a = report.get("analysis", {}).get("all", {}).get("strategies", {}).get(r["name"])
    if a is not None:
        return tuple((a.get(k) or {}).get("se") or 0.0 for k in ("distinct", "closed_accuracy"))
    return r["distinct"]["se"] or 0, r["closed_accuracy"]["se"] or 0
