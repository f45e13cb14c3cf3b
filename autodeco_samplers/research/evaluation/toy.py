"""``autodeco eval``: the paper's comparison on the choice-then-derive task, done honestly.

Strategies (docs/design.md section 9):

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
Sampling is batched (all prompts x samples in one batch), uses the model's KV cache and the
core :mod:`autodeco_samplers.core.torch_ops` rules; no Python loop over rows.
Metrics and the score are defined in :mod:`autodeco_samplers.research.evaluation.toy_task`. A static point
*dominates* AutoDeco when its accuracy and diversity are both at least AutoDeco's and one is
strictly higher; ``autodeco_beyond_frontier`` is true when no static point (greedy and the
grid) dominates it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from autodeco_samplers.research.evaluation import toy_task as task_mod

__all__ = [
    "portable_path",
    "Strategy",
    "SampleBatch",
    "DEFAULT_TEMPERATURES",
    "DEFAULT_TOP_PS",
    "load_model_and_heads",
    "sample_batch",
    "evaluate",
    "format_table",
    "standing_line",
    "mean_and_se",
    "plot_frontier",
    "plot_token_trace",
]

def portable_path(path: Union[str, Path]) -> str:
    """``path`` as a results file should record it: relative to the folder holding the
    ``autodeco_samplers`` package (the repository root in a checkout) or to the working folder
    when it lies inside one of them, else its last two parts, so that no machine's own
    folders are stored in a results JSON."""
    p = Path(path).resolve()
    for root in (Path(__file__).resolve().parents[1], Path.cwd().resolve()):
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return "/".join(("...",) + p.parts[-2:])


DEFAULT_TEMPERATURES: Tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
DEFAULT_TOP_PS: Tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)


@dataclass(frozen=True)
class Strategy:
    """A decoding strategy. ``kind`` is ``"static"`` (fixed ``temperature``/``top_p``) or
    ``"autodeco"`` (the heads' per-token predictions through ``DecodingPolicy()``)."""

    name: str
    kind: str
    temperature: float = 1.0
    top_p: float = 1.0
    group: str = "grid"


@dataclass
class SampleBatch:
    """Generated ids/texts per row plus the per-token T/P (predicted and used), ``[B, steps]``."""

    token_ids: List[List[int]]
    texts: List[str]
    T_pred: np.ndarray
    P_pred: np.ndarray
    T_used: np.ndarray
    P_used: np.ndarray
    lengths: np.ndarray


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


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """``(ids, mask)`` ``[B, L]`` long tensors: the prompts left-padded with ``pad_id`` to the
    longest one (mask 0 on padding), as batched generation needs."""
    import torch

    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, L - len(p):] = 1
    return ids, mask


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
    """Generate one continuation per row of ``prompt_ids`` (left-padded, KV cache).

    Each step: logits and final hidden state of the last position; ``(T_pred, P_pred)`` from
    the heads (when given); ``(T, P)`` used = the strategy's constants, or the heads'
    predictions through the default :class:`DecodingPolicy`; the token is drawn from the
    canonical distribution by the core step (:func:`autodeco_samplers.core.step.torch_step_sample`,
    or :func:`~autodeco_samplers.core.torch_ops.torch_rule_sample` for static strategies) with a
    ``torch.Generator`` seeded by ``seed``.
    Rows stop at EOS (later positions are padding and are not reported). For static
    strategies the heads run only when ``record_predictions`` (else ``T_pred``/``P_pred`` are NaN).
    """
    import torch

    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_sample
    from autodeco_samplers.core.torch_ops import torch_rule_sample
    from autodeco_samplers.research.training.trainer import HiddenCapture

    if strategy.kind == "autodeco" and heads is None:
        raise ValueError("the autodeco strategy needs heads")
    device = next(model.parameters()).device
    cache_arg = cache_argument(model)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids, mask = left_pad(prompt_ids, pad)
    ids, mask = ids.to(device), mask.to(device)
    B = ids.shape[0]
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    gen = torch.Generator(device=device).manual_seed(seed)
    policy = DecodingPolicy()
    out_tokens, Tp, Pp, Tu, Pu = [], [], [], [], []
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    with torch.inference_mode(), HiddenCapture(model) as cap:
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            hidden = cap.hidden[:, -1].float()
            if strategy.kind == "autodeco":
                st = torch_step_sample(hidden, logits, heads, policy, gen)
                tok, T_pred, P_pred, T, P = st.token_ids, st.T_pred, st.P_pred, st.T, st.P
            else:
                if heads is not None and record_predictions:
                    T_pred, P_pred = heads(hidden, logits)
                else:
                    T_pred = P_pred = torch.full((B,), float("nan"), device=device)
                T = torch.full((B,), float(strategy.temperature), device=device)
                P = torch.full((B,), float(strategy.top_p), device=device)
                tok = torch_rule_sample(logits, T, P, gen)
            tok = torch.where(finished, torch.full_like(tok, pad), tok)
            lengths += (~finished).long()
            out_tokens.append(tok)
            Tp.append(T_pred), Pp.append(P_pred), Tu.append(T), Pu.append(P)
            finished = finished | (tok == eos)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                        **{cache_arg: _output_cache(out)})
    toks = torch.stack(out_tokens, dim=1).cpu()
    lengths = lengths.cpu().numpy()
    token_ids = [toks[i, : lengths[i]].tolist() for i in range(B)]
    texts = [tokenizer.decode([t for t in row if t != eos], skip_special_tokens=True) for row in token_ids]
    stack = lambda xs: torch.stack(xs, dim=1).float().cpu().numpy()  # noqa: E731
    return SampleBatch(token_ids, texts, stack(Tp), stack(Pp), stack(Tu), stack(Pu), lengths)


