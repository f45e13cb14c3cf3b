"""The one batched decode loop of the evaluations, and the batching rules it rests on.

Both evaluations (:mod:`.toy` and :mod:`.chat`) generate through :func:`generate_rows`: the
prompts are run once (:func:`prefill`), then every row is continued with the model's KV
cache, one model forward per step for the whole batch. What token a row gets is decided by
its segment's :data:`~autodeco_samplers.research.evaluation.choosers.Chooser` (greedy, static
``(T, P)``, AutoDeco, a baseline), so the loop itself knows no strategy.

Batching rules (stated once here):

* prompts are left-padded to the longest one (:func:`left_pad`); a token's position id is its
  index among the real (mask 1) tokens of its row, 0 on padding (:func:`position_ids`);
* each segment's random numbers are one table ``U [max_new_tokens, rows]`` of float64
  uniforms drawn at the start from a ``torch.Generator`` seeded by the segment's seed
  (``torch.rand``, row-major, so it equals drawing ``rows`` uniforms per step); at step ``t``
  the segment's chooser gets its live rows in row order with the uniforms ``U[t, row]``. A
  row's random numbers depend only on the seed, its place in its segment and the step, never
  on which other rows are still running: segments with the same seed and row layout draw
  every strategy with the same numbers (common random numbers, so strategies are compared
  on the same luck and paired differences are less noisy);
* a row ends at a token in ``eos_ids`` (that token is recorded) or after ``max_new_tokens``.
  With ``keep_finished=False`` an ended row leaves the batch (its cache rows are dropped).
  With ``keep_finished=True`` it stays (the batch keeps its shape): its chooser still
  draws for it and the model is fed ``pad_id`` for it; nothing of it is recorded any more.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from autodeco_samplers.research.evaluation.choosers import Choice, Chooser

__all__ = [
    "left_pad",
    "position_ids",
    "cache_argument",
    "output_cache",
    "Prefill",
    "prefill",
    "Segment",
    "Generated",
    "generate_rows",
]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """``(ids, mask)`` ``[B, L]`` long tensors: the prompts left-padded with ``pad_id`` to the
    longest one (mask 0 on padding), as batched generation needs."""
    import torch

    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, L - len(p):] = 1
    return ids, mask


def position_ids(mask):
    """Position id of every column of an attention ``mask`` ``[B, L]`` (1 = real token): the
    number of real tokens before it in its row, ``cumsum(mask) - 1``, clamped to 0 on the
    left padding (so a left-padded row gets the positions it would have alone)."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


def cache_argument(model) -> str:
    """transformers 5.x names the KV-cache argument ``cache``; 4.x names it ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache of a model output (``out.cache`` in transformers 5.x, else ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@dataclass
class Prefill:
    """The prompts run once: their KV ``cache`` (one row per prompt), the last position's
    ``logits`` ``[n, V]`` and final ``hidden`` state ``[n, H]``, the left-padded attention
    ``mask`` ``[n, L]`` and each prompt's length ``lengths`` ``[n]``."""

    cache: Any
    logits: Any
    hidden: Any
    mask: Any
    lengths: Any


def prefill(model, prompt_ids: Sequence[Sequence[int]], pad_id: int) -> Prefill:
    """Run the (left-padded) prompts once; see :class:`Prefill`."""
    import torch

    from autodeco_samplers.research.training.capture import HiddenCapture

    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    with torch.inference_mode(), HiddenCapture(model) as cap:
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True, logits_to_keep=1)
        hidden = cap.hidden[:, -1].float().clone()
    return Prefill(output_cache(out), out.logits[:, -1].float().clone(), hidden, mask, mask.sum(-1))


@dataclass(frozen=True)
class Segment:
    """Rows of one batch drawn the same way: prompt index per row, the draw, its seed."""

    row_prompt: Tuple[int, ...]
    choose: Chooser
    seed: int


@dataclass
class Generated:
    """One segment's rows: per row the generated token ids (the end-of-sequence token
    included when the row ended on one, see ``ended``) and the ``T``/``P`` used and
    predicted at each of those tokens (floats, NaN where the chooser defines none)."""

    token_ids: List[List[int]]
    ended: List[bool]
    T: List[List[float]]
    P: List[List[float]]
    T_pred: List[List[float]]
    P_pred: List[List[float]]
    texts: Optional[List[str]] = None  # per row the engine's own decoded answer, when it gives one

    def answer_ids(self) -> List[List[int]]:
        """Per row the generated ids without the end-of-sequence token."""
        return [ids[:-1] if end else ids for ids, end in zip(self.token_ids, self.ended)]


