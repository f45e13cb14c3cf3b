"""Tokens/s of vLLM with AutoDeco vs the same vLLM with its own sampler (not a test).

Per vocabulary size, a random Llama (default hidden 1024, 8 layers, bfloat16) is saved
twice from one seed: as the plain base folder, and prepared with random heads
(``prepare_vllm_checkpoint``). Two engines run side by side in one process:

* native: the base folder, requests with vLLM's own ``temperature=0.8, top_p=0.9``;
* autodeco: the prepared folder, default requests (the heads' own T and P; the transform
  runs in the model's ``compute_logits``).

Each round generates ``--tokens`` tokens for a batch of ``--batch`` identical-length prompts
(token ids, ``ignore_eos``) on both engines, the order alternating between rounds. Prints
per-run tokens/s, the medians and the median of the per-round ratios autodeco/native, and
writes JSON to ``bench/results/``. Run in ``.venv-vllm`` (``scripts/setup_vllm.sh``):

    .venv-vllm/bin/python bench/speed/bench_vllm.py            # full: vocab 32k and 152k, batch 1 and 16
    .venv-vllm/bin/python bench/speed/bench_vllm.py --quick    # small sanity run
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


def build_folders(root: Path, vocab: int, hidden: int, layers: int, seed: int):
    import torch

    from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint
    from autodeco_samplers.models.tiny_models import build_tiny_model, save_tiny_heads

    heads_n = max(hidden // 64, 1)
    model = build_tiny_model("llama", seed=seed, vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                             num_heads=heads_n, num_kv_heads=max(heads_n // 2, 1), intermediate_size=hidden * 11 // 4,
                             max_position_embeddings=2048)
    base = root / f"base-{vocab}"
    model.to(torch.bfloat16).save_pretrained(base, safe_serialization=True)
    heads = save_tiny_heads(root / f"heads-{vocab}", hidden, seed=seed + 1, width=256)
    served = prepare_vllm_checkpoint(base, root / f"served-{vocab}", heads=heads)
    return base, served


def run(args) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    common = dict(dtype="bfloat16", max_model_len=1024, skip_tokenizer_init=True, enforce_eager=args.eager,
                  max_num_seqs=max(args.batch), seed=0)
    results = {"config": vars(args), "machine": platform.processor() or platform.machine(), "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for vocab in args.vocab:
            base, served = build_folders(Path(tmp), vocab, args.hidden, args.layers, seed=0)
            engines = {"native": LLM(str(base), **common), "autodeco": LLM(str(served), **common)}
            params = {
                "native": SamplingParams(temperature=0.8, top_p=0.9, max_tokens=args.tokens, ignore_eos=True, detokenize=False),
                "autodeco": SamplingParams(max_tokens=args.tokens, ignore_eos=True, detokenize=False),
            }
            for batch in args.batch:
                prompts = [TokensPrompt(prompt_token_ids=[(7 * i + j) % (vocab - 10) + 3 for j in range(16)])
                           for i in range(batch)]
                for name in engines:  # warm-up
                    engines[name].generate(prompts, params[name], use_tqdm=False)
                rates = {"native": [], "autodeco": []}
                ratios = []
                for r in range(args.repeats):
                    order = ["native", "autodeco"] if r % 2 == 0 else ["autodeco", "native"]
                    this = {}
                    for name in order:
                        t0 = time.perf_counter()
                        outs = engines[name].generate(prompts, params[name], use_tqdm=False)
                        dt = time.perf_counter() - t0
                        n = sum(len(o.outputs[0].token_ids) for o in outs)
                        this[name] = n / dt
                        rates[name].append(n / dt)
                    ratios.append(this["autodeco"] / this["native"])
                    print(f"vocab {vocab} batch {batch} round {r}: native {this['native']:.1f} tok/s, "
                          f"autodeco {this['autodeco']:.1f} tok/s, ratio {ratios[-1]:.3f}", flush=True)
                case = {"vocab": vocab, "batch": batch, "native_tok_s": statistics.median(rates["native"]),
                        "autodeco_tok_s": statistics.median(rates["autodeco"]), "ratio_median": statistics.median(ratios),
                        "runs": rates, "ratios": ratios}
                results["cases"].append(case)
                print(f"== vocab {vocab} batch {batch}: native {case['native_tok_s']:.1f} tok/s, autodeco "
                      f"{case['autodeco_tok_s']:.1f} tok/s, median ratio autodeco/native {case['ratio_median']:.3f}", flush=True)
            del engines
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 152064])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--eager", action="store_true", help="enforce_eager (skip vLLM's torch.compile)")
    p.add_argument("--quick", action="store_true", help="small sanity run: hidden 256, 2 layers, vocab 32k, 16 tokens")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/vllm[_quick].json)")
    args = p.parse_args()
    if args.quick:
        args.vocab, args.hidden, args.layers, args.tokens, args.repeats = [32000], 256, 2, 16, 4
        args.batch = [1, 4]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    results = run(args)
    out = Path(args.out or Path(__file__).parents[1] / "results" / ("vllm_quick.json" if args.quick else "vllm.json"))
    write_json(out, results, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
