"""AutoDeco under vLLM's speculative decoding (``speculative_config``, e.g. method ``ngram``).

What vLLM 0.32's V1 model runner does with a speculative config (read from its sources,
checked on the CPU engine by ``tests/adapters/vllm/test_vllm_speculative.py``):

* each step, a request with ``k`` draft tokens gets ``k + 1`` logits rows, consecutive and in
  batch order: one per verified position plus the bonus position
  (``GPUModelRunner._calc_spec_decode_metadata``); ``compute_logits`` receives the hidden row
  of every one of them, so each row gets its own canonical AutoDeco logits from its own
  hidden state, exactly as plain decoding would compute them for that prefix;
* the rejection sampler turns those logits into probabilities with the request's own
  ``temperature`` / ``top_p`` (1 and 1 by default: the plain softmax, i.e. the canonical
  distribution), accepts an n-gram draft ``d`` with probability ``p(d)`` (the draft is a
  point mass), draws a rejected position's token from ``p`` without ``d`` and the bonus token
  from the bonus row: the speculative-sampling rule, exact for any target distribution. So
  AutoDeco's output distribution is unchanged by speculation, token by token;
* vLLM builds **no plugin logits processors** under speculation (only its own min-tokens
  processor), so :class:`.knobs.AutoDecoRequestKnobs` never sees a request. The per-request
  multipliers would be dropped silently.

One more thing stands between vLLM 0.32's CPU build and that exact rule: its C++ stand-in
for the rejection sampler's ``expand_kernel`` (``vllm/utils/cpu_triton_utils.py``,
``_expand_kernel_impl``) converts the float output buffer to an int64 copy and writes into the
copy, so the per-position ``temperature`` / ``top_p`` the rejection sampler divides and
filters the target logits with are uninitialised memory (any model, any sampled request with
drafts). :func:`repair_cpu_expand` probes that op and, where it is wrong, points the rejection
sampler's launcher (``vllm.v1.sample.rejection_sampler._expand``) at a correct implementation.
(vLLM's own override registry, ``register_kernels``, cannot be used at that point: its scan of
every loaded module fails once the model is being built.)

This module closes the multiplier point too: :func:`install_runner_hook` wraps
``GPUModelRunner._calc_spec_decode_metadata`` (called once per step, before the forward pass,
with the drafts per request in batch order) so that it first publishes each request's
``autodeco_temperature`` / ``autodeco_top_p`` expanded to its ``k + 1`` rows
(:func:`.knobs.publish_speculative_step`); ``compute_logits`` reads them for the sampling pass.
The wrapper is installed only in processes that build an AutoDeco model with a speculative
config, and only once.

Refused with a clear error (at model construction): vLLM's V2 model runner (no such method;
its logits-processor interface is another one), a V1 runner without the method (another
vLLM version), and a CPU ``expand`` op that is still wrong after the repair.
"""

from __future__ import annotations

import functools
from typing import Any, List, Optional, Tuple

HOOK_MARK = "_autodeco_spec_rows_hook"
RUNNER_METHOD = "_calc_spec_decode_metadata"


class SpeculativeDecodingUnsupported(NotImplementedError):
    """An AutoDeco model was built with a speculative config this adapter cannot serve exactly."""


def _runner_class():
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    return GPUModelRunner


def check_supported(vllm_config: Any) -> None:
    """Refuse configurations where the per-request multipliers could not reach every row."""
    if getattr(vllm_config, "use_v2_model_runner", False):
        raise SpeculativeDecodingUnsupported(
            "AutoDeco with speculative decoding needs vLLM's V1 model runner (set VLLM_USE_V2_MODEL_RUNNER=0): "
            "the adapter maps each request's autodeco_temperature / autodeco_top_p to its draft rows through "
            "the V1 runner (docs/vllm.md, 'Speculative decoding')"
        )