class _Record:
    """What :func:`generate_rows` keeps per row while it runs."""

    FIELDS = ("T", "P", "T_pred", "P_pred")

    def __init__(self, n_rows: int) -> None:
        self.ids: List[List[int]] = [[] for _ in range(n_rows)]
        self.ended = [False] * n_rows
        self.values = {k: [[] for _ in range(n_rows)] for k in self.FIELDS}

    def add(self, rows, choice: Choice, ended, live) -> None:
        """Append step values of the batch rows ``rows`` (global row ids) where ``live``."""
        cols = [a.tolist() for a in (rows, choice.tokens, ended, live, choice.T.float(), choice.P.float(),
                                     choice.T_pred.float(), choice.P_pred.float())]
        for r, t, end, alive, *vals in zip(*cols):
            if not alive:
                continue
            self.ids[r].append(t)
            self.ended[r] = bool(end)
            for key, v in zip(self.FIELDS, vals):
                self.values[key][r].append(v)

    def split(self, segments: Sequence[Segment]) -> List[Generated]:
        out, start = [], 0
        for sg in segments:
            sl = slice(start, start + len(sg.row_prompt))
            out.append(Generated(self.ids[sl], self.ended[sl], *(self.values[k][sl] for k in self.FIELDS)))
            start += len(sg.row_prompt)
        return out


def _choose(segments: Sequence[Segment], uniforms, row_segment, row_local, step: int, hidden, logits) -> Choice:
    """Every segment's chooser on its rows of the batch (rows are sorted by segment), with
    each row's uniform of this ``step`` (``uniforms[k][step, row_local]``)."""
    import torch

    counts = torch.bincount(row_segment, minlength=len(segments)).tolist()
    parts, start = [], 0
    for k, n in enumerate(counts):
        if n:
            u = uniforms[k][step, row_local[start:start + n]]
            parts.append(segments[k].choose(hidden[start:start + n], logits[start:start + n], u))
            start += n
    return Choice(*(torch.cat([p[j] for p in parts]) for j in range(len(Choice._fields))))


def generate_rows(model, pre: Prefill, segments: Sequence[Segment], *, eos_ids: Sequence[int], max_new_tokens: int,
                  keep_finished: bool = False, pad_id: Optional[int] = None) -> List[Generated]:
    """Continue the prompts of every segment in one batch (module docstring), one
    :class:`Generated` per segment. The prefill cache is copied, never changed.
    ``keep_finished`` needs ``pad_id`` (the token fed for rows that have ended)."""
    import torch

    from autodeco_samplers.research.training.capture import HiddenCapture

    if keep_finished and pad_id is None:
        raise ValueError("keep_finished needs pad_id (the token fed for rows that have ended)")
    device = pre.logits.device
    idx = torch.as_tensor([p for sg in segments for p in sg.row_prompt], dtype=torch.long, device=device)
    seg_of = torch.as_tensor([k for k, sg in enumerate(segments) for _ in sg.row_prompt], dtype=torch.long, device=device)
    cache = copy.deepcopy(pre.cache)
    cache.batch_select_indices(idx)
    mask, pos = pre.mask[idx], pre.lengths[idx].clone()
    logits, hidden = pre.logits[idx], pre.hidden[idx]
    rows = torch.arange(idx.numel(), device=device)  # the global row id of each batch row
    live = torch.ones(idx.numel(), dtype=torch.bool, device=device)
    eos = torch.as_tensor(sorted(set(int(e) for e in eos_ids)), dtype=torch.long, device=device)
    local = torch.as_tensor([j for sg in segments for j in range(len(sg.row_prompt))], dtype=torch.long, device=device)
    uniforms = [torch.rand((max_new_tokens, len(sg.row_prompt)), dtype=torch.float64, device=device,
                           generator=torch.Generator(device=device).manual_seed(int(sg.seed))) for sg in segments]
    record = _Record(idx.numel())
    cache_arg = cache_argument(model)
    with torch.inference_mode(), HiddenCapture(model) as cap:
        for step in range(max_new_tokens):
            choice = _choose(segments, uniforms, seg_of[rows], local[rows], step, hidden, logits)
            ended = torch.isin(choice.tokens, eos)
            record.add(rows, choice, ended, live)
            live = live & ~ended
            if step == max_new_tokens - 1 or not bool(live.any()):
                break
            tok = choice.tokens
            if keep_finished:
                tok = torch.where(live, tok, torch.full_like(tok, pad_id))
            elif not bool(live.all()):
                sel = live.nonzero()[:, 0]
                cache.batch_select_indices(sel)
                mask, pos, rows, tok, live = mask[sel], pos[sel], rows[sel], tok[sel], live[sel]
            mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None], use_cache=True,
                        **{cache_arg: cache})
            cache = output_cache(out)
            pos = pos + 1
            logits, hidden = out.logits[:, -1].float(), cap.hidden[:, -1].float()
    return record.split(segments)
