#!/usr/bin/env python
"""Greedy accuracy of SmolLM2-135M-Instruct (llama.cpp, Q4_1 GGUF as shipped, no heads) per
task family on the held-out split: the measurement behind the choice of task families
(autodeco_samplers/models/smollm2/tasks.py). Writes bench/results/smollm2_greedy.json.

    python bench/quality/smollm2_greedy.py [--max-new-tokens 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench._provenance import write_json  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on a busy machine)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "smollm2_greedy.json"))
    args = p.parse_args()
    from autodeco_samplers.adapters.llama_cpp import load_llama
    from autodeco_samplers.models.smollm2 import model, tasks

    llm = load_llama(model.gguf_path(), n_ctx=512, n_threads=args.threads)
    items = tasks.heldout_items(None)
    t0 = time.perf_counter()
    texts = []
    for it in items:
        ids = llm.tokenize(it.prompt.encode(), add_bos=True, special=True)
        llm.reset()
        out = []
        for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if llm.token_eos() == tok or len(out) >= args.max_new_tokens:
                break
            out.append(tok)
        texts.append(llm.detokenize(out).decode("utf-8", errors="replace"))
    summary = tasks.summarize(items, texts)
    rep = {
        "what": "greedy decoding (llama.cpp, temperature 0) on the held-out split, no heads",
        "model": f"{model.MODEL_ID} ({model.GGUF_NAME})",
        "max_new_tokens": args.max_new_tokens,
        "per_family": summary,
        "examples": [{"family": it.family, "question": it.question, "answer": t, "correct": tasks.check(it, t)}
                     for it, t in list(zip(items, texts))[::9]],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(args.out, rep)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
