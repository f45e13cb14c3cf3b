"""Hugging Face transformers adapter: AutoDeco heads inside an ordinary ``model.generate()``.

>>> from autodeco_samplers.adapters.transformers import attach, AutoDecoLogitsProcessor  # doctest: +SKIP
>>> handle = attach(model, "path/to/heads")                                            # doctest: +SKIP
>>> proc = AutoDecoLogitsProcessor(model)                                              # doctest: +SKIP
>>> out = model.generate(**enc, do_sample=True, logits_processor=[proc], max_new_tokens=32)  # doctest: +SKIP
>>> proc.trace.steps(0)[0]          # token id, T_pred, P_pred, T, P                  # doctest: +SKIP

How it is wired (no algorithm of its own; each step is one call of the core step
:func:`autodeco_samplers.core.step.torch_step_logits`):

* :func:`attach` registers a forward *pre-hook* on ``model.get_output_embeddings()``. It keeps
  the last position of the tensor ``lm_head`` consumes (``[B, 1, H]`` during ``generate``;
  the last position is the real token under left padding), in thread-local storage of the
  attachment, so threads and models never see each other's hidden states.
* It also wraps ``model.generate`` (an instance attribute; the class is untouched). When the
  call's ``logits_processor`` holds an :class:`AutoDecoLogitsProcessor` of this model, the
  wrapper (1) takes the request's ``temperature`` / ``top_p`` (keyword or in a passed
  ``generation_config``) as *multipliers* of the predicted T and P (docs/design.md section 3);
  (2) sets transformers' own warpers to neutral (temperature 1, top-p 1, top-k 0, typical-p 1,
  epsilon/eta 0) so that they cannot re-truncate the canonical distribution; the model's
  ``generation_config`` static sampling defaults (e.g. ``temperature: 0.6``, ``top_k: 20``)
  are ignored because the heads replace them; an *explicit* request for top-k, min-p, top-h,
  typical-p, epsilon or eta raises :class:`InvalidParameterError`; (3) refuses beam search,
  contrastive search, DoLa and custom generate methods with a clear error; (4) after
  generation stores :class:`AutoDecoTrace` in ``processor.trace``.
* Speculative decoding stays exact: ``assistant_model=draft`` or ``prompt_lookup_num_tokens=k``
  (batch 1, as transformers requires). The target's one forward scores the last token and the
  ``k`` drafts; the processor gives each of those positions the canonical distribution from
  that position's own hidden state (not only the last one), and transformers' verification
  (speculative sampling for a sampled draft, "sample and compare" for prompt lookup) accepts
  or resamples against it, so the output is distributed as plain AutoDeco sampling
  (docs/design.md section 3, "Speculative decoding"). The assistant samples from its own
  plain softmax: the processor leaves calls that belong to no forward of this model unchanged.
  Early-exit, multi-token-prediction, DFlash, ensemble-weighted and cross-tokenizer drafting
  are refused. In assisted mode ``on_step`` is called for every scored position, including
  positions whose draft is later rejected; the trace holds only the emitted tokens.
  Without an AutoDeco processor the call goes to transformers unchanged.
* At each step the processor predicts ``(T_pred, P_pred)`` from the captured hidden state
  and the ``scores`` it receives, applies the policy, and returns logits
  (:func:`~autodeco_samplers.core.step.torch_step_logits`, through
  :meth:`AutoDecoAttachment.step`) whose plain softmax is exactly the canonical
  distribution, which transformers then samples (softmax + multinomial). With
  ``do_sample=False`` it returns the scores unchanged (greedy stays greedy, ties to the lowest
  id) and records ``T = 0``. A request temperature of 0 is greedy as well.
* The heads read the model's own logits of the step (captured by a forward hook on the same
  ``lm_head`` call, with the model's final logit transform), as in the official AutoDeco
  code, whatever processors run before. Processors placed *before* the AutoDeco processor
  (and transformers' own, e.g. repetition penalty, min new tokens) change the logits the
  canonical rule is applied to; the AutoDeco processor must be the last one in the list.
"""

from __future__ import annotations

import copy
import inspect
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from autodeco_samplers.core.errors import AutoDecoError, CheckpointError, InvalidParameterError, ShapeError
from autodeco_samplers.heads.io.detect import is_merged_checkpoint
from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.adapters.transformers.trace import AutoDecoTrace, build_trace

if TYPE_CHECKING:
    from autodeco_samplers.core.step import TorchStep

__all__ = [
    "AutoDecoAttachment",
    "AutoDecoLogitsProcessor",
    "AutoDecoTrace",
    "attach",
    "detach",
    "from_pretrained",
    "get_attachment",
    "is_merged_checkpoint",
    "load_merged_base",
    "load_tokenizer",
]

