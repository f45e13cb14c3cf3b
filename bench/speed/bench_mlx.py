"""MLX (mlx-lm, CPU build): tokens/s of AutoDeco (heads + canonical rule) vs mlx-lm's own sampler.

Real model SmolLM2-135M-Instruct (the float32 folder `autodeco smollm2 prepare` makes, shipped
heads), loaded once by :func:`autodeco_samplers.adapters.mlx.load`. Each round generates
``--tokens`` tokens after the same chat prompt with mlx-lm's ``generate_step`` twice: once with
``mlx_lm.sample_utils.make_sampler(temp, top_p)`` on the untapped model, once with the AutoDeco
sampler (:func:`~autodeco_samplers.adapters.mlx.attach`, detached after the round); the order is
reversed every other round. Reported: median tokens/s of each (prefill included, the same for
both) and the median of the per-round ratios AutoDeco / mlx-lm (goal >= 0.95).

    python bench/speed/bench_mlx.py            # 64 tokens, 7 rounds -> bench/results/bench_mlx.json
    python bench/speed/bench_mlx.py --quick    # 24 tokens, 3 rounds -> bench_mlx_quick.json (not committed)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from bench._provenance import write_json  # noqa: E402

LABEL = "real model SmolLM2-135M-Instruct"
PROMPT = "Write a long story about a dragon who learns to cook. Use at least three paragraphs."


def _load() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def _run(model, prompt_ids, sampler, tokens: int) -> float:
    """Seconds to generate ``tokens`` tokens (mlx-lm's loop computes one more ahead)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    t0 = time.perf_counter()
    n = 0
    for _tok, _ in generate_step(mx.array(prompt_ids), model, max_tokens=tokens, sampler=sampler):
        n += 1
    assert n == tokens
    return time.perf_counter() - t0


def bench(tokens: int, rounds: int, temp: float, top_p: float) -> dict:
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    from autodeco_samplers import load_heads
    from autodeco_samplers.adapters.mlx import attach, load
    from autodeco_samplers.models import smollm2

    heads = load_heads(smollm2.heads_path())
    model, tokenizer, autodeco = load(smollm2.hf_path(), heads, seed=0)
    autodeco.detach()
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    native = make_sampler(temp=temp, top_p=top_p)

    def ours() -> float:
        ad = attach(model, heads, seed=0)
        try:
            return _run(model, prompt_ids, ad.sampler, tokens)
        finally:
            ad.detach()

    def theirs() -> float:
        mx.random.seed(0)
        return _run(model, prompt_ids, native, tokens)

    ours(), theirs()  # warm-up (first-call compilation and allocation)
    t_ours, t_theirs, ratios = [], [], []
    for r in range(rounds):
        pair = {}
        for name in (("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")):
            pair[name] = ours() if name == "ours" else theirs()
        t_ours.append(pair["ours"])
        t_theirs.append(pair["theirs"])
        ratios.append(pair["theirs"] / pair["ours"])  # tokens/s ratio, ours / theirs
    return {
        "tokens": tokens, "rounds": rounds, "prompt_tokens": len(prompt_ids),
        "mlx_lm_sampler": f"make_sampler(temp={temp}, top_p={top_p})",
        "autodeco_tokens_per_s": round(tokens / statistics.median(t_ours), 2),
        "mlx_lm_tokens_per_s": round(tokens / statistics.median(t_theirs), 2),
        "ratio_median": round(statistics.median(ratios), 4),
        "ratios": [round(x, 4) for x in ratios],
        "goal": 0.95,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="24 tokens, 3 rounds")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per run (default 64)")
    ap.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 7)")
    ap.add_argument("--temp", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_mlx.json"))
    a = ap.parse_args(argv)
    import mlx.core as mx
    import mlx_lm

    tokens = a.tokens or (24 if a.quick else 64)
    rounds = a.rounds or (3 if a.quick else 7)
    out = Path(a.out if not a.quick else a.out.replace(".json", "_quick.json"))
    load_before = _load()
    report = {"label": LABEL, "engine": f"mlx {mx.__version__} (CPU build), mlx-lm {mlx_lm.__version__}",
              "device": str(mx.default_device()), "loadavg_before": load_before}
    report["result"] = bench(tokens, rounds, a.temp, a.top_p)
    report["loadavg_after"] = _load()
    if max(load_before[0], report["loadavg_after"][0]) >= 1.5:
        report["note"] = "provisional: measured on a shared machine (load average >= 1.5, see loadavg); medians over alternated rounds"
    print(report)
    write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
