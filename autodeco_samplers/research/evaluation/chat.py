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

Position against the static frontier (:func:`frontier_position`): a static point (greedy,
default or the grid) *dominates* a strategy when its ``closed_accuracy`` and ``distinct`` are
both at least the strategy's and one is strictly higher (means over seeds). A strategy is
``beyond_frontier`` when no static point dominates it. ``accuracy_gap`` = its accuracy minus
the best accuracy of a static point at least as diverse, ``distinct_gap`` = its distinct count
minus the best distinct count of a static point at least as accurate (negative: dominated by
that much; None when no static point qualifies).

Sampling is batched (every item x its samples in one batch) with the model's KV cache; the
prompts are prefilled once and that cache is shared by every strategy and seed; finished rows
(an end-of-sequence token) leave the batch.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from autodeco_samplers.research.baselines.numpy_baselines import Baseline
from autodeco_samplers.research.evaluation.toy import mean_and_se, portable_path

__all__ = [
    "ChatStrategy",
    "DEFAULT_TEMPERATURES",
    "DEFAULT_TOP_PS",
    "DEFAULT_BASELINES",
    "default_strategies",
    "Prefill",
    "prefill",
    "Segment",
    "generate_rows",
    "evaluate_items",
    "frontier_position",
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
STATIC_GROUPS = ("greedy", "default", "grid")


@dataclass(frozen=True)
class ChatStrategy:
    """``kind``: ``"static"`` (fixed ``temperature``/``top_p``, canonical rule; ``T = 0`` is
    greedy), ``"baseline"`` (``baseline``'s own distribution) or ``"autodeco"``."""

    name: str
    kind: str
    group: str
    temperature: float = 1.0
    top_p: float = 1.0
    baseline: Optional[Baseline] = None


def default_strategies(temperatures: Sequence[float] = DEFAULT_TEMPERATURES, top_ps: Sequence[float] = DEFAULT_TOP_PS,
                       baselines: Sequence[Baseline] = DEFAULT_BASELINES) -> List[ChatStrategy]:
    """greedy, default, the grid (without ``T=1 P=1``, which is ``default``), the baselines.
    ``mean-static`` and ``autodeco`` are added by :func:`evaluate_items`."""
    out = [ChatStrategy("greedy", "static", "greedy", 0.0, 1.0), ChatStrategy("default T=1 P=1", "static", "default", 1.0, 1.0)]
    out += [ChatStrategy(f"static T={t:g} P={p:g}", "static", "grid", float(t), float(p))
            for t in temperatures for p in top_ps if not (t == 1.0 and p == 1.0)]
    out += [ChatStrategy(b.name, "baseline", "baseline", baseline=b) for b in baselines]
    return out


# ----------------------------------------------------------------------------- sampling


@dataclass
class Prefill:
    """The prompts run once: their KV ``cache`` (one row per prompt), the last position's
    ``logits`` ``[n, V]`` and final ``hidden`` state ``[n, H]``, the left-padded attention
    ``mask`` ``[n, L]`` and each prompt's length ``lengths`` ``[n]``."""

    cache: Any
    logits: Any
    hidden: Any
    mask: Any
    lengths: Any


def prefill(model, prompt_ids: Sequence[Sequence[int]], pad_id: int) -> Prefill:
    """Run the (left-padded) prompts once; see :class:`Prefill`."""
    import torch

    from autodeco_samplers.research.evaluation.toy import left_pad
    from autodeco_samplers.research.training.trainer import HiddenCapture

    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode(), HiddenCapture(model) as cap:
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        hidden = cap.hidden[:, -1].float().clone()
    cache = getattr(out, "cache", None) or out.past_key_values
    return Prefill(cache, out.logits[:, -1].float().clone(), hidden, mask, mask.sum(-1))


#: ``choose(hidden, logits, generator) -> (tokens, T_used, P_used, T_pred, P_pred)``, all ``[b]``
Chooser = Callable[[Any, Any, Any], Tuple[Any, Any, Any, Any, Any]]


def chooser(strategy: ChatStrategy, heads=None) -> Chooser:
    """The per-step draw of ``strategy`` (the core rules; no Python loop over rows)."""
    import torch

    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_sample
    from autodeco_samplers.core.torch_ops import sample_tokens, torch_rule_sample

    if strategy.kind == "autodeco":
        if heads is None:
            raise ValueError("the autodeco strategy needs heads")
        policy = DecodingPolicy()

        def choose(hidden, logits, gen):
            st = torch_step_sample(hidden, logits, heads, policy, gen)
            return st.token_ids, st.T, st.P, st.T_pred, st.P_pred

        return choose
    if strategy.kind == "static":
        def choose(hidden, logits, gen):
            B = logits.shape[0]
            T = torch.full((B,), float(strategy.temperature), device=logits.device)
            P = torch.full((B,), float(strategy.top_p), device=logits.device)
            nan = torch.full((B,), float("nan"), device=logits.device)
            return torch_rule_sample(logits, T, P, gen), T, P, nan, nan

        return choose
    if strategy.kind == "baseline":
        from autodeco_samplers.research.baselines import torch_baselines as tbl

        b = strategy.baseline
        temperature_of = {"dynatemp": tbl.dynatemp_temperature, "edt": tbl.edt_temperature}.get(b.kind)

        def choose(hidden, logits, gen):
            B = logits.shape[0]
            nan = torch.full((B,), float("nan"), device=logits.device)
            T = temperature_of(logits, **b.params).float() if temperature_of else torch.full(
                (B,), float(b.params.get("T", 1.0)), device=logits.device)
            return sample_tokens(b.torch_distribution(logits), gen), T, nan, nan, nan

        return choose
    raise ValueError(f"unknown strategy kind {strategy.kind!r}")


@dataclass
class Generated:
    """Per row: generated token ids (end-of-sequence excluded), and the ``T``/``P`` used and
    predicted at each generated token (lists of floats, NaN where not defined)."""

    token_ids: List[List[int]]
    T: List[List[float]]
    P: List[List[float]]
    T_pred: List[List[float]]
    P_pred: List[List[float]]


@dataclass(frozen=True)
class Segment:
    """Rows of one batch drawn the same way: prompt index per row, the draw, its seed."""

    row_prompt: Tuple[int, ...]
    choose: Chooser
    seed: int


def generate_rows(model, pre: Prefill, segments: Sequence[Segment], *, eos_ids: Sequence[int],
                  max_new_tokens: int) -> List[Generated]:
    """Continue the prompts of every segment in one batch (the model runs once per step for
    all rows). Each segment draws with its own ``choose`` and its own ``torch.Generator``
    seeded by its ``seed``, so what else shares the batch changes only the floating-point
    rounding of the model's batched forward, not the random draws. A row
    stops at an id in ``eos_ids`` or after ``max_new_tokens`` tokens and then leaves the
    batch. The prefill cache is copied, never changed."""
    import torch

    from autodeco_samplers.research.evaluation.toy import cache_argument
    from autodeco_samplers.research.training.trainer import HiddenCapture

    device = pre.logits.device
    idx = torch.as_tensor([p for sg in segments for p in sg.row_prompt], dtype=torch.long, device=device)
    seg_of = torch.as_tensor([k for k, sg in enumerate(segments) for _ in sg.row_prompt], dtype=torch.long, device=device)
    R, S = idx.numel(), len(segments)
    cache = copy.deepcopy(pre.cache)
    cache.batch_select_indices(idx)
    mask, pos = pre.mask[idx], pre.lengths[idx].clone()
    logits, hidden = pre.logits[idx], pre.hidden[idx]
    active = torch.arange(R, device=device)
    eos = torch.as_tensor(sorted(set(int(e) for e in eos_ids)), dtype=torch.long, device=device)
    gens = [torch.Generator(device=device).manual_seed(int(sg.seed)) for sg in segments]
    rec = {k: [[] for _ in range(R)] for k in ("ids", "T", "P", "T_pred", "P_pred")}
    cache_arg = cache_argument(model)
    with torch.inference_mode(), HiddenCapture(model) as cap:
        for step in range(max_new_tokens):
            counts = torch.bincount(seg_of[active], minlength=S).tolist()  # rows stay sorted by segment
            parts, start = [], 0
            for k, n in enumerate(counts):
                if n:
                    parts.append(segments[k].choose(hidden[start:start + n], logits[start:start + n], gens[k]))
                    start += n
            tok, T, P, T_pred, P_pred = (torch.cat([p[j] for p in parts]) for j in range(5))
            done = torch.isin(tok, eos)
            cols = [a.tolist() for a in (active, tok, done, T.float(), P.float(), T_pred.float(), P_pred.float())]
            for r, t, d, *vals in zip(*cols):
                if not d:
                    rec["ids"][r].append(t)
                for key, v in zip(("T", "P", "T_pred", "P_pred"), vals):
                    rec[key][r].append(v)
            keep = ~done
            if step == max_new_tokens - 1 or not bool(keep.any()):
                break
            if not bool(keep.all()):
                sel = keep.nonzero()[:, 0]
                cache.batch_select_indices(sel)
                mask, pos, active, tok = mask[sel], pos[sel], active[sel], tok[sel]
            mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None], use_cache=True,
                        **{cache_arg: cache})
            cache = getattr(out, "cache", None) or out.past_key_values
            pos = pos + 1
            logits, hidden = out.logits[:, -1].float(), cap.hidden[:, -1].float()
    out_gens, start = [], 0
    for sg in segments:
        sl = slice(start, start + len(sg.row_prompt))
        out_gens.append(Generated(rec["ids"][sl], rec["T"][sl], rec["P"][sl], rec["T_pred"][sl], rec["P_pred"][sl]))
        start += len(sg.row_prompt)
    return out_gens


