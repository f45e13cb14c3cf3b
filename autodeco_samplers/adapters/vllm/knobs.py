"""Per-request AutoDeco multipliers through vLLM's logits-processor interface.

vLLM's own ``temperature`` / ``top_p`` are applied by its sampler *after* the model (see
``docs/vllm.md``, "Request knobs"). For the official multiplier rule per request, a request
names AutoDeco's own knobs in ``SamplingParams.extra_args`` (OpenAI server:
``"vllm_xargs"``):

* ``autodeco_temperature`` (float >= 0): ``T_used = T_base * autodeco_temperature``; 0 is greedy;
* ``autodeco_top_p`` (float >= 0): ``P_used = clamp(P_base * autodeco_top_p, 0, 1)``.

Any other ``autodeco_*`` key (a misspelling such as ``autodeco_tempreature``) is refused with
a ``ValueError`` naming the known keys (a 400 through vLLM's server), never silently ignored;
keys without the ``autodeco_`` prefix belong to other plugins and are left alone.

Each multiplies the server-wide multiplier of the folder's policy for that request, the one
request-knob rule of every engine (:meth:`DecodingPolicy.for_request`; other policy fields,
min/max/fixed, still apply). How they reach the model: vLLM builds
:class:`AutoDecoRequestKnobs` in each worker (entry-point group ``vllm.logits_processors``)
and calls its ``update_state`` with every request added to, moved in or removed from the
persistent batch *before* the forward pass; it keeps the non-default multipliers per batch
row in a per-process table that the model's ``compute_logits`` reads for the same rows
(:func:`row_multipliers`). ``apply`` leaves the logits untouched.

Under speculative decoding vLLM builds no plugin logits processors (it keeps only its own
min-tokens processor), so :class:`AutoDecoRequestKnobs` never sees a request there. Instead
the runner hook of :mod:`.speculative` publishes each step's multipliers with
:func:`publish_speculative_step`, expanded to the step's logits rows: a request with ``k``
drafts owns ``k + 1`` consecutive rows (one per verified position plus the bonus position),
and every one of them gets that request's multipliers.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from autodeco_samplers.core.policy import check_knob

EXTRA_TEMPERATURE = "autodeco_temperature"
EXTRA_TOP_P = "autodeco_top_p"
KNOWN_KEYS = (EXTRA_TEMPERATURE, EXTRA_TOP_P)
PREFIX = "autodeco_"

#: The batch-row table of this process: ``{row: (temperature, top_p)}`` with ``None`` for
#: "use the server's multiplier", plus the current batch size. One runner per process.
_ROWS: Dict[int, Tuple[Optional[float], Optional[float]]] = {}
_BATCH = {"size": 0, "fresh": False}
#: The step table under speculative decoding (:func:`publish_speculative_step`): per-row
#: multiplier tensors (or None when no request of the step set one) and the row count.
_SPEC_STEP: Dict[str, Any] = {"t": None, "p": None, "rows": -1, "fresh": False}


def _value(extra: Any, key: str) -> Optional[float]:
    if not extra or key not in extra:
        return None
    return check_knob(key, extra[key])  # InvalidParameterError is a ValueError, as vLLM expects


def check_extra_keys(extra: Any) -> None:
    """Refuse an ``autodeco_*`` key of ``extra_args`` that is not one of :data:`KNOWN_KEYS`
    (``ValueError`` naming it and the known keys)."""
    if not extra:
        return
    unknown = sorted(str(k) for k in extra if str(k).startswith(PREFIX) and k not in KNOWN_KEYS)
    if unknown:
        raise ValueError(f"unknown AutoDeco request key{'s' if len(unknown) > 1 else ''} in vllm_xargs: "
                         f"{', '.join(unknown)}; the known keys are {', '.join(KNOWN_KEYS)}")


def request_multipliers(params: Any) -> Optional[Tuple[Optional[float], Optional[float]]]:
    """``(temperature, top_p)`` multipliers a request asks for in ``extra_args``, or None;
    ``ValueError`` for an unknown ``autodeco_*`` key (:func:`check_extra_keys`) or a bad value."""
    extra = getattr(params, "extra_args", None)
    check_extra_keys(extra)
    t, p = _value(extra, EXTRA_TEMPERATURE), _value(extra, EXTRA_TOP_P)
    return None if t is None and p is None else (t, p)


def row_multipliers(rows: int, device) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Per-row ``[rows]`` request multipliers for the ``rows`` logits rows of this step (1.0
    where a request set none; :meth:`DecodingPolicy.apply` multiplies them into the policy's),
    or ``(None, None)`` when no request of the batch set one. Only the first call after each
    ``update_state`` (the sampling pass; vLLM refreshes the batch state every step) sees the
    table: a later call in the same step (a ``prompt_logprobs`` pass over prompt positions)
    uses the server's multipliers."""
    if _SPEC_STEP["fresh"]:
        return _speculative_rows(rows, device)
    fresh, _BATCH["fresh"] = _BATCH["fresh"], False
    if not _ROWS or not fresh or rows != _BATCH["size"]:
        return None, None
    t = torch.ones(rows, dtype=torch.float32)
    p = torch.ones(rows, dtype=torch.float32)
    for row, (rt, rp) in _ROWS.items():
        if row < rows:
            if rt is not None:
                t[row] = rt
            if rp is not None:
                p[row] = rp
    return t.to(device), p.to(device)


