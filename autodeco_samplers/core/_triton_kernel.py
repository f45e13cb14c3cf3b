"""The Triton kernel of the step after the heads (imported only by
:mod:`autodeco_samplers.core.triton_step`, which documents the rule and the passes).

Importing this module imports Triton and decorates the kernel: with ``TRITON_INTERPRET=1`` in
the environment at that moment the kernel runs through Triton's interpreter (CPU tensors);
otherwise it is compiled for the GPU.

One program per row. Passes over the row's logits ``l`` (``z = (l - m) / T``, ``q = exp(z) / S``,
recomputed identically in every pass, so every pass sees the same float32 ``q``):

0. the maximum ``m``, the lowest-id argmax and ``S = sum exp(z)`` (online: per lane a running
   maximum and a rescaled sum);
1. the threshold search, only for rows with ``T >= 1e-6`` and ``P < 1``: a range of float32 bit
   patterns ``[lo, hi]`` (first ``[bits((1 - P) / 2V), bits(1.0)]``) is cut into ``RADIX``
   equal buckets; one pass gives each bucket's float64 mass and the smallest and largest pattern
   present in it (blocks without a token in the range skip that work); the mass, added from the
   top bucket down on top of ``base`` (the mass above the range), first reaches ``P`` in one
   bucket, which holds ``v*``; ``base`` grows by the mass of the higher buckets and the range
   shrinks to that bucket's smallest..largest pattern. When the range is one pattern, it is
   ``v*`` and ``base`` is ``M(v*)``. If no bucket reaches ``P``, ``v*`` is below the range: the
   next pass searches ``[0, lo - 1]`` on top of the range's mass (and a range starting at 0
   means the row's whole mass is below ``P``: every token of positive probability is kept).
   Each pass divides the range by at least ``RADIX`` (at most ``ceil(30 / log2 RADIX) + 2``
   passes), and a bucket holding a single value ends the search at once;
2. the output: logits (kept ``max(z, fill)``, else ``fill``) in one pass, or the draw in two (the
   kept mass; then the inverse CDF in id order, float64).

The kept set: ``q > v*``, plus the first ``r = ceil((P - M(v*)) / v*)`` tokens equal to ``v*`` in
id order; every token with ``q > 0`` when ``P >= 1`` or the row's whole mass is below ``P``;
only the argmax when ``T < 1e-6``.
"""

from __future__ import annotations

import triton
import triton.language as tl

# globals a compiled kernel reads must be constexpr
INT32_MAX = tl.constexpr(2147483647)
ONE_BITS = tl.constexpr(0x3F800000)  # float32 1.0: every probability's pattern is at most this


@triton.jit
def _scaled(x, m, Tg):
    """``(l - m) / T`` (``-inf`` for ``-inf`` logits), correctly rounded as torch's division is
    (a plain ``/`` compiles to an approximate division on NVIDIA GPUs), so the logits output
    equals the torch path's bit for bit."""
    return tl.math.div_rn(x - m, Tg)


@triton.jit
def _kept_block(base_ptr, idx, V, m, Tg, S, v_star, r, ties):
    """One block of a row against the found threshold: ``z = (l - m) / T``, ``q = exp(z) / S``,
    and the kept mask of the canonical rule (``q > v*``, plus the first ``r`` tokens with
    ``q == v*`` in ascending id order, ``ties`` of them already seen in earlier blocks).
    Returns ``(z, q, kept, ties)`` with ``ties`` advanced past this block."""
    x = tl.load(base_ptr + idx, mask=idx < V, other=float("-inf"))
    z = _scaled(x, m, Tg)
    q = tl.exp(z) / S
    tie = (q == v_star) & (idx < V)
    rank = ties + tl.cumsum(tie.to(tl.int32), 0)
    kept = ((q > v_star) | (tie & (rank <= r))) & (idx < V)
    return z, q, kept, ties + tl.sum(tie.to(tl.int32), 0)


