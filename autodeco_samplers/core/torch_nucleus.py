"""The canonical nucleus and draw in torch, batched and without sorting the vocabulary.

:func:`kept_set` is the one torch statement of "which tokens are kept", greedy rows and the
fallback included (the NumPy one is :func:`autodeco_samplers.core.reference.kept_in_order`, used by
:mod:`autodeco_samplers.core.fast_nucleus`; the specification is :mod:`autodeco_samplers.core.reference`).
It returns a :class:`KeptSet`, which callers read only as logits (:meth:`KeptSet.logits`) or a
draw (:meth:`KeptSet.draw`); :mod:`autodeco_samplers.core.torch_ops` validates their inputs and
:mod:`autodeco_samplers.core.step` wires them to the heads and the policy.

Rule (per row, ``q`` = the float32 probabilities ``softmax((l - max l) / T)``, ``T >= 1e-6``):
order tokens by descending ``q``, ties by ascending id; keep token ``(i)`` iff its exclusive
prefix sum ``c_i < P`` (the first token always); when ``P >= 1`` keep every token of positive
probability (float32 probabilities can sum above 1, so the prefix-sum test alone would drop
tail tokens at ``P = 1``). Greedy rows (``T < 1e-6``) keep only ``argmax l`` (lowest id).

Two exact algorithms, neither sorts the vocabulary:

**Candidates** (:func:`candidate_nucleus`, :func:`logit_candidates`; fixed shapes, no host
synchronisation). The row is
cut into chunks of ``S`` tokens; the ``KC`` chunks with the largest maxima are gathered
(``KC * S`` tokens) and ``torch.topk`` takes the ``K`` largest of those. Let ``floor`` be the
larger of the ``(KC+1)``-th largest chunk maximum and the ``(K+1)``-th largest gathered value.

1. Every token with ``q > floor`` is among the ``K`` candidates: its chunk's maximum is
   ``>= q > `` the ``(KC+1)``-th largest chunk maximum, so its chunk was gathered, and among
   the gathered values it exceeds the ``(K+1)``-th largest. The step ranks chunks by their
   maximum *logit* instead (:func:`logit_candidates`; one pass it needs anyway; ``q`` is a
   non-decreasing function of the logit in a row): every token outside the ``KC`` best
   chunks has a logit at most the ``(KC+1)``-th chunk's maximum ``m``, hence ``q`` at most
   ``q(m)``, which is then the chunk floor. There ``q`` is never computed for the whole row:
   only the row's sum ``S`` (one blocked pass, :func:`exp_sum`) and ``q`` at the gathered
   tokens and at ``m``. So the candidates with
   ``q > floor``, sorted by (descending ``q``, ascending id), are exactly the first entries of
   the canonical order of the whole row (ties above ``floor`` lie entirely inside).
2. Their exclusive prefix sums (float64, sequential ``cumsum``) are the reference's sums of
   the same numbers in the same order.
3. Keep ``i`` iff ``c_i < P``. If the last kept candidate has ``q > floor``, every token
   up to it in the full order is a candidate (point 1), so the kept prefix is the
   reference's; if moreover the kept mass (the inclusive sum at the last kept token) is
   ``>= P``, the token after it in the full order, whichever it is, has exclusive sum
   ``>= P``, as has every later token (prefix sums of non-negative terms only grow): the
   kept set is complete. Rows where both hold are ``proven``; ``P >= 1`` rows never are.

**Threshold search** (:func:`threshold_nucleus`; always exact, fixed shapes, no host
synchronisation, used for the rows the candidates cannot prove, e.g. a flat distribution with
``P`` near 1). Let ``M(v)`` be the mass of the tokens with ``q > v``. A token of value ``v``
comes after every token of larger value, so its exclusive sum is ``c = M(v) + (mass of the
equal tokens of lower id)``. Let ``v*`` be the smallest value present with ``M(v*) < P``.

* A token with ``q > v*`` precedes the first token of value ``v*``, whose ``c = M(v*) < P``;
  so its own ``c`` is smaller still: kept.
* A token with ``q < v*`` has, by minimality of ``v*``, ``M(q) >= P``, so ``c >= P``: dropped.
* The ``j``-th token equal to ``v*`` (``j = 0, 1, ...`` in id order) has ``c = M(v*) + j v*``:
  kept iff ``j < (P - M(v*)) / v*``, i.e. the first ``r = ceil((P - M(v*)) / v*)`` of them.

``M`` is non-increasing and changes only at values present in the row, and non-negative
float32 values are ordered like their int32 bit patterns, so ``v*`` is found digit by digit of
its pattern (radix select, three digits of 11, 10 and 10 bits): a float64 histogram of the
mass per digit value, over the tokens whose higher digits equal those already found, added
from the top digit down on top of the mass of the higher bins, crosses ``P`` in exactly one
bin, which holds ``v*``; after the last digit the mass of the higher bins is ``M(v*)``. Three
histograms, a few passes each, instead of a sort. If the whole mass is below ``P`` (or
``P >= 1``) every token of positive probability is kept. ``M`` here is a float64 sum in
another order than the reference's sequential one; the two differ by ~1e-16 per token, so
only tokens whose exclusive sum lies that close to ``P`` can land on the other side, which the
conformance checker allows (``docs/conformance.md``: within 1e-5 of ``P`` either side is
accepted).

The draw (:func:`draw_from_candidates`, :func:`draw_from_mask`) is the inverse CDF over the
kept tokens only, in ascending id order, with one uniform number per row: over at most ``K``
candidates, or over the row for a full mask. Either way token ``i`` is
returned with probability ``q_i / sum of kept q`` (float64), the canonical distribution.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

from autodeco_samplers.core.reference import EXP_FLOOR, GREEDY_TEMPERATURE

__all__ = [
    "CHUNK",
    "CHUNKS",
    "CANDIDATES",
    "Candidates",
    "candidate_nucleus",
    "logit_candidates",
    "exp_sum",
    "column_blocks",
    "threshold_nucleus",
    "KeptSet",
    "kept_set",
    "draw_from_candidates",
    "draw_from_mask",
    "top_k_values",
    "chunk_max",
    "first_argmax",
]

CHUNK = 256
"""``S``: tokens per chunk of the candidate search."""
CHUNKS = 16
"""``KC``: chunks gathered per row."""
CANDIDATES = 64
"""``K``: candidates kept per row (nuclei of up to about ``min(K, KC)`` tokens are proven)."""

_SMALL_V = 512  # up to this vocabulary every token is a candidate (always proven)


class Candidates(NamedTuple):
    """The candidate nucleus of each row, ``[B, K]`` in canonical order (descending ``q``,
    ties by ascending id): ``ids``, ``q`` (float64), ``keep`` (a prefix), ``cum`` (inclusive
    float64 prefix sums of the *kept* probabilities), and ``proven`` ``[B]``."""

    ids: torch.Tensor
    q: torch.Tensor
    keep: torch.Tensor
    cum: torch.Tensor
    proven: torch.Tensor


def _canonical(ids: torch.Tensor, vals: torch.Tensor):
    """Sort ``(ids, vals)`` rows into (descending value, ascending id) order."""
    ids_asc, perm = torch.sort(ids, dim=-1)
    vals_asc = vals.gather(-1, perm)
    vals_sorted, order = torch.sort(vals_asc, dim=-1, descending=True, stable=True)
    return ids_asc.gather(-1, order), vals_sorted


def chunk_max(x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Maximum of each chunk of ``chunk`` consecutive tokens, ``[B, ceil(V / chunk)]`` (the
    last chunk padded with ``-inf``): one pass over the row."""
    B, V = x.shape
    C = -(-V // chunk)
    pad = C * chunk - V
    xp = torch.nn.functional.pad(x, (0, pad), value=float("-inf")) if pad else x
    return xp.view(B, C, chunk).amax(dim=-1)


def first_argmax(x: torch.Tensor, cmax: Optional[torch.Tensor] = None, chunk: int = CHUNK) -> torch.Tensor:
    """``argmax`` of each row with ties to the lowest id (``[B]`` int64), from the chunk maxima
    ``cmax`` (:func:`chunk_max`): the first chunk holding the row maximum, then the first
    maximum inside it (cheaper than a full-row ``argmax`` on CPU)."""
    B, V = x.shape
    if V <= chunk:
        return x.argmax(dim=-1)
    cmax = chunk_max(x, chunk) if cmax is None else cmax
    m = cmax.amax(dim=-1, keepdim=True)
    c0 = (cmax == m).to(torch.uint8).argmax(dim=-1)  # first chunk with the maximum
    ids = c0[:, None] * chunk + torch.arange(chunk, device=x.device)
    inside = x.gather(-1, ids.clamp_max(V - 1))
    inside = torch.where(ids < V, inside, float("-inf"))
    return c0 * chunk + inside.argmax(dim=-1)


def _gather_chunks(q: torch.Tensor, chunk: int, chunks: int):
    """The ``chunks`` chunks of largest maximum: candidate ids ``[B, chunks*chunk]`` (ascending
    chunk order), their values (``-1`` for padding) and the chunk floor ``[B]`` (the
    ``(chunks+1)``-th largest chunk maximum: every token outside the gathered chunks has
    ``q <= floor``)."""
    B, V = q.shape
    C = -(-V // chunk)
    pad = C * chunk - V
    qp = torch.nn.functional.pad(q, (0, pad), value=-1.0) if pad else q
    if chunks >= C:
        ids = torch.arange(C * chunk, device=q.device).expand(B, -1)
        return ids, qp, q.new_full((B,), -1.0)
    cmax = qp.view(B, C, chunk).amax(dim=-1)
    top = torch.topk(cmax, chunks + 1, dim=-1, sorted=True)
    sel = torch.sort(top.indices[:, :chunks], dim=-1).values
    ids = (sel[:, :, None] * chunk + torch.arange(chunk, device=q.device)).reshape(B, chunks * chunk)
    return ids, qp.gather(-1, ids), top.values[:, chunks]


def top_k_values(q: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest values of each row of ``q`` ``[B, V]`` (descending), found among the
    ``k`` chunks of largest maximum (a chunk holding one of the ``k`` largest values has a
    maximum at least that value, so at most ``k - 1`` chunks can have a larger one)."""
    B, V = q.shape
    if V <= _SMALL_V or k >= V:
        return torch.topk(q, min(k, V), dim=-1, sorted=True).values
    _, vals, _ = _gather_chunks(q, CHUNK, k)
    return torch.topk(vals, k, dim=-1, sorted=True).values


def candidate_nucleus(
    q: torch.Tensor, P: torch.Tensor, *, k: int = CANDIDATES, chunk: int = CHUNK, chunks: int = CHUNKS,
    small_v: int = _SMALL_V,
) -> Candidates:
    """The nucleus of each row among at most ``k`` candidates (see the module docstring).

    Args:
        q: ``[B, V]`` non-negative float32/float64 probabilities.
        P: ``[B]`` top-p in ``[0, 1]``; rows with ``P >= 1`` are never ``proven`` (their kept
            set is every positive token: :func:`threshold_nucleus` keeps it).
    """
    B, V = q.shape
    if V <= max(small_v, k + 1):
        ids = torch.arange(V, device=q.device).expand(B, -1)
        return _candidates(ids, q, q.new_full((B,), -1.0), P, V, chunk)
    ids, vals, floor = _gather_chunks(q, chunk, chunks)
    return _candidates(ids, vals, floor, P, k, chunk, V)


def logit_candidates(
    logits: torch.Tensor, row_max: torch.Tensor, T: torch.Tensor, P: torch.Tensor, cmax: torch.Tensor, *,
    k: int = CANDIDATES, chunk: int = CHUNK, chunks: int = CHUNKS, small_v: int = _SMALL_V,
) -> Candidates:
    """:func:`candidate_nucleus` of ``q = softmax((l - max l) / T)`` without computing ``q``
    for the whole row: chunks are ranked by their maximum *logit* (``cmax``, from
    :func:`chunk_max` with the same ``chunk``), and ``q`` is evaluated only at the gathered
    tokens, as ``exp((l - max l) / T) / S`` with ``S`` the row's sum (:func:`exp_sum`).

    ``q`` is a non-decreasing function of the logit in a row, so the ``(chunks+1)``-th ranked
    chunk's maximum logit gives the floor (module docstring). Rows are proven only when the
    last kept candidate exceeds the floor by a relative ``1e-6``, so an ``exp`` that is off
    monotonic by an ulp or two cannot break the proof.

    Args:
        logits: ``[B, V]`` float32 logits; ``row_max`` ``[B]`` their row maxima; ``T`` ``[B]``
            positive temperatures (greedy rows folded in by the caller).
    """
    B, V = logits.shape
    S = exp_sum(logits, row_max, T)

    def prob(values: torch.Tensor) -> torch.Tensor:
        return torch.exp(((values - row_max[:, None]) / T[:, None]).clamp_(min=EXP_FLOOR)) / S[:, None]

    no_floor = logits.new_full((B,), -1.0)
    if V <= max(small_v, k + 1):  # every token is a candidate
        return _candidates(torch.arange(V, device=logits.device).expand(B, -1), prob(logits), no_floor, P, V, chunk)
    if chunks >= cmax.shape[-1]:  # every chunk is gathered: the k largest of the row
        return _candidates(torch.arange(V, device=logits.device).expand(B, -1), prob(logits), no_floor, P, k, chunk, V)
    top = torch.topk(cmax, chunks + 1, dim=-1, sorted=True)
    sel = torch.sort(top.indices[:, :chunks], dim=-1).values
    ids = (sel[:, :, None] * chunk + torch.arange(chunk, device=logits.device)).reshape(B, chunks * chunk)
    vals = torch.where(ids < V, prob(logits.gather(-1, ids.clamp_max(V - 1))), -1.0)  # -1: padding
    floor = prob(top.values[:, chunks:chunks + 1])[:, 0] * (1.0 + 1e-6)
    return _candidates(ids, vals, floor, P, k, chunk, V)


BLOCK_ELEMENTS = 1 << 19
"""Elements per column block of :func:`column_blocks` (2 MiB of float32: stays in cache)."""
BLOCKED_DEVICES = {"cpu"}
"""Device types on which :func:`column_blocks` cuts rows into blocks. Elsewhere (GPUs, whose
caching allocator has no page faults to avoid) a row is one block: each block costs a few
kernel launches, which a GPU pays more for than for a larger temporary."""


def column_blocks(x: torch.Tensor, block: int = BLOCK_ELEMENTS):
    """Yield ``(part, scratch)`` over column blocks of ``x`` ``[B, V]`` (about ``block``
    elements each): ``part`` a view of the columns, ``scratch`` a same-shaped view of one
    buffer reused for every block. Row-wise reductions through it need no ``[B, V]``
    temporary, whose page faults cost more than the arithmetic at large ``B * V``. One block on
    devices outside :data:`BLOCKED_DEVICES`."""
    B, V = x.shape
    cols = max(1, min(V, block // max(B, 1))) if x.device.type in BLOCKED_DEVICES else max(V, 1)
    buffer = x.new_empty(B, cols)
    for start in range(0, V, cols):
        part = x[:, start:start + cols]
        yield part, buffer[:, : part.shape[1]]


def exp_sum(logits: torch.Tensor, row_max: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``sum exp(max((l - max l) / T, EXP_FLOOR))`` per row ``[B]``, block by block
    (:func:`column_blocks`)."""
    m, t = row_max[:, None], T[:, None]
    if torch.compiler.is_compiling():  # inductor fuses this into one pass; no out= there
        return ((logits - m) / t).clamp(min=EXP_FLOOR).exp().sum(dim=-1)
    total = logits.new_zeros(logits.shape[0])
    for part, scratch in column_blocks(logits):
        total += torch.sub(part, m, out=scratch).div_(t).clamp_(min=EXP_FLOOR).exp_().sum(dim=-1)
    return total


OPAQUE_SCAN_DEVICES = {"cuda"}
"""Device types on which the compiled step runs its prefix sums as an opaque operator
(:func:`prefix_sum`). Inductor generates its own kernels for ``cumsum``; with torch 2.11 its
Triton "split scan" code generation failed on the step's long scans (an H200, see
docs/design.md section 3), so there the compiled graph calls ATen's scan kernel instead."""

_OPAQUE_CUMSUM: Any = None


def register_opaque_scan() -> Any:
    """Define ``autodeco_samplers::cumsum`` (``torch.cumsum`` that inductor does not lower) once;
    called before compiling (:func:`autodeco_samplers.core.step.compiled_step`)."""
    global _OPAQUE_CUMSUM
    if _OPAQUE_CUMSUM is None:

        @torch.library.custom_op("autodeco_samplers::cumsum", mutates_args=())
        def cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
            return torch.cumsum(x, dim=dim, dtype=x.dtype)

        @cumsum.register_fake
        def _(x: torch.Tensor, dim: int) -> torch.Tensor:
            return torch.empty_like(x)

        _OPAQUE_CUMSUM = cumsum
    return _OPAQUE_CUMSUM


def prefix_sum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inclusive prefix sum of ``x`` along ``dim`` in ``x``'s own dtype (the one ``cumsum`` of
    the step). Eager: ``torch.cumsum``. Compiled, on :data:`OPAQUE_SCAN_DEVICES`: the opaque
    operator of :func:`register_opaque_scan` (same values, one ATen kernel)."""
    if _OPAQUE_CUMSUM is not None and x.device.type in OPAQUE_SCAN_DEVICES and torch.compiler.is_compiling():
        return _OPAQUE_CUMSUM(x, dim)
    return torch.cumsum(x, dim=dim, dtype=x.dtype)


def _candidates(ids, vals, floor, P, k, chunk, V=None) -> Candidates:
    """The candidates among the gathered ``(ids, vals)`` (``vals`` ``-1`` for padding): the
    ``k`` largest in canonical order, their kept prefix, and which rows are proven."""
    if V is None:  # every token gathered, no padding
        cand_ids, cand_q = _canonical(ids, vals)
    else:
        # at least (gathered chunks - 1) * chunk + 1 gathered values are real (only the last
        # chunk of the row is padded with -1), so the k + 1 largest are never padding
        gathered_all = ids.shape[1] >= V
        kk = min(k, V - 1) if gathered_all else min(k, (ids.shape[1] // chunk - 1) * chunk)
        top = torch.topk(vals, kk + 1, dim=-1, sorted=True)
        floor = torch.maximum(floor, top.values[:, kk])
        cand_ids, cand_q = _canonical(ids.gather(-1, top.indices[:, :kk]), top.values[:, :kk])
    cand_q = cand_q.double()
    inclusive = prefix_sum(cand_q)
    keep = (inclusive - cand_q) < P.double()[:, None]
    keep[:, 0] = True
    n_kept = keep.sum(dim=-1, keepdim=True)
    last_q = cand_q.gather(-1, n_kept - 1)[:, 0]
    kept_mass = inclusive.gather(-1, n_kept - 1)[:, 0]
    proven = (last_q > floor.double()) & (kept_mass >= P.double()) & (P < 1)
    cum = torch.where(keep, inclusive, inclusive.gather(-1, n_kept - 1))
    return Candidates(cand_ids, cand_q, keep, cum, proven)


_RADIX_DIGITS = ((20, 11), (10, 10), (0, 10))
"""``(shift, width)`` of the digits of a float32 bit pattern, most significant first (the
sign bit is 0 for probabilities, so bits 30..0 cover every value)."""


def _crossing_bin(hist: torch.Tensor, base: torch.Tensor, P: torch.Tensor):
    """The bin where the mass, added from the highest bin down on top of ``base``, first
    reaches ``P``: ``(bin [B] int64, base + mass of the higher bins [B])``. The last bin when
    the whole mass stays below ``P`` (those rows keep everything; the caller handles them)."""
    n = hist.shape[-1]
    inclusive = prefix_sum(hist.flip(-1)) + base[:, None]
    j = (inclusive < P[:, None]).sum(dim=-1).clamp_max(n - 1)  # cumsum of masses never decreases
    above = torch.where(j > 0, inclusive.gather(-1, (j - 1).clamp_min(0)[:, None])[:, 0], base)
    return n - 1 - j, above


def _threshold_value(q32: torch.Tensor, q64: torch.Tensor, P64: torch.Tensor):
    """``(v*, M(v*), total)`` ``[B]``: the smallest value present with ``M(v*) < P`` (see the
    module docstring), digit by digit of its bit pattern (per digit, one mass histogram of the
    tokens that share the digits found so far, then the bin where the mass, added from the top,
    crosses ``P``); the mass above it (the higher bins' masses) and the row's whole mass.
    ``P`` must be positive."""
    B = q32.shape[0]
    key = q32.view(torch.int32)
    prefix = torch.zeros(B, dtype=torch.int32, device=q32.device)
    base = torch.zeros(B, dtype=torch.float64, device=q32.device)
    inside = None
    for shift, width in _RADIX_DIGITS:
        high = torch.bitwise_right_shift(key, shift)
        digit = torch.bitwise_and(high, (1 << width) - 1).long()  # scatter indices are int64
        weight = q64 if inside is None else torch.where(inside, q64, 0.0)
        hist = torch.zeros(B, 1 << width, dtype=torch.float64, device=q32.device).scatter_add_(-1, digit, weight)
        if inside is None:
            total = hist.sum(dim=-1)
        d, base = _crossing_bin(hist, base, P64)
        prefix = torch.bitwise_left_shift(prefix, width) | d.to(torch.int32)
        if shift:
            inside = high == prefix[:, None]
    return prefix.view(torch.float32), base, total


def threshold_nucleus(q: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, V]`` kept set of each row by the threshold search (exact; see the module
    docstring). ``P >= 1`` keeps every token with ``q > 0``."""
    q32 = q.float().contiguous()
    q64 = q32.double()
    # P = 0 keeps the first token only, as does any P below every probability (float32 values
    # are >= 1e-45): the search then stops at the largest value with one tie kept
    P64 = P.double().clamp_min(1e-300)
    v_star, m_star, total = _threshold_value(q32, q64, P64)
    v64 = v_star.double()
    # the first r tokens equal to v* (in id order) are kept, r = ceil((P - M(v*)) / v*)
    r = torch.where(v64 > 0, torch.ceil((P64 - m_star) / torch.where(v64 > 0, v64, 1.0)), 0.0)
    # every token of positive probability: v* = 0 and no ties
    everything = (P64 >= 1) | (total < P64)
    v_star = torch.where(everything, torch.zeros_like(v_star), v_star)
    r = torch.where(everything, 0.0, r).clamp(0, q32.shape[-1]).to(torch.int32)  # int: no copies below
    tie = q32 == v_star[:, None]
    tie_rank = prefix_sum(tie.to(torch.int32))
    return (q32 > v_star[:, None]) | (tie & (tie_rank <= r[:, None]))


class _Fallback(NamedTuple):
    """The rows the threshold search handled: ``rows`` (a ``slice`` or an index tensor), their
    scaled logits ``z = (l - max l) / T``, probabilities ``q`` and kept ``mask``; ``synced``:
    whether ``rows`` was chosen on the host (else it is every row and the result is selected
    by ``proven`` on the device)."""

    rows: Any
    z: torch.Tensor
    q: torch.Tensor
    mask: torch.Tensor
    synced: bool


class KeptSet:
    """The kept set of every row of one step, made by :func:`kept_set`. Callers read it through
    two methods: :meth:`logits` (the rule as logits) and :meth:`draw` (one token per row); how
    it is held (candidates for the proven rows, a full mask for the others) stays inside."""

    def __init__(self, logits: torch.Tensor, row_max: torch.Tensor, T: torch.Tensor, cand: Candidates,
                 fallback: Optional[_Fallback]) -> None:
        self._logits = logits
        self._row_max = row_max
        self._T = T  # greedy rows already at 1
        self._cand = cand  # greedy rows folded in (only the argmax, proven)
        self._fallback = fallback  # None when every row is proven

    def logits(self, fill: float) -> torch.Tensor:
        """``[B, V]``: ``(l - max l) / T`` on the kept tokens (clamped below at ``fill``, so
        ``-inf`` inputs become ``fill``), ``fill`` elsewhere; a greedy row has its argmax at 0."""
        cand = self._cand
        kept_z = (self._logits.gather(-1, cand.ids) - self._row_max[:, None]) / self._T[:, None]
        out = torch.full_like(self._logits, fill)
        out.scatter_(-1, cand.ids, torch.where(cand.keep, kept_z.clamp_min(fill), fill))
        fb = self._fallback
        if fb is None:
            return out
        return self._patch(out, torch.where(fb.mask, fb.z.clamp_min(fill), fill))

    def draw(self, u: torch.Tensor) -> torch.Tensor:
        """``[B]`` int64: the kept token of each row where the inverse CDF of the canonical
        distribution crosses ``u`` ``[B]`` (float64 uniforms)."""
        token = draw_from_candidates(self._cand, u)
        fb = self._fallback
        if fb is None:
            return token
        return self._patch(token, draw_from_mask(fb.q, fb.mask, u[fb.rows]))

    def _patch(self, out: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``out`` (``[B, ...]``, from the candidates) with the fallback rows replaced by
        ``values`` (one entry per fallback row)."""
        fb = self._fallback
        if fb.synced:
            out[fb.rows] = values
            return out
        proven = self._cand.proven.view(-1, *([1] * (out.dim() - 1)))
        return torch.where(proven, out, values)


def kept_set(logits: torch.Tensor, T: torch.Tensor, P: torch.Tensor, *, sync: Optional[bool] = None) -> KeptSet:
    """The one torch statement of which tokens are kept, for float32 ``logits`` ``[B, V]``,
    ``T`` and ``P`` ``[B]``: greedy rows (``T < 1e-6``) keep the argmax (lowest id); other
    rows the canonical nucleus, from the candidates where they prove it, else from the
    threshold search (module docstring).

    Read the result with :meth:`KeptSet.logits` or :meth:`KeptSet.draw`.

    ``sync=None`` reads on the host which rows need the threshold search (one boolean read)
    on the CPU, where it costs nothing, and never on an accelerator; ``sync=False`` runs the
    search on every row and selects on the device (no host synchronisation: capturable in a
    CUDA graph); ``sync=True`` always reads.
    """
    synced = logits.device.type == "cpu" if sync is None else sync
    greedy = T < GREEDY_TEMPERATURE
    Tg = torch.where(greedy, torch.ones_like(T), T)
    cmax = chunk_max(logits)  # one pass: row maximum, argmax and candidate chunks from it
    row_max = cmax.amax(dim=-1)
    argmax = first_argmax(logits, cmax)
    if synced and bool(((P >= 1) | greedy).all()):
        # no row needs the candidates or the search: greedy rows keep the argmax (one slot),
        # the others every token with q > 0 (the fallback below)
        one = torch.ones(logits.shape[0], 1, dtype=torch.float64, device=logits.device)
        cand = Candidates(argmax[:, None], one, greedy[:, None].clone(), one, greedy.clone())
        if bool(greedy.all()):
            return KeptSet(logits, row_max, Tg, cand, None)
        rows = slice(None) if not bool(greedy.any()) else (~greedy).nonzero()[:, 0]
        z = (logits[rows] - row_max[rows, None]) / Tg[rows, None]
        q = torch.softmax(z, dim=-1)
        return KeptSet(logits, row_max, Tg, cand, _Fallback(rows, z, q, q > 0, True))
    cand = logit_candidates(logits, row_max, Tg, P, cmax)
    # greedy rows: every candidate slot is the argmax (so a scatter writes one value), all
    # "kept" with cumulative mass 1, so the draw returns slot 0 = the argmax
    g = greedy[:, None]
    cand = Candidates(
        torch.where(g, argmax[:, None], cand.ids), cand.q, cand.keep | g,
        torch.where(g, torch.ones_like(cand.cum), cand.cum), cand.proven | greedy,
    )
    if synced:
        if bool(cand.proven.all()):
            return KeptSet(logits, row_max, Tg, cand, None)
        rows = slice(None) if not bool(cand.proven.any()) else (~cand.proven).nonzero()[:, 0]
    else:
        rows = slice(None)
    z = (logits[rows] - row_max[rows, None]) / Tg[rows, None]
    q = torch.softmax(z, dim=-1)
    return KeptSet(logits, row_max, Tg, cand, _Fallback(rows, z, q, _fallback_mask(q, P[rows], synced), synced))


def _fallback_mask(q: torch.Tensor, P: torch.Tensor, synced: bool) -> torch.Tensor:
    """The kept set of the rows the candidates did not prove. Rows with ``P >= 1`` keep every
    token with ``q > 0`` and need no search: when ``synced``, only the other rows run
    :func:`threshold_nucleus` (none when every row has ``P >= 1``); without a host
    synchronisation every row runs it (its result for ``P >= 1`` rows is that same mask)."""
    if synced:
        everything = P >= 1
        if bool(everything.all()):
            return q > 0
        if bool(everything.any()):
            search = (~everything).nonzero()[:, 0]
            mask = q > 0
            mask[search] = threshold_nucleus(q[search], P[search])
            return mask
    return threshold_nucleus(q, P)


def draw_from_candidates(cand: Candidates, u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF over the kept candidates *in ascending id order* with uniforms ``u``
    ``[B]``: the first kept token whose float64 cumulative mass exceeds ``u * total`` (a
    count, not a binary search: it compiles to one fused reduction), never one of zero
    probability. The same order as :func:`draw_from_mask`, the NumPy reference's
    :func:`~autodeco_samplers.core.reference.draw_row` and the Triton kernel, so a uniform
    gives the same token whichever path holds the row."""
    big = torch.iinfo(cand.ids.dtype).max
    order = torch.argsort(torch.where(cand.keep, cand.ids, big), dim=-1)  # kept ids ascending, the rest last
    ids = cand.ids.gather(-1, order)
    w = torch.where(cand.keep, cand.q, 0.0).gather(-1, order)
    cdf = prefix_sum(w)
    total = cdf[:, -1:]
    idx = (cdf <= u.double()[:, None] * total).sum(dim=-1, keepdim=True)
    last = (cdf < total).sum(dim=-1, keepdim=True)  # the last kept token of positive probability
    return ids.gather(-1, torch.minimum(idx, last))[:, 0]


DRAW_CHUNK = 256
"""Tokens per chunk of :func:`draw_from_mask`'s two-level CDF."""


def draw_from_mask(q: torch.Tensor, mask: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF over the kept tokens of ``mask`` ``[B, V]`` in id order (never a token of
    zero probability) with uniforms ``u`` ``[B]``: the first kept token whose float64
    cumulative mass exceeds ``u * total``.

    In two levels, so no float64 scan runs over the whole row: the float64 mass of each chunk of
    :data:`DRAW_CHUNK` tokens, their prefix sums, the chunk where the CDF first exceeds
    ``u * total``, then the prefix sums inside that chunk only (on top of the chunks before).
    The CDF values are the same sums added in another order (they differ by float64 rounding)."""
    B, V = q.shape
    w = torch.where(mask, q, 0.0)
    if V <= 2 * DRAW_CHUNK:
        cdf = prefix_sum(w.double())
        total = cdf[:, -1:]
        idx = (cdf <= u.double()[:, None] * total).sum(dim=-1)
        # the last token of positive probability is the first where the CDF reaches its total
        # (later tokens add exact zeros); u < 1 never goes past it, this guards rounding only
        return torch.minimum(idx, (cdf < total).sum(dim=-1))
    C = -(-V // DRAW_CHUNK)
    pad = C * DRAW_CHUNK - V
    chunks = (torch.nn.functional.pad(w, (0, pad)) if pad else w).view(B, C, DRAW_CHUNK)
    ccdf = prefix_sum(chunks.sum(dim=-1, dtype=torch.float64))
    total = ccdf[:, -1:]
    x = u.double()[:, None] * total
    # the chunk where the CDF first exceeds x, at most the last chunk of positive mass
    c = torch.minimum((ccdf <= x).sum(dim=-1), (ccdf < total).sum(dim=-1))[:, None]
    before = torch.where(c > 0, ccdf.gather(-1, (c - 1).clamp_min(0)), 0.0)
    inside = chunks.gather(1, c[:, :, None].expand(B, 1, DRAW_CHUNK))[:, 0].double()
    icdf = before + prefix_sum(inside)
    idx = torch.minimum((icdf <= x).sum(dim=-1), (icdf < icdf[:, -1:]).sum(dim=-1))
    return c[:, 0] * DRAW_CHUNK + idx
