"""Shared, cached test assets for the llama.cpp tests: one seeded tiny Llama (HF folder),
its GGUF written by our converter (f32 and f16), and random heads (folder and sidecar).

Built once per test session in a temporary folder (module-level cache, so every test module
shares the same files); building everything takes a few seconds on 2 cores.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Dict

HIDDEN = 64
SEED = 0


@functools.lru_cache(maxsize=None)
def assets() -> Dict[str, Path]:
    from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf
    from autodeco_samplers.heads.io.export import export_heads
    from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

    root = Path(tempfile.mkdtemp(prefix="autodeco-llama-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # the session's assets, removed at exit
    model_dir = save_tiny_model(root / "tiny-llama", "llama", seed=SEED, hidden_size=HIDDEN)
    heads_dir = save_tiny_heads(root / "heads", HIDDEN, seed=SEED)
    plain_dir = save_tiny_heads(root / "heads-plain", HIDDEN, seed=1, use_enhanced_features=False)
    out = {
        "root": root,
        "model_dir": model_dir,
        "gguf_f32": convert_llama_to_gguf(model_dir, root / "tiny-f32.gguf", dtype="f32"),
        "gguf_f16": convert_llama_to_gguf(model_dir, root / "tiny-f16.gguf", dtype="f16"),
        "heads_dir": heads_dir,
        "heads_plain_dir": plain_dir,
    }
    out["heads_gguf"] = export_heads(heads_dir, root / "heads.gguf")[1]
    return out


@functools.lru_cache(maxsize=None)
def hf_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(assets()["model_dir"]).eval()


@functools.lru_cache(maxsize=None)
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets()["model_dir"])


def hf_forward(ids):
    """``(hidden [L, H], logits [L, V])`` float64 from one teacher-forced transformers forward."""
    import torch

    with torch.no_grad():
        out = hf_model()(torch.tensor([list(ids)]), output_hidden_states=True)
    return out.hidden_states[-1][0].double().numpy(), out.logits[0].double().numpy()


@functools.lru_cache(maxsize=None)
def llama(kind: str = "gguf_f32", f32_kv: bool = True):
    """A cached ``llama_cpp.Llama`` over the converted tiny model (f32 KV cache by default)."""
    from autodeco_samplers.adapters.llama_cpp import load_llama

    return load_llama(assets()[kind], n_ctx=256, f32_kv_cache=f32_kv, n_threads=2)


def step_after(gen, prefix, policy=None):
    """The adapter's step on a fresh decode of ``prefix`` (a token list): the
    :class:`~autodeco_samplers.adapters.llama_cpp.StepRecord` of a one-token generation, through
    the public ``on_step`` hook (hidden state and logits of the prefix's last position, T and
    P, the canonical distribution). Seeded, so ``gen``'s own generator is left alone."""
    records = []
    gen.generate(list(prefix), max_new_tokens=1, seed=0, policy=policy, stop_at_eos=False, on_step=records.append)
    return records[0]
