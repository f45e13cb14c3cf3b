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


def _frozen(model, device: torch.device):
    """``model`` on ``device`` in eval mode with every parameter frozen."""
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _checkpoint_extra(cfg: TrainConfig, step: int) -> Dict[str, Any]:
    """The ``autodeco_training`` block a heads config records: the step and the recipe (no device)."""
    return {"autodeco_training": {"step": step, **{k: v for k, v in asdict(cfg).items() if k != "device"}}}


def _initial_state(out: Optional[Path], resume: bool, cfg: TrainConfig, model, base_name: Optional[str]):
    """``(heads, start_step, history, checkpoint or None)``: the latest checkpoint in ``out``
    when resuming from one, else fresh heads seeded by ``cfg.seed``."""
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    ckpt = latest_checkpoint(out) if (out is not None and resume) else None
    if ckpt is not None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        return AutoDecoHeadsModule.from_pretrained(ckpt), int(state["step"]), list(state.get("history", [])), ckpt
    heads = AutoDecoHeadsModule.create(
        model.get_output_embeddings().weight.shape[1],
        width=cfg.width,
        use_enhanced_features=cfg.use_enhanced_features,
        enable_temperature_head=cfg.train_temperature,
        enable_top_p_head=cfg.train_top_p,
        base_model_name_or_path=base_name,
        base_model_type=getattr(model.config, "model_type", None),
        seed=cfg.seed,
    )
    return heads, 0, [], None


def _micro_batches(cfg: TrainConfig, model, examples, pad_id: int, device: torch.device, start_step: int):
    """The stream of micro-batches from a generator seeded with ``cfg.seed``, replayed up to
    ``start_step``: padded token batches, or with ``cache_hidden`` ``(hidden, labels)`` from
    one backbone pass over the data."""
    data_gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.cache_hidden:
        from autodeco_samplers.research.training.cache import cache_hidden_states, cached_batches

        stream = cached_batches(cache_hidden_states(model, examples, pad_id, cfg.batch_size, device), cfg.batch_size, data_gen)
    else:
        stream = batches(examples, cfg.batch_size, pad_id, data_gen)
    for _ in range(start_step * cfg.grad_accum):  # replay the data order up to the resumed step
        next(stream)
    return stream


def _micro_losses(model, heads, micro_batch, cfg: TrainConfig, generator: torch.Generator,
                  device: torch.device) -> Dict[str, torch.Tensor]:
    """The losses of one micro-batch of :func:`_micro_batches`."""
    if cfg.cache_hidden:
        from autodeco_samplers.research.training.cache import cached_logits

        hidden, labels = (t.to(device) for t in micro_batch)
        logits = cached_logits(model, hidden)
        T, P = heads(hidden, logits)
        return compute_losses(logits, T, P, labels, cfg, generator, shifted=True)
    batch = {name: v.to(device) for name, v in micro_batch.items()}
    logits, T, P = heads_forward(model, heads, batch)
    return compute_losses(logits, T, P, batch["labels"], cfg, generator)


def _optimizer_step(step: int, model, heads, optimizer, stream, cfg: TrainConfig, device: torch.device) -> Dict[str, float]:
    """One optimisation step (module docstring): the learning rate of ``step`` (linear warmup
    over ``warmup_steps``, then constant), ``grad_accum`` micro-batches, each with its
    easy-token generator seeded ``seed * 1_000_003 + k``, gradient clipping; returns the
    losses averaged over the micro-batches."""
    optimizer.zero_grad(set_to_none=True)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * (min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0)
    totals: Dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * cfg.grad_accum + micro)
        losses = _micro_losses(model, heads, next(stream), cfg, gen, device)
        (losses["total"] / cfg.grad_accum).backward()
        for name, value in losses.items():
            totals[name] = totals.get(name, 0.0) + float(value.detach()) / cfg.grad_accum
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(heads.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return totals


def _save_checkpoint(folder: Path, heads, optimizer, cfg: TrainConfig, step: int, history: List[Dict[str, float]]) -> None:
    """``folder``: the heads (official layout), the optimizer state and ``trainer_state.json``."""
    heads.save_pretrained(folder, extra_config=_checkpoint_extra(cfg, step))
    save_optimizer(optimizer, folder / OPTIMIZER_FILE)
    state = {"step": step, "config": asdict(cfg), "history": history, "saved_at": time.time()}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def _save_final(out: Path, heads, optimizer, cfg: TrainConfig, step: int, history: List[Dict[str, float]]) -> None:
    """The last checkpoint, and the final heads with their state in ``out`` itself."""
    _save_checkpoint(out / f"checkpoint-{step}", heads, optimizer, cfg, step, history)
    heads.save_pretrained(out, extra_config=_checkpoint_extra(cfg, step))
    (out / STATE_FILE).write_text(json.dumps({"step": step, "config": asdict(cfg), "history": history}, indent=2) + "\n")


def _loss_labels(totals: Dict[str, float]) -> Dict[str, str]:
    """The progress bar's postfix: ``L_T``, ``L_P`` and the total ``L``."""
    return {("L_T" if n == "temperature" else "L_P" if n == "top_p" else "L"): f"{v:.4f}" for n, v in totals.items()}


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
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device)
    model, tokenizer, base_name = _load_base(base)
    model = _frozen(model, device)
    records = read_jsonl(data) if isinstance(data, (str, Path)) else list(data)
    examples = encode_examples(tokenizer, records, max_length=cfg.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    out = Path(out_dir) if out_dir is not None else None

    heads, start_step, history, ckpt = _initial_state(out, resume, cfg, model, base_name)
    heads.to(device).train()
    optimizer = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if ckpt is not None:
        load_optimizer(optimizer, ckpt / OPTIMIZER_FILE)
    stream = _micro_batches(cfg, model, examples, pad_id, device, start_step)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start_step, desc="autodeco train", unit="step")
    step = start_step
    while step < cfg.steps:
        totals = _optimizer_step(step, model, heads, optimizer, stream, cfg, device)
        step += 1
        if not all(math.isfinite(v) for v in totals.values()):
            raise AutoDecoError(f"non-finite loss at step {step}: {totals}")
        history.append({"step": step, **totals})
        if on_step is not None:
            on_step(step, heads)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(_loss_labels(totals))
        if out is not None and cfg.save_every > 0 and step % cfg.save_every == 0 and step < cfg.steps:
            _save_checkpoint(out / f"checkpoint-{step}", heads, optimizer, cfg, step, history)
    if bar is not None:
        bar.close()
    if out is not None and start_step < cfg.steps:
        _save_final(out, heads, optimizer, cfg, step, history)
    heads.eval()
    return TrainResult(heads=heads, step=step, history=history, out_dir=out)