# ----------------------------------------------------------------------------- metrics


def _seed_metrics(items, row_item: Sequence[int], texts: Sequence[str], n_open: int, checker) -> Dict[str, Any]:
    """One run's metrics: per family ``accuracy`` / ``n`` / ``correct``, open families'
    ``distinct`` (mean distinct valid answers per item), ``closed_accuracy``, ``score``."""
    check, canonical = checker
    fam: Dict[str, List[bool]] = {}
    answers: Dict[int, set] = {}
    for i, text in zip(row_item, texts):
        it = items[i]
        ok = bool(check(it, text))
        fam.setdefault(it.family, []).append(ok)
        if it.open:
            answers.setdefault(i, set())
            c = canonical(it, text)
            if c is not None:
                answers[i].add(c)
    families = {f: {"accuracy": sum(v) / len(v), "n": len(v), "correct": int(sum(v))} for f, v in fam.items()}
    open_items = sorted(answers)
    closed = [f for f in families if not any(items[i].open for i in range(len(items)) if items[i].family == f)]
    distinct = float(np.mean([len(answers[i]) for i in open_items])) if open_items else 0.0
    closed_acc = float(np.mean([families[f]["accuracy"] for f in closed])) if closed else 0.0
    return {"families": families, "distinct": distinct, "closed_accuracy": closed_acc,
            "score": closed_acc * distinct / max(n_open, 1),
            "answers": {str(items[i].key): sorted(answers[i]) for i in open_items}}