ENGINE = "transformers"
ATTRIBUTE = "autodeco"
# Warper settings that leave the processor's output untouched.
_NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}
# Explicit requests for these re-truncate AutoDeco's distribution: refused (value -> is neutral).
_FORBIDDEN = {
    "top_k": lambda v: v in (0, None),
    "min_p": lambda v: v in (0, 0.0, None),
    "top_h": lambda v: v is None,
    "typical_p": lambda v: v in (1, 1.0, None),
    "epsilon_cutoff": lambda v: v in (0, 0.0, None),
    "eta_cutoff": lambda v: v in (0, 0.0, None),
}
_ASSISTED = "assisted_generation"
_ALLOWED_MODES = ("sample", "greedy_search", _ASSISTED)


def torch_tanh(x: Any) -> Any:
    import torch

    return torch.tanh(x)


# --------------------------------------------------------------------------- attachment


class _Capture(threading.local):
    """Per-thread capture slot: the last hidden row seen by ``lm_head`` and a counter."""

    def __init__(self) -> None:
        self.hidden = None
        self.logits = None
        self.count = 0


class AutoDecoAttachment:
    """Heads attached to one model: the ``lm_head`` pre-hook and the ``generate`` wrapper.

    Use :func:`attach` to create one. It is a context manager; :meth:`detach` (or leaving the
    ``with`` block) removes the hook and the wrapper and restores the model exactly.

    Attributes:
        model: the ``PreTrainedModel``.
        heads: the :class:`~autodeco_samplers.heads.AutoDecoHeadsModule` (float32; moved to the
            hidden states' device on first use).
        policy: default :class:`DecodingPolicy` of processors made by :meth:`processor`.
        compiled: whether each step runs through ``torch.compile`` (see :func:`attach`).
    """

    def __init__(
        self, model: Any, heads: Any, policy: Optional[DecodingPolicy] = None, compiled: bool = False
    ) -> None:
        self.model = model
        self.compiled = bool(compiled)
        self.heads = heads.float().eval()
        for p in self.heads.parameters():
            p.requires_grad_(False)
        self.policy = policy or DecodingPolicy()
        self._capture = _Capture()
        self._lock = threading.Lock()
        self._hook = None
        self._post = None
        self._original_generate = None
        self.attached = False

    # -- hook ---------------------------------------------------------------------------
    def _pre_hook(self, module: Any, args: Tuple[Any, ...]) -> None:
        x = args[0]
        cap = self._capture
        cap.hidden = x if x.dim() == 3 else x[:, None]  # [B, L, H]: every position lm_head scores
        cap.logits = None
        cap.count += 1

    def _post_hook(self, module: Any, args: Tuple[Any, ...], output: Any) -> None:
        self._capture.logits = output if output.dim() == 3 else output[:, None]

    def _install(self) -> None:
        lm_head = self.model.get_output_embeddings()
        self._hook = lm_head.register_forward_pre_hook(self._pre_hook)
        self._post = lm_head.register_forward_hook(self._post_hook)
        original = self.model.generate  # bound method of the class
        self._original_generate = original
        signature = inspect.signature(original)
        attachment = self

        def generate(*args: Any, **kwargs: Any) -> Any:
            return attachment._generate(signature, *args, **kwargs)

        generate.__doc__ = original.__doc__
        generate.__wrapped__ = original  # type: ignore[attr-defined]
        self.model.generate = generate
        setattr(self.model, ATTRIBUTE, self)
        self.attached = True

    def detach(self) -> None:
        """Remove the hook and the ``generate`` wrapper; idempotent."""
        if not self.attached:
            return
        self._hook.remove()
        self._post.remove()
        self._hook = self._post = None
        self.model.__dict__.pop("generate", None)
        if getattr(self.model, ATTRIBUTE, None) is self:
            delattr(self.model, ATTRIBUTE)
        self.attached = False
        self._capture = _Capture()

    def __enter__(self) -> "AutoDecoAttachment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def processor(self, policy: Optional[DecodingPolicy] = None) -> "AutoDecoLogitsProcessor":
        """A new :class:`AutoDecoLogitsProcessor` for this model (one per ``generate`` call
        or thread is the intended use; its ``trace`` is overwritten by each call)."""
        return AutoDecoLogitsProcessor(self, policy if policy is not None else self.policy)

    # -- per step -------------------------------------------------------------------------
    def _heads_on(self, device: Any) -> Any:
        w = self.heads.temp_head.mlp[0].weight if self.heads.temp_head is not None else None
        if w is None and self.heads.top_p_head is not None:
            w = self.heads.top_p_head.mlp[0].weight
        if w is not None and w.device != device:
            with self._lock:
                self.heads.to(device)
        return self.heads

    def step(
        self, hidden: Any, scores: Any, *, lm_out: Any = None, policy: Optional[DecodingPolicy] = None,
        greedy: bool = False, temperature: Any = None, top_p: Any = None,
    ) -> "TorchStep":
        """One AutoDeco step of this model, as its processor runs it inside ``generate``: the
        core step :func:`autodeco_samplers.core.step.torch_step_logits` with the heads on
        ``hidden``'s device.

        Args:
            hidden: ``[B, H]`` the hidden rows ``lm_head`` read for these scores.
            scores: ``[B, V]`` the logits the canonical rule is applied to (what the processor
                receives, after the processors before it).
            lm_out: ``[B, V]`` ``lm_head``'s output for the same rows; the heads read it with
                the model's final logit transform (softcapping, ``logit_scale``,
                ``logits_scaling``). ``None``: the heads read ``scores``.
            policy: default: the attachment's.
            greedy: ``do_sample=False``: the step runs with temperature 0 (``T = 0`` recorded).
            temperature, top_p: optional per-row ``[B]`` request multipliers that multiply the
                policy's (:meth:`DecodingPolicy.apply`; a batched engine's rows each carry their
                own request's knobs). ``greedy`` overrides ``temperature``.

        Returns:
            the :class:`~autodeco_samplers.core.step.TorchStep`; its ``logits`` have the
            canonical distribution as their plain softmax.

        Raises:
            ShapeError: ``hidden`` and ``scores`` have different numbers of rows.
        """
        import torch

        from autodeco_samplers.core.step import torch_step_logits

        if hidden.shape[0] != scores.shape[0]:
            raise ShapeError(f"batch mismatch: captured hidden states have {hidden.shape[0]} rows, scores {scores.shape[0]}")
        heads = self._heads_on(hidden.device)
        with torch.no_grad():
            if greedy:
                temperature = torch.zeros(scores.shape[0], device=scores.device)
            return torch_step_logits(
                hidden, scores, heads, policy if policy is not None else self.policy, temperature=temperature,
                top_p=top_p, head_logits=self._model_logits(lm_out, scores), compiled=self.compiled,
            )

    def last_forward(self) -> Tuple[Any, Any]:
        """``(hidden [B, L, H], lm_out [B, L, V] or None)``: what this thread's last call of the
        model's ``lm_head`` read and returned (the hooks of :func:`attach`; thread-local). For
        code that runs the model's forward itself (``autodeco serve``'s batched transformers
        decode) and then calls :meth:`step` on the rows it samples. Raises
        :class:`AutoDecoError` when this thread has seen no forward."""
        cap = self._capture
        if cap.hidden is None:
            raise AutoDecoError("no lm_head call was captured in this thread (run a forward of the attached model first)")
        return cap.hidden, cap.logits

    def _model_logits(self, lm_out: Any, scores: Any) -> Any:
        """The model's own logits of this step for the heads' statistics: ``lm_head``'s output
        with the model's final logit transform (softcapping, ``logit_scale``,
        ``logits_scaling``), i.e. what transformers hands to the first logits processor."""
        if lm_out is None or not self.heads.config.use_enhanced_features:
            return scores
        x = lm_out.to(scores.device, scores.dtype) if lm_out.dtype != scores.dtype else lm_out
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        scale = getattr(cfg, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale != 1:
            x = x * scale
        divisor = getattr(cfg, "logits_scaling", None)
        if isinstance(divisor, (int, float)) and divisor != 1:
            x = x / divisor
        cap = getattr(cfg, "final_logit_softcapping", None)
        if isinstance(cap, (int, float)) and cap:
            x = torch_tanh(x / cap) * cap
        return x

    # -- generate wrapper -----------------------------------------------------------------
    def _generate(self, signature: inspect.Signature, *args: Any, **kwargs: Any) -> Any:
        """``model.generate``. With an :class:`AutoDecoLogitsProcessor` of this model in
        ``logits_processor``: the request's config made AutoDeco-safe, the processor replaced
        by a per-call :class:`_CallState`, the per-row stopping criteria recorded, and the
        trace stored on the processor afterwards. Any other call goes to transformers as is."""
        from transformers import LogitsProcessorList

        arguments = dict(signature.bind(*args, **kwargs).arguments)
        extra = dict(arguments.pop("kwargs", {}) or {})
        processors = list(arguments.get("logits_processor") or [])
        proc = self._our_processor(processors)
        if proc is None:
            return self._original_generate(*args, **kwargs)
        gc, multipliers, model_kwargs = self._request_config(arguments.pop("generation_config", None), extra)
        merged = self._with_model_defaults(gc)
        assisted = self._check_mode(merged, arguments, model_kwargs)
        policy = proc.policy.for_request(multipliers["temperature"], multipliers["top_p"])
        call = _CallState(self, policy, merged.do_sample is not True, proc.on_step, assisted=assisted)
        criteria = list(arguments.get("stopping_criteria") or [])
        arguments["logits_processor"] = LogitsProcessorList([call if p is proc else p for p in processors])
        arguments["stopping_criteria"] = self._recording_criteria(call, criteria, merged, gc, model_kwargs)
        arguments["generation_config"] = gc
        out = self._original_generate(**arguments, **model_kwargs)
        proc.trace = self._call_trace(out, arguments, model_kwargs, merged, call, criteria, assisted)
        proc.policy_used = policy
        return out

    def _our_processor(self, processors: List[Any]) -> Optional["AutoDecoLogitsProcessor"]:
        """The call's :class:`AutoDecoLogitsProcessor` (``None`` when it has none), checked: at
        most one, made for this model, and the last processor of the list."""
        ours = [p for p in processors if isinstance(p, AutoDecoLogitsProcessor)]
        if not ours:
            return None
        if len(ours) > 1:
            raise AutoDecoError("pass at most one AutoDecoLogitsProcessor to generate()")
        proc = ours[0]
        if proc.attachment is not self:
            raise AutoDecoError(
                "this AutoDecoLogitsProcessor belongs to another model; make one with "
                "AutoDecoLogitsProcessor(model) for the model you call generate() on"
            )
        if processors[-1] is not proc:
            raise AutoDecoError(
                "the AutoDecoLogitsProcessor must be the last logits processor: processors after it would "
                "change the distribution it computed"
            )
        return proc

    def _request_config(self, passed: Any, extra: Dict[str, Any]) -> Tuple[Any, Dict[str, float], Dict[str, Any]]:
        """``(config, multipliers, model_kwargs)`` of one call: a copy of the passed generation
        config (or a new one) updated with the call's keyword arguments (``extra``, consumed),
        with ``temperature`` / ``top_p`` taken out as multipliers (1 when unset) and every
        warper neutral (:meth:`_neutralise_warpers`). An explicit truncating warper (top-k,
        min-p, top-h, typical-p, epsilon, eta) raises :class:`InvalidParameterError`."""
        from transformers import GenerationConfig

        gc = copy.deepcopy(passed) if passed is not None else GenerationConfig()
        multipliers = {}
        for key in ("temperature", "top_p"):
            value = extra.pop(key, None)
            if value is None:
                value = getattr(gc, key, None)
            multipliers[key] = 1.0 if value is None else float(value)
        for key in _FORBIDDEN:
            if key in extra and extra[key] is not None:
                setattr(gc, key, extra.pop(key))
        model_kwargs = gc.update(**extra) if extra else {}
        for key, neutral in _FORBIDDEN.items():
            value = getattr(gc, key, None)
            if not neutral(value):
                raise InvalidParameterError(
                    f"{key}={value!r} would re-truncate the AutoDeco distribution; the heads choose T and P per "
                    f"token (use temperature/top_p as multipliers, or leave {key} unset)"
                )
        self._neutralise_warpers(gc)
        return gc, multipliers, model_kwargs

    def _neutralise_warpers(self, gc: Any) -> None:
        """Set every transformers warper of ``gc`` to the value that leaves the processor's
        output untouched, also against the model's own ``generation_config`` defaults (a
        ``min_p`` there is overridden by 0; a ``top_h`` there cannot be, and raises)."""
        defaults = self.model.generation_config
        for key, value in _NEUTRAL.items():
            setattr(gc, key, value)
        if getattr(defaults, "min_p", None) is not None:
            gc.min_p = 0.0  # neutral: keeps every token with probability >= 0
        if getattr(defaults, "top_h", None) is not None:
            raise InvalidParameterError(
                "the model's generation_config sets top_h, which cannot be neutralised; set "
                "model.generation_config.top_h = None to sample with AutoDeco"
            )

    def _with_model_defaults(self, gc: Any) -> Any:
        """A copy of ``gc`` with the model's ``generation_config`` filling what ``gc`` leaves
        unset: the settings transformers will actually use (mode, EOS ids, stop strings)."""
        merged = copy.deepcopy(gc)
        defaults = self.model.generation_config
        merged.update(**{k: v for k, v in defaults.to_dict().items() if hasattr(merged, k)}, defaults_only=True)
        return merged

    def _check_mode(self, merged: Any, arguments: Dict[str, Any], model_kwargs: Dict[str, Any]) -> bool:
        """Refuse every generation mode but sampling, greedy search and assisted decoding (and
        custom generate methods); returns whether the call is assisted (then checked further by
        :meth:`_check_assisted`)."""
        mode = merged.get_generation_mode(arguments.get("assistant_model"))
        mode = getattr(mode, "value", str(mode))
        if mode not in _ALLOWED_MODES or arguments.get("custom_generate") is not None:
            raise AutoDecoError(
                f"generation mode {mode!r} is not supported with AutoDeco heads (beam search, contrastive "
                "search, DoLa and custom generate methods would apply the heads to the wrong positions or "
                "re-score their distribution); use do_sample=True (AutoDeco sampling) or do_sample=False "
                "(greedy) with num_beams=1, optionally with assistant_model= or prompt_lookup_num_tokens="
            )
        assisted = mode == _ASSISTED
        if assisted:
            self._check_assisted(merged, arguments, model_kwargs)
        return assisted

    @staticmethod
    def _recording_criteria(
        call: "_CallState", criteria: List[Any], merged: Any, gc: Any, model_kwargs: Dict[str, Any]
    ) -> Any:
        """The call's stopping criteria with the per-row ones (``stop_strings`` included, then
        removed from ``gc``) run inside one :class:`_RecordingCriteria`, so the trace knows where
        each row stopped; transformers' max-length and max-time criteria stay outside it."""
        from transformers import StoppingCriteriaList

        wrapped = _RecordingCriteria(call, list(criteria))
        if merged.stop_strings is not None:
            from transformers import StopStringCriteria

            tokenizer = model_kwargs.get("tokenizer")
            if tokenizer is None:
                raise AutoDecoError("stop_strings needs tokenizer=... passed to generate() (as in transformers)")
            wrapped.inner.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=merged.stop_strings))
            gc.stop_strings = None
        keep = [c for c in criteria if type(c).__name__ in ("MaxLengthCriteria", "MaxTimeCriteria")]
        wrapped.inner = [c for c in wrapped.inner if c not in keep]
        return StoppingCriteriaList(keep + ([wrapped] if wrapped.inner else []))

    def _call_trace(
        self, out: Any, arguments: Dict[str, Any], model_kwargs: Dict[str, Any], merged: Any, call: "_CallState",
        criteria: List[Any], assisted: bool,
    ) -> AutoDecoTrace:
        """The :class:`AutoDecoTrace` of a finished call, aligned with its returned sequences."""
        sequences = out if hasattr(out, "shape") else out.sequences
        input_ids = arguments.get("inputs")
        if input_ids is None:
            input_ids = model_kwargs.get("input_ids")
        prompt_len = int(input_ids.shape[1]) if input_ids is not None and input_ids.dim() == 2 else 0
        eos = merged.eos_token_id
        if eos is None:
            eos = getattr(self.model.config, "eos_token_id", None)
        eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
        prompt_ids = None
        if prompt_len:
            prompt_ids = _prompt_rows(input_ids, model_kwargs.get("attention_mask"), int(sequences.shape[0]))
        # transformers pads finished rows only when some criterion has an ``eos_token_id``
        padded = bool(eos_ids) or any(hasattr(c, "eos_token_id") for c in criteria)
        records = [call.records[n] for n in sorted(call.records)]
        stop_flags = call.stop_flags
        if assisted and stop_flags:
            # one verdict per verification round, not per token; batch 1 ends only at its last token
            n_new = int(sequences.shape[1]) - prompt_len
            stop_flags = [stop_flags[-1] & False] * max(n_new - 1, 0) + [stop_flags[-1]]
        return build_trace(sequences, prompt_len, records, stop_flags, eos_ids, prompt_ids, padded=padded)

    def _check_assisted(self, gc: Any, arguments: Dict[str, Any], model_kwargs: Dict[str, Any]) -> None:
        """Assisted decoding keeps AutoDeco exact when the drafts come from prompt lookup or from a
        separate assistant model with the same tokenizer, and the target scores exactly the
        verified positions (``logits_to_keep``). Everything else is refused by name."""
        refusals = [
            (getattr(gc, "assistant_early_exit", None) is not None,
             "assistant_early_exit (its drafts run through this model's own lm_head)"),
            (bool(getattr(gc, "use_mtp", False)), "use_mtp (multi-token-prediction drafts)"),
            (getattr(gc, "speculation_type", None) not in (None, "", "default"),
             f"speculation_type={getattr(gc, 'speculation_type', None)!r}"),
            (getattr(gc, "assistant_ensemble_weight", None) is not None,
             "assistant_ensemble_weight (it verifies against a mix of target and draft: not exact)"),
            (arguments.get("assistant_model") is self.model, "the model as its own assistant"),
            (type(arguments.get("assistant_model")).__name__.startswith(("Gemma4Assistant", "Gemma4UnifiedAssistant")),
             "a Gemma 4 assistant (it drafts from the target's own key-value states)"),
            (model_kwargs.get("assistant_tokenizer") is not None,
             "an assistant with another tokenizer (its drafts are translated between vocabularies)"),
            (not self.model._supports_logits_to_keep(),
             f"{type(self.model).__name__}, which cannot score only the verified positions (no logits_to_keep)"),
        ]
        for refused, what in refusals:
            if refused:
                raise AutoDecoError(
                    f"assisted decoding with AutoDeco heads supports prompt lookup (prompt_lookup_num_tokens=) and a "
                    f"separate assistant_model with the same tokenizer; not {what}"
                )


