"""What ``autodeco demo --model smollm2`` shows besides the per-token table (the command is in
:mod:`autodeco_samplers.frontends.cli.demo_cmd`): a compact terminal line of T and P per engine
(:func:`compact_line`) and a PNG of T and P along each engine's answer (:func:`plot_tp`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

__all__ = ["DEFAULT_QUESTION", "MIN_TOKENS", "compact_line", "plot_tp"]

DEFAULT_QUESTION = "Name an animal."
#: a chat answer needs more tokens than the toy task: --max-new-tokens below this is raised to it
MIN_TOKENS = 32
_BARS = "▁▂▃▄▅▆▇█"


def _bar(value: float, lo: float, hi: float) -> str:
    x = 0.0 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    return _BARS[int(round(x * (len(_BARS) - 1)))]


def compact_line(name: str, steps: List[Dict[str, float]]) -> str:
    """``llama-cpp  T ▃▅▂ 0.41..0.93 | P ▇▇▅ 0.80..0.99``: one character per token, scaled to
    the answer's own range, with that range."""
    if not steps:
        return f"{name:<13} (no tokens)"
    T = [s["T"] for s in steps]
    P = [s["P"] for s in steps]
    t_line = "".join(_bar(v, min(T), max(T)) for v in T)
    p_line = "".join(_bar(v, min(P), max(P)) for v in P)
    return f"{name:<13} T {t_line} {min(T):.2f}..{max(T):.2f} | P {p_line} {min(P):.2f}..{max(P):.2f}"


def plot_tp(runs: Dict[str, Dict[str, Any]], question: str, path: Path) -> Path:
    """One panel per engine: T (left axis) and P (right axis) along that engine's answer, its
    token pieces on the x axis (the engines sample their own answers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max((len(r["steps"]) for r in runs.values()), default=1)
    fig, axes = plt.subplots(len(runs), 1, figsize=(max(7.0, 0.5 * n + 2), 3.2 * len(runs)), squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], runs.items()):
        xs = list(range(len(r["steps"])))
        ax.plot(xs, [s["T"] for s in r["steps"]], marker="o", color="tab:red", label="T")
        ax.set_ylabel("temperature T", color="tab:red")
        ax.set_ylim(0.0, max([1.0] + [s["T"] * 1.1 for s in r["steps"]]))
        right = ax.twinx()
        right.plot(xs, [s["P"] for s in r["steps"]], marker="s", color="tab:blue", label="P")
        right.set_ylabel("top-p P", color="tab:blue")
        right.set_ylim(min([0.5] + [s["P"] - 0.05 for s in r["steps"]]), 1.02)
        pieces = r.get("pieces") or []
        ax.set_xticks(xs)
        ax.set_xticklabels([repr(p)[1:-1][:12] or "<eos>" for p in pieces] if len(pieces) == len(xs) else xs,
                           rotation=60, fontsize=7)
        ax.set_title(f"{name}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"SmolLM2-135M-Instruct + AutoDeco heads: {question!r}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
