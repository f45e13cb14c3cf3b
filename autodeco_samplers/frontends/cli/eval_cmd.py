"""``autodeco eval``: greedy, default, a static (T, P) grid (its best = oracle), mean-static and
AutoDeco on held-out prompts of the choice-then-derive task; table, PNG plots, ``--json``.

``autodeco eval --tasks FILE.jsonl``: the same comparison (plus the baselines, at T = 1 and at
matched temperature) on the user's own prompts and checkers
(:mod:`autodeco_samplers.research.evaluation.user_tasks`), on ``--engine transformers`` (the
batched decode loop) or ``llama-cpp`` (the llama.cpp adapter), with the item-paired analysis
(docs/evaluation.md, "Your own tasks")."""

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
    p.add_argument("--samples", type=positive_int, default=None,
                   help="samples per prompt and strategy (default 24; with --tasks: per closed item, default 4)")
    p.add_argument("--temperatures", type=_floats, default=DEFAULT_TEMPERATURES,
                   help="static grid temperatures (with --tasks default 0.3,0.6,1,1.3)")
    p.add_argument("--top-ps", type=_floats, default=DEFAULT_TOP_PS, help="static grid top-p values (with --tasks default 0.8,0.95,1)")
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
    t = p.add_argument_group("your own tasks (--tasks)")
    t.add_argument("--tasks", default=None, metavar="FILE.jsonl",
                   help="evaluate on your own prompts: one JSON object per line (docs/evaluation.md, 'Your own tasks')")
    t.add_argument("--engine", choices=TASK_ENGINES, default="transformers",
                   help="with --tasks: transformers (default) or llama-cpp (--model a .gguf; the baselines are left out)")
    t.add_argument("--open-samples", type=positive_int, default=8, help="with --tasks: samples per open item (default 8)")
    t.add_argument("--records", default=None, metavar="FILE.jsonl",
                   help="with --tasks: write one record per generated answer here (instead of into --json's output)")
    t.add_argument("--bootstrap", type=positive_int, default=2000, help="with --tasks: bootstrap draws (default 2000)")
    t.add_argument("--bootstrap-seed", type=int, default=0, help="with --tasks: seed of the bootstrap and the cross-fit halves")
    t.add_argument("--gap", type=float, default=0.03, help="with --tasks: the accuracy gap to size the item count for")
    t.add_argument("--power", type=float, default=0.8, help="with --tasks: the power for --gap (default 0.8)")
    add_json(p)
    p.set_defaults(func=run)


TASK_ENGINES = ("transformers", "llama-cpp")


def _task_model(args: argparse.Namespace):
    """``(model, heads, is_default_model)`` paths for ``--tasks`` on ``args.engine``."""
    from autodeco_samplers.core.errors import UsageError
    from autodeco_samplers.frontends.cli._models import is_named_model, named_model_paths
    from autodeco_samplers.models import default_model

    if args.model is None:
        model = default_model.gguf_path() if args.engine == "llama-cpp" else default_model.base_path()
        return str(model), str(args.heads or default_model.heads_path()), True
    if is_named_model(args.model):
        model, heads = named_model_paths(args.model, args.engine)
        return model, args.heads or heads, False
    if args.heads is None:
        raise UsageError("--heads is required with --model")
    return args.model, args.heads, False


def run_tasks(args: argparse.Namespace):
    """The report of ``--tasks`` (:func:`chat.evaluate_on_engine` on the user's items)."""
    from autodeco_samplers.core.errors import UsageError
    from autodeco_samplers.research.evaluation import chat, user_tasks

    if args.prompts is not None:
        raise UsageError("--prompts picks prompts of the built-in task; with --tasks every line of the file is evaluated")
    if not 0 < args.power < 1:
        raise UsageError(f"--power must be in (0, 1), got {args.power}")
    if not args.gap > 0:
        raise UsageError(f"--gap must be > 0, got {args.gap}")
    items = user_tasks.load_tasks(args.tasks)
    model, heads, is_default = _task_model(args)
    seeds = list(args.eval_seeds) if getattr(args, "eval_seeds", None) else [args.seed]
    say = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    from autodeco_samplers.research.evaluation import toy

    # the grid flags' defaults are the toy task's; a task file gets the chat evaluation's grid
    temps = chat.DEFAULT_TEMPERATURES if args.temperatures is toy.DEFAULT_TEMPERATURES else args.temperatures
    top_ps = chat.DEFAULT_TOP_PS if args.top_ps is toy.DEFAULT_TOP_PS else args.top_ps
    strategies = chat.default_strategies(temperatures=temps, top_ps=top_ps)
    common = dict(checker=user_tasks.CHECKER, n_samples=args.samples or 4, n_open=args.open_samples, seeds=seeds,
                  max_new_tokens=args.max_new_tokens, strategies=strategies, progress=say, n_boot=args.bootstrap,
                  boot_seed=args.bootstrap_seed, gap=args.gap, power=args.power)
    threads = resolve_threads(args.threads, default_model=is_default)
    if args.engine == "llama-cpp":
        from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama
        from autodeco_samplers.research.evaluation.llama_engine import LlamaCppEngine, prompt_ids_for

        gen = AutoDecoLlama(model, heads, **({"n_threads": threads} if threads else {}))
        engine = LlamaCppEngine(gen, prompt_ids_for(gen, items), say=say)
        report = chat.evaluate_on_engine(engine, True, items, **common)
    else:
        from autodeco_samplers.research.evaluation.toy import load_model_and_heads

        if not is_default:
            from autodeco_samplers.frontends.validation import check_heads_fit, inspect_model

            check_heads_fit(inspect_model("transformers", model), heads)
        previous = set_torch_threads(threads)
        try:
            m, tok, h = load_model_and_heads(model, heads, resolve_device(args.device))
            report = chat.evaluate_items(m, tok, h, user_tasks.with_prompt_ids(items, tok), **common)
        finally:
            set_torch_threads(previous)
    report["tasks_file"] = str(args.tasks)
    report["model"], report["heads"] = model, heads
    if args.records:
        path = Path(args.records)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for rec in report.pop("records"):
                fh.write(json.dumps(rec) + "\n")
        report["records_file"] = str(path)
    return report


def run_tasks_command(args: argparse.Namespace) -> int:
    from autodeco_samplers.research.evaluation import chat

    report = run_tasks(args)
    if not args.no_plots:
        report["plots"] = {"frontier": str(chat.plot_frontier(report, Path(args.plot_dir) / "tasks_frontier.png",
                                                              title=f"{Path(args.tasks).name} on {report['settings']['engine']}"))}
    if args.json:
        print(json.dumps(report))
        return 0
    print(chat.format_table(report))
    print(chat.format_analysis(report))
    if report.get("left_out"):
        print("left out on this engine: " + "; ".join(f"{k} ({v})" for k, v in report["left_out"].items()))
    if "verdict" in report:
        print(report["verdict"])
    if "records_file" in report:
        print(f"records: {report['records_file']}")
    if "plots" in report:
        print(f"plot: {report['plots']['frontier']}")
    return 0


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
        return evaluate(model, heads, spec=spec, n_prompts=args.prompts, n_samples=args.samples or 24,
                        temperatures=args.temperatures, top_ps=args.top_ps, max_new_tokens=args.max_new_tokens,
                        seed=args.seed, seeds=getattr(args, "eval_seeds", None), device=device,
                        progress=not getattr(args, "json", False))
    finally:
        set_torch_threads(previous)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.research.evaluation.toy import format_table, plot_frontier, plot_token_trace

    if getattr(args, "tasks", None):
        return run_tasks_command(args)
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
