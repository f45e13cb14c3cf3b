#!/usr/bin/env python
"""Benchmark (not a test): ``generate()`` with AutoDeco heads vs plain top-p sampling.

Same random mid-size Llama-style model for both (default hidden 1024, 8 layers), prompts
of random ids, fixed number of new tokens. Plain = ``do_sample=True, temperature=1.0,
top_p=0.9, top_k=0`` (pure top-p; transformers would otherwise add its default top-k 50).
AutoDeco = the same call with heads attached and ``logits_processor=[AutoDecoLogitsProcessor]``.
Runs alternate (plain, heads, plain, heads, ...) after a warm-up; the script prints the
median time of each and the median of the per-pair ratios heads / plain.

    python bench/speed/bench_transformers.py                 # full: vocab 32k and 152k, batch 1 and 8
    python bench/speed/bench_transformers.py --quick         # vocab 152k, batch 1, fewer tokens/repeats
    python bench/speed/bench_transformers.py --vocab 152064 --batch 1 --tokens 64 --repeats 7
    python bench/speed/bench_transformers.py --step-only     # the sampling step alone, no model
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._provenance import write_json  # noqa: E402
from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach
from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule
from autodeco_samplers.models.tiny_models import tiny_config


def build_model(vocab: int, hidden: int, layers: int, seed: int = 0):
    from transformers import AutoModelForCausalLM

    config = tiny_config(
        "llama",
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=max(hidden // 64, 1),
        num_kv_heads=max(hidden // 128, 1),
        intermediate_size=int(hidden * 2.75),
        max_position_embeddings=4096,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(8.0)  # less uniform logits, like tiny_models
    return model.eval()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_one(model, batch: int, tokens: int, prompt_len: int, repeats: int, seed: int) -> dict:
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, prompt_len), generator=g)
    mask = torch.ones_like(ids)
    common = dict(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=tokens, min_new_tokens=tokens,
                  pad_token_id=2)

    def plain():
        with torch.no_grad():
            model.generate.__wrapped__(**common, temperature=1.0, top_p=0.9, top_k=0)

    def heads():
        proc = AutoDecoLogitsProcessor(model)
        with torch.no_grad():
            model.generate(**common, logits_processor=[proc])

    torch.manual_seed(seed)
    plain(), heads()  # warm-up
    t_plain, t_heads, ratios = [], [], []
    for _ in range(repeats):
        a = timed(plain)
        b = timed(heads)
        t_plain.append(a)
        t_heads.append(b)
        ratios.append(b / a)
    return {
        "vocab": vocab,
        "batch": batch,
        "tokens": tokens,
        "plain_ms_per_token": 1000 * statistics.median(t_plain) / tokens,
        "heads_ms_per_token": 1000 * statistics.median(t_heads) / tokens,
        "median_ratio": statistics.median(ratios),
    }


def bench_step(vocab: int, batch: int, hidden: int, repeats: int = 30, seed: int = 0) -> dict:
    """The per-step sampling work alone (no model): heads + policy + canonical nucleus vs
    transformers' top-p warper, each followed by softmax + multinomial. Logits are random
    normal * 8 (peaked, like the mid-size model); hidden states random normal."""
    from transformers import TopPLogitsWarper

    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.step import torch_step_logits

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=g) * 8
    h = torch.randn(batch, hidden, generator=g)
    heads = AutoDecoHeadsModule.create(hidden, width=256, seed=seed).requires_grad_(False)
    policy = DecodingPolicy()
    warper = TopPLogitsWarper(0.9)

    def ours():  # what the processor returns, then transformers' own softmax + multinomial
        torch.multinomial(torch.softmax(torch_step_logits(h, logits, heads, policy).logits, -1), 1)

    def plain():
        torch.multinomial(torch.softmax(warper(None, logits), -1), 1)

    with torch.no_grad():
        ours(), plain()
        a, b = [], []
        for _ in range(repeats):
            a.append(timed(plain))
            b.append(timed(ours))
    return {"plain_ms": 1000 * statistics.median(a), "heads_ms": 1000 * statistics.median(b)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="vocab 152k, batch 1, 24 tokens, 5 repeats")
    p.add_argument("--vocab", type=int, nargs="*", default=None, help="vocab sizes (default 32000 152064)")
    p.add_argument("--batch", type=int, nargs="*", default=None, help="batch sizes (default 1 8)")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per generate (default 48)")
    p.add_argument("--repeats", type=int, default=None, help="alternated pairs per config (default 7)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "bench_transformers.json"),
                   help="JSON of the generate() runs (median ratios heads / plain)")
    p.add_argument("--step-only", action="store_true",
                   help="time only the per-step sampling work (heads + nucleus vs top-p warper), no model")
    a = p.parse_args(argv)
    vocabs = a.vocab or ([152064] if a.quick else [32000, 152064])
    batches = a.batch or ([1] if a.quick else [1, 8])
    tokens = a.tokens or (24 if a.quick else 48)
    repeats = a.repeats or (5 if a.quick else 7)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.step_only:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}: one sampling step, median ms")
        print(f"{'vocab':>7} {'batch':>5} {'top-p warper':>13} {'heads+nucleus':>14}")
        for vocab in vocabs:
            for batch in batches:
                r = bench_step(vocab, batch, a.hidden, seed=a.seed)
                print(f"{vocab:>7} {batch:>5} {r['plain_ms']:>13.2f} {r['heads_ms']:>14.2f}", flush=True)
        return 0
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, hidden {a.hidden}, layers {a.layers}, "
          f"prompt {a.prompt_len}, {tokens} new tokens, {repeats} alternated pairs")
    print(f"{'vocab':>7} {'batch':>5} {'plain ms/tok':>13} {'heads ms/tok':>13} {'median ratio':>13}")
    runs = []
    for vocab in vocabs:
        model = build_model(vocab, a.hidden, a.layers, seed=a.seed)
        heads = AutoDecoHeadsModule.create(a.hidden, width=256, seed=a.seed)
        attach(model, heads)
        for batch in batches:
            r = bench_one(model, batch, tokens, a.prompt_len, repeats, a.seed)
            runs.append(r)
            print(f"{r['vocab']:>7} {r['batch']:>5} {r['plain_ms_per_token']:>13.2f} {r['heads_ms_per_token']:>13.2f} "
                  f"{r['median_ratio']:>13.3f}", flush=True)
        del model
    out = Path(a.out)
    write_json(out, {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "hidden": a.hidden, "layers": a.layers,
        "prompt_len": a.prompt_len, "repeats": repeats,
        "note": "provisional when taken on a shared machine; median_ratio = median over alternated pairs of heads / plain",
        "runs": runs}, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
