"""Input validation, once, before any engine runs.

The ``autodeco`` commands check what a user typed here, so that every engine answers the
same bad input with the same message (docs/design.md section 3 states the decoding rule;
this module states what a valid *request* is):

* flag values (:func:`positive_int`, :func:`token_ids`, :func:`engine_list`, ...): argparse
  types; a bad value is a usage error (exit status 2) with one line naming the flag;
* the model and heads (:func:`inspect_model`, :func:`check_generate_request`): read from the
  files' headers only (``config.json``, the GGUF header, the heads' shapes), never by loading
  an engine; a bad file is a library error (exit status 1) naming the file;
* missing optional dependencies (:func:`missing_dependency`): the extra to install.

Rules checked by :func:`check_generate_request`:

1. ``max_new_tokens >= 1``;
2. exactly one of ``prompt`` (non-empty text) or ``prompt_ids`` (a non-empty list of ints);
3. the model: a transformers folder holds ``config.json`` and ``*.safetensors`` weights
   (pickle weights such as ``pytorch_model.bin`` are refused, never unpickled); a llama.cpp
   model is a ``.gguf`` model file (not a heads sidecar) with a tokenizer vocabulary;
4. every prompt id lies in ``[0, vocab_size)`` of the model;
5. heads: given with ``--heads``, or the model is a merged AutoDeco folder; the heads'
   ``hidden_size`` equals the model's hidden size.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Union

from autodeco_samplers.core.errors import (
    CheckpointError,
    InvalidParameterError,
    MissingDependencyError,
    ShapeError,
    UnsafeCheckpointError,
    UsageError,
)
from autodeco_samplers.core.policy import check_knob
from autodeco_samplers.heads.io.checkpoint import read_json_object

__all__ = [
    "EXTRAS",
    "ModelInfo",
    "check_generate_request",
    "check_heads_fit",
    "engine_list",
    "inspect_model",
    "install_command",
    "missing_dependency",
    "non_negative_float",
    "positive_int",
    "token_ids",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

# python package (top-level import name) -> the extra of autodeco-samplers that installs it
EXTRAS = {
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "transformers",
    "tqdm": "transformers",
    "llama_cpp": "llama-cpp",
    "gguf": "llama-cpp",
    "hypothesis": "conformance",
    "scipy": "conformance",
    "pytest": "conformance",
    "jsonschema": "conformance",
    "matplotlib": "eval",
}
# packages that no extra installs: they need an environment of their own
OWN_ENVIRONMENT = {
    "sglang": "SGLang needs its own environment: bash scripts/setup_sglang.sh (see docs/sglang.md)",
}


def install_command(extra: str) -> str:
    """``pip install 'autodeco-samplers[EXTRA]'``."""
    return f"pip install 'autodeco-samplers[{extra}]'"


def missing_dependency(exc: ImportError) -> Optional[MissingDependencyError]:
    """The :class:`MissingDependencyError` for an ``ImportError`` of an optional dependency,
    or ``None`` when the missing module belongs to no extra (then it is a real bug)."""
    if isinstance(exc, MissingDependencyError):
        return exc
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name in EXTRAS:
        extra = EXTRAS[name]
        return MissingDependencyError(
            f"this command needs the python package {name!r}, which is not installed; install it with: "
            f"{install_command(extra)}",
            package=name,
            extra=extra,
        )
    if name in OWN_ENVIRONMENT:
        return MissingDependencyError(f"{name!r} is not installed here; {OWN_ENVIRONMENT[name]}", package=name)
    return None


# --------------------------------------------------------------------------- flag types


def positive_int(text: str) -> int:
    """argparse type: an integer ``>= 1``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number ``>= 0`` (the request-knob rule,
    :func:`autodeco_samplers.core.policy.check_knob`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    try:
        return check_knob("the value", value)
    except InvalidParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def token_ids(text: str) -> List[int]:
    """argparse type: comma-separated token ids ``"1,2,3"`` (non-empty, each an integer >= 0)."""
    parts = [t.strip() for t in text.split(",")]
    if not text.strip() or not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids such as 1,2,3, got {text!r}")
    ids = []
    for part in parts:
        try:
            ids.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a token id (expected comma-separated integers, got {text!r})") from None
        if ids[-1] < 0:
            raise argparse.ArgumentTypeError(f"token ids are >= 0, got {ids[-1]}")
    return ids


def engine_list(known: Union[Sequence[str], Callable[[], Sequence[str]]]) -> Callable[[str], List[str]]:
    """argparse type: comma-separated engine names, each one of ``known`` (a list or a
    function returning it, called when a value is parsed)."""

    def parse(text: str) -> List[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        choices = list(known() if callable(known) else known)
        if not names:
            raise argparse.ArgumentTypeError(f"expected comma-separated engine names from: {', '.join(choices)}")
        bad = [n for n in names if n not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown engine {bad[0]!r}; choose from: {', '.join(choices)}")
        return names

    return parse


# --------------------------------------------------------------------------- model and heads


@dataclass(frozen=True)
class ModelInfo:
    """What validation reads from a model's files without opening an engine."""

    path: Path
    engine: str
    vocab_size: Optional[int]
    hidden_size: Optional[int]
    merged: bool = False  # a merged AutoDeco folder: it carries its own heads


def _int_field(config: dict, *keys: str) -> Optional[int]:
    for source in (config, config.get("text_config") or {}, config.get("llm_config") or {}):
        if isinstance(source, dict):
            for key in keys:
                value = source.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
    return None


def _transformers_folder(path: Path) -> ModelInfo:
    if not path.exists():
        raise CheckpointError(f"{path}: no such model folder (models are read from local folders, never fetched from a hub)")
    if not path.is_dir():
        raise CheckpointError(f"{path}: the transformers engine needs a model folder (config.json + *.safetensors), got a file")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json; not a local transformers model folder (models are never fetched from a hub)")
    config = read_json_object(config_file)
    has_safetensors = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    if not has_safetensors:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise UnsafeCheckpointError(
                f"{path}: weights only in pickle format ({', '.join(pickles)}), which this library never unpickles; "
                "save the model as safetensors (save_pretrained(..., safe_serialization=True))"
            )
        raise CheckpointError(f"{path}: no *.safetensors weights")
    return ModelInfo(
        path=path,
        engine="transformers",
        vocab_size=_int_field(config, "vocab_size"),
        hidden_size=_int_field(config, "hidden_size", "n_embd", "d_model"),
        merged=config.get("model_type") == "autodeco",
    )


def _gguf_model(path: Path) -> ModelInfo:
    if path.is_dir() or path.suffix.lower() != ".gguf":
        raise CheckpointError(
            f"{path}: the llama-cpp engine needs a model .gguf file (make one from a tiny Llama folder with "
            "`autodeco convert-gguf`)"
        )
    from autodeco_samplers.heads.io.detect import check_model_gguf  # header checks, no engine import
    from autodeco_samplers.heads.io.gguf_sidecar import scan_gguf_header

    check_model_gguf(path)
    header = scan_gguf_header(path)
    arch = header.metadata.get("general.architecture")
    hidden = header.metadata.get(f"{arch}.embedding_length")
    return ModelInfo(
        path=path,
        engine="llama-cpp",
        vocab_size=header.arrays.get("tokenizer.ggml.tokens"),
        hidden_size=int(hidden) if isinstance(hidden, int) else None,
    )


def inspect_model(engine: str, model: Union[str, Path]) -> ModelInfo:
    """Check a model for ``engine`` from its files and return its vocabulary and hidden size.

    ``engine`` is ``"transformers"`` (a folder) or ``"llama-cpp"`` (a ``.gguf`` file); other
    engines get the folder rule. Raises :class:`CheckpointError` naming the file.
    """
    path = Path(model)
    if engine == "llama-cpp":
        return _gguf_model(path)
    return _transformers_folder(path)


def check_generate_request(
    engine: str,
    model: Union[str, Path],
    heads: Optional[Union[str, Path]],
    *,
    prompt: Optional[str] = None,
    prompt_ids: Optional[Iterable[int]] = None,
    max_new_tokens: int = 1,
) -> ModelInfo:
    """Apply the module's rules 1-5 to one generation request; returns the model's facts.

    Raises :class:`UsageError` for a request that cannot be valid for any model (rules 1-2)
    and :class:`CheckpointError` / :class:`ShapeError` / :class:`InvalidParameterError` for
    one that does not fit this model (rules 3-5). The messages do not depend on the engine.
    """
    from autodeco_samplers.core.errors import InvalidParameterError

    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if (prompt is None) == (prompt_ids is None):
        raise UsageError("give exactly one of --prompt or --prompt-ids")
    if prompt is not None and prompt == "":
        raise UsageError("--prompt is empty; give some text (or --prompt-ids)")
    ids = None if prompt_ids is None else [int(t) for t in prompt_ids]
    if ids is not None and not ids:
        raise UsageError("--prompt-ids is empty; give comma-separated token ids such as 1,2,3")
    info = inspect_model(engine, model)
    if ids is not None and info.vocab_size is not None:
        bad = [t for t in ids if not 0 <= t < info.vocab_size]
        if bad:
            raise InvalidParameterError(
                f"prompt token id {bad[0]} is outside the model's vocabulary [0, {info.vocab_size})"
            )
    if heads is None:
        if not info.merged:
            raise UsageError(f"--heads is required: {info.path} is not a merged AutoDeco checkpoint that carries its own heads")
        heads = info.path
    check_heads_fit(info, heads)
    return info


def check_heads_fit(info: ModelInfo, heads: Union[str, Path]) -> None:
    """Read the heads checkpoint (shapes validated) and check its ``hidden_size`` against the
    model's; raises :class:`ShapeError` with the same message for every engine."""
    from autodeco_samplers.heads import read_head_checkpoint

    config, _ = read_head_checkpoint(heads)
    if info.hidden_size is not None and config.hidden_size != info.hidden_size:
        raise ShapeError(
            f"hidden-size mismatch: the heads in {heads} expect hidden_size={config.hidden_size} but the model "
            f"has hidden size {info.hidden_size}"
        )


def env_flag(name: str) -> bool:
    """Whether an environment variable is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