def _prompt_rows(input_ids: Any, attention_mask: Any, n_sequences: int) -> List[List[int]]:
    """The prompt token ids of every returned sequence (padding dropped by ``attention_mask``;
    each input row repeated for its ``num_return_sequences`` outputs)."""
    rows = input_ids.detach().cpu()
    expand = n_sequences // max(rows.shape[0], 1)
    mask = attention_mask.detach().cpu().bool() if attention_mask is not None else None
    prompt_ids = []
    for b in range(rows.shape[0]):
        ids = rows[b][mask[b]] if mask is not None else rows[b]
        prompt_ids.extend([ids.tolist()] * expand)
    return prompt_ids


class _CallState:
    """What one ``generate`` call needs at each step; transformers calls it as a processor.

    Plain decoding: one call per forward of the attached model, reading the forward's last
    position. Assisted decoding (``assisted=True``, batch 1): the target's forward scores the
    ``k + 1`` positions of the last token and ``k`` drafts (``logits_to_keep = k + 1``) and
    transformers then calls the processor once per position, in order, with the prefix that
    position continues; call ``i`` after a forward reads row ``i`` of it (checked: the prefixes
    grow by one token, and every row is used before the next forward). A call with no row left
    is the draft's own sampling (the assistant model runs ``generate`` with the same processor
    list) or prompt lookup probing the list: it gets the scores back unchanged, so the
    draft samples from its plain softmax and its distribution stays what the verification rule
    is told it was.
    """

    def __init__(
        self,
        attachment: AutoDecoAttachment,
        policy: DecodingPolicy,
        greedy: bool,
        on_step: Optional[Any] = None,
        *,
        assisted: bool = False,
    ) -> None:
        self.on_step = on_step
        self.attachment = attachment
        self.policy = policy
        self.greedy = greedy
        self.assisted = assisted
        self.records: Dict[int, Any] = {}  # prefix length -> [4, B]; a rescored position overwrites
        self.stop_flags: List[Any] = []
        self.last_count = attachment._capture.count
        self._rows: Optional[Tuple[Any, Any]] = None  # the last forward's (hidden, lm_out) [B, L, *]
        self._next = 0
        self._first_len = 0

    def _take_row(self, input_ids: Any) -> Optional[Tuple[Any, Any]]:
        """The ``(hidden [B, H], lm_out [B, V] or None)`` this call scores, or ``None`` for a call
        that belongs to no forward of the attached model (assisted decoding's draft)."""
        cap = self.attachment._capture
        fresh = cap.count != self.last_count and cap.hidden is not None
        if fresh:
            if self._rows is not None and self._next < self._rows[0].shape[1]:
                raise AutoDecoError(
                    f"the attached model scored {self._rows[0].shape[1]} positions but only {self._next} were "
                    "sampled before its next forward (unsupported decoding mode)"
                )
            self.last_count = cap.count
            self._rows = (cap.hidden, cap.logits)
            cap.hidden = cap.logits = None  # do not keep the forward's tensors alive in the capture
            self._next, self._first_len = 0, int(input_ids.shape[1])
        if not self.assisted:
            if not fresh:
                raise AutoDecoError(
                    "no new hidden state was captured for this step: the logits did not come from one forward "
                    "of the attached model's lm_head (unsupported decoding mode)"
                )
            hidden, lm_out = self._rows
            self._rows = None
            return hidden[:, -1], (None if lm_out is None else lm_out[:, -1])
        if self._rows is None or self._next >= self._rows[0].shape[1]:
            return None
        if int(input_ids.shape[1]) != self._first_len + self._next:
            raise AutoDecoError(
                f"assisted decoding scored a prefix of {int(input_ids.shape[1])} tokens where "
                f"{self._first_len + self._next} were expected (unsupported candidate generator)"
            )
        i = self._next
        self._next += 1
        hidden, lm_out = self._rows
        return hidden[:, i], (None if lm_out is None else lm_out[:, i])

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        row = self._take_row(input_ids)
        if row is None:
            return scores
        hidden, lm_out = row
        st = self.attachment.step(hidden, scores, lm_out=lm_out, policy=self.policy, greedy=self.greedy)
        self.records[int(input_ids.shape[1])] = torch.stack([st.T_pred, st.P_pred, st.T, st.P])
        if self.on_step is not None:
            self.on_step(scores, st)
        return scores if self.greedy else st.logits


