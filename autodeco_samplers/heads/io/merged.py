"""Merge a base model and heads into the official merged layout, or split one apart.

Merged layout (what the official ``merge_autodeco`` tooling produces and engines load): every
base tensor under ``llm.``, the head tensors at top level, a ``config.json`` with
``model_type: "autodeco"`` plus the base config's fields and ``base_model_type``, and a
``model.safetensors.index.json`` weight map. Tensors are copied byte for byte (dtypes kept);
nothing here needs torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from autodeco_samplers.core.errors import CheckpointError

from autodeco_samplers.heads.io.checkpoint import read_head_checkpoint
from autodeco_samplers.heads.model.layout import BASE_PREFIX, CONFIG_FILE, canonical_head_key
from autodeco_samplers.heads.io.safetensors_io import read_header, read_raw, write_raw, write_tensors

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
)


#: The transformers architecture of each base ``model_type`` an official AutoDeco release uses
#: (official merged configs keep ``base_model_type`` but name the architecture
#: ``AutoDecoModelForCausalLM``; tools that read ``architectures``, such as llama.cpp's
#: converter or vLLM, need the base one back).
BASE_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
}


def base_architectures(config: dict) -> Optional[List[str]]:
    """The base model's ``architectures`` of a merged config: ``base_architectures`` if
    present, else ``architectures`` unless they name an AutoDeco class, else the known
    architecture of ``base_model_type`` (``None`` when none of these says)."""
    archs = config.get("base_architectures")
    if archs:
        return list(archs)
    archs = config.get("architectures")
    if archs and not any(str(a).startswith("AutoDeco") for a in archs):
        return list(archs)
    mtype = config.get("base_model_type")
    return [BASE_ARCHITECTURES[mtype]] if mtype in BASE_ARCHITECTURES else None


AUTODECO_ONLY_KEYS = frozenset({
    "enable_temperature_head",
    "enable_top_p_head",
    "use_enhanced_features",
    "base_model_name_or_path",
    "base_model_type",
    "base_architectures",
    "temperature_hidden_size",
    "top_p_hidden_size",
    "autodeco_samplers_format_version",
})


def _base_entries(base_dir: Path):
    files = sorted(base_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{base_dir}: no *.safetensors base weights found")
    for file in files:
        entries, _ = read_header(file)
        for name, entry in entries.items():
            yield name, entry


def merge_checkpoint(base_dir, heads_path, out_dir, *, max_shard_bytes: int = 2 * 1024**3) -> Path:
    """Write ``base_dir`` (an HF model folder) plus the heads at ``heads_path`` as one merged
    checkpoint in ``out_dir``; shards of at most ``max_shard_bytes``."""
    base_dir, out = Path(base_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_config = json.loads((base_dir / CONFIG_FILE).read_text())
    heads_config, head_tensors = read_head_checkpoint(heads_path)
    if base_config.get("hidden_size") not in (None, heads_config.hidden_size):
        raise CheckpointError(
            f"hidden-size mismatch: base model {base_dir} has hidden_size={base_config.get('hidden_size')} "
            f"but the heads expect {heads_config.hidden_size}"
        )
    shards: List[Dict[str, Tuple[str, Tuple[int, ...], bytes]]] = [{}]
    size = 0
    for name, entry in _base_entries(base_dir):
        if size > 0 and size + (entry.end - entry.start) > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][BASE_PREFIX + name] = (entry.dtype, entry.shape, read_raw(entry))
        size += entry.end - entry.start
    weight_map: Dict[str, str] = {}
    total = 0
    n = len(shards) + 1
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        write_raw(out / fname, shard, {"format": "pt"})
        for k, (_, _, raw) in shard.items():
            weight_map[k] = fname
            total += len(raw)
    heads_name = f"model-{n:05d}-of-{n:05d}.safetensors"
    write_tensors(out / heads_name, head_tensors, {"format": "pt"})
    for k, v in head_tensors.items():
        weight_map[k] = heads_name
        total += v.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = dict(base_config)
    config.update(heads_config.to_official_config())
    config["base_model_type"] = base_config.get("model_type")
    config["base_architectures"] = base_config.get("architectures")
    config["base_model_name_or_path"] = heads_config.base_model_name_or_path or str(base_dir)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for fname in TOKENIZER_FILES:
        if (base_dir / fname).exists():
            shutil.copy(base_dir / fname, out / fname)
    return out


def split_checkpoint(merged_dir, base_out, heads_out) -> Tuple[Path, Path]:
    """Split a merged checkpoint into a plain HF base folder and a heads-only folder."""
    merged = Path(merged_dir)
    config = json.loads((merged / CONFIG_FILE).read_text())
    from autodeco_samplers.heads.io.writer import save_heads

    heads_config, head_tensors = read_head_checkpoint(merged)
    save_heads(heads_out, heads_config, head_tensors)
    base = Path(base_out)
    base.mkdir(parents=True, exist_ok=True)
    tensors: Dict[str, Tuple[str, Tuple[int, ...], bytes]] = {}
    for file in sorted(merged.glob("*.safetensors")):
        entries, _ = read_header(file)
        for name, entry in entries.items():
            if canonical_head_key(name) is None:
                base_name = name[len(BASE_PREFIX):] if name.startswith(BASE_PREFIX) else name
                tensors[base_name] = (entry.dtype, entry.shape, read_raw(entry))
    write_raw(base / "model.safetensors", tensors, {"format": "pt"})
    base_config = {k: v for k, v in config.items() if k not in AUTODECO_ONLY_KEYS}
    base_config["model_type"] = config.get("base_model_type")
    archs = base_architectures(config)
    if archs:
        base_config["architectures"] = archs
    else:
        base_config.pop("architectures", None)
    (base / CONFIG_FILE).write_text(json.dumps(base_config, indent=2, sort_keys=True) + "\n")
    for fname in TOKENIZER_FILES:
        if (merged / fname).exists():
            shutil.copy(merged / fname, base / fname)
    return base, Path(heads_out)