def request_rows(runner: Any, num_draft_tokens) -> Tuple[List[Optional[Tuple[Optional[float], Optional[float]]]], List[int]]:
    """``(multipliers per request, rows per request)`` of the step ``runner`` is preparing, in
    batch order: ``num_draft_tokens[i] + 1`` rows for request ``i``."""
    from autodeco_samplers.adapters.vllm.knobs import request_multipliers

    counts = [int(n) + 1 for n in num_draft_tokens]
    req_ids = runner.input_batch.req_ids[: len(counts)]
    per_request = []
    for req_id in req_ids:
        state = runner.requests.get(req_id) if req_id is not None else None
        params = getattr(state, "sampling_params", None)
        per_request.append(request_multipliers(params) if params is not None else None)
    return per_request, counts


def install_runner_hook(runner_cls: Any = None) -> None:
    """Wrap ``runner_cls._calc_spec_decode_metadata`` (vLLM's ``GPUModelRunner`` by default;
    the CPU runner inherits it) to publish the step's per-row multipliers first. Idempotent."""
    runner_cls = runner_cls if runner_cls is not None else _runner_class()
    original = runner_cls.__dict__.get(RUNNER_METHOD)
    if original is None:
        raise SpeculativeDecodingUnsupported(
            f"AutoDeco with speculative decoding: this vLLM's {runner_cls.__name__} has no {RUNNER_METHOD} "
            "(the adapter maps each request's multipliers to its draft rows there; tested with vLLM 0.32.0)"
        )
    if getattr(original, HOOK_MARK, False):
        return

    @functools.wraps(original)
    def wrapped(self, num_draft_tokens, *args, **kwargs):
        from autodeco_samplers.adapters.vllm.knobs import publish_speculative_step

        publish_speculative_step(*request_rows(self, num_draft_tokens))
        return original(self, num_draft_tokens, *args, **kwargs)

    setattr(wrapped, HOOK_MARK, True)
    setattr(runner_cls, RUNNER_METHOD, wrapped)


def expand_impl(output, input, cu_num_tokens, replace_from, replace_to) -> None:  # noqa: A002
    """The rejection sampler's ``_expand`` for the CPU, any dtype: request ``i``'s value
    (``replace_to`` where it equals ``replace_from``) written to its rows
    ``[cu[i - 1], cu[i])`` of ``output``."""
    import torch

    ends = cu_num_tokens.to(torch.int64)
    counts = torch.diff(ends, prepend=ends.new_zeros(1))
    values = torch.where(input == replace_from, torch.full_like(input, replace_to), input)
    expanded = torch.repeat_interleave(values, counts)
    output[: expanded.shape[0]] = expanded.to(output.dtype)


def expand_is_correct() -> bool:
    """Whether vLLM's ``expand_batch_to_tokens`` (the rejection sampler's per-position
    temperature / top-k / top-p) returns the right values on this platform."""
    import torch
    from vllm.v1.sample.rejection_sampler import expand_batch_to_tokens

    values = torch.tensor([0.625, 0.0, 7.25], dtype=torch.float32)
    cu = torch.tensor([1, 1, 4], dtype=torch.int32)
    try:
        got = expand_batch_to_tokens(values, cu, 4, replace_from=0, replace_to=1)
    except Exception:  # e.g. no kernel for this platform registered yet
        return False
    return got.tolist() == [0.625, 7.25, 7.25, 7.25]


def repair_cpu_expand() -> bool:
    """On vLLM's CPU platform, replace a wrong ``expand`` op of the rejection sampler by
    :func:`expand_impl`. Returns whether it replaced it; raises
    :class:`SpeculativeDecodingUnsupported` if the op is still wrong afterwards."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or expand_is_correct():
        return False
    from vllm.v1.sample import rejection_sampler

    stock = rejection_sampler._expand

    def _expand(output, input, cu_num_tokens, replace_from, replace_to):  # noqa: A002
        expand_impl(output, input, cu_num_tokens, replace_from, replace_to)

    if hasattr(stock, "register_warmup"):  # a later RejectionSampler() registers its warmup here
        _expand.register_warmup = stock.register_warmup
    rejection_sampler._expand = _expand
    if not expand_is_correct():
        raise SpeculativeDecodingUnsupported(
            "AutoDeco with speculative decoding: vLLM's CPU expand op (rejection sampler temperature / top-p per "
            "draft position) returns wrong values and could not be replaced; sampled speculation would not be exact"
        )
    return True