class _RecordingCriteria:
    """Runs the caller's per-row stopping criteria and records their verdict per step."""

    def __init__(self, call: _CallState, inner: List[Any]) -> None:
        self.call = call
        self.inner = inner

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for c in self.inner:
            done = done | c(input_ids, scores, **kwargs)
        self.call.stop_flags.append(done)
        return done


class AutoDecoLogitsProcessor:
    """Sample every token with the AutoDeco heads' T and P (canonical semantics).

    Pass it as the *last* entry of ``logits_processor`` to ``model.generate`` of a model with
    heads attached (:func:`attach` / :func:`from_pretrained`). After the call, ``trace`` is an
    :class:`AutoDecoTrace` aligned with the returned sequences.

    Args:
        model: the model with heads attached, or its :class:`AutoDecoAttachment`.
        policy: request knobs on top of the heads (default: the attachment's policy). The
            ``temperature`` / ``top_p`` given to ``generate`` multiply this policy's ones.
        on_step: optional ``on_step(scores, step)`` called at every step during ``generate``
            (for streaming): ``scores`` ``[B, V]`` are the logits the canonical rule was
            applied to, ``step`` the :class:`~autodeco_samplers.core.step.TorchStep` with the
            ``[B]`` tensors ``T_pred``, ``P_pred``, ``T``, ``P`` of the token about to be drawn.
    """

    def __init__(self, model: Any, policy: Optional[DecodingPolicy] = None, *, on_step: Optional[Any] = None) -> None:
        attachment = model if isinstance(model, AutoDecoAttachment) else get_attachment(model)
        if attachment is None or not attachment.attached:
            raise AutoDecoError("this model has no AutoDeco heads attached: call attach(model, heads) first")
        self.attachment = attachment
        self.policy = policy if policy is not None else attachment.policy
        self.trace: Optional[AutoDecoTrace] = None
        self.policy_used: Optional[DecodingPolicy] = None
        self.on_step = on_step

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        raise AutoDecoError(
            "AutoDecoLogitsProcessor only works inside model.generate() of the model it was made for "
            "(the attach() wrapper neutralises transformers' own warpers and binds the call)"
        )