def cache_argument(model) -> str:
    """transformers 5.x names the KV-cache argument ``cache``; 4.x names it ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _valid_mean(values: np.ndarray, lengths: np.ndarray) -> float:
    steps = np.arange(values.shape[1])[None, :] < lengths[:, None]
    return float(values[steps].mean())


def _dominates(a: Dict[str, float], b: Dict[str, float]) -> bool:
    return a["accuracy"] >= b["accuracy"] and a["diversity"] >= b["diversity"] and (
        a["accuracy"] > b["accuracy"] or a["diversity"] > b["diversity"]
    )


def static_frontier(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Names of the static rows no other static row dominates, by increasing diversity."""
    static = [r for r in rows if r["kind"] == "static" and r["group"] != "mean_static"]
    front = [r for r in static if not any(_dominates(o, r) for o in static if o is not r)]
    return [r["name"] for r in sorted(front, key=lambda r: (r["diversity"], -r["accuracy"]))]


SPREAD_METRICS: Tuple[str, ...] = ("accuracy", "valid_choice", "derive_accuracy", "diversity", "score")


def mean_and_se(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """``(mean, standard error of the mean)``; the SE is ``std(ddof=1) / sqrt(n)``, None for n < 2."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_and_se needs at least one value")
    if arr.size < 2:
        return float(arr.mean()), None
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size))


def _aggregate(per_seed: List[Dict[str, float]]) -> Dict[str, Any]:
    """One row's metrics over evaluation seeds: the means, the pooled binomial ``accuracy_se``,
    ``spread`` (SE over seeds per metric, None with one seed) and ``per_seed`` values."""
    out: Dict[str, Any] = {}
    for m in SPREAD_METRICS:
        out[m] = mean_and_se([d[m] for d in per_seed])[0]
    n = sum(d["samples"] for d in per_seed)
    out["accuracy_se"] = math.sqrt(out["accuracy"] * (1 - out["accuracy"]) / max(n, 1))
    out["samples"] = n
    out["spread"] = {m: mean_and_se([d[m] for d in per_seed])[1] for m in SPREAD_METRICS}
    out["per_seed"] = {m: [d[m] for d in per_seed] for m in SPREAD_METRICS}
    return out


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
    """
    import torch

    t0 = time.perf_counter()
    spec = spec or task_mod.TaskSpec()
    seeds = [int(seed)] if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one evaluation seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"evaluation seeds must be distinct, got {seeds}")
    model, tok, module = load_model_and_heads(base, heads, device)
    prompts = task_mod.eval_prompts(spec, n_prompts, split=split)
    ids = [[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] if tok.bos_token_id is not None
           else tok(p, add_special_tokens=False)["input_ids"] for p, _ in prompts]
    rows_ids = [p for p in ids for _ in range(n_samples)]
    options = [o for _, o in prompts]
    cache_scope = (str(Path(base).resolve()), json.dumps(spec.to_json(), sort_keys=True), split, len(prompts), n_samples,
                   max_new_tokens, device)

    def run_seed(strategy: Strategy, seed: int) -> Tuple[Dict[str, float], Optional[SampleBatch]]:
        key = (cache_scope, strategy.temperature, strategy.top_p, seed)
        if strategy.kind == "static" and static_cache is not None and key in static_cache:
            return static_cache[key], None
        batch = sample_batch(model, tok, module, rows_ids, strategy, max_new_tokens=max_new_tokens, seed=seed)
        per_prompt = [batch.texts[i * n_samples:(i + 1) * n_samples] for i in range(len(prompts))]
        metrics = task_mod.summarize(per_prompt, options)
        if strategy.kind == "static" and static_cache is not None:
            static_cache[key] = metrics
        return metrics, batch

    def run(strategy: Strategy) -> Tuple[Dict[str, Any], List[Optional[SampleBatch]]]:
        results = [run_seed(strategy, s) for s in seeds]
        batches = [b for _, b in results]
        row = {"name": strategy.name, "kind": strategy.kind, "group": strategy.group,
               "T": strategy.temperature if strategy.kind == "static" else
               float(np.mean([_valid_mean(b.T_used, b.lengths) for b in batches])),
               "P": strategy.top_p if strategy.kind == "static" else
               float(np.mean([_valid_mean(b.P_used, b.lengths) for b in batches])),
               **_aggregate([m for m, _ in results])}
        return row, batches

    rows: List[Dict[str, Any]] = []
    ad_row, ad_batches = run(Strategy("autodeco", "autodeco", group="autodeco"))
    ad_batch = ad_batches[0]
    T_mean = float(np.mean([_valid_mean(b.T_pred, b.lengths) for b in ad_batches]))
    P_mean = float(np.mean([_valid_mean(b.P_pred, b.lengths) for b in ad_batches]))
    strategies = [Strategy("greedy", "static", 0.0, 1.0, "greedy"), Strategy("default T=1 P=1", "static", 1.0, 1.0, "default")]
    strategies += [Strategy(f"static T={t:g} P={p:g}", "static", float(t), float(p), "grid") for t in temperatures for p in top_ps
                   if not (t == 1.0 and p == 1.0)]
    strategies.append(Strategy(f"mean-static T={T_mean:.3f} P={P_mean:.3f}", "static", T_mean, P_mean, "mean_static"))
    iterator = strategies
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(strategies, desc="autodeco eval", unit="strategy")
    for s in iterator:
        rows.append(run(s)[0])
    rows.append(ad_row)

    grid_like = [r for r in rows if r["group"] in ("grid", "default")]
    oracle = max(grid_like, key=lambda r: (r["score"], r["accuracy"]))
    for r in rows:
        r["oracle"] = r is oracle
    static_points = [r for r in rows if r["kind"] == "static" and r["group"] != "mean_static"]
    dominated_by = [r["name"] for r in static_points if _dominates(r, ad_row)]
    mean_row = next(r for r in rows if r["group"] == "mean_static")

    def paired(other: Dict[str, Any]) -> Tuple[float, Optional[float]]:
        diffs = [a - b for a, b in zip(ad_row["per_seed"]["score"], other["per_seed"]["score"])]
        return ad_row["score"] - other["score"], mean_and_se(diffs)[1]

    vs_oracle, vs_oracle_se = paired(oracle)
    vs_mean, vs_mean_se = paired(mean_row)

    # one answer's per-token trace: the first AutoDeco sample of the first prompt (first seed)
    trace_ids = ad_batch.token_ids[0]
    trace = {
        "prompt": prompts[0][0],
        "text": ad_batch.texts[0],
        "tokens": [tok.decode([t]) for t in trace_ids],
        "token_ids": trace_ids,
        "T_pred": ad_batch.T_pred[0, : len(trace_ids)].tolist(),
        "P_pred": ad_batch.P_pred[0, : len(trace_ids)].tolist(),
        "T": ad_batch.T_used[0, : len(trace_ids)].tolist(),
        "P": ad_batch.P_used[0, : len(trace_ids)].tolist(),
    }
    return {
        "model": portable_path(base),
        "heads": portable_path(heads),
        "task": spec.to_json(),
        "settings": {"split": split, "n_prompts": len(prompts), "n_samples": n_samples, "max_new_tokens": max_new_tokens,
                     "seed": seeds[0], "seeds": seeds, "temperatures": list(temperatures), "top_ps": list(top_ps),
                     "device": device, "torch": torch.__version__},
        "diversity_ceiling": task_mod.expected_uniform_diversity(spec.k, n_samples),
        "strategies": rows,
        "oracle": oracle["name"],
        "mean_static": {"T": T_mean, "P": P_mean, "name": mean_row["name"]},
        "static_frontier": static_frontier(rows),
        "autodeco_dominated_by": dominated_by,
        "autodeco_beyond_frontier": not dominated_by,
        "autodeco_vs_oracle_score": vs_oracle,
        "autodeco_vs_oracle_score_se": vs_oracle_se,
        "autodeco_vs_mean_static_score": vs_mean,
        "autodeco_vs_mean_static_score_se": vs_mean_se,
        "trace": trace,
        "seconds": time.perf_counter() - t0,
    }


