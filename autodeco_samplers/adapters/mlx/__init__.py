"""AutoDeco on mlx-lm (Apple's MLX: Metal on Apple silicon, a CPU build on Linux).

One line, then mlx-lm's own loops::

    import mlx_lm
    from autodeco_samplers.adapters.mlx import attach

    model, tokenizer = mlx_lm.load("path/to/model")
    autodeco = attach(model, "path/to/heads", seed=0)        # or heads=load_heads(...)
    text = mlx_lm.generate(model, tokenizer, "Name an animal.", max_tokens=64, sampler=autodeco.sampler)
    autodeco.trace                                           # T_pred, P_pred, T, P per token

What :func:`attach` does (wiring only, no rule of its own):

1. :func:`~autodeco_samplers.adapters.mlx.tap.tap_hidden` makes the model's backbone
   (``model.model``, whose output the output layer reads) keep the final hidden state of the
   position it scores;
2. :class:`~autodeco_samplers.adapters.mlx.sampler.AutoDecoSampler`, the ``sampler`` mlx-lm
   calls after each forward, runs the NumPy heads and the canonical rule on that row through
   the core's one NumPy step (:func:`autodeco_samplers.core.step.numpy_step_sample`) and draws
   the token with a seeded NumPy generator.

No logits processor is needed (the sampler sees the log-probabilities, a per-row shift of the
logits, which leaves both the heads' features and the canonical distribution unchanged);
processors the caller passes to mlx-lm still run first. :func:`generate` wraps
mlx-lm's ``generate_step`` and returns the :class:`~autodeco_samplers.core.interfaces.GenerationResult`
every adapter reports. Only single-sequence generation is supported (docs/mlx.md says why
``mlx_lm.batch_generate`` and ``mlx_lm.server`` are not). MLX is imported when first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from autodeco_samplers.adapters.mlx.config import rope_overrides
from autodeco_samplers.adapters.mlx.sampler import AutoDecoSampler, OnStep
from autodeco_samplers.adapters.mlx.tap import HiddenTap, tap_hidden
from autodeco_samplers.core.errors import InvalidParameterError, ShapeError
from autodeco_samplers.core.interfaces import GenerationResult, TokenStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.heads import AutoDecoHeads, load_heads

__all__ = ["ENGINE_NAME", "AutoDecoMLX", "attach", "load", "generate", "model_hidden_size", "rope_overrides"]

ENGINE_NAME = "mlx"

HeadsLike = Union[AutoDecoHeads, str, Path]


def model_hidden_size(model: Any) -> Optional[int]:
    """The backbone's hidden size from the model's ``args`` (``None`` if it does not say)."""
    args = getattr(model, "args", None)
    size = getattr(args, "hidden_size", None)
    return int(size) if size is not None else None


class AutoDecoMLX:
    """What :func:`attach` returns: ``sampler`` for mlx-lm, its ``trace``, and :meth:`detach`.

    Attributes:
        sampler: the :class:`AutoDecoSampler` to pass as ``sampler=`` to ``mlx_lm.generate``,
            ``stream_generate`` or ``generate_step``.
        logits_processors: ``[]``: nothing else is needed (kept so callers can splat it).
        heads: the NumPy heads; ``policy``: the deployment policy times the request's multipliers.
    """

    def __init__(self, model: Any, tap: HiddenTap, sampler: AutoDecoSampler) -> None:
        self.model = model
        self.tap = tap
        self.sampler = sampler
        self.logits_processors: List[Any] = []

    @property
    def heads(self) -> AutoDecoHeads:
        return self.sampler.heads

    @property
    def policy(self) -> DecodingPolicy:
        return self.sampler.policy

    @property
    def trace(self) -> List[TokenStep]:
        """One :class:`TokenStep` per draw since the last :meth:`reset` (see
        :attr:`AutoDecoSampler.trace` for the one extra draw mlx-lm makes ahead)."""
        return self.sampler.trace

    def reset(self, seed: Optional[int] = None) -> None:
        """Empty the trace and reseed the sampler's generator."""
        self.sampler.reset(seed)

    def detach(self) -> None:
        """Remove the tap: the model is back to its own class (the sampler must not be used again)."""
        self.tap.remove()