# --------------------------------------------------------------------------- attach / load


def get_attachment(model: Any) -> Optional[AutoDecoAttachment]:
    """The model's :class:`AutoDecoAttachment`, or ``None``."""
    att = model.__dict__.get(ATTRIBUTE)
    return att if isinstance(att, AutoDecoAttachment) else None


def detach(model: Any) -> None:
    """Remove AutoDeco heads from ``model`` (no-op when none are attached)."""
    att = get_attachment(model)
    if att is not None:
        att.detach()


def _model_hidden_size(model: Any) -> int:
    lm_head = model.get_output_embeddings()
    if lm_head is None:
        raise AutoDecoError(f"{type(model).__name__} has no output embeddings (lm_head): not a causal LM")
    width = getattr(lm_head, "in_features", None)
    if width is None:
        weight = getattr(lm_head, "weight", None)
        width = weight.shape[-1] if weight is not None else None
    if width is None:
        text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        width = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None)
    return int(width)


def attach(
    model: Any, heads: Any, *, policy: Optional[DecodingPolicy] = None, compiled: bool = False
) -> AutoDecoAttachment:
    """Attach AutoDeco heads to a causal-LM ``PreTrainedModel``.

    Args:
        model: any ``PreTrainedModel`` with ``get_output_embeddings()`` (Llama, Qwen2/3,
            Mistral, GPT-2, ...).
        heads: a heads checkpoint path (every form :func:`autodeco_samplers.load_heads`
            accepts: heads-only folder, merged folder, ``.safetensors``, ``.gguf``), an
            :class:`~autodeco_samplers.heads.AutoDecoHeads` or an ``AutoDecoHeadsModule``.
        policy: default decoding policy of processors made from this attachment.
        compiled: run each step through ``torch.compile``
            (:func:`autodeco_samplers.core.step.compiled_step`: one graph, fewer operators, no host
            read; the first step compiles, about a minute on 2 CPU cores). Off by default: on
            the CPU it is not faster (docs/design.md section 3, "Kernel launches").

    Raises:
        ShapeError: the heads' ``hidden_size`` differs from the width ``lm_head`` reads.
        AutoDecoError: heads are already attached to this model.
    """
    from autodeco_samplers.heads import AutoDecoHeads
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    if get_attachment(model) is not None:
        raise AutoDecoError("AutoDeco heads are already attached to this model; detach(model) first")
    width = _model_hidden_size(model)
    if isinstance(heads, AutoDecoHeadsModule):
        module = heads
    elif isinstance(heads, AutoDecoHeads):
        module = AutoDecoHeadsModule.from_numpy(heads)
    else:
        from autodeco_samplers.heads import load_heads

        loaded = load_heads(heads)
        if loaded.hidden_size != width:
            raise ShapeError(
                f"hidden-size mismatch: the model's lm_head reads hidden states of width {width} but the heads "
                f"in {heads} expect hidden_size={loaded.hidden_size}"
            )
        module = AutoDecoHeadsModule.from_numpy(loaded)
    if module.hidden_size != width:
        raise ShapeError(
            f"hidden-size mismatch: the model's lm_head reads hidden states of width {width} but the heads "
            f"expect hidden_size={module.hidden_size}"
        )
    device = next(model.parameters()).device
    att = AutoDecoAttachment(model, module.to(device), policy, compiled)
    att._install()
    return att


