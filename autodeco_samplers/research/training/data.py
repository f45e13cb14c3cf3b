"""Training data: JSONL ``{"prompt": ..., "completion": ...}`` -> token ids and labels.

Rule: ``input_ids = [bos] + tok(prompt) + tok(completion) + [eos]`` (BOS / EOS only when the
tokenizer defines them and ``add_bos`` / ``add_eos``; no BOS is added to a prompt whose tokens
already start with it, as a chat-formatted prompt does when the tokenizer's BOS is the chat
template's first token, e.g. ``<|im_start|>`` in SmolLM2); prompt and completion are tokenized
separately (no special tokens) so the boundary is exact. ``labels`` equals ``input_ids`` on
the completion tokens and the EOS, and ``-100`` on BOS and prompt: the loss is on the
completion only. Batches are right-padded; padded positions get ``attention_mask = 0`` and
``labels = -100``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch

from autodeco_samplers.core.errors import AutoDecoError

from autodeco_samplers.research.training.losses import IGNORE_INDEX

__all__ = ["Example", "read_jsonl", "encode_example", "encode_examples", "collate", "batches"]


@dataclass(frozen=True)
class Example:
    """One tokenized training example."""

    input_ids: List[int]
    labels: List[int]


def read_jsonl(path: Union[str, Path]) -> List[Dict[str, str]]:
    """Read ``prompt``/``completion`` records; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AutoDecoError(f"training data file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AutoDecoError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not isinstance(rec.get("completion"), str):
                raise AutoDecoError(f"{path}:{lineno}: each line needs string fields 'prompt' and 'completion'")
            records.append({"prompt": rec["prompt"], "completion": rec["completion"]})
    if not records:
        raise AutoDecoError(f"{path}: no training records")
    return records


def encode_example(tokenizer, prompt: str, completion: str, *, add_bos: bool = True, add_eos: bool = True,
                   max_length: Optional[int] = None) -> Example:
    """Token ids and completion-only labels for one record (module docstring rule)."""
    p_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if add_bos and tokenizer.bos_token_id is not None and p_ids[:1] != [tokenizer.bos_token_id]:
        p_ids = [tokenizer.bos_token_id] + p_ids
    if add_eos and tokenizer.eos_token_id is not None:
        c_ids = c_ids + [tokenizer.eos_token_id]
    ids = p_ids + c_ids
    labels = [IGNORE_INDEX] * len(p_ids) + c_ids
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Example(ids, labels)


def encode_examples(tokenizer, records: Iterable[Dict[str, str]], **kwargs) -> List[Example]:
    return [encode_example(tokenizer, r["prompt"], r["completion"], **kwargs) for r in records]


def collate(examples: Sequence[Example], pad_id: int) -> Dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask``, ``labels`` ``[B, L]``."""
    L = max(len(e.input_ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(examples: Sequence[Example], batch_size: int, pad_id: int, generator: torch.Generator) -> Iterator[Dict[str, torch.Tensor]]:
    """An endless stream of shuffled batches (a new permutation from ``generator`` per epoch)."""
    if not examples:
        raise AutoDecoError("no training examples")
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[start:start + batch_size]]
            yield collate(chunk, pad_id)
