"""Tokens/s of AutoDeco on vLLM with and without n-gram speculative decoding (not a test).

One prepared AutoDeco folder, two engines in this process: ``plain`` (no speculation) and
``ngram`` (``speculative_config={"method": "ngram", ...}``, prompt lookup). Default model:
SmolLM2-135M-Instruct (float32 folder with the shipped heads, ``docs/real_model.md``);
``--model tiny`` uses a random tiny Llama instead (labelled ``tiny`` in the JSON: its text is
noise, so its acceptance says nothing about real text).

Cases: two chat prompts, one that asks the model to copy a paragraph (what prompt lookup is
for) and one open question; each with greedy requests (``temperature 0``) and AutoDeco's
default requests (the heads' own T and P per token; seeded). Each round generates ``--tokens``
tokens for ``--batch`` copies of the prompt on both engines, the order alternating between
rounds. Prints tokens/s, the median per-round ratio ngram/plain, and the speculative counters
of the ``ngram`` engine (drafted and accepted tokens), and writes JSON to
``bench/results/vllm_speculative.json``. Run in ``.venv-vllm``:

    .venv-vllm/bin/python bench/speed/bench_vllm_speculative.py
    .venv-vllm/bin/python bench/speed/bench_vllm_speculative.py --model tiny --tokens 32 --repeats 2
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._provenance import write_json  # noqa: E402

PARAGRAPH = (
    "The river rises in the hills north of the town, runs through three villages and a forest of "
    "old oaks, turns east at the stone bridge, and reaches the sea after forty miles. In spring the "
    "water is high and cold; in late summer children can walk across it at the ford below the mill."
)
PROMPTS = {
    "copy": "Repeat the following paragraph exactly, word for word:\n\n" + PARAGRAPH,
    "open": "Write a short story about a lighthouse keeper and a storm.",
}
COUNTERS = {
    "drafts": "vllm:spec_decode_num_drafts",
    "draft_tokens": "vllm:spec_decode_num_draft_tokens",
    "accepted_tokens": "vllm:spec_decode_num_accepted_tokens",
}


def build_served(root: Path, model: str) -> Path:
    from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint

    if model == "smollm2":
        from autodeco_samplers.models.smollm2 import heads_path
        from autodeco_samplers.models.smollm2 import model as smollm2

        return prepare_vllm_checkpoint(smollm2.hf_path(), root / "served", heads=heads_path())
    from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

    base = save_tiny_model(root / "base", "llama", seed=0, vocab_size=32000, hidden_size=256, num_layers=2,
                           num_heads=4, num_kv_heads=2, intermediate_size=704)
    heads = save_tiny_heads(root / "heads", 256, seed=1, width=64)
    return prepare_vllm_checkpoint(base, root / "served", heads=heads)


def counters(llm) -> dict:
    values = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
    return {key: int(values.get(name) or 0) for key, name in COUNTERS.items()}


def run(args) -> dict:
    from vllm import LLM, SamplingParams

    spec = {"method": "ngram", "num_speculative_tokens": args.k, "prompt_lookup_min": args.lookup_min,
            "prompt_lookup_max": args.lookup_max}
    common = dict(dtype="float32", max_model_len=512, enforce_eager=True, max_num_seqs=max(args.batch, 4), seed=0,
                  disable_log_stats=False)
    results = {"model": args.model, "config": vars(args), "speculative_config": spec,
               "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        served = build_served(Path(tmp), args.model)
        engines = {"plain": LLM(str(served), **common), "ngram": LLM(str(served), speculative_config=spec, **common)}
        import vllm

        results["vllm"] = vllm.__version__
        for prompt_name, question in PROMPTS.items():
            if args.model == "smollm2":
                from autodeco_samplers.models.smollm2.tasks import chat_prompt

                prompt = chat_prompt(question)
            else:
                prompt = question
            for mode in ("greedy", "autodeco"):
                def params(r):
                    if mode == "greedy":
                        return SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
                    return [SamplingParams(seed=1000 * r + i, max_tokens=args.tokens, ignore_eos=True)
                            for i in range(args.batch)]

                prompts = [prompt] * args.batch
                for name in engines:  # warm-up
                    engines[name].generate(prompts, params(99), use_tqdm=False)
                rates = {"plain": [], "ngram": []}
                ratios, spec_counts = [], {k: 0 for k in COUNTERS}
                for r in range(args.repeats):
                    order = ["plain", "ngram"] if r % 2 == 0 else ["ngram", "plain"]
                    this = {}
                    for name in order:
                        before = counters(engines[name])
                        t0 = time.perf_counter()
                        outs = engines[name].generate(prompts, params(r), use_tqdm=False)
                        dt = time.perf_counter() - t0
                        n = sum(len(o.outputs[0].token_ids) for o in outs)
                        this[name] = n / dt
                        rates[name].append(n / dt)
                        if name == "ngram":
                            after = counters(engines[name])
                            for k in spec_counts:
                                spec_counts[k] += after[k] - before[k]
                    ratios.append(this["ngram"] / this["plain"])
                    print(f"{prompt_name} {mode} round {r}: plain {this['plain']:.1f} tok/s, ngram {this['ngram']:.1f} tok/s, "
                          f"ratio {ratios[-1]:.3f}", flush=True)
                acc = spec_counts["accepted_tokens"] / spec_counts["draft_tokens"] if spec_counts["draft_tokens"] else 0.0
                case = {"prompt": prompt_name, "mode": mode, "batch": args.batch,
                        "plain_tok_s": statistics.median(rates["plain"]), "ngram_tok_s": statistics.median(rates["ngram"]),
                        "ratio_median": statistics.median(ratios), "acceptance_rate": acc,
                        "accepted_per_draft_step": (spec_counts["accepted_tokens"] / spec_counts["drafts"]
                                                    if spec_counts["drafts"] else 0.0),
                        "spec_counters": spec_counts, "runs": rates, "ratios": ratios}
                results["cases"].append(case)
                print(f"== {prompt_name} {mode}: plain {case['plain_tok_s']:.1f} tok/s, ngram {case['ngram_tok_s']:.1f} "
                      f"tok/s, median ratio {case['ratio_median']:.3f}, drafts accepted {acc:.2f} "
                      f"({spec_counts['accepted_tokens']}/{spec_counts['draft_tokens']})", flush=True)
        del engines
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    p.add_argument("--lookup-min", type=int, default=2)
    p.add_argument("--lookup-max", type=int, default=4)
    p.add_argument("--out", default=None, help="JSON path (default bench/results/vllm_speculative[_tiny].json)")
    args = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    results = run(args)
    name = "vllm_speculative.json" if args.model == "smollm2" else "vllm_speculative_tiny.json"
    out = Path(args.out or Path(__file__).parents[1] / "results" / name)
    write_json(out, results, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
