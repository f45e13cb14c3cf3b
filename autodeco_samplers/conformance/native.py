"""Where each engine's *own* temperature/top-p departs from the canonical rule (docs/design.md section 8).

Native kernels run the engine's real code on the same logits with a static (T, P):

* ``hf-warpers``: transformers' ``TemperatureLogitsWarper`` then ``TopPLogitsWarper``;
* ``llama-cpp-native``: llama.cpp's sampler chain in llama-cpp-python's order
  (``top_p`` then ``temp``; top-k, typical and min-p disabled), applied through its C API;
* ``sglang-native`` (when SGLang is importable): its sampler's top-p renormalisation.

:func:`native_report` checks each against the canonical distribution with the suite's one
checker on seeded cases of every logits shape and writes a markdown table with the first
(smallest) diverging example per kind of case. ``autodeco conformance --native-report FILE``
produces the report; docs/conformance.md quotes it (section "Where each engine's own temperature/top-p departs from the rule").
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from autodeco_samplers.conformance.checker import check_distribution
from autodeco_samplers.conformance.strategies import SHAPES, _row
from autodeco_samplers.core.reference import descending_order, temperature_probs


def hf_warpers(logits: np.ndarray, T: float, P: float) -> np.ndarray:
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    scores = torch.from_numpy(np.asarray(logits, np.float32))[None]
    ids = torch.zeros((1, 1), dtype=torch.long)
    scores = TemperatureLogitsWarper(T)(ids, scores)
    scores = TopPLogitsWarper(P)(ids, scores)
    return torch.softmax(scores, dim=-1)[0].double().numpy()


def llama_cpp_native(logits: np.ndarray, T: float, P: float) -> np.ndarray:
    import llama_cpp as lc

    V = len(logits)
    data = (lc.llama_token_data * V)()
    for i, value in enumerate(np.asarray(logits, np.float32)):
        data[i].id, data[i].logit, data[i].p = i, float(value), 0.0
    cur = lc.llama_token_data_array(data=ctypes.cast(data, lc.llama_token_data_p), size=V, selected=-1, sorted=False)
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(float(P), 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(float(T)))
    try:
        lc.llama_sampler_apply(chain, ctypes.byref(cur))
        kept = [(cur.data[i].id, cur.data[i].logit) for i in range(cur.size)]
    finally:
        lc.llama_sampler_free(chain)
    ids = np.array([k for k, _ in kept])
    z = np.array([v for _, v in kept], np.float64)
    finite = np.isfinite(z)
    probs = np.zeros(V)
    if finite.any():  # llama.cpp applied the temperature: the plain softmax of what it kept
        probs[ids[finite]] = temperature_probs(z[finite], 1.0)
    return probs


def sglang_native(logits: np.ndarray, T: float, P: float) -> np.ndarray:
    import torch
    from sglang.srt.layers.sampler import top_p_normalize_probs_torch

    probs = torch.softmax(torch.from_numpy(np.asarray(logits, np.float32))[None] / T, dim=-1)
    return top_p_normalize_probs_torch(probs, torch.tensor([P]))[0].double().numpy()


NATIVE: Dict[str, Tuple[str, Callable]] = {
    "hf-warpers": ("transformers", hf_warpers),
    "llama-cpp-native": ("llama_cpp", llama_cpp_native),
    "sglang-native": ("sglang", sglang_native),
}


@dataclass
class NativeFinding:
    engine: str
    cases: int = 0
    disagreements: int = 0
    by_shape: Dict[str, int] = field(default_factory=dict)
    examples: List[Tuple[int, str]] = field(default_factory=list)  # (V, description)
    skipped: Optional[str] = None


def _cases(n_per_shape: int, seed: int):
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        for i in range(n_per_shape):
            V = int(rng.choice([3, 5, 8, 16, 64]))
            T = float(rng.choice([0.3, 0.7, 1.0, 1.5]))
            row = _row(rng, V, shape)
            # P on an exact prefix sum of the canonical q half the time: where rules differ most
            if i % 2 == 0 and shape not in ("huge", "sparse_inf"):
                q = temperature_probs(row[None].astype(np.float64), T)[0]
                sq = q[descending_order(q[None])[0]].astype(np.float32)
                k = int(rng.integers(1, max(2, V - 1)))
                P = float(np.float32(sq[:k].sum(dtype=np.float32)))
            else:
                P = float(rng.choice([0.5, 0.8, 0.9, 0.95]))
            yield shape, row, T, min(P, 1.0)


def native_findings(n_per_shape: int = 20, seed: int = 0) -> List[NativeFinding]:
    import importlib.util

    findings = []
    for name, (module, fn) in NATIVE.items():
        finding = NativeFinding(name)
        if importlib.util.find_spec(module) is None:
            finding.skipped = f"{module} is not installed here"
            findings.append(finding)
            continue
        for shape, row, T, P in _cases(n_per_shape, seed):
            try:
                probs = fn(row, T, P)
            except Exception as exc:  # a native path that crashes is a finding too
                finding.skipped = f"{type(exc).__name__}: {exc}"
                break
            finding.cases += 1
            verdict = check_distribution(row[None], np.float32(T), np.float32(P), probs[None])
            if not verdict.ok:
                finding.disagreements += 1
                finding.by_shape[shape] = finding.by_shape.get(shape, 0) + 1
                shown = np.round(row[:16].astype(np.float64), 3).tolist()
                finding.examples.append((
                    len(row),
                    f"{shape}: V={len(row)}, T={T}, P={P:.7g}; logits={shown}{' ...' if len(row) > 16 else ''}; "
                    + "; ".join(p[:300] for p in verdict.rows[0].problems),
                ))
        findings.append(finding)
    return findings


def native_report(n_per_shape: int = 20, seed: int = 0) -> str:
    """Markdown: per native sampler, how often and how it departs from the canonical rule."""
    lines = [
        "| native sampler | cases | disagree | where (logits shape: count) |",
        "|---|---:|---:|---|",
    ]
    findings = native_findings(n_per_shape, seed)
    for f in findings:
        if f.skipped:
            lines.append(f"| {f.engine} | - | - | skipped: {f.skipped} |")
        else:
            where = ", ".join(f"{k}: {v}" for k, v in sorted(f.by_shape.items())) or "-"
            lines.append(f"| {f.engine} | {f.cases} | {f.disagreements} | {where} |")
    for f in findings:
        if f.examples:
            lines.append(f"\n**{f.engine}**, smallest diverging examples:\n")
            lines.extend(f"- {text}" for _, text in sorted(f.examples, key=lambda e: e[0])[:4])
    return "\n".join(lines)
