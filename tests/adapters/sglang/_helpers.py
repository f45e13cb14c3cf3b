"""Shared builders for the SGLang adapter tests (real SGLang classes, CPU, seeded)."""

from __future__ import annotations

import numpy as np
import torch

from autodeco_samplers.heads import AutoDecoHeads
from autodeco_samplers.heads.model.init import init_heads

H, V = 48, 160


def numpy_heads(hidden_size: int = H, *, seed: int = 0, width: int = 32, **kwargs) -> AutoDecoHeads:
    """Seeded heads whose last layer is widened so T and P spread over their range."""
    config, tensors = init_heads(hidden_size, width=width, seed=seed, **kwargs)
    for key in list(tensors):
        if key.endswith("mlp.2.weight"):
            tensors[key] = (tensors[key] * 6.0).astype(np.float32)
    return AutoDecoHeads(config, tensors)


def hf_config(vocab: int = V, hidden: int = H):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=4)


def lm_head(vocab: int = V, hidden: int = H, *, seed: int = 0, scale: float = 1.0):
    """SGLang's real ``ParallelLMHead`` with seeded float32 weights; returns (module, W numpy)."""
    from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead

    head = ParallelLMHead(vocab, hidden, params_dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(vocab, hidden, generator=g) * scale
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:vocab].copy_(W)
    return head, W.numpy().astype(np.float64)


def processor(heads: AutoDecoHeads, policy=None, config=None):
    from autodeco_samplers.adapters.sglang.processor import AutoDecoSGLangProcessor
    from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

    return AutoDecoSGLangProcessor(config or hf_config(), heads=AutoDecoHeadsModule.from_numpy(heads), policy=policy)


def decode_metadata(capture=None):
    from sglang.srt.layers.logits_processor import LogitsMetadata
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    return LogitsMetadata(forward_mode=ForwardMode.DECODE, capture_hidden_mode=capture or CaptureHiddenMode.NULL)


def extend_metadata(seq_lens, capture=None):
    from sglang.srt.layers.logits_processor import LogitsMetadata
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    return LogitsMetadata(
        forward_mode=ForwardMode.EXTEND,
        capture_hidden_mode=capture or CaptureHiddenMode.NULL,
        extend_seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        extend_seq_lens_cpu=list(seq_lens),
    )
