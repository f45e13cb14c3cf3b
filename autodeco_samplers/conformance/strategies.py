"""Hypothesis strategies for AutoDeco decoding cases, usable against any engine.

``decoding_cases()`` draws a :class:`DecodingCase`: a ``[B, V]`` float32 logits batch shaped
to stress the canonical rule (ties and plateaus, -inf entries, very large and very small
magnitudes, peaked and flat rows), plus per-row ``T`` in ``[0, 2]`` (with mass near 0, at the
greedy threshold and near 2) and ``P`` in ``[0, 1]`` (with mass at and near 0 and 1).
``heads_cases()`` adds random heads of any hidden size in both feature modes, and
``policies()`` the request knobs.

Vocabulary sizes (:func:`vocab_sizes`): mostly 1 to 300 (where ties, plateaus and boundary
cases are dense), about 10% from 301 to 4096 (1025 and 4096 included: the transformers
adapter's candidate path starts above 1025), and about 1% at real vocabularies (32000,
32768, 151936, 152064). :func:`real_size_cases` adds fixed seeded cases at 32000 and 152064
that the kernel level always runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from hypothesis import strategies as st

from autodeco_samplers.core.policy import DecodingPolicy


@dataclass
class DecodingCase:
    logits: np.ndarray  # [B, V] float32
    T: np.ndarray  # [B] float32
    P: np.ndarray  # [B] float32

    def __repr__(self) -> str:  # a readable shrunk reproducer
        np.set_printoptions(threshold=64, precision=6)
        return (
            f"DecodingCase(logits=np.array({self.logits.tolist()!r}, dtype=np.float32), "
            f"T=np.array({self.T.tolist()!r}, dtype=np.float32), P=np.array({self.P.tolist()!r}, dtype=np.float32))"
        )


SHAPES = ("gaussian", "peaked", "flat", "ties", "plateau", "huge", "tiny", "sparse_inf", "integers")


def _row(rng: np.random.Generator, V: int, shape: str) -> np.ndarray:
    if shape == "gaussian":
        row = rng.normal(0, 3, V)
    elif shape == "peaked":
        row = rng.normal(0, 1, V)
        row[rng.integers(V)] += 15
    elif shape == "flat":
        row = np.zeros(V)
    elif shape == "ties":
        row = rng.integers(-3, 3, V).astype(np.float64)
    elif shape == "plateau":
        row = rng.normal(0, 2, V)
        k = max(1, V // 3)
        row[rng.choice(V, size=k, replace=False)] = row.max() + 1.0
    elif shape == "huge":
        row = rng.normal(0, 1, V) * 1e30
    elif shape == "tiny":
        row = rng.normal(0, 1, V) * 1e-30
    elif shape == "sparse_inf":
        row = rng.normal(0, 3, V)
        dead = rng.random(V) < 0.7
        dead[rng.integers(V)] = False
        row[dead] = -np.inf
    else:  # integers: many exact ties with a wide spread
        row = rng.integers(-20, 20, V).astype(np.float64)
    return row.astype(np.float32)


temperatures = st.one_of(
    st.floats(0.0, 2.0, width=32),
    st.sampled_from([0.0, 1e-7, 1e-6, 2e-6, 1e-3, 0.05, 1.0, 1.999, 2.0]),
)
top_ps = st.one_of(
    st.floats(0.0, 1.0, width=32),
    st.sampled_from([0.0, 1e-6, 0.5, 0.9, 0.999999, 1.0]),
)


#: Real vocabulary sizes: Llama 2 / Mistral, Mistral v3, Qwen2/Qwen3 (tokenizer / embedding rows).
REAL_VOCAB_SIZES = (32000, 32768, 151936, 152064)
#: How a vocabulary size is drawn: ``(share in percent, strategy)``.
_VOCAB_BUCKETS = (
    (89, lambda: st.integers(1, 300)),
    (10, lambda: st.one_of(st.integers(301, 4096), st.sampled_from([1024, 1025, 1026, 4096]))),
    (1, lambda: st.sampled_from(REAL_VOCAB_SIZES)),
)
_SLOTS = 100


@st.composite
def vocab_sizes(draw, max_vocab: Optional[int] = None) -> int:
    """A vocabulary size: ~89% in 1..300, ~10% in 301..4096, ~1% a real one (32k to 152k);
    ``max_vocab`` caps it. The bucket is drawn first, uniformly from 100 slots, so the
    shares hold under Hypothesis's generation (which favours small integers)."""
    slot = draw(st.integers(0, _SLOTS - 1).map(lambda i: (i * 37) % _SLOTS))  # spread Hypothesis's favourites
    for share, strategy in _VOCAB_BUCKETS:
        if slot < share:
            break
        slot -= share
    V = draw(strategy())
    return V if max_vocab is None else min(V, max_vocab)


