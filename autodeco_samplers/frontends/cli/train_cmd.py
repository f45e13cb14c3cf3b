"""``autodeco train``: train AutoDeco heads on a frozen backbone (docs/design.md section 5).

Flags follow the shared vocabulary (``--model``, ``--device``, ``--threads``, ``--json``);
``--train-heads`` picks which head(s) to train.
"""

from __future__ import annotations

import argparse
import json

from autodeco_samplers.frontends.validation import positive_int

from autodeco_samplers.frontends.cli._common import add_device_threads, add_json, resolve_threads, set_torch_threads

TRAIN_HEADS = ("both", "temperature", "top-p")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train AutoDeco heads (frozen backbone, heads only) on prompt/completion JSONL")
    p.add_argument("--model", required=True, help="local transformers model folder (the frozen backbone)")
    p.add_argument("--data", required=True, help='JSONL, one {"prompt": ..., "completion": ...} per line; loss on the completion')
    p.add_argument("--out", required=True, help="output folder: final heads + checkpoint-STEP/ folders (official layout)")
    p.add_argument("--train-heads", choices=TRAIN_HEADS, default="both", help="which head(s) to train (default both)")
    p.add_argument("--steps", type=positive_int, default=400, help="optimizer steps (default 400)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--easy-token-ratio", type=float, default=0.6, help="drop probability of easy tokens in the T loss")
    p.add_argument("--alpha", type=float, default=30.0, help="soft top-p steepness")
    p.add_argument("--no-dft", action="store_true", help="disable the base-probability (DFT) weighting")
    p.add_argument("--soft-top-p-prefix", choices=("inclusive", "exclusive"), default="inclusive",
                   help="prefix sum of the soft top-p mask: inclusive (official recipe) or exclusive (matches the "
                        "hard nucleus rule used at inference; see docs/training.md)")
    p.add_argument("--temperature-loss-weight", type=float, default=1.0,
                   help="weight of the temperature loss in the total (official: 1.0; 0 trains T only through the top-p loss)")
    p.add_argument("--no-enhanced-features", action="store_true", help="top-p head reads [h, T] only")
    p.add_argument("--width", type=positive_int, default=256, help="hidden width of each head MLP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100, help="checkpoint period in steps (0: only at the end)")
    p.add_argument("--max-length", type=int, default=None, help="truncate examples to this many tokens")
    p.add_argument("--cache-hidden", action="store_true",
                   help="run the frozen backbone once and train on its cached final hidden states (many epochs cheaply; "
                        "see docs/training.md)")
    add_device_threads(p)
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.frontends.validation import inspect_model

    model = args.model
    from autodeco_samplers.research.training import TrainConfig, train_heads

    inspect_model("transformers", model)  # refuse a missing folder or pickle-only weights before loading torch
    set_torch_threads(resolve_threads(args.threads, default_model=False))

    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, easy_token_ratio=args.easy_token_ratio,
        alpha=args.alpha, dft=not args.no_dft, soft_top_p_prefix=args.soft_top_p_prefix,
        temperature_loss_weight=args.temperature_loss_weight, train_temperature=args.train_heads in ("both", "temperature"),
        train_top_p=args.train_heads in ("both", "top-p"), use_enhanced_features=not args.no_enhanced_features,
        width=args.width, seed=args.seed, save_every=args.save_every, max_length=args.max_length, device=args.device,
        cache_hidden=args.cache_hidden,
    )
    result = train_heads(model, args.data, args.out, cfg, resume=not args.no_resume, progress=not (args.quiet or args.json))
    last = result.history[-1] if result.history else {}
    if args.json:
        print(json.dumps({"out": str(result.out_dir), "step": result.step, "last": last}))
    else:
        losses = ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k != "step")
        print(f"heads saved to {result.out_dir} after {result.step} steps ({losses})")
    return 0
