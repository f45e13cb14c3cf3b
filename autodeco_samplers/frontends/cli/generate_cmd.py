"""``autodeco generate``: decode with AutoDeco on a chosen engine; one output schema for all.

Each engine (see ``ENGINES``: its adapter module and extra) runs through
:func:`autodeco_samplers.frontends.cli._engines.generate_for_cli`, which returns a
:class:`~autodeco_samplers.core.interfaces.GenerationResult`, optionally with per-token
``pieces`` (decoded text of each token) for the human view. The request is validated once,
here, before any engine is imported (:func:`autodeco_samplers.frontends.validation.check_generate_request`),
so every engine answers the same bad input with the same message. ``--json`` prints
``GenerationResult.to_dict()``, the schema in ``autodeco_samplers/core/schemas/generation.schema.json``.

``--model smollm2`` names the real model instead of a path (:mod:`autodeco_samplers.frontends.cli._models`;
engine ``llama-cpp`` unless ``--engine`` says otherwise); ``--engine`` is required with a path.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from autodeco_samplers.core.errors import UsageError
from autodeco_samplers.frontends.validation import non_negative_float, positive_int, token_ids

from autodeco_samplers.frontends.cli._common import add_device_threads, add_json, resolve_threads

ENGINES = {
    "transformers": ("autodeco_samplers.adapters.transformers", "transformers"),
    "llama-cpp": ("autodeco_samplers.adapters.llama_cpp", "llama-cpp"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate with AutoDeco heads on an engine, showing each token's T and P")
    p.add_argument("--engine", choices=sorted(ENGINES), default=None,
                   help="required with a model path; --model smollm2 defaults to llama-cpp")
    p.add_argument("--model", required=True,
                   help="model folder (transformers), .gguf file (llama-cpp), or smollm2 (the real model, by name)")
    p.add_argument("--heads", default=None, help="heads checkpoint (default: the model's own, if merged, or the named model's)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-ids", type=token_ids, help="prompt token ids, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=non_negative_float, default=1.0, help="multiplier of the predicted T (0 = greedy)")
    p.add_argument("--top-p", type=non_negative_float, default=1.0, help="multiplier of the predicted P (result clamped to [0, 1])")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop when this text appears (repeatable)")
    p.add_argument("--n-ctx", type=positive_int, default=None,
                   help="llama-cpp only: context size in tokens (default: the model's, capped by llama-cpp-python)")
    p.add_argument(
        "--f32-kv-cache",
        action="store_true",
        help="llama-cpp only: keep the KV cache in float32 (matches transformers to ~1e-6; default f16, ~1e-3)",
    )
    add_device_threads(p)
    add_json(p)
    p.set_defaults(func=run)


def render_steps(result, pieces=None, stream=None) -> None:
    """A compact table: position, token id, text piece, predicted and used T and P."""
    stream = sys.stdout if stream is None else stream  # resolved per call, not at import
    print(f"engine: {result.engine}   prompt ids: {len(result.prompt_ids)}   generated: {len(result.token_ids)}"
          f"   finish: {result.finish_reason}", file=stream)
    print(f"{'#':>4}  {'id':>7}  {'token':<16} {'T_pred':>7} {'P_pred':>7} {'T':>7} {'P':>7}", file=stream)
    for i, step in enumerate(result.steps):
        piece = repr(pieces[i])[1:-1] if pieces else ""
        print(
            f"{i:>4}  {step.token_id:>7}  {piece[:16]:<16} {step.T_pred:7.3f} {step.P_pred:7.3f} {step.T:7.3f} {step.P:7.3f}",
            file=stream,
        )
    if result.text is not None:
        print(f"text: {result.text!r}", file=stream)


def resolve_model_args(args: argparse.Namespace) -> None:
    """Fill ``args.engine``, ``args.model`` and ``args.heads`` in place: a named model
    (``--model smollm2``) becomes its paths on the engine (default ``llama-cpp``); a path needs
    ``--engine``. ``serve`` calls the same function."""
    from autodeco_samplers.frontends.cli._models import DEFAULT_ENGINE, NAMED_MODELS, is_named_model, named_model_paths

    if is_named_model(args.model):
        args.engine = args.engine or DEFAULT_ENGINE
        model, heads = named_model_paths(args.model, args.engine)
        args.model, args.heads = model, args.heads or heads
    elif args.engine is None:
        raise UsageError(f"--engine is required with a model path (choose from: {', '.join(sorted(ENGINES))}); "
                         f"or name a model: --model {' | '.join(NAMED_MODELS)}")


def check_engine_flags(args: argparse.Namespace) -> None:
    """Flags that only one engine understands are usage errors with the other."""
    if args.engine != "llama-cpp" and args.n_ctx is not None:
        raise UsageError("--n-ctx applies to --engine llama-cpp only (transformers uses the model's own context)")
    if args.engine != "llama-cpp" and args.f32_kv_cache:
        raise UsageError("--f32-kv-cache applies to --engine llama-cpp only (transformers keeps the model's own dtype)")
    if args.stop is not None and not all(args.stop):
        raise UsageError("--stop needs a non-empty text")
    if args.engine == "llama-cpp" and args.device not in ("auto", "cpu"):
        raise UsageError(f"--engine llama-cpp runs on the CPU here; --device {args.device} is not supported")


def is_default_model(model) -> bool:
    """Whether ``model`` is the embedded default model (its folder, or the GGUF made from it)."""
    from pathlib import Path

    from autodeco_samplers.models import default_model

    p = Path(model).resolve()
    return p == default_model.base_path() or (p.suffix == ".gguf" and p.name.startswith("default-tiny-llama-"))


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.frontends.validation import check_generate_request, install_command, missing_dependency

    resolve_model_args(args)
    check_engine_flags(args)
    args.threads = resolve_threads(args.threads, default_model=is_default_model(args.model))
    check_generate_request(args.engine, args.model, args.heads, prompt=args.prompt, prompt_ids=args.prompt_ids,
                           max_new_tokens=args.max_new_tokens)
    module_name, extra = ENGINES[args.engine]
    try:
        importlib.import_module(module_name)
        if args.engine == "transformers":
            import torch  # noqa: F401  (the adapter imports its engine lazily; fail here, clearly)
            import transformers  # noqa: F401
        else:
            import llama_cpp  # noqa: F401
    except ImportError as exc:
        missing = missing_dependency(exc)
        if missing is not None:
            raise type(missing)(f"engine {args.engine!r} is not installed; install it with: {install_command(extra)}",
                                package=missing.package, extra=extra) from None
        raise
    from autodeco_samplers.frontends.cli._engines import generate_for_cli

    # the one request-knob rule: the command's multipliers on top of the default policy
    policy = DecodingPolicy().for_request(args.temperature, args.top_p)
    result, pieces = generate_for_cli(args.engine, args, policy)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        render_steps(result, pieces)
    return 0
