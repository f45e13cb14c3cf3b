"""The AutoDeco head trainer: frozen backbone, heads only (docs/design.md section 5).

One optimisation step = ``grad_accum`` micro-batches of ``batch_size`` examples. For each
micro-batch the frozen backbone runs under ``torch.no_grad``; a forward pre-hook on
``model.get_output_embeddings()`` captures the tensor ``lm_head`` consumes (the final hidden
state, post-norm), so the heads read exactly what the engines give them at inference. The
heads then predict ``(T, P)`` at every position, and the losses of
:mod:`autodeco_samplers.research.training.losses` are taken on the shifted, completion-only labels.

Determinism and resuming: the data order comes from a generator seeded with ``seed``; the
easy-token draw of micro-step ``k`` from a generator seeded with ``seed * 1_000_003 + k``.
A resumed run replays the data stream up to its step, so it continues exactly where the
interrupted run would have been. Checkpoints (every ``save_every`` steps and at the end) go to
``OUT/checkpoint-STEP/``: the heads in the official layout (``save_pretrained``), the
optimizer state in ``optimizer.safetensors`` and the step, config and losses in
``trainer_state.json``; nothing is pickled. The final heads are also written to ``OUT``.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from autodeco_samplers.core.errors import AutoDecoError, CheckpointError

from autodeco_samplers.research.training.capture import HiddenCapture
from autodeco_samplers.research.training.data import batches, encode_examples, read_jsonl
from autodeco_samplers.research.training.losses import shift_for_causal_lm, temperature_loss, top_p_loss

__all__ = ["TrainConfig", "TrainResult", "train_heads", "HiddenCapture", "save_optimizer", "load_optimizer", "latest_checkpoint"]

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainConfig:
    """Every knob of the recipe. Defaults follow the official recipe where it has one."""

    steps: int = 400
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    easy_token_ratio: float = 0.6
    alpha: float = 30.0
    soft_top_p_prefix: str = "inclusive"
    temperature_loss_weight: float = 1.0
    dft: bool = True
    train_temperature: bool = True
    train_top_p: bool = True
    use_enhanced_features: bool = True
    width: int = 256
    seed: int = 0
    save_every: int = 100
    max_length: Optional[int] = None
    device: str = "auto"
    cache_hidden: bool = False

    def __post_init__(self) -> None:
        if not (self.train_temperature or self.train_top_p):
            raise AutoDecoError("train at least one head (temperature, top-p or both)")
        if not (self.temperature_loss_weight >= 0.0 and math.isfinite(self.temperature_loss_weight)):
            raise AutoDecoError(f"temperature_loss_weight must be a finite number >= 0, got {self.temperature_loss_weight}")
        if self.soft_top_p_prefix not in ("inclusive", "exclusive"):
            raise AutoDecoError(f"soft_top_p_prefix must be 'inclusive' (official) or 'exclusive', got {self.soft_top_p_prefix!r}")
        for name in ("steps", "batch_size", "grad_accum", "width"):
            if getattr(self, name) < 1:
                raise AutoDecoError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class TrainResult:
    heads: Any  # AutoDecoHeadsModule
    step: int
    history: List[Dict[str, float]] = field(default_factory=list)
    out_dir: Optional[Path] = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------- optimizer I/O


def save_optimizer(optimizer: torch.optim.Optimizer, path: Union[str, Path]) -> None:
    """AdamW (or any torch optimizer) state as safetensors tensors + JSON param groups."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            key = f"state.{idx}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    save_file(tensors, str(path), metadata=meta)


def load_optimizer(optimizer: torch.optim.Optimizer, path: Union[str, Path]) -> None:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"optimizer state not found: {path}")
    state: Dict[int, Dict[str, Any]] = {}
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        for key in fh.keys():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = fh.get_tensor(key)
    for key, value in json.loads(meta.get("scalars", "{}")).items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    if "param_groups" not in meta:
        raise CheckpointError(f"{path}: missing param_groups metadata")
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def latest_checkpoint(out_dir: Union[str, Path]) -> Optional[Path]:
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := _CKPT.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


