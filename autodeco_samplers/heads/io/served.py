"""The served-folder format: an AutoDeco checkpoint as a folder SGLang and vLLM serve with
their stock loaders (no torch, no engine import).

Both engines parse ``config.json`` with transformers, which rejects ``model_type: "autodeco"``.
A served folder therefore keeps the *base* ``model_type`` and ``architectures`` (which the
engines' registries resolve to our model classes) and carries everything AutoDeco needs in
one nested object::

    "autodeco": {
      "format_version": 1,
      "hidden_size": 3584,
      "use_enhanced_features": true,
      "enable_temperature_head": true,   "temperature_width": 256,
      "enable_top_p_head": true,         "top_p_width": 256,
      "base_model_name_or_path": "...",
      "policy": {"temperature": 1.0, "top_p": 1.0, "min_temperature": null,
                 "max_temperature": null, "fixed_temperature": null, "fixed_top_p": null}
    }

``policy`` holds the server-wide :class:`~autodeco_samplers.core.policy.DecodingPolicy` (exact
official multiplier semantics, applied inside the model; a request's own multipliers multiply
it). Widths are read from the head tensors when the folder is prepared, never assumed.

:func:`prepare_served_folder` accepts an official merged checkpoint (``model_type:
"autodeco"``, base tensors under ``llm.``, head tensors at top level, sharded with an index),
one already prepared (re-preparing only rewrites the ``autodeco`` block, e.g. a new policy), or
a plain HF base model folder plus ``heads`` (any form :func:`autodeco_samplers.load_heads`
reads), merged with :func:`autodeco_samplers.heads.io.merged.merge_checkpoint` first. The output
holds ``config.json`` (the base config, AutoDeco-only keys removed, plus the block); the weight
shards and their index, symlinked (default) or copied from a merged input (base tensors may
keep their ``llm.`` prefix; the models' ``load_weights`` strips it); the tokenizer files; and
``generation_config.json`` with its sampling keys (``temperature``, ``top_p``, ``top_k``,
``min_p``, ``do_sample``, ``repetition_penalty``) removed, so the engines' default request is
temperature 1, top-p 1, top-k off and their stock samplers leave the AutoDeco distribution
untouched. The removed values are kept in ``autodeco.stripped_generation_config``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from autodeco_samplers.core.errors import CheckpointError
from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.heads.io.checkpoint import read_head_checkpoint
from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import CONFIG_FILE
from autodeco_samplers.heads.io.merged import AUTODECO_ONLY_KEYS, BASE_ARCHITECTURES, merge_checkpoint

__all__ = [
    "AUTODECO_CONFIG_KEY",
    "autodeco_block_of",
    "compiled_step_of",
    "make_autodeco_block",
    "parse_autodeco_block",
    "prepare_served_folder",
]

AUTODECO_CONFIG_KEY = "autodeco"
BLOCK_FORMAT_VERSION = 1
_POLICY_FIELDS = tuple(f.name for f in fields(DecodingPolicy))


def make_autodeco_block(
    config: HeadsConfig, policy: Optional[DecodingPolicy] = None, *, compiled_step: bool = False
) -> Dict[str, Any]:
    """The ``autodeco`` block describing ``config`` (and the server-wide ``policy``, and whether
    the engine runs the compiled step, see :func:`compiled_step_of`)."""
    policy = policy or DecodingPolicy()
    return {
        "format_version": BLOCK_FORMAT_VERSION,
        "hidden_size": config.hidden_size,
        "use_enhanced_features": config.use_enhanced_features,
        "enable_temperature_head": config.enable_temperature_head,
        "enable_top_p_head": config.enable_top_p_head,
        "temperature_width": config.temperature_width,
        "top_p_width": config.top_p_width,
        "base_model_name_or_path": config.base_model_name_or_path,
        "base_model_type": config.base_model_type,
        "policy": asdict(policy),
        "compiled_step": bool(compiled_step),
    }


def compiled_step_of(block: Any) -> bool:
    """Whether the served model runs each step through the compiled step
    (:func:`autodeco_samplers.core.step.compiled_step`; ``torch_step_logits(..., compiled=True)``):
    the block's ``compiled_step`` (``false`` when absent, as in folders prepared before it
    existed). The one switch of the vLLM and SGLang adapters, set by ``prepare-vllm`` /
    ``prepare-sglang --compiled-step``."""
    value = _get(block, "compiled_step", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise CheckpointError(f"autodeco block: compiled_step must be true or false, got {value!r}")
    return value


def _get(block: Any, key: str, default: Any = None) -> Any:
    if isinstance(block, Mapping):
        return block.get(key, default)
    return getattr(block, key, default)


def parse_autodeco_block(block: Any, *, model_hidden_size: Optional[int] = None) -> Tuple[HeadsConfig, DecodingPolicy]:
    """``(HeadsConfig, DecodingPolicy)`` from an ``autodeco`` block (a dict, or the object
    transformers made of it). Raises :class:`CheckpointError` naming the bad field."""
    where = f"config.json '{AUTODECO_CONFIG_KEY}' block"
    version = _get(block, "format_version", BLOCK_FORMAT_VERSION)
    if version != BLOCK_FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {version!r} is not supported (expected {BLOCK_FORMAT_VERSION})")
    hidden = _get(block, "hidden_size", model_hidden_size)
    if hidden is None:
        raise CheckpointError(f"{where}: hidden_size is missing")
    if model_hidden_size is not None and int(hidden) != int(model_hidden_size):
        raise CheckpointError(
            f"hidden-size mismatch: {where} says hidden_size={hidden} but the model has hidden_size={model_hidden_size}"
        )
    enable_t = bool(_get(block, "enable_temperature_head", True))
    enable_p = bool(_get(block, "enable_top_p_head", True))
    if not (enable_t or enable_p):
        raise CheckpointError(f"{where}: both heads are disabled; nothing to decode with")
    widths = {}
    for name, enabled in (("temperature_width", enable_t), ("top_p_width", enable_p)):
        w = int(_get(block, name, 0) or 0)
        if enabled and w <= 0:
            raise CheckpointError(f"{where}: {name} must be a positive integer for an enabled head, got {w}")
        widths[name] = w if enabled else 0
    heads = HeadsConfig(
        hidden_size=int(hidden),
        use_enhanced_features=bool(_get(block, "use_enhanced_features", True)),
        enable_temperature_head=enable_t,
        enable_top_p_head=enable_p,
        base_model_name_or_path=_get(block, "base_model_name_or_path"),
        base_model_type=_get(block, "base_model_type"),
        **widths,
    )
    raw_policy = _get(block, "policy") or {}
    if not isinstance(raw_policy, Mapping):
        raw_policy = {k: getattr(raw_policy, k) for k in _POLICY_FIELDS if hasattr(raw_policy, k)}
    unknown = sorted(set(raw_policy) - set(_POLICY_FIELDS))
    if unknown:
        raise CheckpointError(f"{where}: unknown policy field(s) {unknown}; known: {list(_POLICY_FIELDS)}")
    policy = DecodingPolicy(**{k: v for k, v in raw_policy.items() if v is not None or k not in ("temperature", "top_p")})
    return heads, policy


def autodeco_block_of(hf_config: Any) -> Optional[Any]:
    """The ``autodeco`` block of a transformers config object, or None (stock model)."""
    block = getattr(hf_config, AUTODECO_CONFIG_KEY, None)
    if block is None and hasattr(hf_config, "to_dict"):
        block = hf_config.to_dict().get(AUTODECO_CONFIG_KEY)
    return block


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "do_sample", "repetition_penalty")
GENERATION_CONFIG = "generation_config.json"
_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    if path.is_symlink():
        path.unlink()
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _place(src: Path, dst: Path, link: bool) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link:
        os.symlink(src.resolve(), dst)
    else:
        shutil.copyfile(src, dst)


def base_model_type(config: Dict[str, Any], source: Path) -> str:
    """The base ``model_type`` of a (merged, prepared or plain) config."""
    if config.get("model_type") == "autodeco" or AUTODECO_CONFIG_KEY in config:
        mtype = config.get("base_model_type") or (config.get(AUTODECO_CONFIG_KEY) or {}).get("base_model_type")
        if mtype is None and config.get("model_type") != "autodeco":
            mtype = config.get("model_type")
    else:
        mtype = config.get("model_type")
    if not mtype:
        raise CheckpointError(
            f"{source / CONFIG_FILE}: cannot tell the base model_type (no 'base_model_type'); pass base_model_type="
        )
    return str(mtype)


def prepare_served_folder(
    src,
    out,
    *,
    heads=None,
    policy: Optional[DecodingPolicy] = None,
    link: bool = True,
    base_model_type_override: Optional[str] = None,
    compiled_step: bool = False,
) -> Path:
    """Write a served AutoDeco folder (SGLang and vLLM) to ``out`` and return its path.

    Args:
        src: merged AutoDeco checkpoint folder, or a plain base model folder when ``heads``
            is given.
        out: output folder (created; must differ from ``src``).
        heads: heads checkpoint (folder, ``.safetensors`` or ``.gguf``) to merge with ``src``.
        policy: server-wide decoding policy stored in the block (default: predictions as is).
        link: symlink the weight shards of a merged ``src`` instead of copying them.
        base_model_type_override: base ``model_type`` when a merged config does not say.
        compiled_step: the engine runs each step through ``torch.compile`` (see
            :func:`compiled_step_of`; off by default).
    """
    src, out = Path(src), Path(out)
    if not (src / CONFIG_FILE).is_file():
        raise CheckpointError(f"{src}: no {CONFIG_FILE}; expected a model folder")
    if out.resolve() == src.resolve():
        raise CheckpointError(f"output folder {out} must differ from the input folder")
    out.mkdir(parents=True, exist_ok=True)
    if heads is not None:
        merge_checkpoint(src, heads, out)
        weights_dir = out
    else:
        weights_dir = src
    for path in sorted(src.iterdir()):  # weights (merged input), tokenizer and other small files
        if not path.is_file() or path.name in (CONFIG_FILE, GENERATION_CONFIG) or path.suffix in (".bin", ".pt", ".pth"):
            continue
        is_weight = path.name.endswith(_WEIGHT_SUFFIXES)
        if heads is not None and is_weight:
            continue  # merge_checkpoint wrote the merged shards and index
        _place(path, out / path.name, link and is_weight)
    config = _read_json(src / CONFIG_FILE)
    heads_config, _ = read_head_checkpoint(weights_dir)
    mtype = base_model_type_override or base_model_type(config, src)
    hidden = config.get("hidden_size")
    if hidden is not None and int(hidden) != heads_config.hidden_size:
        raise CheckpointError(
            f"hidden-size mismatch: {src / CONFIG_FILE} has hidden_size={hidden} but the heads expect "
            f"{heads_config.hidden_size}"
        )
    new = {k: v for k, v in config.items() if k not in AUTODECO_ONLY_KEYS and k != AUTODECO_CONFIG_KEY}
    new["model_type"] = mtype
    archs = config.get("base_architectures") or (
        config.get("architectures") if config.get("model_type") != "autodeco" else None
    )
    if not archs or any(a.startswith("AutoDeco") for a in archs):
        if mtype not in BASE_ARCHITECTURES:
            raise CheckpointError(
                f"base model_type {mtype!r} is not served by the AutoDeco SGLang/vLLM model classes; "
                f"supported: {sorted(BASE_ARCHITECTURES)}"
            )
        archs = [BASE_ARCHITECTURES[mtype]]
    new["architectures"] = list(archs)
    block = make_autodeco_block(heads_config, policy, compiled_step=compiled_step)
    block["base_model_type"] = mtype
    gen_src = src / GENERATION_CONFIG
    if gen_src.is_file():
        gen = _read_json(gen_src)
        stripped = {k: gen.pop(k) for k in SAMPLING_KEYS if k in gen}
        if stripped:
            block["stripped_generation_config"] = stripped
        _write_json(out / GENERATION_CONFIG, gen)
    new[AUTODECO_CONFIG_KEY] = block
    _write_json(out / CONFIG_FILE, new)
    return out
