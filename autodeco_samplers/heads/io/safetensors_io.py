"""A minimal, validating reader for the safetensors format that loads single tensors.

Why not ``safetensors.numpy.load_file``: it loads whole files (a merged checkpoint's
shards are gigabytes), cannot return bfloat16 as NumPy, and reports a truncated file with a
generic message. This reader parses the header, checks every offset against the file size,
and reads only the byte ranges asked for. Writing goes through the ``safetensors`` package.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from autodeco_samplers.core.errors import CheckpointError, UnsafeCheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 on read
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, dtype tag, shape and absolute byte range."""

    file: Path
    name: str
    dtype: str
    shape: Tuple[int, ...]
    start: int
    end: int


def refuse_pickle(path: Path) -> None:
    """Raise :class:`UnsafeCheckpointError` if ``path`` has a pickle-based checkpoint suffix."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeCheckpointError(
            f"{path}: pickle-based checkpoints ({', '.join(PICKLE_SUFFIXES)}) are refused because "
            "loading them can run arbitrary code; convert it to safetensors first"
        )


def _not_safetensors(path: Path, why: str) -> CheckpointError:
    """The error for a file that failed to parse: pickles/zip archives are named as such."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic.startswith(b"PK\x03\x04") or (magic[:1] == b"\x80" and magic[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return UnsafeCheckpointError(
            f"{path}: this is a pickle/zip (torch.save) archive, not safetensors; it is refused "
            "because loading it can run arbitrary code"
        )
    return CheckpointError(f"{path}: not a safetensors file, or truncated ({why})")


def read_header(path: Path) -> Tuple[Dict[str, TensorEntry], Dict[str, str]]:
    """Parse a safetensors header; returns ``({name: entry}, metadata)``.

    Raises :class:`CheckpointError` naming the file when it is not safetensors or is
    truncated (any tensor's bytes lie past the end of the file).
    """
    path = Path(path)
    refuse_pickle(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise _not_safetensors(path, f"only {size} bytes")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER_BYTES or header_len > size - 8:
            raise _not_safetensors(path, f"header length {header_len} does not fit in {size} bytes")
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_safetensors(path, f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_len
    entries: Dict[str, TensorEntry] = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed safetensors entry for tensor {name!r}") from None
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} needs bytes up to {data_start + end} but the file "
                f"has {size}"
            )
        entries[name] = TensorEntry(Path(path), name, dtype, shape, data_start + begin, data_start + end)
    return entries, {str(k): str(v) for k, v in metadata.items()}


def read_tensor(entry: TensorEntry) -> np.ndarray:
    """Read one tensor as NumPy; bfloat16 is widened exactly to float32."""
    if entry.dtype not in _DTYPES:
        raise CheckpointError(f"{entry.file}: tensor {entry.name!r} has unsupported dtype {entry.dtype}")
    np_dtype = _DTYPES[entry.dtype]
    count = int(np.prod(entry.shape, dtype=np.int64))
    nbytes = entry.end - entry.start
    if nbytes != count * np_dtype.itemsize:
        raise CheckpointError(
            f"{entry.file}: tensor {entry.name!r} holds {nbytes} bytes, expected "
            f"{count * np_dtype.itemsize} for {entry.dtype}{list(entry.shape)}"
        )
    with open(entry.file, "rb") as fh:
        fh.seek(entry.start)
        buf = fh.read(nbytes)
    if len(buf) != nbytes:
        raise CheckpointError(f"{entry.file}: truncated while reading tensor {entry.name!r}")
    arr = np.frombuffer(buf, dtype=np_dtype).reshape(entry.shape)
    if entry.dtype == "BF16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.copy()


def write_tensors(path: Path, tensors: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write NumPy tensors with the ``safetensors`` package (contiguous copies)."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


def read_raw(entry: TensorEntry) -> bytes:
    """The stored bytes of one tensor, unconverted."""
    with open(entry.file, "rb") as fh:
        fh.seek(entry.start)
        buf = fh.read(entry.end - entry.start)
    if len(buf) != entry.end - entry.start:
        raise CheckpointError(f"{entry.file}: truncated while reading tensor {entry.name!r}")
    return buf


def write_raw(path: Path, tensors: Dict[str, Tuple[str, Tuple[int, ...], bytes]], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``{name: (dtype_tag, shape, raw_bytes)}`` as safetensors, keeping each dtype as stored."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for _, (_, _, raw) in tensors.items():
            fh.write(raw)
