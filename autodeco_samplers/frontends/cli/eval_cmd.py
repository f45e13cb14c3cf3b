"""``autodeco eval``: greedy, default, a static (T, P) grid (its best = oracle), mean-static and
AutoDeco on held-out prompts of the choice-then-derive task; table, PNG plots, ``--json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autodeco_samplers.frontends.validation import positive_int

from autodeco_samplers.frontends.cli._common import add_device_threads, add_json, resolve_device, resolve_threads, set_torch_threads


def _floats(text: str):
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str):
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated integers, got {text!r}")
    return values


def add_eval_arguments(p: argparse.ArgumentParser, *, with_model: bool = True) -> None:
    from autodeco_samplers.research.evaluation.toy import DEFAULT_TEMPERATURES, DEFAULT_TOP_PS

    if with_model:
        p.add_argument("--model", default=None, help="base model folder trained on the task (default: the embedded default model)")
        p.add_argument("--heads", default=None, help="heads checkpoint (default: the embedded default heads)")
    else:
        p.set_defaults(model=None, heads=None)
    p.add_argument("--prompts", type=positive_int, default=None, help="number of held-out prompts (default: all)")
    p.add_argument("--samples", type=positive_int, default=24, help="samples per prompt and strategy")
    p.add_argument("--temperatures", type=_floats, default=DEFAULT_TEMPERATURES, help="static grid temperatures")
    p.add_argument("--top-ps", type=_floats, default=DEFAULT_TOP_PS, help="static grid top-p values")
    p.add_argument("--max-new-tokens", type=positive_int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seeds", type=_ints, default=None,
                   help="comma-separated evaluation seeds (e.g. 0,1,2): every strategy runs once per seed and the "
                        "report gives means and standard errors over seeds (overrides --seed)")
    add_device_threads(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare greedy, default, static grid/oracle, mean-static and AutoDeco on held-out prompts")
    add_eval_arguments(p)
    p.add_argument("--plot-dir", default="autodeco_eval", help="where the PNGs go (default ./autodeco_eval)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--full-table", action="store_true", help="print every grid point (default: frontier + oracle)")
    add_json(p)
    p.set_defaults(func=run)


def run_report(args: argparse.Namespace):
    from autodeco_samplers.models import default_model
    from autodeco_samplers.research.evaluation.toy import evaluate
    from autodeco_samplers.research.evaluation.toy_task import TaskSpec

    model = args.model or default_model.base_path()
    heads = args.heads or (default_model.heads_path() if args.model is None else None)
    if heads is None:
        from autodeco_samplers.core.errors import UsageError

        raise UsageError("--heads is required with --model")
    spec = default_model.task_spec() if args.model is None else TaskSpec()
    if args.model is not None:
        from autodeco_samplers.frontends.validation import check_heads_fit, inspect_model

        check_heads_fit(inspect_model("transformers", args.model), heads)
    import torch  # noqa: F401  (a missing torch is reported with its extra before any work)

    device = resolve_device(args.device)
    previous = set_torch_threads(resolve_threads(args.threads, default_model=args.model is None))
    try:
        return evaluate(model, heads, spec=spec, n_prompts=args.prompts, n_samples=args.samples,
                        temperatures=args.temperatures, top_ps=args.top_ps, max_new_tokens=args.max_new_tokens,
                        seed=args.seed, seeds=getattr(args, "eval_seeds", None), device=device,
                        progress=not getattr(args, "json", False))
    finally:
        set_torch_threads(previous)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.research.evaluation.toy import format_table, plot_frontier, plot_token_trace

    report = run_report(args)
    if not args.no_plots:
        d = Path(args.plot_dir)
        report["plots"] = {
            "frontier": str(plot_frontier(report, d / "accuracy_vs_diversity.png")),
            "trace": str(plot_token_trace(report, d / "token_T_P.png")),
        }
    if args.json:
        print(json.dumps(report))
        return 0
    print(format_table(report, only_key=not args.full_table))
    print(summary_lines(report))
    if "plots" in report:
        print(f"plots: {report['plots']['frontier']}, {report['plots']['trace']}")
    return 0


def summary_lines(report) -> str:
    rows = {r["group"]: r for r in report["strategies"] if r["group"] in ("autodeco", "greedy", "default", "mean_static")}
    oracle = next(r for r in report["strategies"] if r["oracle"])
    ad = rows["autodeco"]
    verdict = ("AutoDeco lies beyond the static frontier (no static (T, P) matches both its accuracy and its diversity)"
               if report["autodeco_beyond_frontier"] else
               f"AutoDeco is dominated by static settings: {', '.join(report['autodeco_dominated_by'])}")
    return "\n".join([
        f"AutoDeco: accuracy {ad['accuracy']:.3f} (greedy {rows['greedy']['accuracy']:.3f}), diversity {ad['diversity']:.3f} "
        f"(default sampling {rows['default']['diversity']:.3f}), score {ad['score']:.3f}",
        f"oracle ({oracle['name']}): score {oracle['score']:.3f} (AutoDeco {report['autodeco_vs_oracle_score']:+.3f}); "
        f"{report['mean_static']['name']}: score {rows['mean_static']['score']:.3f} "
        f"(AutoDeco {report['autodeco_vs_mean_static_score']:+.3f})",
        verdict,
        f"({report['seconds']:.1f} s)",
    ])