@triton.jit
def step_kernel(
    logits_ptr, stride, T_ptr, P_ptr, u_ptr, out_ptr, out_stride, tok_ptr, V, fill,
    SAMPLE: tl.constexpr, BLOCK: tl.constexpr, RADIX: tl.constexpr, GREEDY: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base_ptr = logits_ptr + row * stride
    offs = tl.arange(0, BLOCK)
    bins = tl.arange(0, RADIX)
    T = tl.load(T_ptr + row)
    P = tl.load(P_ptr + row)
    greedy = T < GREEDY
    Tg = tl.where(greedy, 1.0, T)

    # ---- pass 0: maximum, lowest-id argmax, sum of exponentials (online)
    mv = tl.full([BLOCK], float("-inf"), tl.float32)
    sv = tl.zeros([BLOCK], tl.float32)
    bi = tl.full([BLOCK], INT32_MAX, tl.int32)
    for start in range(0, V, BLOCK):
        idx = start + offs
        x = tl.load(base_ptr + idx, mask=idx < V, other=float("-inf"))
        better = x > mv  # strict: a lane keeps its first maximum
        bi = tl.where(better, idx, bi)
        new_m = tl.maximum(mv, x)
        safe = tl.where(new_m == float("-inf"), 0.0, new_m)
        sv = sv * tl.exp((mv - safe) / Tg) + tl.exp((x - safe) / Tg)
        mv = new_m
    m = tl.max(mv, 0)
    argmax = tl.minimum(tl.min(tl.where(mv == m, bi, INT32_MAX), 0), V - 1)
    msafe = tl.where(mv == float("-inf"), m, mv)
    S = tl.sum(tl.where(mv == float("-inf"), 0.0, sv * tl.exp((msafe - m) / Tg)), 0)

    # ---- pass 1: the threshold v* (bit pattern lo) and the mass above it (base)
    # P = 0 keeps the first token only, as any P below every probability does (float32 values
    # are >= 1e-45); the constant is built as float64 (a plain literal would be float32: 0)
    P64 = tl.maximum(P.to(tl.float64), tl.full([], 1e-300, tl.float64))
    search = (T >= GREEDY) & (P < 1.0)
    # start above (1 - P) / (2 V): the tokens below hold at most (1 - P) / 2 of the mass, so
    # v* is usually above; if not (no bucket crosses P), the next pass searches below
    floor = ((1.0 - P) / (2.0 * V)).to(tl.float32)
    lo = tl.where(search, floor.to(tl.int32, bitcast=True), 0).to(tl.int32)
    hi = tl.where(search, ONE_BITS, 0).to(tl.int32)
    base = tl.zeros([], tl.float64)
    everything = P >= 1.0
    while lo < hi:
        step = (hi - lo) // RADIX + 1
        mass = tl.zeros([RADIX], tl.float64)
        kmin = tl.full([RADIX], INT32_MAX, tl.int32)
        kmax = tl.full([RADIX], -1, tl.int32)
        for start in range(0, V, BLOCK):
            idx = start + offs
            x = tl.load(base_ptr + idx, mask=idx < V, other=float("-inf"))
            q = tl.exp(_scaled(x, m, Tg)) / S
            key = q.to(tl.int32, bitcast=True)
            inside = (idx < V) & (key >= lo) & (key <= hi)
            if tl.max(inside.to(tl.int32), 0) > 0:  # blocks with no token in the range cost a load
                b = (key - lo) // step
                hit = (b[:, None] == bins[None, :]) & inside[:, None]
                mass += tl.sum(tl.where(hit, q.to(tl.float64)[:, None], 0.0), 0)
                kmin = tl.minimum(kmin, tl.min(tl.where(hit, key[:, None], INT32_MAX), 0))
                kmax = tl.maximum(kmax, tl.max(tl.where(hit, key[:, None], -1), 0))
        # mass of each bucket and every higher one, on top of base
        suffix = tl.sum(tl.where(bins[None, :] >= bins[:, None], mass[None, :], 0.0), 1)
        below = tl.sum(((base + suffix) < P64).to(tl.int32), 0)
        if below == RADIX:  # no bucket reaches P: v* lies below the range, or nowhere
            base = base + tl.sum(mass, 0)
            everything = lo == 0  # the whole row's mass is below P: keep every token
            hi = tl.where(everything, lo, lo - 1)
            lo = tl.zeros([], tl.int32)
        else:
            cross = RADIX - 1 - below
            base = base + tl.sum(tl.where(bins > cross, mass, 0.0), 0)
            lo = tl.sum(tl.where(bins == cross, kmin, 0), 0)
            hi = tl.sum(tl.where(bins == cross, kmax, 0), 0)
    v_star = tl.where(everything, 0.0, lo.to(tl.float32, bitcast=True))
    v64 = v_star.to(tl.float64)
    r = tl.where(v64 > 0, tl.ceil((P64 - base) / tl.where(v64 > 0, v64, 1.0)), 0.0)
    r = tl.minimum(tl.maximum(r, 0.0), V * 1.0).to(tl.int32)

    # ---- pass 2: the output
    if SAMPLE:
        n = tl.where(greedy, 0, V)  # greedy rows: the argmax, no pass
        kept_total = tl.zeros([], tl.float64)
        ties = tl.zeros([], tl.int32)
        for start in range(0, n, BLOCK):
            idx = start + offs
            _, q, kept, ties = _kept_block(base_ptr, idx, V, m, Tg, S, v_star, r, ties)
            kept_total += tl.sum(tl.where(kept, q.to(tl.float64), 0.0), 0)
        target = tl.load(u_ptr + row).to(tl.float64) * kept_total
        count = tl.zeros([], tl.int32)
        last = tl.full([], -1, tl.int32)
        carry = tl.zeros([], tl.float64)
        ties = tl.zeros([], tl.int32)
        for start in range(0, n, BLOCK):
            idx = start + offs
            _, q, kept, ties = _kept_block(base_ptr, idx, V, m, Tg, S, v_star, r, ties)
            w = tl.where(kept, q.to(tl.float64), 0.0)
            cdf = carry + tl.cumsum(w, 0)
            count += tl.sum(((cdf <= target) & (idx < V)).to(tl.int32), 0)
            last = tl.maximum(last, tl.max(tl.where(w > 0, idx, -1), 0))
            carry = tl.max(cdf, 0)
        token = tl.where(greedy, argmax, tl.minimum(count, last))
        tl.store(tok_ptr + row, token.to(tl.int64))
    else:
        out_row = out_ptr + row * out_stride
        ties = tl.zeros([], tl.int32)
        for start in range(0, V, BLOCK):
            idx = start + offs
            z, _, kept, ties = _kept_block(base_ptr, idx, V, m, Tg, S, v_star, r, ties)
            kept = tl.where(greedy, idx == argmax, kept)
            tl.store(out_row + idx, tl.where(kept, tl.maximum(z, fill), fill), mask=idx < V)
