"""``AutoDecoSGLangProcessor``: SGLang's ``LogitsProcessor`` plus the AutoDeco transform.

Imports SGLang (``sglang.srt.layers.logits_processor``); only loaded when a model with an
``autodeco`` block is built, or when imported explicitly.

What ``forward`` does, in order:

1. Refuses what it cannot serve, with :class:`SGLangModeError`: multi-item / setwise
   scoring, speculative forward modes (``TARGET_VERIFY``, ``DRAFT_EXTEND_V2``), diffusion
   extend, aux hidden states (EAGLE3 / DFLASH capture), ``FULL`` hidden capture (requests
   with ``return_hidden_states``), and a pre-norm hidden stream (``hidden_states_before_norm``),
   because the heads must read exactly the post-norm state ``lm_head`` reads.
2. Runs the stock forward with hidden capture forced to ``LAST``: the output's
   ``hidden_states`` are then the post-norm rows aligned with ``next_token_logits``.
3. Writes the logits of the core step :func:`autodeco_samplers.core.step.torch_step_logits`
   (heads -> policy -> canonical nucleus: ``(l - max l) / T`` inside, ``fill`` outside) into
   ``next_token_logits`` *in place* (same tensor, same graph buffer) and restores
   ``hidden_states`` to what the stock forward would have returned (``None`` when capture was
   ``NULL``).

Everything in step 3 is static-shaped device work with no host sync, so CUDA graphs capture
it. The TP all-gather has already happened, so every rank holds the full vocabulary row and
its own replica of the heads; all ranks compute the same logits.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Optional

import torch
from sglang.srt.layers.logits_processor import LogitsMetadata, LogitsProcessor, LogitsProcessorOutput
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardBatch

from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.adapters.sglang.config import SGLangModeError
from autodeco_samplers.core.reference import OUTSIDE_NUCLEUS
from autodeco_samplers.core.step import TorchStep, torch_step_logits

_UNSUPPORTED_MODES = {
    "TARGET_VERIFY": "speculative decoding (target verify)",
    "DRAFT_EXTEND_V2": "speculative decoding (draft extend)",
    "DLLM_EXTEND": "diffusion-LLM extend",
}


class AutoDecoSGLangProcessor(LogitsProcessor):
    """A stock ``LogitsProcessor`` whose sampled logits follow AutoDeco.

    Args:
        config: the model's HF config (as for ``LogitsProcessor``).
        heads: the heads (float32 parameters; replicated, never sharded).
        policy: server-wide :class:`DecodingPolicy` (default: the heads' predictions as is).
        fill: value written outside the nucleus (finite, see :data:`OUTSIDE_NUCLEUS`).
        compiled: run each step through ``torch.compile`` (the served folder's
            ``compiled_step``; :func:`autodeco_samplers.core.step.compiled_step`).

    After each forward, ``last_step`` holds the :class:`~autodeco_samplers.core.step.TorchStep` tensors (predicted
    and used T/P per row) of the latest call; reading them is the caller's sync.
    """

    def __init__(
        self,
        config,
        *args,
        heads: AutoDecoHeadsModule,
        policy: Optional[DecodingPolicy] = None,
        fill: float = OUTSIDE_NUCLEUS,
        compiled: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(config, *args, **kwargs)
        self._attach(heads, policy, fill, compiled)

    def _attach(
        self, heads: AutoDecoHeadsModule, policy: Optional[DecodingPolicy], fill: float, compiled: bool = False
    ) -> None:
        self.heads = heads
        self.policy = policy or DecodingPolicy()
        self.fill = float(fill)
        self.compiled = bool(compiled)
        self.last_step: Optional[TorchStep] = None

    @classmethod
    def wrap(
        cls,
        stock: LogitsProcessor,
        heads: AutoDecoHeadsModule,
        policy: Optional[DecodingPolicy] = None,
        fill: float = OUTSIDE_NUCLEUS,
        compiled: bool = False,
    ) -> "AutoDecoSGLangProcessor":
        """Turn an existing stock processor into this class in place, keeping every setting
        the model chose for it (logit scale, all-gather mode, softcapping)."""
        if not isinstance(stock, LogitsProcessor):
            raise TypeError(f"expected a sglang LogitsProcessor, got {type(stock).__name__}")
        stock.__class__ = cls
        stock._attach(heads, policy, fill, compiled)
        return stock  # type: ignore[return-value]

    # -- checks ---------------------------------------------------------------------------
    @staticmethod
    def _refuse(what: str) -> SGLangModeError:
        return SGLangModeError(
            f"AutoDeco SGLang model: {what} is not supported; the heads need the post-norm hidden "
            "state of exactly the rows that are sampled. Serve without it (see docs/sglang.md)."
        )

    def _check(self, metadata: LogitsMetadata, aux_hidden_states, hidden_states_before_norm) -> None:
        mode = metadata.forward_mode
        name = getattr(mode, "name", str(mode))
        if name in _UNSUPPORTED_MODES:
            raise self._refuse(_UNSUPPORTED_MODES[name])
        if aux_hidden_states is not None:
            raise self._refuse("capturing aux hidden states (EAGLE3 / DFLASH speculative decoding)")
        if metadata.capture_hidden_mode == CaptureHiddenMode.FULL:
            raise self._refuse("FULL hidden-state capture (return_hidden_states or a speculative algorithm)")
        if hidden_states_before_norm is not None:
            raise self._refuse("a model that passes hidden_states_before_norm")

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        input_ids,
        hidden_states,
        lm_head,
        logits_metadata,
        aux_hidden_states=None,
        hidden_states_before_norm=None,
    ) -> LogitsProcessorOutput:
        if isinstance(logits_metadata, ForwardBatch):
            batch = logits_metadata
            if batch.is_prefill_only and (
                batch.multi_item_delimiter_indices is not None or batch.token_indices_to_pool is not None
            ):
                raise self._refuse("multi-item / setwise scoring")
            metadata = LogitsMetadata.from_forward_batch(batch)
        else:
            metadata = copy.copy(logits_metadata)
        self._check(metadata, aux_hidden_states, hidden_states_before_norm)
        requested = metadata.capture_hidden_mode
        metadata.capture_hidden_mode = CaptureHiddenMode.LAST
        out = super().forward(input_ids, hidden_states, lm_head, metadata, aux_hidden_states, hidden_states_before_norm)
        logits = out.next_token_logits
        if logits is not None:
            if out.hidden_states is None or out.hidden_states.shape[0] != logits.shape[0]:
                got = None if out.hidden_states is None else tuple(out.hidden_states.shape)
                raise self._refuse(f"a batch whose captured hidden rows {got} do not match the logits {tuple(logits.shape)}")
            with torch.no_grad():
                # sync=False: no host read on any device (this runs inside captured CUDA graphs)
                step = torch_step_logits(
                    out.hidden_states, logits, self.heads, self.policy, fill=self.fill, sync=False,
                    compiled=self.compiled,
                )
                logits.copy_(step.logits)
            self.last_step = replace(step, logits=logits)  # the engine's own (now rewritten) tensor
        if requested != CaptureHiddenMode.LAST:  # NULL (or unset): the caller wants none
            out.hidden_states = None
        return out
