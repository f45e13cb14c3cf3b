"""The two AutoDeco training losses (docs/design.md section 5), as pure functions.

Both take *already shifted* tensors: ``logits[n]`` are the frozen backbone's logits at the
position that predicts ``labels[n]``; ``T[n]``, ``P[n]`` the heads' predictions at that
position. Leading dimensions are free (``[B, L, V]`` / ``[B, L]`` or ``[N, V]`` / ``[N]``);
:func:`shift_for_causal_lm` turns ``[B, L]`` model outputs and labels into this form.
Labels equal to ``-100`` are ignored.

Temperature loss (exact rule)::

    valid_n   = labels_n != -100
    easy_n    = valid_n and argmax(l_n) == y_n
    drop_n    = easy_n and u_n < easy_token_ratio          # u_n ~ U[0, 1), seeded generator
    kept_n    = valid_n and not drop_n
    w_n       = softmax(l_n)[y_n]                         # detached "DFT" weight
    ce_n      = -log softmax(l_n / clamp_min(T_n, 1e-2))[y_n]
    loss      = mean over kept_n of (w_n * ce_n)           # 0 when nothing is kept

Top-p loss (exact rule)::

    q_n       = softmax(l_n / clamp_min(T_n, 1e-8))        # T *not* detached
    p~_n      = soft_top_p(q_n, P_n, alpha)                # torch_ops.soft_top_p
    nll_n     = -log(p~_n[y_n] + 1e-9)
    loss      = mean over valid_n of (w_n * nll_n)         # no easy-token masking

Total loss = temperature loss + top-p loss (either term alone when one head trains).

Named options (off by default; the official recipe is the default everywhere):
``top_p_loss(prefix="exclusive")`` uses ``torch_ops.soft_top_p(prefix="exclusive")`` (the mask on the
exclusive prefix sum, whose ``alpha -> inf`` limit is the hard nucleus rule used at
inference), and the trainer's ``temperature_loss_weight`` scales the temperature loss in the
total (``W * temperature loss + top-p loss``; 0 trains T only through the top-p loss).
These follow the official AutoDeco training code; note the plain (unweighted-sum) mean of
the weighted per-token terms, not a weighted average.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from autodeco_samplers.core.torch_ops import SOFT_TOP_P_PREFIXES, soft_top_p

__all__ = [
    "IGNORE_INDEX",
    "TEMPERATURE_CLAMP",
    "TOP_P_TEMPERATURE_CLAMP",
    "LOG_EPS",
    "shift_for_causal_lm",
    "easy_token_keep_mask",
    "dft_weights",
    "temperature_loss",
    "top_p_loss",
    "SOFT_PREFIXES",
]

IGNORE_INDEX = -100
TEMPERATURE_CLAMP = 1e-2
TOP_P_TEMPERATURE_CLAMP = 1e-8
LOG_EPS = 1e-9
SOFT_PREFIXES = SOFT_TOP_P_PREFIXES


def shift_for_causal_lm(labels: torch.Tensor, *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``(labels[:, 1:], t[:, :-1] for t in tensors)``: position ``i`` predicts token ``i+1``."""
    return (labels[:, 1:],) + tuple(t[:, :-1] for t in tensors)


def _flat(logits: torch.Tensor, labels: torch.Tensor, *per_token: torch.Tensor):
    V = logits.shape[-1]
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on the leading dims")
    out = [logits.reshape(-1, V).float(), labels.reshape(-1)]
    for t in per_token:
        if t.shape != labels.shape:
            raise ValueError(f"per-token tensor {tuple(t.shape)} must have the labels' shape {tuple(labels.shape)}")
        out.append(t.reshape(-1).float())
    return out


def dft_weights(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Detached base probability of the label, ``softmax(l)[y]`` (0 where the label is ignored)."""
    flat_l, flat_y = _flat(logits, labels)
    with torch.no_grad():
        probs = torch.softmax(flat_l, dim=-1)
        w = probs.gather(1, flat_y.clamp_min(0)[:, None])[:, 0]
        w = torch.where(flat_y == IGNORE_INDEX, torch.zeros_like(w), w)
    return w.reshape(labels.shape)


def easy_token_keep_mask(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ratio: float = 0.6,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Boolean mask of positions the temperature loss keeps.

    A valid position whose backbone argmax equals the label is dropped when a uniform draw
    (one per position, ``torch.rand`` with ``generator``) is below ``ratio``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"easy_token_ratio must lie in [0, 1], got {ratio}")
    valid = labels != IGNORE_INDEX
    with torch.no_grad():
        easy = logits.argmax(dim=-1) == labels.clamp_min(0)
        u = torch.rand(labels.shape, generator=generator, device="cpu" if generator is None else generator.device)
        u = u.to(labels.device)
        drop = valid & easy & (u < ratio)
    return valid & ~drop


def temperature_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    T: torch.Tensor,
    *,
    easy_token_ratio: float = 0.6,
    generator: Optional[torch.Generator] = None,
    keep: Optional[torch.Tensor] = None,
    dft: bool = True,
) -> torch.Tensor:
    """Temperature-head loss (see the module docstring for the exact rule).

    ``keep`` overrides the random easy-token mask (for tests); ``dft=False`` drops the weighting.
    """
    if keep is None:
        keep = easy_token_keep_mask(logits, labels, easy_token_ratio, generator)
    flat_l, flat_y, flat_T = _flat(logits, labels, T)
    flat_keep = keep.reshape(-1)
    if not bool(flat_keep.any()):
        return flat_T.sum() * 0.0  # keeps the graph, value 0
    scaled = flat_l[flat_keep] / flat_T[flat_keep].clamp_min(TEMPERATURE_CLAMP)[:, None]
    y = flat_y[flat_keep]
    ce = -torch.log_softmax(scaled, dim=-1).gather(1, y[:, None])[:, 0]
    if dft:
        ce = ce * dft_weights(logits, labels).reshape(-1)[flat_keep]
    return ce.mean()


def top_p_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    T: torch.Tensor,
    P: torch.Tensor,
    *,
    alpha: float = 30.0,
    dft: bool = True,
    prefix: str = "inclusive",
) -> torch.Tensor:
    """Top-p-head loss: DFT-weighted NLL of the soft top-p distribution (module docstring).

    ``prefix="inclusive"`` is the official soft mask (:func:`torch_ops.soft_top_p`);
    ``"exclusive"`` the exclusive-prefix variant (closes the train/inference gap); both are
    :func:`torch_ops.soft_top_p`.
    """
    if prefix not in SOFT_PREFIXES:
        raise ValueError(f"prefix must be one of {SOFT_PREFIXES}, got {prefix!r}")
    flat_l, flat_y, flat_T, flat_P = _flat(logits, labels, T, P)
    valid = flat_y != IGNORE_INDEX
    if not bool(valid.any()):
        return (flat_T.sum() + flat_P.sum()) * 0.0
    l, y = flat_l[valid], flat_y[valid]
    q = torch.softmax(l / flat_T[valid].clamp_min(TOP_P_TEMPERATURE_CLAMP)[:, None], dim=-1)
    soft = soft_top_p(q, flat_P[valid], alpha=alpha, prefix=prefix)
    nll = -torch.log(soft.gather(1, y[:, None])[:, 0] + LOG_EPS)
    if dft:
        nll = nll * dft_weights(logits, labels).reshape(-1)[valid]
    return nll.mean()
