"""The step after the heads as one Triton kernel per output (logits or a draw), and which path
runs it (:func:`resolve_kernel`).

The rule is the canonical one (:mod:`autodeco_samplers.core.reference`), per row from the
logits and the row's used ``T`` and ``P``: ``q = softmax((l - max l) / T)`` (float32); keep
token ``(i)`` of the order (descending ``q``, ties by ascending id) iff its exclusive prefix
sum is ``< P`` (the first always); ``P >= 1`` keeps every token of positive probability;
``T < 1e-6`` keeps only the argmax (lowest id). As in :func:`torch_nucleus.threshold_nucleus`,
the kept set is ``q > v*`` plus the first ``ceil((P - M(v*)) / v*)`` tokens equal to ``v*`` in
id order, with ``v*`` the smallest value present whose mass above, ``M(v*)``, is ``< P``. The
kernel finds ``v*`` without sorting the vocabulary and without a host synchronisation
(``autodeco_samplers/core/_triton_kernel.py`` lists the passes: one for the maximum and the sum,
a few for the search, which rows with ``P >= 1`` and greedy rows skip, one or two for the
output).

Outputs, the same as the torch path's for the same inputs:

* :func:`triton_rule_logits`: ``(l - max l) / T`` on the kept tokens (clamped below at
  ``fill``), ``fill`` elsewhere; a greedy row has its argmax at 0
  (:meth:`torch_nucleus.KeptSet.logits`).
* :func:`triton_rule_sample_with`: per row the kept token where the inverse CDF over the kept
  tokens *in ascending id order* (float64) crosses ``u * kept mass``, ``u`` the caller's
  uniform (:meth:`torch_nucleus.KeptSet.draw`); greedy rows return the argmax.

Triton is optional and imported lazily (``pip install "autodeco-samplers[triton]"``; PyTorch's
CUDA wheels ship it). With ``TRITON_INTERPRET=1`` set before Triton is first imported the kernel
runs on CPU tensors through Triton's interpreter (how the tests run it without a GPU; slow).
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import torch

__all__ = [
    "KERNEL_ENV",
    "KERNELS",
    "interpreted",
    "triton_available",
    "resolve_kernel",
    "triton_rule_logits",
    "triton_rule_sample_with",
]

KERNEL_ENV = "AUTODECO_STEP_KERNEL"
"""The environment variable that chooses the step's kernel when the caller passes none:
``auto`` (default: Triton on CUDA whenever it imports, torch elsewhere), ``triton`` (also on CPU
tensors when ``TRITON_INTERPRET=1``; falls back to torch with a warning where it cannot run) or
``torch``."""
KERNELS = ("auto", "triton", "torch")

RADIX = 16
"""Buckets per pass of the threshold search (each pass divides the range of bit patterns by at
least this much)."""
BLOCK_GPU = 512  # a [BLOCK, RADIX] float64 tile per search pass stays in registers
BLOCK_INTERPRETED = 4096  # the interpreter pays per block, not per element
NUM_WARPS = 8

_IMPORT: Optional[Tuple[object, str]] = None
_WARNED: set = set()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _kernel_module():
    """``(module, "")`` or ``(None, reason)``: the kernel module, imported once."""
    global _IMPORT
    if _IMPORT is None:
        try:
            from autodeco_samplers.core import _triton_kernel
        except Exception as err:  # ImportError, or a Triton that cannot load here
            _IMPORT = (None, f"triton does not import ({type(err).__name__}: {err}); "
                             "install it with pip install 'autodeco-samplers[triton]'")
        else:
            _IMPORT = (_triton_kernel, "")
    return _IMPORT


def interpreted() -> Optional[bool]:
    """Whether the imported kernel runs through Triton's interpreter (``None`` if Triton does
    not import). Triton reads ``TRITON_INTERPRET`` when it is first imported, so that is when
    the variable must be set."""
    module, _ = _kernel_module()
    if module is None:
        return None
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(module.step_kernel, InterpretedFunction)


def triton_available(device) -> Tuple[bool, str]:
    """Whether the kernel can run on tensors of ``device`` here, and if not why: CUDA needs
    Triton compiled for the GPU; CPU tensors need Triton's interpreter (``TRITON_INTERPRET=1``
    set before Triton is first imported)."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        return False, f"the triton kernel runs on CUDA tensors, not {kind}"
    if kind == "cpu" and not _interpreting():
        return False, "the triton kernel runs on CPU tensors only through Triton's interpreter (TRITON_INTERPRET=1)"
    module, reason = _kernel_module()
    if module is None:
        return False, reason
    if kind == "cpu" and not interpreted():
        return False, ("the triton kernel runs on CPU tensors only through Triton's interpreter, and triton was "
                       "imported before TRITON_INTERPRET=1 was set")
    return True, ""