@st.composite
def decoding_cases(draw, max_batch: int = 4, vocab_sizes=None, shapes=SHAPES) -> DecodingCase:
    """A batch of logits with per-row (T, P); vocab sizes default to :func:`vocab_sizes`."""
    B = draw(st.integers(1, max_batch))
    V = draw(vocab_sizes if vocab_sizes is not None else globals()["vocab_sizes"]())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rows = [_row(rng, V, draw(st.sampled_from(shapes))) for _ in range(B)]
    T = np.array([draw(temperatures) for _ in range(B)], dtype=np.float32)
    P = np.array([draw(top_ps) for _ in range(B)], dtype=np.float32)
    return DecodingCase(np.stack(rows), T, P)


@st.composite
def policies(draw) -> DecodingPolicy:
    """Request knobs: multipliers (mostly default), optional clamps and overrides."""
    lo = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    hi = draw(st.one_of(st.none(), st.floats(1.0, 2.0)))
    return DecodingPolicy(
        temperature=draw(st.one_of(st.just(1.0), st.just(0.0), st.floats(0.0, 2.0))),
        top_p=draw(st.one_of(st.just(1.0), st.floats(0.0, 2.0))),
        min_temperature=lo,
        max_temperature=hi,
        fixed_temperature=draw(st.one_of(st.none(), st.floats(0.0, 2.0))),
        fixed_top_p=draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
    )


@dataclass
class HeadsCase:
    hidden_size: int
    enhanced: bool
    seed: int
    width: int
    hidden: np.ndarray  # [B, H] float32
    logits: np.ndarray  # [B, V] float32
    enable_temperature_head: bool = True
    enable_top_p_head: bool = True

    def heads(self, dtype=np.float32):
        """NumPy heads with weights from ``seed`` (last layers scaled so T, P spread out)."""
        from autodeco_samplers.heads import AutoDecoHeads
        from autodeco_samplers.heads.model.init import init_heads

        config, tensors = init_heads(
            self.hidden_size,
            width=self.width,
            use_enhanced_features=self.enhanced,
            enable_temperature_head=self.enable_temperature_head,
            enable_top_p_head=self.enable_top_p_head,
            seed=self.seed,
        )
        for k in tensors:
            if k.endswith("mlp.2.weight"):
                tensors[k] = tensors[k] * 6.0
        return AutoDecoHeads(config, tensors, dtype=dtype)


@st.composite
def heads_cases(draw, max_batch: int = 4, max_hidden: int = 96, max_vocab: Optional[int] = None) -> HeadsCase:
    """Random heads of any hidden size in both feature modes, with inputs to run them on;
    the vocabulary size from :func:`vocab_sizes` (capped at ``max_vocab`` if given)."""
    H = draw(st.integers(1, max_hidden))
    B = draw(st.integers(1, max_batch))
    V = draw(vocab_sizes(max_vocab))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    hidden = (rng.normal(0, 1, (B, H)) * draw(st.sampled_from([0.1, 1.0, 10.0]))).astype(np.float32)
    logits = np.stack([_row(rng, V, draw(st.sampled_from(("gaussian", "peaked", "ties", "sparse_inf")))) for _ in range(B)])
    return HeadsCase(
        hidden_size=H,
        enhanced=draw(st.booleans()),
        seed=seed % 2**31,
        width=draw(st.sampled_from([1, 8, 32])),
        hidden=hidden,
        logits=logits,
        enable_temperature_head=draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True,
        enable_top_p_head=True,
    )


def real_size_cases(sizes=(32000, 152064), seed: int = 0):
    """Fixed seeded :class:`HeadsCase` s at real vocabulary sizes, one per logits shape family
    that matters there (gaussian, peaked, ties, plateau, sparse -inf), two rows each, with the
    policies they are checked under (the default, and request multipliers that widen and
    narrow the nucleus). Deterministic: the same cases on every run."""
    rng = np.random.default_rng(seed)
    out = []
    for V in sizes:
        for k, shape in enumerate(("gaussian", "peaked", "ties", "plateau", "sparse_inf")):
            H = int(rng.integers(8, 97))
            case_seed = int(rng.integers(0, 2**31))
            crng = np.random.default_rng(case_seed)
            hidden = crng.normal(0, 1, (2, H)).astype(np.float32)
            logits = np.stack([_row(crng, V, shape) for _ in range(2)])
            case = HeadsCase(H, k % 2 == 0, case_seed, 32, hidden, logits)
            policy = (DecodingPolicy(), DecodingPolicy(temperature=1.5, top_p=1.1), DecodingPolicy(top_p=0.5))[k % 3]
            out.append((case, policy))
    return out
