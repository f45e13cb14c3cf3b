"""Cached backbone hidden states for ``TrainConfig(cache_hidden=True)`` / ``--cache-hidden``.

The backbone is frozen, so its final hidden state at each labelled position is the same at
every epoch. With caching the trainer runs the backbone once over the data (batches of
similar length, right-padded: causal attention makes the padding invisible to earlier
positions), keeps for each example the hidden rows that predict a label (position ``i`` for
label ``i+1``) and the labels, and from then on each step only recomputes the logits from the
cached rows with the model's own output layer (``model.get_output_embeddings()``), which is
exactly how the backbone makes its logits from the tensor the heads read. Prompt positions,
which carry no loss, are dropped, so a step costs the heads plus one ``[tokens, V]`` matmul.

Differences from the uncached path: the easy-token draws see only labelled positions (so the
draws, not their rule, differ) and padded batched forwards may differ from the per-batch
forwards in the last bits. Models whose logits are not a plain linear map of that tensor (final
logit soft-capping) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import torch

from autodeco_samplers.core.errors import AutoDecoError

from autodeco_samplers.research.training.capture import HiddenCapture
from autodeco_samplers.research.training.data import Example, collate
from autodeco_samplers.research.training.losses import IGNORE_INDEX

__all__ = ["HiddenCache", "cache_hidden_states", "cached_batches", "cached_logits"]


@dataclass
class HiddenCache:
    """Per example: ``hidden[i]`` ``[k_i, H]`` float32 rows and ``labels[i]`` ``[k_i]``."""

    hidden: List[torch.Tensor]
    labels: List[torch.Tensor]

    @property
    def n_tokens(self) -> int:
        return sum(int(x.shape[0]) for x in self.labels)


def _check_plain_logits(model) -> None:
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if cap:
        raise AutoDecoError(
            f"cache_hidden: {type(model).__name__} soft-caps its logits (final_logit_softcapping={cap}); "
            "train without --cache-hidden"
        )


def cache_hidden_states(model, examples: Sequence[Example], pad_id: int, batch_size: int, device) -> HiddenCache:
    """Run the frozen backbone once over ``examples`` and keep the labelled rows."""
    _check_plain_logits(model)
    hidden: List[torch.Tensor] = [torch.empty(0)] * len(examples)
    labels: List[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collate([examples[i] for i in chunk], pad_id)
        with torch.no_grad(), HiddenCapture(model) as cap:
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), use_cache=False)
        h = cap.hidden.float().cpu()
        if h.shape[1] != batch["input_ids"].shape[1]:
            raise AutoDecoError("cache_hidden: the output layer did not see every position; train without --cache-hidden")
        for row, i in enumerate(chunk):
            lab = batch["labels"][row, 1:]
            keep = lab != IGNORE_INDEX
            hidden[i] = h[row, :-1][keep].clone()
            labels[i] = lab[keep].clone()
    return HiddenCache(hidden, labels)


def cached_batches(cache: HiddenCache, batch_size: int, generator: torch.Generator) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(hidden [1, N, H], labels [1, N])`` batches: the same example order as
    :func:`autodeco_samplers.research.training.data.batches` with the same generator, each batch's
    labelled rows concatenated (already shifted: row ``j`` predicts ``labels[0, j]``)."""
    n = len(cache.labels)
    if n == 0:
        raise AutoDecoError("no training examples")
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            chunk = order[start:start + batch_size]
            yield (torch.cat([cache.hidden[i] for i in chunk])[None], torch.cat([cache.labels[i] for i in chunk])[None])


def cached_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The backbone's logits for cached final hidden states (its own output layer)."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        return head(hidden.to(head.weight.dtype)).float()
