"""Continuous batching on transformers: :class:`TransformersSlots`, the server's batched decode.

The active requests are rows of one batch with one key-value cache (transformers'
``DynamicCache``), **left-padded**: every row's last cached token sits in the last column, a
row's padding columns are 0 in the attention mask, and each row's ``position_ids`` count only
its own tokens, so a row is computed as it would be alone (up to floating-point summation
order, see below).

* **join** (between steps): the new request's prompt is run alone (batch 1, its own cache,
  no padding: the prefill ``model.generate`` would run); the logits and hidden state of its last
  position wait for the next step, which draws its first token with the others;
* **step**: one forward of ``[B, 1]`` (each batched row's last token) over the shared cache,
  then the rows' hidden states and logits (the hooks of
  :func:`autodeco_samplers.adapters.transformers.attach`, read through
  :meth:`~autodeco_samplers.adapters.transformers.AutoDecoAttachment.last_forward`) together
  with the waiting first positions of joined requests go through **one batched torch step**
  (:meth:`AutoDecoAttachment.step <autodeco_samplers.adapters.transformers.AutoDecoAttachment.step>`,
  i.e. :func:`autodeco_samplers.core.step.torch_step_logits`) with per-row request multipliers;
  each row's token is then drawn as ``model.generate`` draws it (softmax of the step's logits
  and ``torch.multinomial``) but with the request's **own** ``torch.Generator`` seeded with
  its seed, so a request alone draws exactly what ``autodeco generate --seed S`` draws;
* joined requests' caches are then merged into the shared one (left-padding the shorter side),
  finished or cancelled rows are removed (``index_select`` on the batch dimension), and
  columns that are padding in every row are cut.

A row's numbers depend on its batch neighbours only through summation order in the matmuls and
attention (last bits, measured in docs/server.md, "Slots"); its tokens change only if a draw
falls within that rounding of a boundary. Models whose cache is not plain full attention
(sliding windows, recurrent state) are refused at the first join.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple


from autodeco_samplers.core.errors import AutoDecoError
from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.frontends.server.sequences import (
    SequenceEnd, SequenceJob, Slots, StepOut, TokenOut, canonical_logprobs,
)
from autodeco_samplers.frontends.server.errors import bad_request

__all__ = ["TransformersSlots"]


@dataclasses.dataclass
class _Row:
    slot: int
    job: SequenceJob
    generator: Any
    detok: Any
    text: Any
    n_tokens: int  # tokens in this row's cache (prompt + drawn, before the next feed)
    pending: Optional[Tuple[Any, Any]] = None  # a joined row's (hidden [H], logits [V]) from its prefill
    cache: Any = None  # a joined row's own cache until it is merged
    next_token: int = -1
    index: int = 0


def _pad_left(x: Any, n: int, dim: int) -> Any:
    if n == 0:
        return x
    import torch

    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x.new_zeros(shape), x], dim=dim)


class TransformersSlots(Slots):
    """``n`` request slots of a
    :class:`~autodeco_samplers.frontends.server.engines.TransformersEngine` decoded as one batch
    (module docstring)."""

    def __init__(self, engine: Any, n: int) -> None:
        import torch

        from autodeco_samplers.adapters.transformers import get_attachment

        self.engine = engine
        self.torch = torch
        self.model = engine.model
        self.att = get_attachment(self.model)
        if self.att is None:
            raise AutoDecoError("the transformers engine's model has no AutoDeco heads attached")
        self.n_slots = int(n)
        self.device = engine.device
        self.rows: Dict[int, _Row] = {}
        self.batch: List[_Row] = []  # rows in the shared cache, in cache-row order
        self.cache: Any = None
        self.mask: Any = None  # [B, L] long: 1 for a real cached token, 0 for left padding
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers renamed it

    # --- joining -------------------------------------------------------------------------
    def _check_cache(self, cache: Any) -> None:
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer).__name__ != "DynamicLayer" or getattr(layer, "is_sliding", False)
                             for layer in layers):
            raise AutoDecoError(
                f"batched serving needs a plain full-attention key-value cache; {type(self.model).__name__} uses "
                f"{sorted({type(layer).__name__ for layer in (layers or [])})}: run the server with --parallel 1")

    def _forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any) -> Tuple[Any, Any]:
        """One forward; ``(hidden [B, H], logits [B, V] float32)`` of each row's last position."""
        self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
        hidden, lm_out = self.att.last_forward()
        return hidden[:, -1], lm_out[:, -1].float()

    def join(self, job: SequenceJob) -> int:
        from transformers import DynamicCache

        from autodeco_samplers.core.text_stream import IncrementalDetokenizer, StopTextStream

        torch = self.torch
        free = [s for s in range(self.n_slots) if s not in self.rows]
        if not free:
            raise AutoDecoError("no free slot")
        seed = self.engine.request_seed(job)
        try:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        except RuntimeError as exc:
            raise bad_request(f"seed {seed} cannot seed torch's generator: {exc}", param="seed") from None
        ids = torch.tensor([job.prompt_ids], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)
        with torch.no_grad():
            hidden, logits = self._forward(ids, torch.ones_like(ids), torch.arange(ids.shape[1], device=self.device)[None],
                                           cache)
        self._check_cache(cache)
        row = _Row(free[0], job, generator, IncrementalDetokenizer(self.engine._decode), StopTextStream(job.stops),
                   len(job.prompt_ids), pending=(hidden[0], logits[0]), cache=cache)
        self.rows[row.slot] = row
        return row.slot

    def _merge(self, row: _Row) -> None:
        torch = self.torch
        own = torch.ones((1, row.n_tokens), dtype=torch.long, device=self.device)
        if self.cache is None:
            self.cache, self.mask, self.batch = row.cache, own, [row]
        else:
            lb, lr = self.mask.shape[1], row.n_tokens
            width = max(lb, lr)
            for shared, mine in zip(self.cache.layers, row.cache.layers):
                shared.keys = torch.cat([_pad_left(shared.keys, width - lb, 2), _pad_left(mine.keys, width - lr, 2)], 0)
                shared.values = torch.cat([_pad_left(shared.values, width - lb, 2), _pad_left(mine.values, width - lr, 2)], 0)
            self.mask = torch.cat([_pad_left(self.mask, width - lb, 1), _pad_left(own, width - lr, 1)], 0)
            self.batch.append(row)
        row.cache = None

    def _drop(self, gone: List[_Row]) -> None:
        """Remove finished rows from the shared cache and cut all-padding columns."""
        torch = self.torch
        if not gone or self.cache is None:
            return
        keep = [i for i, r in enumerate(self.batch) if r not in gone]
        self.batch = [self.batch[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self.mask.index_select(0, index)
        start = int((mask.sum(0) > 0).nonzero()[0, 0])
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]
        self.mask = mask[:, start:]

    # --- one step ------------------------------------------------------------------------
    def _batched_outputs(self) -> Tuple[List[_Row], Any, Any]:
        torch = self.torch
        if not self.batch:
            return [], None, None
        b = len(self.batch)
        ids = torch.tensor([[r.next_token] for r in self.batch], dtype=torch.long, device=self.device)
        mask = torch.cat([self.mask, torch.ones((b, 1), dtype=torch.long, device=self.device)], 1)
        pos = torch.tensor([[r.n_tokens] for r in self.batch], dtype=torch.long, device=self.device)
        hidden, logits = self._forward(ids, mask, pos, self.cache)
        self.mask = mask
        for r in self.batch:
            r.n_tokens += 1
        return list(self.batch), hidden, logits

    def _sample(self, rows: List[_Row], hidden: Any, logits: Any) -> Tuple[Any, List[int], List[Optional[Exception]]]:
        """One batched torch step per group of rows sharing a policy base (the server's, unless
        a request fixes T or P), request multipliers per row; one draw per row with its own
        generator. Returns ``(step values [4, R], tokens, errors)``."""
        torch = self.torch
        groups: Dict[DecodingPolicy, List[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(dataclasses.replace(r.job.policy, temperature=1.0, top_p=1.0), []).append(i)
        values = torch.zeros((4, len(rows)), dtype=torch.float32)
        tokens: List[int] = [-1] * len(rows)
        errors: List[Optional[Exception]] = [None] * len(rows)
        for base, idx in groups.items():
            index = torch.tensor(idx, dtype=torch.long, device=hidden.device)
            h, lg = hidden.index_select(0, index), logits.index_select(0, index)
            t = torch.tensor([rows[i].job.policy.temperature for i in idx], dtype=lg.dtype, device=lg.device)
            p = torch.tensor([rows[i].job.policy.top_p for i in idx], dtype=lg.dtype, device=lg.device)
            try:
                st = self.att.step(h, lg, lm_out=lg, policy=base, temperature=t, top_p=p)
                probs = torch.softmax(st.logits, dim=-1)
            except AutoDecoError as exc:
                for i in idx:
                    errors[i] = exc
                continue
            values[:, idx] = torch.stack([st.T_pred, st.P_pred, st.T, st.P]).float().cpu()
            for k, i in enumerate(idx):
                tokens[i] = int(torch.multinomial(probs[k : k + 1], 1, generator=rows[i].generator)[0, 0])
        return values, tokens, errors

    def step(self) -> List[StepOut]:
        torch = self.torch
        with torch.no_grad():
            rows, hidden, logits = self._batched_outputs()
            joined = [r for r in sorted(self.rows.values(), key=lambda r: r.slot) if r.pending is not None]
            if joined:
                jh = torch.stack([r.pending[0] for r in joined])
                jl = torch.stack([r.pending[1] for r in joined])
                hidden = jh if hidden is None else torch.cat([hidden, jh])
                logits = jl if logits is None else torch.cat([logits, jl])
                rows = rows + joined
            if not rows:
                return []
            values, tokens, errors = self._sample(rows, hidden, logits)
        want_rows = any(r.job.logprobs is not None for r in rows)
        scores = logits.cpu().numpy() if want_rows else None
        out: List[StepOut] = []
        gone: List[_Row] = []
        for i, r in enumerate(rows):
            if errors[i] is not None:
                out.append((r.slot, None, None, bad_request(f"this request cannot be decoded: {errors[i]}")))
                self._end(r, gone)
                continue
            token = tokens[i]
            T_pred, P_pred, T, P = (float(v) for v in values[:, i])
            eog = token in self.engine.eos_ids
            reason = None
            if eog:
                released = r.text.finish(r.detok.flush())
                reason = "eos"
            else:
                released, stopped = r.text.push(r.detok.push(token))
                if stopped:
                    reason = "stop"
                elif r.index + 1 >= r.job.max_tokens:  # the server cut max_tokens to the context's room
                    released += r.text.finish(r.detok.flush())
                    reason = "length"
            lp = top = None
            if r.job.logprobs is not None:
                lp, top = canonical_logprobs(scores[i], T, P, token, r.job.logprobs)
            out.append((r.slot, TokenOut(r.index, token, released, T_pred, P_pred, T, P, eog=eog, logprob=lp,
                                         top_logprobs=top), None, None))
            r.index += 1
            r.next_token = token
            if reason is not None:
                slot, tok, _, _ = out[-1]
                out[-1] = (slot, tok, SequenceEnd(reason, r.text.text, r.index), None)
                self._end(r, gone)
        for r in joined:
            r.pending = None
            if r.slot in self.rows and self.rows[r.slot] is r:
                self._merge(r)
        self._drop(gone)
        return out

    def _end(self, row: _Row, gone: List[_Row]) -> None:
        self.rows.pop(row.slot, None)
        row.cache = None
        if row in self.batch:
            gone.append(row)

    def leave(self, slot: int) -> SequenceEnd:
        row = self.rows.pop(slot, None)
        if row is None:
            return SequenceEnd("cancelled", "", 0)
        if row in self.batch:
            self._drop([row])
        return SequenceEnd("cancelled", row.text.text, row.index)

    def active(self) -> int:
        return len(self.rows)

    def close(self) -> None:
        self.rows.clear()
        self.batch = []
        self.cache = self.mask = None
