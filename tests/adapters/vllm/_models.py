"""Tiny seeded AutoDeco checkpoints for the vLLM tests (built locally, nothing downloaded).

vLLM's CPU attention refuses head_dim 16, so the models here use hidden 128 with 4 heads
(head_dim 32). The tokenizer gets a small chat template so the OpenAI chat endpoint works.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant: {% endif %}"
)
MODEL_KW = dict(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256)
VOCAB = 320


def save_base(folder, arch: str = "llama", seed: int = 0) -> Path:
    """An HF base model folder (safetensors, float32) with a chat template."""
    from autodeco_samplers.models.tiny_models import save_tiny_model

    folder = save_tiny_model(Path(folder), arch, seed=seed, vocab_size=VOCAB, **MODEL_KW)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


def save_heads(folder, seed: int = 1) -> Path:
    from autodeco_samplers.models.tiny_models import save_tiny_heads

    return save_tiny_heads(Path(folder), MODEL_KW["hidden_size"], seed=seed, width=32)


def build_prepared(root, arch: str = "llama", seed: int = 0, policy=None) -> dict:
    """``{"base", "heads", "served"}`` folders: a base model, heads, and the prepared folder."""
    from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint

    root = Path(root)
    base = save_base(root / f"{arch}-base", arch, seed)
    heads = save_heads(root / f"{arch}-heads", seed + 1)
    served = prepare_vllm_checkpoint(base, root / f"{arch}-served", heads=heads, policy=policy)
    return {"base": base, "heads": heads, "served": served}