def resolve_kernel(kernel: Optional[str], logits: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"``: the path the step takes for ``logits``.

    ``kernel`` (else the environment variable :data:`KERNEL_ENV`, else ``"auto"``):
    ``"auto"`` is Triton for float32/float16/bfloat16 logits on CUDA when Triton imports, torch
    otherwise; ``"torch"`` is torch; ``"triton"`` is Triton wherever :func:`triton_available`
    says it can run (float64 logits stay on torch), else torch with a warning naming why.
    """
    choice = kernel if kernel is not None else os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if choice not in KERNELS:
        source = "kernel" if kernel is not None else KERNEL_ENV
        raise ValueError(f"{source} must be one of {KERNELS}, got {choice!r}")
    if choice == "torch" or logits.dtype == torch.float64:
        return "torch"
    if choice == "auto":
        if logits.device.type != "cuda":
            return "torch"
        return "triton" if triton_available(logits.device)[0] and not interpreted() else "torch"
    ok, reason = triton_available(logits.device)
    if not ok:
        if reason not in _WARNED:
            _WARNED.add(reason)
            warnings.warn(f"{KERNEL_ENV}/kernel='triton' requested but {reason}: using the torch step",
                          RuntimeWarning, stacklevel=3)
        return "torch"
    return "triton"


def _launch(logits: torch.Tensor, T: torch.Tensor, P: torch.Tensor, u: Optional[torch.Tensor], fill: float):
    module, reason = _kernel_module()
    if module is None:
        raise RuntimeError(reason)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, V], got {tuple(logits.shape)}")
    x = logits.float()
    if x.stride(-1) != 1:
        x = x.contiguous()
    B, V = x.shape
    Tf = T.to(device=x.device, dtype=torch.float32).expand(B).contiguous()
    Pf = P.to(device=x.device, dtype=torch.float32).expand(B).contiguous()
    sample = u is not None
    out = x.new_empty((1, 1) if sample else (B, V))
    tokens = torch.empty(B if sample else 1, dtype=torch.int64, device=x.device)
    uu = u.to(device=x.device, dtype=torch.float64).contiguous() if sample else tokens
    slow = interpreted()
    if B:
        module.step_kernel[(B,)](
            x, x.stride(0), Tf, Pf, uu, out, out.stride(0), tokens, V, float(fill),
            SAMPLE=sample, BLOCK=BLOCK_INTERPRETED if slow else BLOCK_GPU, RADIX=RADIX,
            GREEDY=_greedy(), **({} if slow else {"num_warps": NUM_WARPS}),
        )
    return tokens if sample else out


def _greedy() -> float:
    from autodeco_samplers.core.reference import GREEDY_TEMPERATURE

    return GREEDY_TEMPERATURE


def triton_rule_logits(logits: torch.Tensor, T: torch.Tensor, P: torch.Tensor, *, fill: float) -> torch.Tensor:
    """``[B, V]`` float32: the kept tokens' ``max((l - max l) / T, fill)``, ``fill`` elsewhere
    (greedy rows: the argmax at 0), from ``logits`` ``[B, V]`` and ``T``, ``P`` ``[B]``
    (unchecked: validate upstream). One kernel launch, no host synchronisation."""
    return _launch(logits, T, P, None, fill)


def triton_rule_sample_with(logits: torch.Tensor, T: torch.Tensor, P: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``[B]`` int64: per row the kept token where the inverse CDF of the canonical distribution
    over the kept tokens in ascending id order crosses ``u`` ``[B]`` (float64 uniforms in
    ``[0, 1)``); greedy rows the argmax. One kernel launch, no host synchronisation."""
    return _launch(logits, T, P, u, 0.0)