def format_table(report: Dict[str, Any], *, only_key: bool = False) -> str:
    """The comparison as a fixed-width text table (``only_key``: skip grid points that are neither
    on the frontier, the oracle, nor among the static points that dominate AutoDeco).

    With several evaluation seeds the score column shows ``mean±SE`` over the seeds.
    """
    front = set(report["static_frontier"])
    dominating = set(report["autodeco_dominated_by"])  # every static point the summary names is shown
    seeds = report["settings"].get("seeds", [report["settings"]["seed"]])
    multi = len(seeds) > 1
    score_head = "score±se" if multi else "score"
    lines = [f"{'strategy':<34} {'T':>6} {'P':>6} {'accuracy':>14} {'derive':>6} {'valid':>6} {'diversity':>9} "
             f"{score_head:>{13 if multi else 6}}  note"]
    for r in report["strategies"]:
        if only_key and r["group"] == "grid" and r["name"] not in front | dominating and not r["oracle"]:
            continue
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
        acc = f"{r['accuracy']:.3f}±{r['accuracy_se']:.3f}"
        se = (r.get("spread") or {}).get("score")
        score = f"{r['score']:.3f}±{se:.3f}" if (multi and se is not None) else f"{r['score']:.3f}"
        lines.append(f"{r['name']:<34} {r['T']:>6.3f} {r['P']:>6.3f} {acc:>14} {r['derive_accuracy']:>6.3f} "
                     f"{r['valid_choice']:>6.3f} {r['diversity']:>9.3f} {score:>{13 if multi else 6}}  {', '.join(note)}")
    s = report["settings"]
    seeds_text = f" x {len(seeds)} evaluation seeds" if multi else ""
    lines.append(f"({s['n_prompts']} held-out prompts x {s['n_samples']} samples{seeds_text}; diversity of an ideal uniform "
                 f"sampler at this n: {report['diversity_ceiling']:.3f}; accuracy = valid choice and right derivation, "
                 f"derive = accuracy among valid choices; score = accuracy x diversity; T, P of autodeco = mean used)")
    return "\n".join(lines)


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