def _read_config(path: Path) -> Dict[str, Any]:
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{path}: no config.json")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None


def load_merged_base(path: Union[str, Path], **hf_kwargs: Any) -> Any:
    """The base model of a merged AutoDeco checkpoint, as the stock transformers class.

    Reads ``base_model_type`` / ``base_architectures`` from ``config.json``, builds the base
    config without the AutoDeco-only fields, and loads the ``llm.``-prefixed safetensors
    weights through ``from_pretrained`` (``key_mapping`` strips the prefix; head tensors are
    ignored; ``use_safetensors=True``, so nothing is unpickled; local files only).
    """
    import logging

    from transformers import AutoConfig, AutoModelForCausalLM

    from autodeco_samplers.heads.io.merged import AUTODECO_ONLY_KEYS

    p = Path(path)
    raw = _read_config(p)
    if raw.get("model_type") != "autodeco":
        raise CheckpointError(f"{p}: config.json model_type is {raw.get('model_type')!r}, not 'autodeco'")
    base_type = raw.get("base_model_type")
    if not base_type:
        raise CheckpointError(f"{p}/config.json: merged checkpoint without base_model_type")
    fields = {k: v for k, v in raw.items() if k not in AUTODECO_ONLY_KEYS and k not in ("model_type", "architectures")}
    fields.pop("transformers_version", None)
    config = AutoConfig.for_model(base_type, **fields)
    if raw.get("base_architectures"):
        config.architectures = list(raw["base_architectures"])
    hf_kwargs.setdefault("use_safetensors", True)
    hf_kwargs.setdefault("local_files_only", True)
    if "dtype" not in hf_kwargs and "torch_dtype" not in hf_kwargs:
        hf_kwargs["dtype"] = "auto"
    log = logging.getLogger("transformers.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)  # the head tensors are "unexpected keys" for the base class
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), config=config, key_mapping={r"^llm\.": ""}, **hf_kwargs)
    finally:
        log.setLevel(level)
    return model.eval()


