"""A bounded reader of the safetensors header: standard library only (``json`` + ``struct``).

The format, from the specification in the safetensors README (huggingface/safetensors,
"Format"): 8 bytes, ``N``, an unsigned little-endian 64-bit integer; ``N`` bytes of UTF-8
JSON starting with ``{`` (trailing spaces allowed), mapping each tensor name to
``{"dtype", "shape", "data_offsets": [BEGIN, END]}`` (offsets relative to the byte buffer
after the header, END exclusive) plus an optional ``"__metadata__"`` string-to-string map;
then the byte buffer, little-endian, row-major. Duplicate keys are disallowed, and the
buffer must be entirely indexed, without holes or overlaps ("This prevents the creation of
polyglot files"). The reference implementation refuses headers over 100 MB
(``MAX_HEADER_SIZE`` in ``safetensors/src/tensor.rs``); so do we.

Every check runs before any tensor byte is read or allocated: a truncated, bit-flipped or
hostile file gets a :class:`~ckptcompat.errors.CorruptCheckpointError` (its subclass
:class:`~ckptcompat.errors.LimitExceededError` for the header size) or, for a dtype this
reader does not know, an :class:`~ckptcompat.errors.IncompatibleCheckpointError`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Any

from ckptcompat.errors import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    LimitExceededError,
)

__all__ = [
    "DTYPES",
    "MAX_HEADER_BYTES",
    "DType",
    "SafetensorsHeader",
    "TensorEntry",
    "header_length",
    "parse_header",
    "read_header",
]

#: The largest header accepted, in bytes: the reference implementation's MAX_HEADER_SIZE.
MAX_HEADER_BYTES = 100_000_000
#: The most dimensions a tensor may declare (torch's own limit is 64).
_MAX_DIMS = 64
_PREFIX = struct.Struct("<Q")


@dataclass(frozen=True)
class DType:
    """One safetensors dtype.

    Attributes:
        name: the header's spelling, ``"BF16"``.
        bits: bits per element (``F4`` packs two elements in a byte).
        torch_name: the ``torch`` dtype attribute it maps to, ``"bfloat16"``; its first torch
            release is in :mod:`ckptcompat.versions_facts` (``dtypes`` rows).
        safetensors_since: the first safetensors release whose Python package reads it.
    """

    name: str
    bits: int
    torch_name: str
    safetensors_since: str


def _dt(name: str, bits: int, torch_name: str, since: str = "0.3.0") -> tuple[str, DType]:
    return name, DType(name, bits, torch_name, since)


#: Every dtype this reader knows. Sources: the dtype table of safetensors' ``torch.py``;
#: float8 in the Python package from 0.4.2 (safetensors PR #404, merged January 2024);
#: F8_E8M0 and F4 arrived with the 0.6/0.7 series (larql PR #74 bumps safetensors 0.5 -> 0.7
#: "required for the new FP8 dtype variants"; the exact first release was not verified, the
#: earlier bound is given). 0.3.0 stands for "every release this project meets".
DTYPES: dict[str, DType] = dict(
    (
        _dt("BOOL", 8, "bool"),
        _dt("U8", 8, "uint8"),
        _dt("I8", 8, "int8"),
        _dt("I16", 16, "int16"),
        _dt("U16", 16, "uint16"),
        _dt("F16", 16, "float16"),
        _dt("BF16", 16, "bfloat16"),
        _dt("I32", 32, "int32"),
        _dt("U32", 32, "uint32"),
        _dt("F32", 32, "float32"),
        _dt("I64", 64, "int64"),
        _dt("U64", 64, "uint64"),
        _dt("F64", 64, "float64"),
        _dt("F8_E4M3", 8, "float8_e4m3fn", "0.4.2"),
        _dt("F8_E5M2", 8, "float8_e5m2", "0.4.2"),
        _dt("F8_E8M0", 8, "float8_e8m0fnu", "0.6.0"),
        _dt("F4", 4, "float4_e2m1fn_x2", "0.6.0"),
    )
)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the header.

    Attributes:
        name: the state_dict key.
        dtype: its :class:`DType`.
        shape: dimensions, each >= 0 (an empty tuple is a scalar).
        begin, end: byte offsets into the data buffer, ``end`` exclusive.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        """Number of elements (1 for a scalar)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked header.

    Attributes:
        header_bytes: ``N``, the JSON header's length in bytes.
        data_bytes: length of the data buffer, which the tensors cover exactly.
        tensors: the tensors in data-buffer order.
        metadata: the ``__metadata__`` map (empty when absent).
    """

    header_bytes: int
    data_bytes: int
    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str]

    @property
    def data_start(self) -> int:
        """Offset of the data buffer in the file: ``8 + N``."""
        return _PREFIX.size + self.header_bytes

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The safetensors dtype names used, sorted."""
        return tuple(sorted({t.dtype.name for t in self.tensors}))


def _corrupt(path: str | None, problem: str, found: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        problem,
        path=path,
        expected="a safetensors file as its specification describes",
        found=found,
        fix="re-export the weights; a truncated or altered file cannot be repaired here",
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:80]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


def _json(text: bytes, path: str | None) -> dict[str, Any]:
    if not text.lstrip(b" ").startswith(b"{"):
        raise _corrupt(path, "the safetensors header is not a JSON object", repr(text[:16]))
    try:
        value = json.loads(
            text.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _corrupt(path, "the safetensors header is not valid JSON", str(exc)[:200]) from exc
    if type(value) is not dict:
        raise _corrupt(path, "the safetensors header is not a JSON object", type(value).__name__)
    return value


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _entry(name: str, raw: Any, path: str | None) -> TensorEntry:
    if type(raw) is not dict or set(raw) != {"dtype", "shape", "data_offsets"}:
        keys = sorted(raw) if type(raw) is dict else type(raw).__name__
        raise _corrupt(path, f"tensor {name[:80]!r} is malformed", f"fields {keys}")
    dtype_name, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if type(dtype_name) is not str:
        raise _corrupt(path, f"tensor {name[:80]!r} has no dtype name", repr(dtype_name)[:80])
    dtype = DTYPES.get(dtype_name)
    if dtype is None:
        raise IncompatibleCheckpointError(
            f"tensor {name[:80]!r} has a dtype this reader does not know",
            path=path,
            expected=f"one of {', '.join(DTYPES)}",
            found=repr(dtype_name[:40]),
            fix="convert the tensor to a known dtype before exporting",
        )
    if type(shape) is not list or len(shape) > _MAX_DIMS or not all(map(_is_count, shape)):
        raise _corrupt(path, f"tensor {name[:80]!r} has a malformed shape", repr(shape)[:80])
    if type(offsets) is not list or len(offsets) != 2 or not all(map(_is_count, offsets)):
        raise _corrupt(path, f"tensor {name[:80]!r} has malformed offsets", repr(offsets)[:80])
    begin, end = offsets
    bits = math.prod(shape) * dtype.bits
    if bits % 8 or end < begin or end - begin != bits // 8:
        raise _corrupt(
            path,
            f"tensor {name[:80]!r}: its offsets do not match its shape and dtype",
            f"{dtype_name} {shape} needs {bits / 8:g} bytes, offsets [{begin}, {end}]",
        )
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _metadata(raw: Any, path: str | None) -> dict[str, str]:
    if type(raw) is not dict or not all(type(v) is str for v in raw.values()):
        raise _corrupt(path, "__metadata__ is not a map of strings to strings", repr(raw)[:80])
    return dict(raw)


def header_length(prefix: bytes, total_size: int, *, path: str | None = None) -> int:
    """``N`` from the first 8 bytes of a file of ``total_size`` bytes, checked.

    Raises:
        CorruptCheckpointError: fewer than 8 bytes, or ``N`` runs past the end of the file.
        LimitExceededError: ``N`` > :data:`MAX_HEADER_BYTES` (``limit="max_safetensors_header"``).
    """
    if len(prefix) < _PREFIX.size or total_size < _PREFIX.size:
        raise _corrupt(path, "the file is too short for a safetensors header", f"{total_size} B")
    (length,) = _PREFIX.unpack_from(prefix)
    if length > MAX_HEADER_BYTES:
        raise LimitExceededError(
            "the safetensors header is larger than any reader accepts",
            limit="max_safetensors_header",
            path=path,
            expected=f"at most {MAX_HEADER_BYTES} bytes (safetensors' MAX_HEADER_SIZE)",
            found=f"{length} bytes",
            fix="the length prefix is damaged or hostile; re-export the weights",
        )
    if _PREFIX.size + length > total_size:
        raise _corrupt(
            path,
            "the safetensors header runs past the end of the file",
            f"a {length}-byte header in a {total_size}-byte file (truncated?)",
        )
    return length


def parse_header(head: bytes, total_size: int, *, path: str | None = None) -> SafetensorsHeader:
    """Check the header of a safetensors file of ``total_size`` bytes.

    Args:
        head: the file's first ``8 + N`` bytes at least (more is ignored).
        total_size: the file's size in bytes; the data buffer is the rest after the header.
        path: for error messages.

    Raises:
        CorruptCheckpointError: truncation, malformed JSON or entries, duplicate keys,
            offsets that leave holes, overlap, or do not end exactly at the end of the file.
        LimitExceededError: the header is over :data:`MAX_HEADER_BYTES`.
        IncompatibleCheckpointError: a dtype outside :data:`DTYPES`.
    """
    length = header_length(head, total_size, path=path)
    if len(head) < _PREFIX.size + length:
        raise _corrupt(path, "the safetensors header is truncated", f"{len(head)} bytes given")
    raw = _json(head[_PREFIX.size : _PREFIX.size + length], path)
    metadata = _metadata(raw.pop("__metadata__"), path) if "__metadata__" in raw else {}
    entries = sorted(
        (_entry(name, value, path) for name, value in raw.items()),
        key=lambda e: (e.begin, e.end),
    )
    data_bytes = total_size - _PREFIX.size - length
    covered = 0
    for entry in entries:
        if entry.begin != covered:
            what = "overlaps the previous tensor" if entry.begin < covered else "leaves a hole"
            raise _corrupt(
                path,
                f"tensor {entry.name[:80]!r} {what} in the data buffer",
                f"offset {entry.begin}, the previous tensors end at {covered}",
            )
        covered = entry.end
    if covered != data_bytes:
        raise _corrupt(
            path,
            "the tensors do not cover the data buffer exactly",
            f"tensors end at {covered}, the buffer holds {data_bytes} bytes",
        )
    return SafetensorsHeader(length, data_bytes, tuple(entries), metadata)


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """:func:`parse_header` of a file on disk, reading only its header.

    Raises:
        CorruptCheckpointError, LimitExceededError, IncompatibleCheckpointError: see
            :func:`parse_header`.
        OSError: the file cannot be read.
    """
    name = os.fspath(path)
    size = os.path.getsize(name)
    with open(name, "rb") as f:
        prefix = f.read(_PREFIX.size)
        length = header_length(prefix, size, path=name)
        return parse_header(prefix + f.read(length), size, path=name)