def load_pyplot():
    """matplotlib's pyplot on the Agg backend (no display), or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the install
        from autodeco_samplers.core.errors import AutoDecoError

        raise AutoDecoError("plots need matplotlib: pip install 'autodeco-samplers[eval]' (or pass --no-plots)") from None
    return plt


def plot_frontier(report: Dict[str, Any], path: Union[str, Path]) -> Path:
    """PNG: accuracy against diversity for every strategy, the static frontier as a line."""
    plt = load_pyplot()
    rows = report["strategies"]
    by_name = {r["name"]: r for r in rows}
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    grid = [r for r in rows if r["group"] in ("grid", "default")]
    ax.scatter([r["diversity"] for r in grid], [r["accuracy"] for r in grid], c=[r["T"] for r in grid], cmap="viridis",
               s=30, label="static (T, P) grid (colour = T)")
    front = [by_name[n] for n in report["static_frontier"]]
    ax.plot([r["diversity"] for r in front], [r["accuracy"] for r in front], "k--", lw=1, label="static frontier")
    marks = [("greedy", "s", "tab:gray"), ("default", "D", "tab:blue"), ("mean_static", "^", "tab:orange"), ("autodeco", "*", "tab:red")]
    for group, marker, colour in marks:
        for r in rows:
            if r["group"] == group:
                ax.scatter([r["diversity"]], [r["accuracy"]], marker=marker, s=160 if group == "autodeco" else 70, c=colour,
                           edgecolors="k", zorder=5, label=r["name"])
    oracle = by_name[report["oracle"]]
    ax.annotate("oracle", (oracle["diversity"], oracle["accuracy"]), textcoords="offset points", xytext=(6, -12))
    ax.set_xlabel("diversity of the free choice (normalised entropy)")
    ax.set_ylabel("accuracy of the determined part")
    ax.set_title("choice-then-derive: static (T, P) vs AutoDeco")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(plt, fig, path)


def save_figure(plt, fig, path: Union[str, Path]) -> Path:
    """Lay out ``fig``, write it to ``path`` (folders created), close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_token_trace(report: Dict[str, Any], path: Union[str, Path]) -> Path:
    """PNG: the T and P AutoDeco used at each token of one answer."""
    plt = load_pyplot()
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
    return save_figure(plt, fig, path)
