"""``autodeco generate``: decode with AutoDeco on a chosen engine; one output schema for all.

An engine module (see ``ENGINES``) provides ``generate_for_cli(args, policy)`` returning a
:class:`~autodeco_samplers.interfaces.GenerationResult`, optionally with per-token
``pieces`` (decoded text of each token) for the human view.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from autodeco_samplers.errors import AutoDecoError

ENGINES = {
    "transformers": ("autodeco_samplers.adapters.transformers", "pip install 'autodeco-samplers[transformers]'"),
    "llama-cpp": ("autodeco_samplers.adapters.llama_cpp", "pip install 'autodeco-samplers[llama-cpp]'"),
}


def _prompt_ids(text: str) -> list:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise AutoDecoError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate with AutoDeco heads on an engine, showing each token's T and P")
    p.add_argument("--engine", choices=sorted(ENGINES), required=True)
    p.add_argument("--model", required=True, help="model folder (transformers) or .gguf file (llama-cpp)")
    p.add_argument("--heads", default=None, help="heads checkpoint (default: the model's own, if merged)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-ids", type=_prompt_ids, help="prompt token ids, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="multiplier of the predicted T (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="multiplier of the predicted P (result clamped to [0, 1])")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop when this text appears (repeatable)")
    p.add_argument(
        "--f32-kv-cache",
        action="store_true",
        help="llama-cpp only: keep the KV cache in float32 (matches transformers to ~1e-6; default f16, ~1e-3)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (same schema for every engine)")
    p.set_defaults(func=run)


def render_steps(result, pieces=None, stream=None) -> None:
    """A compact table: position, token id, text piece, predicted and used T and P."""
    stream = sys.stdout if stream is None else stream  # resolved per call, not at import
    print(f"engine: {result.engine}   prompt ids: {len(result.prompt_ids)}   generated: {len(result.token_ids)}", file=stream)
    print(f"{'#':>4}  {'id':>7}  {'token':<16} {'T_pred':>7} {'P_pred':>7} {'T':>7} {'P':>7}", file=stream)
    for i, step in enumerate(result.steps):
        piece = repr(pieces[i])[1:-1] if pieces else ""
        print(
            f"{i:>4}  {step.token_id:>7}  {piece[:16]:<16} {step.T_pred:7.3f} {step.P_pred:7.3f} {step.T:7.3f} {step.P:7.3f}",
            file=stream,
        )
    if result.text is not None:
        print(f"text: {result.text!r}", file=stream)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.policy import DecodingPolicy

    module_name, install_hint = ENGINES[args.engine]
    try:
        module = importlib.import_module(module_name)
        generate_for_cli = module.generate_for_cli
    except ImportError as exc:
        raise AutoDecoError(f"engine {args.engine!r} is not available ({exc}); install it with: {install_hint}") from None
    policy = DecodingPolicy(temperature=args.temperature, top_p=args.top_p)
    result, pieces = generate_for_cli(args, policy)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        render_steps(result, pieces)
    return 0