def _resolve_heads(heads: HeadsLike, hidden_size: Optional[int]) -> AutoDecoHeads:
    if isinstance(heads, (str, Path)):
        return load_heads(heads, hidden_size=hidden_size)
    if not hasattr(heads, "predict") or not hasattr(heads, "hidden_size"):
        raise InvalidParameterError(f"heads must be AutoDecoHeads or a checkpoint path, got {type(heads).__name__}")
    if hidden_size is not None and int(heads.hidden_size) != hidden_size:
        raise ShapeError(f"hidden-size mismatch: the model has hidden_size={hidden_size} but the heads "
                         f"expect {heads.hidden_size}")
    return heads


def attach(model: Any, heads: HeadsLike, policy: Optional[DecodingPolicy] = None, *,
           temperature: Optional[float] = None, top_p: Optional[float] = None, seed: Optional[int] = None,
           exact: bool = False, on_step: Optional[OnStep] = None) -> AutoDecoMLX:
    """Attach AutoDeco heads to an mlx-lm model.

    Args:
        model: an mlx-lm causal LM (``mlx_lm.load(...)[0]``); its backbone is tapped in place.
        heads: :class:`AutoDecoHeads` or any checkpoint form :func:`load_heads` reads (folder,
            ``.safetensors``, ``.gguf`` sidecar); their ``hidden_size`` must be the model's,
            else :class:`ShapeError`.
        policy: the deployment's :class:`DecodingPolicy` (default: the heads' predictions as they are).
        temperature, top_p: the request's multipliers (:meth:`DecodingPolicy.for_request`:
            finite, ``>= 0``; 0 temperature is greedy).
        seed: seed of the NumPy generator that draws the tokens.
        exact: run the reference's full sort instead of the sort-free nucleus (same result).
        on_step: called after each draw with the hidden state, log-probabilities and step.
    """
    policy = (policy or DecodingPolicy()).for_request(temperature, top_p)
    heads = _resolve_heads(heads, model_hidden_size(model))
    tap = tap_hidden(model)
    return AutoDecoMLX(model, tap, AutoDecoSampler(tap, heads, policy, seed=seed, exact=exact, on_step=on_step))


def load(path: Union[str, Path], heads: HeadsLike, policy: Optional[DecodingPolicy] = None, **kwargs):
    """``mlx_lm.load(path)`` then :func:`attach`: returns ``(model, tokenizer, autodeco)``.

    For a local folder written by transformers 5 the rotary parameters are passed to mlx-lm
    explicitly (:func:`~autodeco_samplers.adapters.mlx.config.rope_overrides`: mlx-lm 0.32 reads
    only the old top-level ``rope_theta`` and would otherwise fall back to 10000)."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(path), model_config=rope_overrides(path))
    return model, tokenizer, attach(model, heads, policy, **kwargs)


def generate(autodeco: AutoDecoMLX, tokenizer: Any, prompt: Union[str, Sequence[int]], *, max_tokens: int = 256,
             seed: Optional[int] = None, stop_at_eos: bool = True) -> GenerationResult:
    """One generation through mlx-lm's ``generate_step`` (the loop under ``generate`` and
    ``stream_generate``) with the AutoDeco sampler, reported as
    the shared :class:`GenerationResult` (``engine="mlx"``; ``steps[i]`` is the trace of
    ``token_ids[i]``). ``seed`` reseeds the sampler first (``None`` keeps its generator).
    ``stop_at_eos=False`` ignores the tokenizer's end-of-generation ids."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    if max_tokens < 0:
        raise InvalidParameterError(f"max_tokens must be >= 0, got {max_tokens}")
    prompt_ids = list(tokenizer.encode(prompt)) if isinstance(prompt, str) else [int(t) for t in prompt]
    if not prompt_ids:
        raise InvalidParameterError("the prompt is empty: mlx-lm needs at least one token")
    if seed is not None:
        autodeco.sampler.reset(seed)
    else:
        autodeco.sampler.trace = []
    eos = set(getattr(tokenizer, "eos_token_ids", None) or []) if stop_at_eos else set()
    token_ids: List[int] = []
    finish = "length"
    for tok, _ in generate_step(mx.array(prompt_ids), autodeco.model, max_tokens=max_tokens,
                                       sampler=autodeco.sampler):
        token_ids.append(int(tok))
        if int(tok) in eos:
            finish = "eos"
            break
    text_ids = [t for t in token_ids if t not in eos]
    text = tokenizer.decode(text_ids, skip_special_tokens=True) if hasattr(tokenizer, "decode") else None
    return GenerationResult(ENGINE_NAME, prompt_ids, token_ids, text, list(autodeco.trace[: len(token_ids)]), finish)
