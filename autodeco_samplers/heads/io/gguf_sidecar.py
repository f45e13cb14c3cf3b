"""AutoDeco heads as a small GGUF sidecar file, for llama.cpp users (NumPy + ``gguf``, no torch).

Layout of a sidecar (``autodeco export-heads CHECKPOINT --out heads.gguf``):

* ``general.architecture = "autodeco_heads"`` (a model GGUF has e.g. ``"llama"``; that is how
  a model file handed over by mistake is recognised and refused);
* metadata ``autodeco.format_version`` (uint32, currently 1), ``autodeco.hidden_size``,
  ``autodeco.use_enhanced_features``, ``autodeco.enable_temperature_head``,
  ``autodeco.enable_top_p_head``, ``autodeco.temperature_width``, ``autodeco.top_p_width``
  (MLP widths, 0 for a disabled head) and, when known, ``autodeco.base_model_name_or_path``,
  ``autodeco.base_model_type`` and ``autodeco.source_checkpoint``;
* one tensor per head parameter under its official name (``temp_head.mlp.0.weight`` ...),
  stored in the dtype read from the source checkpoint (F32, or F64), so that a round trip
  is bit-exact;
* ``autodeco.checksum`` (format version 2): the SHA-256 of the heads' content
  (:func:`heads_checksum`: the ``autodeco.*`` metadata above except ``source_checkpoint``,
  then every tensor's name, dtype, shape and bytes in name order). A file whose bytes were
  changed reads as an error, never as other heads.

:func:`read_gguf_heads` validates the file itself before trusting it: magic bytes, a parse
with ``gguf.GGUFReader``, the architecture tag, the format version, every tensor's byte range
against the file size (a truncated file), every shape (through the same validation the
safetensors reader uses) and the checksum (required from format version 2; version 1 files,
written before it existed, are read without one). Every failure is a :class:`~autodeco_samplers.core.errors.CheckpointError`
naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from autodeco_samplers.core.errors import AutoDecoError, CheckpointError

from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.layout import HEAD_NAMES, PARAM_SUFFIXES, canonical_head_key, head_key
from autodeco_samplers.heads.io.safetensors_io import TensorEntry
from autodeco_samplers.heads.io.validation import check_finite, validate_head_entries

__all__ = [
    "SIDECAR_ARCHITECTURE",
    "SIDECAR_FORMAT_VERSION",
    "is_gguf_file",
    "scan_gguf_header",
    "GGUFHeader",
    "read_gguf_heads",
    "write_gguf_heads",
    "heads_checksum",
]

SIDECAR_ARCHITECTURE = "autodeco_heads"
SIDECAR_FORMAT_VERSION = 2
"""2: adds ``autodeco.checksum``; 1 (no checksum) is still read."""
GGUF_MAGIC = b"GGUF"
_PREFIX = "autodeco."
_KEY_VERSION = _PREFIX + "format_version"
_KEY_HIDDEN = _PREFIX + "hidden_size"
_KEY_ENHANCED = _PREFIX + "use_enhanced_features"
_KEY_TEMP_ON = _PREFIX + "enable_temperature_head"
_KEY_TOP_P_ON = _PREFIX + "enable_top_p_head"
_KEY_TEMP_W = _PREFIX + "temperature_width"
_KEY_TOP_P_W = _PREFIX + "top_p_width"
_KEY_BASE = _PREFIX + "base_model_name_or_path"
_KEY_BASE_TYPE = _PREFIX + "base_model_type"
_KEY_SOURCE = _PREFIX + "source_checkpoint"
_KEY_CHECKSUM = _PREFIX + "checksum"
_REQUIRED_KEYS = (_KEY_VERSION, _KEY_HIDDEN, _KEY_ENHANCED, _KEY_TEMP_ON, _KEY_TOP_P_ON)

Tensors = Dict[str, np.ndarray]


def _gguf():
    try:
        import gguf
    except ImportError:  # pragma: no cover - depends on the environment
        raise AutoDecoError(
            "reading or writing a .gguf heads sidecar needs the 'gguf' package: "
            "pip install 'autodeco-samplers[llama-cpp]'"
        ) from None
    return gguf


def is_gguf_file(path: Union[str, Path]) -> bool:
    """True when ``path`` is a file starting with the GGUF magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def open_gguf(path: Union[str, Path], what: str = "GGUF file"):
    """Open ``path`` with ``gguf.GGUFReader`` after checking it exists and has the GGUF magic;
    also checks that every tensor's bytes lie inside the file (a truncated download).

    Raises :class:`CheckpointError` naming the file for anything that is not a readable GGUF.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a {what}")
    scan_gguf_header(path)  # bounds-checked parse first: missing, foreign, truncated, corrupt
    size = os.path.getsize(path)
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors ... on bad bytes
        raise CheckpointError(f"{path}: truncated or corrupt GGUF file ({type(exc).__name__}: {exc})") from None
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise CheckpointError(
                f"{path}: truncated: tensor {t.name!r} needs bytes up to {end} but the file has {size}"
            )
    return reader


_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFHeader:
    """What :func:`scan_gguf_header` reads: scalar/string metadata, the names of array keys
    (with their lengths), and per tensor ``(name, absolute data offset, byte size)``."""

    version: int
    metadata: Dict[str, object]
    arrays: Dict[str, int]
    tensors: Tuple[Tuple[str, int, int], ...]
    file_size: int


def scan_gguf_header(path: Union[str, Path]) -> GGUFHeader:
    """Parse a GGUF header with bounds checks on every read, without materialising arrays.

    Much faster than ``gguf.GGUFReader`` on a model file (a 152k-token vocabulary is skipped,
    not decoded). Raises :class:`CheckpointError` naming the file when it is missing, not GGUF,
    truncated (header or any tensor's bytes past the end of the file) or corrupt.
    """
    import mmap
    import struct

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a GGUF file")
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise CheckpointError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        pos = 4

        def take(fmt: str):
            nonlocal pos
            n = struct.calcsize(fmt)
            if pos + n > size:
                raise CheckpointError(f"{path}: truncated GGUF header (needs byte {pos + n}, file has {size})")
            value = struct.unpack_from(fmt, mm, pos)
            pos += n
            return value[0] if len(value) == 1 else value

        def string() -> str:
            nonlocal pos
            n = take("<Q")
            if pos + n > size:
                raise CheckpointError(f"{path}: truncated GGUF header (string of {n} bytes at {pos}, file has {size})")
            raw = bytes(mm[pos : pos + n])
            pos += n
            return raw.decode("utf-8", errors="replace")

        def value(vtype: int, keep: bool):
            nonlocal pos
            if vtype in _SCALAR_FORMATS:
                return take(_SCALAR_FORMATS[vtype])
            if vtype == _STRING:
                return string()
            if vtype == _ARRAY:
                etype, count = take("<I"), take("<Q")
                if etype in _SCALAR_FORMATS:
                    pos += count * struct.calcsize(_SCALAR_FORMATS[etype])
                    if pos > size:
                        raise CheckpointError(f"{path}: truncated GGUF header (array past the end of the file)")
                else:
                    for _ in range(count):
                        value(etype, False)
                return count
            raise CheckpointError(f"{path}: corrupt GGUF header (unknown value type {vtype} at byte {pos})")

        version = take("<I")
        if version not in (2, 3):
            raise CheckpointError(f"{path}: unsupported GGUF version {version} (expected 2 or 3)")
        n_tensors, n_kv = take("<Q"), take("<Q")
        if n_tensors > size or n_kv > size:
            raise CheckpointError(f"{path}: corrupt GGUF header ({n_tensors} tensors, {n_kv} keys in {size} bytes)")
        metadata: Dict[str, object] = {}
        arrays: Dict[str, int] = {}
        for _ in range(n_kv):
            key = string()
            vtype = take("<I")
            v = value(vtype, True)
            if vtype == _ARRAY:
                arrays[key] = int(v)
            else:
                metadata[key] = v
        infos = []
        for _ in range(n_tensors):
            name = string()
            n_dims = take("<I")
            if n_dims > 8:
                raise CheckpointError(f"{path}: corrupt GGUF tensor info for {name!r} ({n_dims} dimensions)")
            dims = [take("<Q") for _ in range(n_dims)]
            ttype, offset = take("<I"), take("<Q")
            infos.append((name, dims, ttype, offset))
        alignment = int(metadata.get("general.alignment", 32) or 32)
        data_start = (pos + alignment - 1) // alignment * alignment
    finally:
        mm.close()
    gguf = _gguf()
    tensors = []
    for name, dims, ttype, offset in infos:
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise CheckpointError(f"{path}: tensor {name!r} has unknown ggml type {ttype}") from None
        count = 1
        for d in dims:
            count *= int(d)
        n_bytes = count // block * type_size
        start = data_start + int(offset)
        if start + n_bytes > size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} needs bytes up to {start + n_bytes} but the file has {size}"
            )
        tensors.append((name, start, n_bytes))
    return GGUFHeader(int(version), metadata, arrays, tuple(tensors), size)


def _field_value(reader, key: str):
    """A scalar or string metadata value, or None if absent."""
    field = reader.fields.get(key)
    if field is None:
        return None
    if hasattr(field, "contents"):
        return field.contents()
    part = field.parts[field.data[0]]  # pragma: no cover - gguf without ReaderField.contents()
    if field.types and field.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part[0].item()


def _architecture(reader) -> Optional[str]:
    value = _field_value(reader, "general.architecture")
    return None if value is None else str(value)


def read_gguf_heads(path: Union[str, Path]) -> Tuple[HeadsConfig, Tensors]:
    """Read and validate a heads sidecar; returns ``(config, tensors)`` like
    :func:`~autodeco_samplers.heads.io.checkpoint.read_head_checkpoint`.

    Tensors come back in the dtype they were stored in (float32, or float64), bit-exact.
    Raises :class:`CheckpointError` for a missing, truncated or foreign file (e.g. a model
    GGUF), a newer format version, or missing / misshapen head tensors.
    """
    path = Path(path)
    reader = open_gguf(path, "heads sidecar (.gguf)")
    try:
        return _read_sidecar(path, reader)
    except CheckpointError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: corrupt heads sidecar ({type(exc).__name__}: {exc})") from None


def _read_sidecar(path: Path, reader) -> Tuple[HeadsConfig, Tensors]:

    arch = _architecture(reader)
    if arch != SIDECAR_ARCHITECTURE:
        kind = f"a model GGUF (architecture {arch!r})" if arch else "a GGUF without general.architecture"
        raise CheckpointError(
            f"{path}: is {kind}, not an AutoDeco heads sidecar (architecture {SIDECAR_ARCHITECTURE!r}); "
            "pass the model with --model and heads written by `autodeco export-heads` with --heads"
        )
    missing_keys = [k for k in _REQUIRED_KEYS if k not in reader.fields]
    if missing_keys:
        raise CheckpointError(f"{path}: heads sidecar lacks metadata {missing_keys}")
    version = int(_field_value(reader, _KEY_VERSION))
    if version > SIDECAR_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: heads sidecar format version {version} is newer than this library reads "
            f"({SIDECAR_FORMAT_VERSION}); upgrade autodeco-samplers"
        )
    by_name = {t.name: t for t in reader.tensors}
    entries: Dict[str, TensorEntry] = {}
    for name, t in by_name.items():
        key = canonical_head_key(name)
        if key is None:
            raise CheckpointError(f"{path}: unexpected tensor {name!r} in a heads sidecar")
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        entries[key] = TensorEntry(path, name, t.tensor_type.name, shape, int(t.data_offset), int(t.data_offset) + int(t.n_bytes))
    config = {
        "hidden_size": int(_field_value(reader, _KEY_HIDDEN)),
        "use_enhanced_features": bool(_field_value(reader, _KEY_ENHANCED)),
        "enable_temperature_head": bool(_field_value(reader, _KEY_TEMP_ON)),
        "enable_top_p_head": bool(_field_value(reader, _KEY_TOP_P_ON)),
        "base_model_name_or_path": _field_value(reader, _KEY_BASE),
        "base_model_type": _field_value(reader, _KEY_BASE_TYPE),
    }
    cfg = validate_head_entries(entries, config, {}, str(path))
    for key, width in (("temperature_width", _KEY_TEMP_W), ("top_p_width", _KEY_TOP_P_W)):
        stored = _field_value(reader, width)
        if stored is not None and int(stored) != getattr(cfg, key):
            raise CheckpointError(f"{path}: metadata {width}={stored} disagrees with the tensors ({getattr(cfg, key)})")
    tensors: Tensors = {}
    for head, enabled in ((HEAD_NAMES[0], cfg.enable_temperature_head), (HEAD_NAMES[1], cfg.enable_top_p_head)):
        if not enabled:
            continue
        for suffix in PARAM_SUFFIXES:
            key = head_key(head, suffix)
            t = by_name[entries[key].name]
            if t.tensor_type.name not in ("F32", "F64"):
                raise CheckpointError(f"{path}: head tensor {key!r} has type {t.tensor_type.name}; expected F32 or F64")
            dtype = np.float64 if t.tensor_type.name == "F64" else np.float32
            tensors[key] = np.array(t.data, dtype=dtype).reshape(entries[key].shape)
    stored = _field_value(reader, _KEY_CHECKSUM)
    if stored is None and version >= 2:
        raise CheckpointError(f"{path}: heads sidecar (format version {version}) lacks its checksum {_KEY_CHECKSUM!r}")
    if stored is not None:
        metadata = {k: _field_value(reader, k) for k in _CHECKSUM_KEYS if k in reader.fields}
        if str(stored) != heads_checksum(metadata, tensors):
            raise CheckpointError(f"{path}: corrupt heads sidecar: its content does not match its checksum")
    check_finite(tensors, str(path))
    return cfg, tensors


_CHECKSUM_KEYS = (_KEY_VERSION, _KEY_HIDDEN, _KEY_ENHANCED, _KEY_TEMP_ON, _KEY_TOP_P_ON, _KEY_TEMP_W, _KEY_TOP_P_W,
                  _KEY_BASE, _KEY_BASE_TYPE)


def heads_checksum(metadata: Dict[str, object], tensors: Tensors) -> str:
    """SHA-256 (hex) of a sidecar's content: the ``metadata`` values of :data:`_CHECKSUM_KEYS`
    that are present (as JSON, keys sorted), then for each tensor in name order its name,
    dtype, shape and bytes."""
    import hashlib
    import json

    digest = hashlib.sha256()
    digest.update(json.dumps({k: metadata[k] for k in sorted(metadata) if k in _CHECKSUM_KEYS}, sort_keys=True).encode())
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key])
        digest.update(json.dumps([key, arr.dtype.str, list(arr.shape)]).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def write_gguf_heads(
    path: Union[str, Path],
    config: HeadsConfig,
    tensors: Tensors,
    *,
    source_checkpoint: Optional[str] = None,
) -> Path:
    """Write ``tensors`` (official key names) and ``config`` as a heads sidecar at ``path``.

    float64 tensors stay float64, everything else is written as float32.
    """
    gguf = _gguf()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), SIDECAR_ARCHITECTURE)
    metadata: Dict[str, object] = {
        _KEY_VERSION: SIDECAR_FORMAT_VERSION,
        _KEY_HIDDEN: int(config.hidden_size),
        _KEY_ENHANCED: bool(config.use_enhanced_features),
        _KEY_TEMP_ON: bool(config.enable_temperature_head),
        _KEY_TOP_P_ON: bool(config.enable_top_p_head),
        _KEY_TEMP_W: int(config.temperature_width),
        _KEY_TOP_P_W: int(config.top_p_width),
    }
    if config.base_model_name_or_path:
        metadata[_KEY_BASE] = str(config.base_model_name_or_path)
    if config.base_model_type:
        metadata[_KEY_BASE_TYPE] = str(config.base_model_type)
    arrays = {}
    for key in sorted(tensors):
        arr = np.asarray(tensors[key])
        arrays[key] = np.ascontiguousarray(arr if arr.dtype == np.float64 else arr.astype(np.float32))
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    writer.add_string(_KEY_CHECKSUM, heads_checksum(metadata, arrays))
    source = source_checkpoint if source_checkpoint is not None else config.source
    if source:
        writer.add_string(_KEY_SOURCE, str(source))
    writer.add_name("AutoDeco heads")
    for key, arr in arrays.items():
        writer.add_tensor(key, arr)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path