def _aggregate(per_seed: List[Dict[str, Any]]) -> Dict[str, Any]:
    def stat(values):
        m, se = mean_and_se(values)
        return {"mean": m, "se": se, "per_seed": list(values)}

    fams = {}
    for f in per_seed[0]["families"]:
        vals = [d["families"][f]["accuracy"] for d in per_seed]
        n = sum(d["families"][f]["n"] for d in per_seed)
        k = sum(d["families"][f]["correct"] for d in per_seed)
        fams[f] = {**stat(vals), "binomial_se": math.sqrt((k / n) * (1 - k / n) / n) if n else None, "samples": n}
    return {"families": fams, "closed_accuracy": stat([d["closed_accuracy"] for d in per_seed]),
            "distinct": stat([d["distinct"] for d in per_seed]), "score": stat([d["score"] for d in per_seed])}


def _dominates(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    aa, ad = a["closed_accuracy"]["mean"], a["distinct"]["mean"]
    ba, bd = b["closed_accuracy"]["mean"], b["distinct"]["mean"]
    return aa >= ba and ad >= bd and (aa > ba or ad > bd)


def static_frontier(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Names of the static points (greedy, default, grid) no other static point dominates,
    by increasing ``distinct``."""
    static = [r for r in rows if r["group"] in STATIC_GROUPS]
    front = [r for r in static if not any(_dominates(o, r) for o in static if o is not r)]
    return [r["name"] for r in sorted(front, key=lambda r: (r["distinct"]["mean"], -r["closed_accuracy"]["mean"]))]


def frontier_position(rows: Sequence[Dict[str, Any]], target: Dict[str, Any]) -> Dict[str, Any]:
    """Where ``target`` stands against the static points (module docstring): the names of
    those that dominate it, ``beyond_frontier``, ``accuracy_gap`` and ``distinct_gap``."""
    static = [r for r in rows if r["group"] in STATIC_GROUPS and r is not target]
    acc, dis = target["closed_accuracy"]["mean"], target["distinct"]["mean"]
    as_diverse = [r["closed_accuracy"]["mean"] for r in static if r["distinct"]["mean"] >= dis]
    as_accurate = [r["distinct"]["mean"] for r in static if r["closed_accuracy"]["mean"] >= acc]
    dominated_by = [r["name"] for r in static if _dominates(r, target)]
    return {"dominated_by": dominated_by, "beyond_frontier": not dominated_by,
            "accuracy_gap": acc - max(as_diverse) if as_diverse else None,
            "distinct_gap": dis - max(as_accurate) if as_accurate else None}


# ----------------------------------------------------------------------------- the evaluation


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
    strategies: Optional[Sequence[ChatStrategy]] = None,
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
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if n_open < 1 or n_samples < 1:
        raise ValueError("n_samples and n_open must be >= 1")
    strategies = list(strategies) if strategies is not None else default_strategies()
    say = progress or (lambda s: None)
    eos_ids = list(eos_ids) if eos_ids is not None else [tokenizer.eos_token_id]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    prompt_ids = [tokenizer(it.prompt, add_special_tokens=False)["input_ids"] for it in items]
    tp = time.perf_counter()
    pre = prefill(model, prompt_ids, pad)
    say(f"prefill: {len(items)} prompts in {time.perf_counter() - tp:.1f} s")
    sampled_rows = [i for i, it in enumerate(items) for _ in range(n_open if it.open else n_samples)]
    greedy_rows = list(range(len(items)))

    def decode(ids: List[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    def run_all(group: Sequence[ChatStrategy]) -> List[Tuple[Dict[str, Any], List[Generated]]]:
        """Every (strategy, seed) of ``group`` as a segment, packed into batches of at most
        ``max_batch`` rows; greedy (deterministic) once, one sample per item."""
        jobs = []  # (strategy index, seed, rows)
        for k, st in enumerate(group):
            deterministic = st.kind == "static" and st.temperature < 1e-6
            for seed in (seeds[:1] if deterministic else seeds):
                jobs.append((k, seed, greedy_rows if deterministic else sampled_rows))
        results: Dict[Tuple[int, int], Generated] = {}
        choosers = {k: chooser(st, heads) for k, st in enumerate(group)}
        batch: List[Tuple[int, int, List[int]]] = []

        def flush() -> None:
            if not batch:
                return
            ts = time.perf_counter()
            segs = [Segment(tuple(rows_), choosers[k], seed) for k, seed, rows_ in batch]
            for (k, seed, _), g in zip(batch, generate_rows(model, pre, segs, eos_ids=eos_ids, max_new_tokens=max_new_tokens)):
                results[(k, seed)] = g
            names = sorted({group[k].name for k, _, _ in batch}, key=[st.name for st in group].index)
            say(f"batch of {sum(len(r) for _, _, r in batch)} rows ({len(batch)} strategy x seed runs: "
                f"{', '.join(names)}) in {time.perf_counter() - ts:.0f} s")
            batch.clear()

        for job in jobs:
            if batch and sum(len(r) for _, _, r in batch) + len(job[2]) > max_batch:
                flush()
            batch.append(job)
        flush()
        out = []
        for k, st in enumerate(group):
            deterministic = st.kind == "static" and st.temperature < 1e-6
            rows_ = greedy_rows if deterministic else sampled_rows
            gens = [results[(k, seed)] for seed in (seeds[:1] if deterministic else seeds)]
            per_seed = [_seed_metrics(items, rows_, [decode(t) for t in g.token_ids], n_open, checker) for g in gens]
            per_seed += [per_seed[0]] * (len(seeds) - len(per_seed))
            flat = lambda key: [v for g in gens for row in getattr(g, key) for v in row]  # noqa: E731
            row = {"name": st.name, "kind": st.kind, "group": st.group,
                   "params": (dict(st.baseline.params, rule=st.baseline.kind) if st.baseline else
                              {"T": st.temperature, "P": st.top_p}),
                   "T_mean": _nanmean(flat("T")), "P_mean": _nanmean(flat("P")),
                   "samples_per_item": {"closed": 1 if deterministic else n_samples, "open": 1 if deterministic else n_open},
                   **_aggregate(per_seed),
                   "open_answers_seed0": per_seed[0]["answers"]}
            c, d = row["closed_accuracy"], row["distinct"]
            say(f"{st.name:<34} closed acc {c['mean']:.3f}  distinct {d['mean']:.2f}")
            out.append((row, gens))
        return out

    rows: List[Dict[str, Any]] = []
    examples: Dict[str, Any] = {}
    ad_row = None
    if heads is not None:
        ((ad_row, ad_gens),) = run_all([ChatStrategy("autodeco", "autodeco", "autodeco")])
        T_mean = _nanmean([v for g in ad_gens for row in g.T_pred for v in row])
        P_mean = _nanmean([v for g in ad_gens for row in g.P_pred for v in row])
        strategies = strategies + [ChatStrategy(f"mean-static T={T_mean:.3f} P={P_mean:.3f}", "static", "mean_static",
                                                T_mean, P_mean)]
        first = ad_gens[0]
        seen: set = set()
        examples["autodeco"] = []
        for r, i in enumerate(sampled_rows):
            if items[i].family not in seen:
                seen.add(items[i].family)
                examples["autodeco"].append({"family": items[i].family, "question": items[i].question,
                                             "answer": decode(first.token_ids[r]), "T": first.T[r], "P": first.P[r]})
    rows += [row for row, _ in run_all(strategies)]
    if ad_row is not None:
        rows.append(ad_row)

    grid_like = [r for r in rows if r["group"] in ("grid", "default")]
    oracle = max(grid_like, key=lambda r: (r["score"]["mean"], r["closed_accuracy"]["mean"])) if grid_like else None
    for r in rows:
        r["oracle"] = r is oracle
        if r["group"] not in STATIC_GROUPS:
            r["position"] = frontier_position(rows, r)
    families = sorted({it.family for it in items}, key=[it.family for it in items].index)
    report = {
        "families": families,
        "open_families": sorted({it.family for it in items if it.open}),
        "n_items": {f: sum(1 for it in items if it.family == f) for f in families},
        "settings": {"n_samples": n_samples, "n_open": n_open, "seeds": seeds, "max_new_tokens": max_new_tokens,
                     "eos_ids": eos_ids, "max_batch": max_batch},
        "strategies": rows,
        "oracle": oracle["name"] if oracle else None,
        "static_frontier": static_frontier(rows),
        "examples": examples,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if ad_row is not None:
        report["autodeco_position"] = ad_row["position"]
        mean_row = next(r for r in rows if r["group"] == "mean_static")
        report["mean_static"] = {"name": mean_row["name"], "T": mean_row["params"]["T"], "P": mean_row["params"]["P"]}
        report["autodeco_vs_oracle"] = _paired(ad_row, oracle) if oracle else None
        report["autodeco_vs_mean_static"] = _paired(ad_row, mean_row)
        report["verdict"] = verdict(report)
    return report


def _nanmean(values: Sequence[float]) -> Optional[float]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)] if arr.size else arr
    return float(arr.mean()) if arr.size else None


def _paired(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    """Per-seed paired differences ``a - b`` of score, closed accuracy and distinct (mean, SE)."""
    out = {}
    for key in ("score", "closed_accuracy", "distinct"):
        diffs = [x - y for x, y in zip(a[key]["per_seed"], b[key]["per_seed"])]
        m, se = mean_and_se(diffs)
        out[key] = {"mean": m, "se": se}
    return out


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


def _row_labels(r: Dict[str, Any], front, bold: str = "") -> Tuple[List[str], str, str]:
    """One strategy row's notes (oracle, frontier, its position; ``bold`` wraps "beyond
    frontier") and its mean used T and P as text (empty when not recorded)."""
    note = []
    if r.get("oracle"):
        note.append("oracle")
    if r["name"] in front:
        note.append("frontier")
    if "position" in r:
        p = r["position"]
        note.append(f"{bold}beyond frontier{bold}" if p["beyond_frontier"] else f"dominated by {len(p['dominated_by'])}")
    T = "" if r["T_mean"] is None else f"{r['T_mean']:.2f}"
    P = "" if r["P_mean"] is None else f"{r['P_mean']:.2f}"
    return note, T, P


def format_table(report: Dict[str, Any]) -> str:
    """Fixed-width table: per family accuracy (mean ± SE over seeds), closed accuracy,
    distinct valid answers per open item, score, and notes (oracle, frontier, position)."""
    fams = report["families"]
    front = set(report["static_frontier"])
    head = f"{'strategy':<32} {'T':>5} {'P':>5} " + " ".join(f"{f:>12}" for f in fams)
    head += f" {'closed acc':>13} {'distinct':>11} {'score':>6}  note"
    lines = [head]
    for r in report["strategies"]:
        cells = []
        for f in fams:
            s = r["families"][f]
            cells.append(f"{s['mean']:.3f}±{(s['se'] or 0):.3f}".rjust(12))
        c, d = r["closed_accuracy"], r["distinct"]
        note, T, P = _row_labels(r, front)
        lines.append(f"{r['name']:<32} {T:>5} {P:>5} " + " ".join(cells)
                     + f" {c['mean']:.3f}±{(c['se'] or 0):.3f} {d['mean']:5.2f}±{(d['se'] or 0):.2f}"
                     + f" {r['score']['mean']:6.3f}  {', '.join(note)}")
    s = report["settings"]
    lines.append(f"(mean ± SE over {len(s['seeds'])} seed(s); {s['n_samples']} samples per closed item, {s['n_open']} per "
                 f"open item, greedy 1; distinct = distinct valid answers per open item; closed acc = mean of the closed "
                 f"families; score = closed acc x distinct / {s['n_open']}; T, P = mean used)")
    return "\n".join(lines)


def format_markdown(report: Dict[str, Any]) -> str:
    """The table of :func:`format_table` as Markdown (for docs): per family accuracy and the
    frontier axes as ``mean ± SE`` over seeds, and each row's position."""
    fams = report["families"]
    front = set(report["static_frontier"])
    head = "| strategy | T | P | " + " | ".join(fams) + " | closed acc | distinct | position |"
    lines = [head, "|" + "---|" * (len(fams) + 6)]
    for r in report["strategies"]:
        note, T, P = _row_labels(r, front, bold="**")
        cells = [f"{r['families'][f]['mean']:.3f} ± {(r['families'][f]['se'] or 0):.3f}" for f in fams]
        c, d = r["closed_accuracy"], r["distinct"]
        name = f"**{r['name']}**" if r["group"] == "autodeco" else r["name"]
        lines.append(f"| {name} | {T} | {P} | " + " | ".join(cells)
                     + f" | {c['mean']:.3f} ± {(c['se'] or 0):.3f} | {d['mean']:.2f} ± {(d['se'] or 0):.2f} | {', '.join(note)} |")
    return "\n".join(lines)


def plot_frontier(report: Dict[str, Any], path: Union[str, Path], *, title: str = "") -> Path:
    """PNG: closed-task accuracy against distinct valid answers per open item, every strategy;
    the static grid coloured by T, the static frontier dashed, baselines and AutoDeco marked."""
    from autodeco_samplers.research.evaluation.toy import load_pyplot, save_figure

    plt = load_pyplot()
    rows = report["strategies"]
    by_name = {r["name"]: r for r in rows}
    x = lambda r: r["distinct"]["mean"]  # noqa: E731
    y = lambda r: r["closed_accuracy"]["mean"]  # noqa: E731
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=110)
    grid = [r for r in rows if r["group"] in ("grid", "default")]
    sc = ax.scatter([x(r) for r in grid], [y(r) for r in grid], c=[r["params"]["T"] for r in grid], cmap="viridis", s=30,
                    label="static (T, P) grid")
    fig.colorbar(sc, ax=ax, label="static T")
    front = [by_name[n] for n in report["static_frontier"]]
    ax.plot([x(r) for r in front], [y(r) for r in front], "k--", lw=1, label="static frontier")
    markers = {"greedy": ("s", "tab:gray"), "mean_static": ("^", "tab:orange"), "autodeco": ("*", "tab:red")}
    base_markers = ["o", "v", "P", "X", "D", "h", "<", ">"]
    base_colours = ["tab:blue", "tab:cyan", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "black"]
    k = 0
    for r in rows:
        if r["group"] in markers:
            m, colour = markers[r["group"]]
        elif r["group"] == "baseline":
            m, colour = base_markers[k % len(base_markers)], base_colours[k % len(base_colours)]
            k += 1
        else:
            continue
        ax.errorbar([x(r)], [y(r)], xerr=[r["distinct"]["se"] or 0], yerr=[r["closed_accuracy"]["se"] or 0], fmt=m,
                    ms=14 if r["group"] == "autodeco" else 8, color=colour, mec="k", zorder=5, label=r["name"])
    if report.get("oracle"):
        o = by_name[report["oracle"]]
        ax.annotate("oracle", (x(o), y(o)), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xlabel(f"distinct valid answers per open item ({report['settings']['n_open']} samples)")
    ax.set_ylabel("accuracy on the closed task families")
    ax.set_title(title or "static (T, P), baselines and AutoDeco", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(plt, fig, path)


def report_paths(report: Dict[str, Any], **paths: Union[str, Path, None]) -> Dict[str, Any]:
    """Record ``paths`` in the report as :func:`evaluation.portable_path` strings."""
    report.update({k: (portable_path(v) if v is not None else None) for k, v in paths.items()})
    return report