def from_pretrained(
    path: Union[str, Path],
    heads: Any = None,
    *,
    policy: Optional[DecodingPolicy] = None,
    **hf_kwargs: Any,
) -> Any:
    """Load a model with AutoDeco heads attached, in one line.

    * ``path`` a merged AutoDeco checkpoint (``model_type: autodeco``, base weights under
      ``llm.``): the stock base class is loaded from it and its own heads are attached
      (unless ``heads`` is given).
    * ``path`` a plain transformers model folder: ``heads`` (a heads checkpoint) is required.

    ``hf_kwargs`` go to transformers' ``from_pretrained`` (``dtype``, ``device_map``, ...).
    Returns the model; its attachment is ``get_attachment(model)`` (``model.autodeco``).
    """
    p = Path(path)
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{p}: not a local transformers model folder (no config.json); models are never fetched from a hub")
    if is_merged_checkpoint(p):
        model = load_merged_base(p, **hf_kwargs)
        attach(model, heads if heads is not None else p, policy=policy)
        return model
    if heads is None:
        raise CheckpointError(
            f"{p} is not a merged AutoDeco checkpoint (config.json model_type is not 'autodeco'); "
            "pass heads=PATH to a heads checkpoint"
        )
    from transformers import AutoModelForCausalLM

    hf_kwargs.setdefault("use_safetensors", True)
    hf_kwargs.setdefault("local_files_only", True)
    model = AutoModelForCausalLM.from_pretrained(str(p), **hf_kwargs).eval()
    attach(model, heads, policy=policy)
    return model


def load_tokenizer(path: Union[str, Path]) -> Any:
    """The tokenizer of a model folder (merged AutoDeco folders included)."""
    p = Path(path)
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception:
        if (p / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast(tokenizer_file=str(p / "tokenizer.json"))
        raise
