"""The per-token trace of a Hugging Face ``generate()`` call made with AutoDeco heads.

:class:`AutoDecoTrace` holds, for every generated position of every returned sequence, the
generated token id, the predicted ``T_pred`` / ``P_pred`` and the ``T`` / ``P`` actually used,
all ``[B, n]`` tensors aligned with ``sequences[:, prompt_len:]``. ``mask[b, s]`` is ``False``
for positions that are padding: once a row has finished (EOS, or one of the caller's
stopping criteria, while generation goes on for other rows) transformers appends
``pad_token_id`` to it, and those positions are not tokens the row generated.

Exact rule for ``mask`` (mirrors ``GenerationMixin._sample`` in transformers 5.x): when
``generate`` has an EOS stopping criterion, a row is finished *after* step ``s`` if its token
at ``s`` is one of the EOS ids or a recorded per-row stopping criterion said so at ``s``;
every later position of a finished row is padding. Without any EOS stopping criterion
transformers replaces nothing, so every position is a real token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from autodeco_samplers.core.interfaces import GenerationResult, TokenStep

__all__ = ["AutoDecoTrace"]


@dataclass
class AutoDecoTrace:
    """Per-token record of one ``generate()`` call; tensors are ``[B, n]`` on the CPU.

    Attributes:
        token_ids: the generated ids, ``sequences[:, prompt_len:]``.
        T_pred, P_pred: what the heads predicted at each position (float32).
        T, P: what was used for sampling after the decoding policy and the request's
            multipliers (``T == 0`` means greedy: ``do_sample=False`` or temperature 0).
        mask: ``True`` where the position is a token the row generated, ``False`` for the
            padding appended after the row finished.
        finish_reasons: per row ``"eos"``, ``"stop"`` (a stopping criterion) or ``"length"``.
        prompt_ids: per row, the prompt ids without left padding (``None`` if unknown).
    """

    token_ids: Any
    T_pred: Any
    P_pred: Any
    T: Any
    P: Any
    mask: Any
    finish_reasons: List[str]
    prompt_ids: Optional[List[List[int]]] = None

    @property
    def num_rows(self) -> int:
        return int(self.token_ids.shape[0])

    def lengths(self) -> List[int]:
        """Number of real generated tokens per row."""
        return [int(v) for v in self.mask.sum(dim=1).tolist()]

    def steps(self, row: int) -> List[TokenStep]:
        """The :class:`TokenStep` list of one row (padding positions left out)."""
        n = self.lengths()[row]
        cols = [self.token_ids[row, :n], self.T_pred[row, :n], self.P_pred[row, :n], self.T[row, :n], self.P[row, :n]]
        ids, tp, pp, t, p = (c.tolist() for c in cols)
        return [TokenStep(int(a), float(b), float(c), float(d), float(e)) for a, b, c, d, e in zip(ids, tp, pp, t, p)]

    def rows(self) -> List[List[TokenStep]]:
        return [self.steps(b) for b in range(self.num_rows)]

    def results(self, tokenizer: Any = None, engine: str = "transformers") -> List[GenerationResult]:
        """One :class:`GenerationResult` per row (the JSON schema shared by every engine);
        ``text`` is decoded with ``tokenizer`` when given, without special tokens (the policy
        of every engine: ``token_ids`` keep EOS, ``text`` never shows it)."""
        out = []
        for b in range(self.num_rows):
            steps = self.steps(b)
            ids = [s.token_id for s in steps]
            text = tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else None
            prompt = self.prompt_ids[b] if self.prompt_ids is not None else []
            out.append(GenerationResult(engine, list(prompt), ids, text, steps, self.finish_reasons[b]))
        return out


def build_trace(
    sequences: Any,
    prompt_len: int,
    records: Sequence[Any],
    stop_flags: Sequence[Any],
    eos_ids: Sequence[int],
    prompt_ids: Optional[List[List[int]]] = None,
    *,
    padded: Optional[bool] = None,
) -> AutoDecoTrace:
    """Assemble the trace from per-step records ``[4, B]`` (T_pred, P_pred, T, P) and the
    per-step ``[B]`` flags of the caller's per-row stopping criteria. ``padded`` says whether
    transformers replaced finished rows' tokens by padding (default: whether ``eos_ids``)."""
    import torch

    gen = sequences[:, prompt_len:].detach().cpu()
    B = gen.shape[0]
    # MPS defers its stop check by one step and undoes the extra one: never more records
    # than generated tokens.
    n = min(gen.shape[1], len(records))
    gen = gen[:, :n]
    if n:
        rec = torch.stack([r.detach().float().cpu() for r in records[:n]], dim=2)  # [4, B, n]
    else:
        rec = torch.zeros(4, B, 0)
    mask = torch.ones(B, n, dtype=torch.bool)
    reasons = ["length"] * B
    if padded is None:
        padded = bool(eos_ids)
    if padded:
        eos = torch.isin(gen, torch.tensor(list(eos_ids), dtype=gen.dtype))
        stop = torch.zeros(B, n, dtype=torch.bool)
        for s, flags in enumerate(stop_flags[:n]):
            stop[:, s] = flags.detach().cpu().bool()
        ended = eos | stop
        # finished after step s -> positions s+1.. are padding
        finished_before = torch.cumsum(ended.int(), dim=1) - ended.int() > 0
        mask = ~finished_before
        for b in range(B):
            hit = ended[b].nonzero()
            if hit.numel():
                s = int(hit[0, 0])
                reasons[b] = "eos" if bool(eos[b, s]) else "stop"
    return AutoDecoTrace(gen, rec[0], rec[1], rec[2], rec[3], mask, reasons, prompt_ids)
