"""Rebuild the embedded default model from a seed (``scripts/build_default_model.py`` calls this).

Steps: (1) a byte-level BPE tokenizer trained on the task's text; (2) a tiny
``LlamaForCausalLM`` initialised from ``seed`` and trained from scratch on the
choice-then-derive task (completion-only CE) for ``backbone_steps`` steps, deliberately
few, so it stays imperfect on the determined part; (3) AutoDeco heads trained on the
frozen backbone (:func:`autodeco_samplers.research.training.train_heads`) with the official recipe
plus two named options, ``soft_top_p_prefix="exclusive"`` and ``temperature_loss_weight=0``
(``BuildConfig.head_*``; why: docs/evaluation.md);
(4) everything saved with safetensors: ``base/`` (model + tokenizer), ``heads/`` (official
heads-only layout), ``task.json`` and ``build_info.json``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

__all__ = ["BuildConfig", "build_default_model"]


@dataclass
class BuildConfig:
    seed: int = 0
    vocab_size: int = 384
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 192
    train_examples: int = 20000
    backbone_steps: int = 200
    backbone_batch_size: int = 64
    backbone_lr: float = 3e-3
    head_steps: int = 400
    head_batch_size: int = 64
    head_lr: float = 1e-3
    head_width: int = 256
    # the heads' recipe: the official one except two named options (docs/training.md, "Recipe
    # options"; the ablation in docs/evaluation.md): the exclusive-prefix soft top-p mask and the
    # temperature head trained through the top-p loss only
    head_soft_top_p_prefix: str = "exclusive"
    head_temperature_loss_weight: float = 0.0


def _add_bos_post_processor(tok) -> None:
    """Make ``tok(text)`` (special tokens on, the engines' default) start with BOS, as in training."""
    from tokenizers import processors

    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.bos_token_id)]
    )


def build_default_model(out_dir: Union[str, Path], config: Optional[BuildConfig] = None, *, progress: bool = True) -> Dict[str, Any]:
    """Build tokenizer, backbone and heads into ``out_dir``; returns the build info."""
    import torch
    from transformers import AutoModelForCausalLM

    from autodeco_samplers.research.evaluation import toy_task as task_mod
    from autodeco_samplers.models.tiny_models import build_tokenizer, tiny_config
    from autodeco_samplers.research.training import TrainConfig, train_heads
    from autodeco_samplers.research.training.backbone import train_causal_lm
    from autodeco_samplers.research.training.trainer import dtype_kwargs

    cfg = config or BuildConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    spec = task_mod.TaskSpec(seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer(cfg.vocab_size, corpus=task_mod.tokenizer_corpus(spec))
    _add_bos_post_processor(tok)
    mconf = tiny_config(
        "llama", vocab_size=len(tok), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, intermediate_size=cfg.intermediate_size, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(mconf, **dtype_kwargs(torch.float32))
    records = task_mod.training_records(spec, cfg.train_examples, seed=cfg.seed + 1)
    backbone_losses = train_causal_lm(model, tok, records, steps=cfg.backbone_steps, batch_size=cfg.backbone_batch_size,
                                      lr=cfg.backbone_lr, seed=cfg.seed, progress=progress)
    t_backbone = time.perf_counter() - t0
    base_dir = out / "base"
    model.config._name_or_path = "autodeco-default-tiny-llama"
    model.generation_config.do_sample = True
    model.save_pretrained(base_dir, safe_serialization=True)
    tok.save_pretrained(base_dir)
    heads_records = task_mod.training_records(spec, cfg.train_examples, seed=cfg.seed + 3)
    result = train_heads(
        (model, tok), heads_records, None,
        TrainConfig(steps=cfg.head_steps, batch_size=cfg.head_batch_size, lr=cfg.head_lr, width=cfg.head_width, seed=cfg.seed,
                    soft_top_p_prefix=cfg.head_soft_top_p_prefix, temperature_loss_weight=cfg.head_temperature_loss_weight),
        progress=progress,
    )
    result.heads.config = type(result.heads.config)(**{**result.heads.config.__dict__, "base_model_name_or_path": "autodeco-default-tiny-llama",
                                                      "base_model_type": "llama"})
    result.heads.save_pretrained(out / "heads", extra_config={"autodeco_training": {
        "steps": cfg.head_steps, "seed": cfg.seed, "soft_top_p_prefix": cfg.head_soft_top_p_prefix,
        "temperature_loss_weight": cfg.head_temperature_loss_weight}})
    (out / "task.json").write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    info = {
        "build_config": asdict(cfg),
        "backbone_final_loss": sum(backbone_losses[-20:]) / min(20, len(backbone_losses)),
        "heads_final_losses": result.history[-1],
        "seconds_backbone": t_backbone,
        "seconds_total": time.perf_counter() - t0,
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