# ----------------------------------------------------------------------------- training


def dtype_kwargs(dtype) -> Dict[str, Any]:
    """``{"dtype": dtype}`` for transformers >= 4.56, ``{"torch_dtype": dtype}`` before."""
    import transformers

    try:
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    except ValueError:
        return {"dtype": dtype}
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _load_base(base) -> Tuple[Any, Any, Optional[str]]:
    """``(model, tokenizer, name)`` from a folder path or a ``(model, tokenizer)`` pair."""
    if isinstance(base, (tuple, list)):
        model, tok = base
        return model, tok, getattr(model.config, "_name_or_path", None) or None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(base)
    if not path.exists():
        raise AutoDecoError(f"base model not found: {path} (give a local transformers model folder)")
    model = AutoModelForCausalLM.from_pretrained(str(path), **dtype_kwargs(torch.float32))
    tok = AutoTokenizer.from_pretrained(str(path))
    return model, tok, str(base)


def heads_forward(model, heads, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, T, P)`` ``[B, L, ...]`` for a batch: frozen backbone, heads with grad."""
    with torch.no_grad(), HiddenCapture(model) as cap:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out.logits.float()
    T, P = heads(cap.hidden.float(), logits)
    return logits, T, P


def compute_losses(logits, T, P, labels, cfg: TrainConfig, generator: Optional[torch.Generator], *,
                   shifted: bool = False) -> Dict[str, torch.Tensor]:
    """The recipe's losses; ``shifted``: ``labels[:, j]`` is already the target of row ``j``
    (cached hidden states), otherwise position ``i`` predicts label ``i+1``."""
    if not shifted:
        labels, logits, T, P = shift_for_causal_lm(labels, logits, T, P)
    losses: Dict[str, torch.Tensor] = {}
    if cfg.train_temperature:
        # with weight 0 the temperature loss is only logged: no graph (it would add nothing)
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.temperature_loss_weight != 0.0):
            losses["temperature"] = temperature_loss(logits, labels, T, easy_token_ratio=cfg.easy_token_ratio, generator=generator, dft=cfg.dft)
    if cfg.train_top_p:
        losses["top_p"] = top_p_loss(logits, labels, T, P, alpha=cfg.alpha, dft=cfg.dft, prefix=cfg.soft_top_p_prefix)
    total = losses["top_p"] if cfg.train_top_p else 0.0
    if cfg.train_temperature:
        total = total + cfg.temperature_loss_weight * losses["temperature"]
    losses["total"] = total
    return losses


def train_heads(
    base,
    data,
    out_dir: Union[str, Path, None],
    config: Optional[TrainConfig] = None,
    *,
    resume: bool = True,
    progress: bool = True,
    on_step: Optional[Callable[[int, Any], None]] = None,
) -> TrainResult:
    """Train AutoDeco heads on a frozen backbone.

    Args:
        base: a local transformers model folder, or a ``(model, tokenizer)`` pair.
        data: a JSONL path, or a list of ``{"prompt", "completion"}`` dicts.
        out_dir: where checkpoints and the final heads go (None: keep in memory only).
        config: :class:`TrainConfig`.
        resume: continue from the latest ``out_dir/checkpoint-*`` when there is one.
        progress: show a tqdm bar with the losses.
        on_step: called as ``on_step(step, heads)`` after every optimizer step (for probes;
            the heads are in train mode and must not be modified).
    """
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    cfg = config or TrainConfig()
    device = resolve_device(cfg.device)
    model, tokenizer, base_name = _load_base(base)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    records = read_jsonl(data) if isinstance(data, (str, Path)) else list(data)
    examples = encode_examples(tokenizer, records, max_length=cfg.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    hidden_size = model.get_output_embeddings().weight.shape[1]
    out = Path(out_dir) if out_dir is not None else None

    start_step, history = 0, []
    ckpt = latest_checkpoint(out) if (out is not None and resume) else None
    if ckpt is not None:
        heads = AutoDecoHeadsModule.from_pretrained(ckpt)
        state = json.loads((ckpt / STATE_FILE).read_text())
        start_step, history = int(state["step"]), list(state.get("history", []))
    else:
        heads = AutoDecoHeadsModule.create(
            hidden_size,
            width=cfg.width,
            use_enhanced_features=cfg.use_enhanced_features,
            enable_temperature_head=cfg.train_temperature,
            enable_top_p_head=cfg.train_top_p,
            base_model_name_or_path=base_name,
            base_model_type=getattr(model.config, "model_type", None),
            seed=cfg.seed,
        )
    heads.to(device).train()
    optimizer = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if ckpt is not None:
        load_optimizer(optimizer, ckpt / OPTIMIZER_FILE)

    def lr_at(s: int) -> float:  # linear warmup over ``warmup_steps``, then constant
        return cfg.lr * (min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0)

    data_gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.cache_hidden:  # one backbone pass over the data; steps then read the cache
        from autodeco_samplers.research.training.cache import cache_hidden_states, cached_batches

        cache = cache_hidden_states(model, examples, pad_id, cfg.batch_size, device)
        stream = cached_batches(cache, cfg.batch_size, data_gen)
    else:
        stream = batches(examples, cfg.batch_size, pad_id, data_gen)
    for _ in range(start_step * cfg.grad_accum):  # replay the data order up to the resumed step
        next(stream)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start_step, desc="autodeco train", unit="step")

    def save(step: int, folder: Path) -> None:
        extra = {"autodeco_training": {"step": step, **{k: v for k, v in asdict(cfg).items() if k != "device"}}}
        heads.save_pretrained(folder, extra_config=extra)
        save_optimizer(optimizer, folder / OPTIMIZER_FILE)
        state = {"step": step, "config": asdict(cfg), "history": history, "saved_at": time.time()}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    step = start_step
    while step < cfg.steps:
        optimizer.zero_grad(set_to_none=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        totals: Dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            k = step * cfg.grad_accum + micro
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
            if cfg.cache_hidden:
                from autodeco_samplers.research.training.cache import cached_logits

                hidden, labels = (t.to(device) for t in next(stream))
                logits = cached_logits(model, hidden)
                T, P = heads(hidden, logits)
                losses = compute_losses(logits, T, P, labels, cfg, gen, shifted=True)
            else:
                batch = {k: v.to(device) for k, v in next(stream).items()}
                logits, T, P = heads_forward(model, heads, batch)
                losses = compute_losses(logits, T, P, batch["labels"], cfg, gen)
            (losses["total"] / cfg.grad_accum).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / cfg.grad_accum
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(heads.parameters(), cfg.max_grad_norm)
        optimizer.step()
        step += 1
        if not all(math.isfinite(v) for v in totals.values()):
            raise AutoDecoError(f"non-finite loss at step {step}: {totals}")
        history.append({"step": step, **totals})
        if on_step is not None:
            on_step(step, heads)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({("L_T" if n == "temperature" else "L_P" if n == "top_p" else "L"): f"{v:.4f}" for n, v in totals.items()})
        if out is not None and cfg.save_every > 0 and step % cfg.save_every == 0 and step < cfg.steps:
            save(step, out / f"checkpoint-{step}")
    if bar is not None:
        bar.close()
    if out is not None and start_step < cfg.steps:
        save(step, out / f"checkpoint-{step}")
        heads.save_pretrained(out, extra_config={"autodeco_training": {"step": step, **{k: v for k, v in asdict(cfg).items() if k != "device"}}})
        (out / STATE_FILE).write_text(json.dumps({"step": step, "config": asdict(cfg), "history": history}, indent=2) + "\n")
    heads.eval()
    return TrainResult(heads=heads, step=step, history=history, out_dir=out)