def publish_speculative_step(
    per_request: Sequence[Optional[Tuple[Optional[float], Optional[float]]]], rows_per_request: Sequence[int]
) -> None:
    """Publish the multipliers of the coming speculative step (called by the runner hook of
    :mod:`.speculative` before the forward pass). ``per_request[i]`` is request ``i``'s
    :func:`request_multipliers` (batch order) and ``rows_per_request[i]`` its number of logits
    rows, ``drafts + 1``; the rows of one request are consecutive. The next
    :func:`row_multipliers` call (the sampling pass) gets them, row by row."""
    counts = np.asarray(rows_per_request, dtype=np.int64)
    if len(per_request) != counts.shape[0]:
        raise ValueError(f"{len(per_request)} requests but {counts.shape[0]} row counts")
    t = p = None
    if any(m is not None for m in per_request):
        per_t = np.array([1.0 if m is None or m[0] is None else m[0] for m in per_request], dtype=np.float32)
        per_p = np.array([1.0 if m is None or m[1] is None else m[1] for m in per_request], dtype=np.float32)
        t, p = torch.from_numpy(np.repeat(per_t, counts)), torch.from_numpy(np.repeat(per_p, counts))
    _SPEC_STEP.update(t=t, p=p, rows=int(counts.sum()), fresh=True)


def _speculative_rows(rows: int, device) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The published step's per-row multipliers, once (later calls of the step, such as a
    ``prompt_logprobs`` pass, use the server's multipliers). A row count other than the
    published one means vLLM laid the rows out in a way this adapter does not know: refused
    rather than sampled with multipliers on the wrong rows."""
    _SPEC_STEP["fresh"] = False
    t, p = _SPEC_STEP["t"], _SPEC_STEP["p"]
    if t is None:
        return None, None
    if rows != _SPEC_STEP["rows"]:
        raise RuntimeError(
            f"AutoDeco speculative decoding: compute_logits got {rows} rows but the step has "
            f"{_SPEC_STEP['rows']} (drafts + 1 per request); the per-request multipliers cannot be "
            "mapped to the rows (vLLM version not supported, see docs/vllm.md)"
        )
    return t.to(device), p.to(device)


try:
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
    from vllm.v1.sample.logits_processor.builtin import process_dict_updates
except ImportError:  # vLLM not installed: the module still documents the knobs
    LogitsProcessor = object  # type: ignore[assignment,misc]


class AutoDecoRequestKnobs(LogitsProcessor):  # type: ignore[misc,valid-type]
    """Tracks ``autodeco_temperature`` / ``autodeco_top_p`` of the requests per batch row."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        request_multipliers(sampling_params)  # raises ValueError naming the bad knob

    def __init__(self, vllm_config, device, is_pin_memory) -> None:
        _ROWS.clear()
        _BATCH["size"] = 0

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: "Optional[BatchUpdate]") -> None:
        _BATCH["fresh"] = True
        if batch_update is None:
            return
        _BATCH["size"] = batch_update.batch_size
        process_dict_updates(_ROWS, batch_update, lambda params, _prompt, _out: request_multipliers(params))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits
