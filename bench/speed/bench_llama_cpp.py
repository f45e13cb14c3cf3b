"""Tokens/s of the AutoDeco llama.cpp adapter vs llama.cpp's native sampler chain (not a test).

Builds a random Llama GGUF (numpy + gguf; default hidden 1024, 8 layers, f16) per vocabulary
size, then alternates two decode loops over the same GGUF, prompt and token count:

* native: ``llama_decode`` + a native chain ``temp -> top_p -> dist`` (``llama_sampler_sample``);
* autodeco: :class:`AutoDecoLlama` (one decode per token with embeddings on, NumPy heads on
  the logits and hidden state, canonical nucleus via the fast path, NumPy draw).

Prints per-run tokens/s and the median of the per-pair ratios autodeco/native.

    python bench/speed/bench_llama_cpp.py                       # full: vocab 32k and 152k
    python bench/speed/bench_llama_cpp.py --vocab 32000 --tokens 32 --repeats 3 --layers 4   # reduced
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._provenance import provenance, write_json  # noqa: E402


def build_model(folder: Path, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, seed: int) -> Path:
    from autodeco_samplers.models.gguf_convert import LlamaGGUFParams, read_tokenizer_vocab, write_llama_gguf
    from autodeco_samplers.models.tiny_models import build_tokenizer

    tok_dir = folder / "tok"
    build_tokenizer(512).save_pretrained(tok_dir)
    params = LlamaGGUFParams(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                             num_kv_heads=kv_heads, intermediate_size=ffn, context_length=4096, name="bench-random")
    words = read_tokenizer_vocab(tok_dir / "tokenizer.json", vocab, bos_token_id=1, eos_token_id=0, pad_token_id=2)
    from autodeco_samplers.models.gguf_convert import _expected_hf_shape

    def get(name: str) -> np.ndarray:
        shape = _expected_hf_shape(name, params)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # str hash() differs per process
        if len(shape) == 1:
            return np.ones(shape, np.float32)
        scale = 1.0 / np.sqrt(shape[1])
        if name == "lm_head.weight":
            scale *= 3.0  # spread the logits so that the nucleus is a real choice
        if name == "model.embed_tokens.weight":
            scale = 1.0
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)

    out = folder / f"random-v{vocab}.gguf"
    write_llama_gguf(out, params, get, words, dtype="f16")
    return out


def native_run(llm, prompt, n, temp, top_p, seed) -> float:
    import llama_cpp as lc

    ctx = llm._ctx.ctx
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temp))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    llm.reset()
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    lc.llama_set_embeddings(ctx, False)
    arr = (lc.llama_token * len(prompt))(*prompt)
    t0 = time.perf_counter()
    lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(prompt)))
    one = (lc.llama_token * 1)()
    for _ in range(n):
        tok = lc.llama_sampler_sample(chain, ctx, -1)
        one[0] = tok
        if lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1)) != 0:
            raise RuntimeError("decode failed")
    dt = time.perf_counter() - t0
    lc.llama_sampler_free(chain)
    return n / dt


def per_token_costs(llm, gen, prompt, temp, top_p, reps: int = 30):
    """Median milliseconds of: one single-token decode, one native ``llama_sampler_sample``
    (temp -> top_p -> dist), and one AutoDeco step (views + heads + policy + draw), each on the
    same state. Less sensitive to a busy machine than end-to-end tokens/s."""
    import llama_cpp as lc

    from autodeco_samplers.core.step import numpy_step_sample

    ctx = llm._ctx.ctx
    stream = gen.stream(list(prompt), max_new_tokens=2, seed=0)
    next(stream)  # paused at the first token: the prompt is decoded, embeddings on
    one = (lc.llama_token * 1)()
    decode = []
    for i in range(reps // 3):
        one[0] = int(prompt[i % len(prompt)])
        t0 = time.perf_counter()
        lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1))
        decode.append(time.perf_counter() - t0)
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temp))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(0))
    native, ours = [], []
    rng = np.random.default_rng(0)
    for _ in range(reps):
        t0 = time.perf_counter()
        lc.llama_sampler_sample(chain, ctx, -1)
        native.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hidden, logits = gen.last_outputs()
        numpy_step_sample(hidden[None], logits[None], gen.heads, gen.policy, rng, exact=gen.exact)
        ours.append(time.perf_counter() - t0)
    lc.llama_sampler_free(chain)
    stream.close()
    ms = lambda xs: 1e3 * statistics.median(xs)
    return ms(decode), ms(native), ms(ours)


def autodeco_run(gen, prompt, n, seed) -> float:
    t0 = time.perf_counter()
    res = gen.generate(prompt, max_new_tokens=n, seed=seed, stop_at_eos=False)
    dt = time.perf_counter() - t0
    assert len(res.token_ids) == n
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, nargs="+", default=[32000, 152000])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--tokens", type=int, default=64, help="generated tokens per run")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5, help="alternated (native, autodeco) pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temp", type=float, default=0.8, help="native chain temperature")
    ap.add_argument("--top-p", type=float, default=0.9, help="native chain top-p")
    ap.add_argument("--exact", action="store_true", help="use the reference full sort instead of the fast path")
    ap.add_argument("--fixed-top-p", type=float, default=None,
                    help="override the heads' P (DecodingPolicy.fixed_top_p), e.g. 0.95 for a large nucleus")
    ap.add_argument("--json", action="store_true",
                    help='print only the JSON ({"runs": [...], "provenance": {...}}) on stdout')
    ap.add_argument("--out", default=None, help="also write that JSON to this file (e.g. bench/results/bench_llama_cpp.json)")
    args = ap.parse_args()

    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama, load_llama
    from autodeco_samplers.heads import AutoDecoHeads
    from autodeco_samplers.heads.model.init import init_heads

    config, tensors = init_heads(args.hidden, width=256, seed=0)
    for k in tensors:
        if k.endswith("mlp.2.weight"):
            tensors[k] = tensors[k] * 6.0
    heads = AutoDecoHeads(config, tensors)
    report = []
    with tempfile.TemporaryDirectory(prefix="autodeco-bench-") as tmp:
        for vocab in args.vocab:
            path = build_model(Path(tmp), vocab, args.hidden, args.layers, args.heads, args.kv_heads, args.ffn, seed=0)
            llm = load_llama(path, n_ctx=args.prompt_tokens + args.tokens + 8, n_threads=args.threads)
            from autodeco_samplers.core.policy import DecodingPolicy

            gen = AutoDecoLlama(llm, heads, exact=args.exact, policy=DecodingPolicy(fixed_top_p=args.fixed_top_p))
            prompt = list(np.random.default_rng(1).integers(3, 400, args.prompt_tokens))
            native_run(llm, prompt, 4, args.temp, args.top_p, 0)  # warm-up
            autodeco_run(gen, prompt, 4, 0)
            pairs = []
            for r in range(args.repeats):
                if r % 2 == 0:
                    nat = native_run(llm, prompt, args.tokens, args.temp, args.top_p, r)
                    ours = autodeco_run(gen, prompt, args.tokens, r)
                else:
                    ours = autodeco_run(gen, prompt, args.tokens, r)
                    nat = native_run(llm, prompt, args.tokens, args.temp, args.top_p, r)
                pairs.append((nat, ours))
                if not args.json:
                    print(f"vocab {vocab:>6}  run {r}: native {nat:7.2f} tok/s   autodeco {ours:7.2f} tok/s   ratio {ours / nat:.3f}")
            ratio = statistics.median(o / n for n, o in pairs)
            steps = gen.generate(prompt, max_new_tokens=args.tokens, seed=0, stop_at_eos=False).steps
            dec_ms, nat_ms, ours_ms = per_token_costs(llm, gen, prompt, args.temp, args.top_p)
            row = {
                "vocab": vocab, "hidden": args.hidden, "layers": args.layers, "tokens": args.tokens,
                "native_tok_s": statistics.median(n for n, _ in pairs),
                "autodeco_tok_s": statistics.median(o for _, o in pairs),
                "median_ratio": ratio,
                "mean_T": float(np.mean([s.T for s in steps])), "mean_P": float(np.mean([s.P for s in steps])),
                "decode_ms": dec_ms, "native_sample_ms": nat_ms, "autodeco_step_ms": ours_ms,
                "ratio_from_per_token_costs": (dec_ms + nat_ms) / (dec_ms + ours_ms),
            }
            report.append(row)
            if not args.json:
                print(f"vocab {vocab:>6}: median ratio autodeco/native = {ratio:.3f} "
                      f"(native {row['native_tok_s']:.2f} tok/s, autodeco {row['autodeco_tok_s']:.2f} tok/s; "
                      f"mean T {row['mean_T']:.2f}, mean P {row['mean_P']:.2f})")
                print(f"vocab {vocab:>6}: per token: decode {dec_ms:.2f} ms, native sampler {nat_ms:.2f} ms, "
                      f"autodeco step {ours_ms:.2f} ms -> ratio {row['ratio_from_per_token_costs']:.3f}")
            del gen, llm
    if args.out:
        write_json(args.out, report, indent=2)
    if args.json:
        print(json.dumps({"runs": report, "provenance": provenance()}, indent=2))


if __name__ == "__main__":
    main()
