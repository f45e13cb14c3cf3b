"""Model classes: vLLM's stock ``*ForCausalLM`` plus AutoDeco when config.json asks for it.

:func:`autodeco_model_class` builds a subclass *with the base class's name* (vLLM switches
behaviour on architecture names). Without an ``autodeco`` block in ``config.json`` the
subclass is the stock class: ``__init__``, ``compute_logits`` and ``load_weights`` fall
straight through to it. With the block it

* holds float32 heads (``self.autodeco_heads``), replicated on every tensor-parallel rank;
* routes weights in ``load_weights``: head tensors (``temp_head.*`` / ``top_p_head.*``, with or
  without the ``llm.`` prefix of official merged checkpoints) go to the heads; every other
  tensor loses a leading ``llm.`` and goes to the stock loader. Loading fails with
  :class:`~autodeco_samplers.core.errors.CheckpointError` naming each missing head tensor, or
  :class:`~autodeco_samplers.core.errors.ShapeError` naming a mis-shaped one;
* returns from ``compute_logits`` the logits of the core step
  :func:`autodeco_samplers.core.step.torch_step_logits`: vLLM's runner passes the post-norm
  hidden rows it samples from (one per request per step; under speculative decoding one per
  verified position plus the bonus one, :mod:`.speculative`), so the heads read exactly what
  ``lm_head`` read, and vLLM's sampler (or its rejection sampler) at temperature 1 / top-p 1
  draws from the canonical AutoDeco distribution (``docs/design.md`` section 3). Requests
  that set ``autodeco_temperature`` / ``autodeco_top_p`` in ``extra_args`` get those
  multipliers for all their rows (:mod:`.knobs`).

Trace (debugging and the conformance suite's end-to-end level): when the environment
variable :data:`TRACE_ENV` names a folder, every ``compute_logits`` call of an AutoDeco model
writes ``step_NNNNNN_rankR.npz`` there with the raw logits, hidden rows and the predicted /
used ``T`` and ``P`` of each row (batch order). It syncs with the host on every step: never
for serving.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Set

import torch

from autodeco_samplers.heads.io.served import autodeco_block_of, compiled_step_of, parse_autodeco_block
from autodeco_samplers.heads.io.engine_weights import HeadWeightsMixin, Weights
from autodeco_samplers.core.step import TorchStep, torch_step_logits

HEADS_ATTR = "autodeco_heads"
TRACE_ENV = "AUTODECO_VLLM_TRACE_DIR"


class AutoDecoModelMixin(HeadWeightsMixin):
    """Mixed in front of a stock vLLM ``*ForCausalLM``; see the module docstring."""

    autodeco_prepare_command = "autodeco prepare-vllm"
    autodeco_heads_prefix = f"{HEADS_ATTR}."

    def __init__(self, *, vllm_config: Any, prefix: str = "", **kwargs: Any) -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)
        config = vllm_config.model_config.hf_config
        block = autodeco_block_of(config)
        self.autodeco_enabled = block is not None
        self._autodeco_loaded: Set[str] = set()
        self._autodeco_ready = False
        self._autodeco_trace = os.environ.get(TRACE_ENV) or None
        self._autodeco_calls = 0
        if not self.autodeco_enabled:
            return
        from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

        text_config = getattr(config, "get_text_config", lambda: config)()
        heads_config, policy = parse_autodeco_block(block, model_hidden_size=getattr(text_config, "hidden_size", None))
        heads = AutoDecoHeadsModule(heads_config).float().eval()
        for p in heads.parameters():
            p.requires_grad_(False)
        setattr(self, HEADS_ATTR, heads)
        self.autodeco_policy = policy
        self.autodeco_compiled = compiled_step_of(block)
        if getattr(vllm_config, "speculative_config", None) is not None:
            from autodeco_samplers.adapters.vllm.speculative import check_supported, install_runner_hook, repair_cpu_expand

            check_supported(vllm_config)
            install_runner_hook()
            repair_cpu_expand()

    # -- weights ---------------------------------------------------------------------------
    def load_weights(self, weights: Weights, *args: Any, **kwargs: Any):
        if not self.autodeco_enabled:
            return super().load_weights(weights, *args, **kwargs)
        stock = super(AutoDecoModelMixin, self).load_weights
        return self._load_weights_and_heads(lambda base: stock(base, *args, **kwargs), weights)

    # -- logits ----------------------------------------------------------------------------
    def compute_logits(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        logits = super().compute_logits(hidden_states, *args, **kwargs)
        if not self.autodeco_enabled or logits is None:
            return logits
        from autodeco_samplers.adapters.vllm.knobs import row_multipliers

        t, p = row_multipliers(logits.shape[0], logits.device)
        # vLLM computes logits outside its captured CUDA graphs, so the step's default sync
        # applies (one boolean read per step on the CPU, none on a GPU)
        step = torch_step_logits(hidden_states, logits, getattr(self, HEADS_ATTR), self.autodeco_policy,
                                 temperature=t, top_p=p, compiled=self.autodeco_compiled)
        if self._autodeco_trace:
            self._write_trace(logits, hidden_states, step)
        return step.logits

    def _write_trace(self, logits: torch.Tensor, hidden: torch.Tensor, step: TorchStep) -> None:
        import numpy as np

        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        folder = Path(self._autodeco_trace)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"logits": logits, "hidden": hidden, "T_pred": step.T_pred, "P_pred": step.P_pred, "T": step.T, "P": step.P}
        np.savez(folder / f"step_{self._autodeco_calls:06d}_rank{rank}.npz",
                 **{k: v.detach().float().cpu().numpy() for k, v in arrays.items()})
        self._autodeco_calls += 1


def _local_logits_for(base: type):
    def compute_logits_local(self, *args: Any, **kwargs: Any):
        """vLLM's vocabulary-sharded logits (V2 runner): stock without heads, refused with them."""
        if not self.autodeco_enabled:
            return base.compute_logits_local(self, *args, **kwargs)
        raise NotImplementedError(
            "AutoDeco needs the full vocabulary row of each step (the nucleus depends on every token's probability); "
            "vocabulary-sharded sampling is not supported with an autodeco checkpoint"
        )

    return compute_logits_local


def autodeco_model_class(base: type) -> type:
    """A subclass of vLLM model class ``base`` with the same ``__name__`` (and
    ``__qualname__``) adding :class:`AutoDecoModelMixin`; defined in the caller's module."""
    import sys

    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    namespace: Dict[str, Any] = {"__module__": caller, "__qualname__": base.__qualname__}
    if hasattr(base, "compute_logits_local"):  # only where the stock class offers it
        namespace["compute_logits_local"] = _local_logits_for(base)
    cls = type(base.__name__, (AutoDecoModelMixin, base), namespace)
    cls.__doc__ = f"vLLM ``{base.__name__}`` with AutoDeco heads when config.json has an ``autodeco`` block."
    return cls
