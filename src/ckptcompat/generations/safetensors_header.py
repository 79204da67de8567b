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

Where the reference implementation is laxer than its specification, this reader follows
the implementation only where that is harmless. Probed (issue 22) with the published wheels
of safetensors 0.3.3, 0.4.1-0.4.5, 0.5.0, 0.5.3, 0.6.1, 0.6.2, 0.7.0 and 0.8.0, each with
torch 2.4.1, 2.5.1, 2.6.0 and 2.15.0 (``safetensors.torch.load_file`` and ``load``):

* JSON whitespace before ``{`` (a space, tab, CR or LF) is read by every release: read.
* ``"__metadata__": null`` is read by every release (an absent map): read as ``{}``.
* fields of a tensor entry other than ``dtype``, ``shape``, ``data_offsets`` are ignored by
  every release: ignored.
* duplicate tensor names and duplicate ``__metadata__`` keys are read by every release,
  silently keeping the last; the specification forbids them and so does this reader,
  unless asked (``keep_last_duplicate=True``, the doctor's mode) to read them as those
  releases do and list them in :attr:`SafetensorsHeader.duplicates`. A duplicate
  ``__metadata__`` field, or a duplicate field of one tensor entry, is refused by every
  release and here.
* two tensors over the same bytes (a shared storage) are refused by every release
  (``InvalidOffset``): safetensors cannot store shared tensors -- ``save_file`` refuses
  them ("Some tensors share memory") and ``save_model`` keeps one name and records each
  dropped alias in ``__metadata__`` as ``{dropped: kept}``
  (:attr:`SafetensorsHeader.aliases`).
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
from ckptcompat.generations.safetensors_dtypes import DTYPES, FORMAT_SINCE, OLDEST_PROBED, DType

__all__ = [
    "DTYPES",
    "FORMAT_SINCE",
    "MAX_HEADER_BYTES",
    "OLDEST_PROBED",
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
        metadata: the ``__metadata__`` map (empty when absent or ``null``).
        duplicates: tensor names and ``__metadata__`` keys given more than once (read with
            ``keep_last_duplicate=True`` only; the last one is kept, as safetensors does).
    """

    header_bytes: int
    data_bytes: int
    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str]
    duplicates: tuple[str, ...] = ()

    @property
    def aliases(self) -> dict[str, str]:
        """``{dropped: kept}``: the ``__metadata__`` entries ``safetensors.torch.save_model``
        writes for tensors that shared storage with a kept one (a key that is not a tensor
        of this file, whose value is). ``load_file`` returns only the kept names;
        ``safetensors.torch.load_model`` restores the dropped ones."""
        names = {t.name for t in self.tensors}
        return {k: v for k, v in self.metadata.items() if k not in names and v in names}

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


class _Pairs:
    """``object_pairs_hook`` for :func:`json.loads`: builds each object, recording every
    duplicate key with the object it occurred in (objects are built inner first)."""

    def __init__(self) -> None:
        self.duplicates: list[tuple[dict[str, Any], str]] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                self.duplicates.append((out, key))
            out[key] = value
        return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


_JSON_SPACE = b" \t\r\n"


def _json(text: bytes, path: str | None, keep_last: bool) -> tuple[dict[str, Any], list[str]]:
    """The header object and the duplicate tensor names / metadata keys kept last."""
    if not text.lstrip(_JSON_SPACE).startswith(b"{"):
        raise _corrupt(path, "the safetensors header is not a JSON object", repr(text[:16]))
    pairs = _Pairs()
    try:
        value = json.loads(
            text.decode("utf-8"), object_pairs_hook=pairs, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _corrupt(path, "the safetensors header is not valid JSON", str(exc)[:200]) from exc
    if type(value) is not dict:
        raise _corrupt(path, "the safetensors header is not a JSON object", type(value).__name__)
    metadata = value.get("__metadata__")
    kept: list[str] = []
    for obj, key in pairs.duplicates:
        # Every safetensors release keeps the last of a duplicate tensor name or metadata
        # key (both are maps there); a repeated field of a struct it refuses.
        lenient = (obj is value and key != "__metadata__") or obj is metadata
        if not (keep_last and lenient):
            raise _corrupt(
                path,
                "the safetensors header is not valid JSON",
                f"duplicate key {key[:80]!r} (the specification forbids duplicates)",
            )
        kept.append(key)
    return value, kept


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _entry(name: str, raw: Any, path: str | None) -> TensorEntry:
    # Other fields are ignored, as by every safetensors release (serde skips unknown ones).
    if type(raw) is not dict or not {"dtype", "shape", "data_offsets"} <= set(raw):
        keys = sorted(raw)[:8] if type(raw) is dict else type(raw).__name__
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
    if raw is None:  # null: read by every safetensors release as no metadata
        return {}
    if type(raw) is not dict or not all(type(v) is str for v in raw.values()):
        raise _corrupt(path, "__metadata__ is not a map of strings to strings", repr(raw)[:80])
    return dict(raw)


def _check_coverage(entries: list[TensorEntry], data_bytes: int, path: str | None) -> None:
    covered, last = 0, None
    for entry in entries:
        if entry.begin < covered and last is not None:
            raise _corrupt(
                path,
                f"tensors {last.name[:80]!r} and {entry.name[:80]!r} share bytes of the data "
                "buffer (a shared storage): every safetensors release refuses this file "
                "(InvalidOffset), and safetensors' save_file never writes one",
                f"[{last.begin}, {last.end}] and [{entry.begin}, {entry.end}]",
            )
        if entry.begin > covered:
            raise _corrupt(
                path,
                f"tensor {entry.name[:80]!r} leaves a hole in the data buffer",
                f"offset {entry.begin}, the previous tensors end at {covered}",
            )
        if entry.end > entry.begin:  # an empty tensor may sit anywhere the bytes are covered
            covered, last = entry.end, entry
    if covered != data_bytes:
        raise _corrupt(
            path,
            "the tensors do not cover the data buffer exactly",
            f"tensors end at {covered}, the buffer holds {data_bytes} bytes",
        )


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


def parse_header(
    head: bytes, total_size: int, *, path: str | None = None, keep_last_duplicate: bool = False
) -> SafetensorsHeader:
    """Check the header of a safetensors file of ``total_size`` bytes.

    Args:
        head: the file's first ``8 + N`` bytes at least (more is ignored).
        total_size: the file's size in bytes; the data buffer is the rest after the header.
        path: for error messages.
        keep_last_duplicate: read a duplicate tensor name or metadata key as every
            safetensors release does (the last wins) and list it in ``duplicates``, instead
            of refusing it as the specification says.

    Raises:
        CorruptCheckpointError: truncation, malformed JSON or entries, duplicate keys,
            offsets that leave holes, overlap (shared bytes), or do not end exactly at the
            end of the file.
        LimitExceededError: the header is over :data:`MAX_HEADER_BYTES`.
        IncompatibleCheckpointError: a dtype outside :data:`DTYPES`.
    """
    length = header_length(head, total_size, path=path)
    if len(head) < _PREFIX.size + length:
        raise _corrupt(path, "the safetensors header is truncated", f"{len(head)} bytes given")
    raw, duplicates = _json(head[_PREFIX.size : _PREFIX.size + length], path, keep_last_duplicate)
    metadata = _metadata(raw.pop("__metadata__"), path) if "__metadata__" in raw else {}
    entries = sorted(
        (_entry(name, value, path) for name, value in raw.items()),
        key=lambda e: (e.begin, e.end),
    )
    _check_coverage(entries, total_size - _PREFIX.size - length, path)
    data_bytes = total_size - _PREFIX.size - length
    return SafetensorsHeader(length, data_bytes, tuple(entries), metadata, tuple(duplicates))


def read_header(
    path: str | os.PathLike[str], *, keep_last_duplicate: bool = False
) -> SafetensorsHeader:
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
        return parse_header(
            prefix + f.read(length), size, path=name, keep_last_duplicate=keep_last_duplicate
        )
