"""Turn an AutoDeco checkpoint into a folder SGLang serves (no torch, no SGLang).

Accepted inputs:

* an official merged checkpoint (``model_type: "autodeco"``, base tensors under ``llm.``,
  head tensors at top level, sharded with an index), or one already prepared (re-preparing
  only rewrites the ``autodeco`` block, e.g. a new policy);
* a plain HF base model folder plus ``heads`` (any form
  :func:`autodeco_samplers.load_heads` reads): merged with
  :func:`autodeco_samplers.heads.merged.merge_checkpoint` first.

What the output folder holds:

* ``config.json``: the base config (``model_type`` and ``architectures`` of the base model;
  AutoDeco-only keys removed) plus the ``autodeco`` block (:mod:`.config`);
* the weight shards and their index, symlinked (default) or copied from a merged input;
  base tensors may keep their ``llm.`` prefix, the model's ``load_weights`` strips it;
* tokenizer files copied; ``generation_config.json`` with its sampling keys
  (``temperature``, ``top_p``, ``top_k``, ``min_p``, ``do_sample``, ``repetition_penalty``) removed, so SGLang's
  default sampling parameters are temperature 1, top-p 1, top-k off and the stock sampler
  leaves the AutoDeco distribution untouched. The removed values are kept in
  ``autodeco.stripped_generation_config`` for reference.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from autodeco_samplers.errors import CheckpointError
from autodeco_samplers.heads.checkpoint import read_head_checkpoint
from autodeco_samplers.heads.layout import CONFIG_FILE
from autodeco_samplers.heads.merged import AUTODECO_ONLY_KEYS, BASE_ARCHITECTURES, merge_checkpoint
from autodeco_samplers.policy import DecodingPolicy

from .config import AUTODECO_CONFIG_KEY, make_autodeco_block

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


def prepare_sglang_checkpoint(
    src,
    out,
    *,
    heads=None,
    policy: Optional[DecodingPolicy] = None,
    link: bool = True,
    base_model_type_override: Optional[str] = None,
) -> Path:
    """Write an SGLang-servable AutoDeco folder to ``out`` and return its path.

    Args:
        src: merged AutoDeco checkpoint folder, or a plain base model folder when ``heads``
            is given.
        out: output folder (created; must differ from ``src``).
        heads: heads checkpoint (folder, ``.safetensors`` or ``.gguf``) to merge with ``src``.
        policy: server-wide decoding policy stored in the block (default: predictions as is).
        link: symlink the weight shards of a merged ``src`` instead of copying them.
        base_model_type_override: base ``model_type`` when a merged config does not say.
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
                f"base model_type {mtype!r} is not served by the AutoDeco SGLang models; "
                f"supported: {sorted(BASE_ARCHITECTURES)}"
            )
        archs = [BASE_ARCHITECTURES[mtype]]
    new["architectures"] = list(archs)
    block = make_autodeco_block(heads_config, policy)
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
