"""Tiny, seeded models and tokenizers built locally: for tests, demos and benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a fixed text, the
model is a randomly initialised ``transformers`` causal LM from a small config and a seed.
Needs torch, transformers and tokenizers (imported when called).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

ARCHITECTURES = ("llama", "qwen2", "qwen3", "qwen3_moe", "gpt_oss", "mistral", "gemma2", "cohere", "granite", "gpt2")
#: The base architectures of the released AutoDeco checkpoints (R1-Distill-Qwen: qwen2,
#: Llama-Nemotron: llama, Qwen3-30B-A3B / 235B: qwen3_moe, GPT-OSS: gpt_oss) plus qwen3, and
#: two with a final logit transform the heads must see: gemma2 (``final_logit_softcapping``)
#: and cohere (``logit_scale``); granite divides by ``logits_scaling``.
OFFICIAL_ARCHITECTURES = ("llama", "qwen2", "qwen3", "qwen3_moe", "gpt_oss")
LOGIT_TRANSFORM_ARCHITECTURES = ("gemma2", "cohere", "granite")

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "AutoDeco predicts a temperature and a top-p for every token. Sampling is a choice; "
    "precision is a duty. 0123456789 + - * / = ( ) [ ] { } < > : ; , . ! ? ' \" "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega. red green blue cyan magenta yellow black white. "
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|bos|>", "<|pad|>")


def build_tokenizer(vocab_size: int = 512, corpus: Optional[str] = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``<|bos|>``, ``<|endoftext|>`` (EOS)
    and ``<|pad|>``; deterministic for a given corpus and vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = corpus if corpus is not None else _CORPUS
    tok.train_from_iterator([text] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        unk_token=None,
    )


def tiny_config(
    arch: str = "llama",
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    bos_token_id: int = 1,
    eos_token_id: int = 0,
    pad_token_id: int = 2,
    tie_word_embeddings: bool = False,
):
    """A small ``PretrainedConfig`` of the given architecture family (see ``ARCHITECTURES``).

    ``tie_word_embeddings`` defaults to False; mixture-of-experts families get 4 experts of
    which 2 are routed per token; gemma2, cohere and granite keep a non-trivial final logit
    transform (softcap 5 / ``logit_scale`` 0.5 / ``logits_scaling`` 4)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_positions=max_position_embeddings, **common)
    classes = {
        "llama": tf.LlamaConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "qwen3_moe": tf.Qwen3MoeConfig,
        "gpt_oss": tf.GptOssConfig,
        "mistral": tf.MistralConfig,
        "gemma2": tf.Gemma2Config,
        "cohere": tf.CohereConfig,
        "granite": tf.GraniteConfig,
    }
    if arch not in classes:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {ARCHITECTURES}")
    kwargs = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        **common,
    )
    head_dim = hidden_size // num_heads
    if arch in ("qwen3", "qwen3_moe", "gpt_oss", "gemma2"):
        kwargs["head_dim"] = head_dim
    if arch == "qwen3_moe":
        kwargs.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=intermediate_size // 2, norm_topk_prob=True)
    elif arch == "gpt_oss":
        rope = dict(tf.GptOssConfig().rope_parameters)  # YaRN as released, scaled to this context
        rope["original_max_position_embeddings"] = max(1, int(max_position_embeddings / rope.get("factor", 1.0)))
        kwargs.update(num_local_experts=4, num_experts_per_tok=2, sliding_window=8, rope_parameters=rope,
                      layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)])
    elif arch == "gemma2":
        kwargs.update(final_logit_softcapping=5.0, attn_logit_softcapping=50.0, sliding_window=8, query_pre_attn_scalar=head_dim,
                      layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)])
    elif arch == "cohere":
        kwargs.update(logit_scale=0.5)
    elif arch == "granite":
        kwargs.update(logits_scaling=4.0, embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=1.0 / head_dim)
    return classes[arch](**kwargs)


def build_tiny_model(arch: str = "llama", *, seed: int = 0, tokenizer=None, **config_kwargs):
    """A randomly initialised causal LM (float32, eval mode) from ``seed``.

    When ``tokenizer`` is given its special-token ids and size set the config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if tokenizer is not None:
        config_kwargs.setdefault("vocab_size", len(tokenizer))
        config_kwargs.setdefault("bos_token_id", tokenizer.bos_token_id)
        config_kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        config_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = tiny_config(arch, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)  # float32 by default
        # Random init gives near-uniform logits; widen them so sampling rules matter. With tied
        # embeddings the shared matrix is left alone (scaling it would scale the inputs too and
        # make every row one-hot); the final norm's weight is scaled (by 3) instead.
        with torch.no_grad():
            if getattr(config, "tie_word_embeddings", False):
                base = model.base_model
                norm = getattr(base, "norm", None) or getattr(base, "ln_f", None)
                norm.weight.mul_(3.0)
            else:
                model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


def save_tiny_model(folder, arch: str = "llama", *, seed: int = 0, vocab_size: int = 512, **config_kwargs) -> Path:
    """Build tokenizer + model and ``save_pretrained`` both (safetensors) into ``folder``."""
    folder = Path(folder)
    tokenizer = build_tokenizer(vocab_size=vocab_size)
    model = build_tiny_model(arch, seed=seed, tokenizer=tokenizer, **config_kwargs)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_heads(folder, hidden_size: int, *, seed: int = 0, width: int = 32, **kwargs) -> Path:
    """Random heads (NumPy init, official layout) sized for a tiny model. Their last layer
    is scaled so predicted T and P spread over their range rather than sit near the middle."""
    from autodeco_samplers.heads.model.init import init_heads
    from autodeco_samplers.heads.io.writer import save_heads

    config, tensors = init_heads(hidden_size, width=width, seed=seed, **kwargs)
    for key in list(tensors):
        if key.endswith("mlp.2.weight"):
            tensors[key] = (tensors[key] * 6.0).astype(np.float32)
    return save_heads(folder, config, tensors)
