"""Full training of a (tiny) causal LM from scratch, used to build the embedded default model.

Not part of the AutoDeco recipe (which freezes the backbone); it exists so that the default
backbone can be rebuilt from a seed. Loss: the ordinary next-token cross-entropy on the
completion tokens only (labels from :mod:`autodeco_samplers.research.training.data`), AdamW, a linear
warmup then cosine decay.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch

from autodeco_samplers.research.training.data import batches, encode_examples

__all__ = ["train_causal_lm"]


def train_causal_lm(
    model,
    tokenizer,
    records: Sequence[Dict[str, str]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup_steps: int = 50,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> List[float]:
    """Train every parameter of ``model`` on completion-only CE; returns the loss per step."""
    examples = encode_examples(tokenizer, records)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stream = batches(examples, batch_size, pad_id, torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="backbone", unit="step")
    losses = []
    for step in range(steps):
        warm = min(1.0, (step + 1) / max(1, warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
        for g in opt.param_groups:
            g["lr"] = lr * warm * (0.1 + 0.9 * decay)
        batch = next(stream)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"], use_cache=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(out.loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar is not None:
        bar.close()
    model.eval()
    return losses
