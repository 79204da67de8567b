"""Static inspection of a checkpoint file; never runs any of the file's code.

Standard library only (no torch, no numpy): the doctor imports it on machines without
them, and :mod:`ckptcompat.torch_compat` calls :func:`precheck` before every safe load.

This module currently recognises the container kind (zip, legacy pickle, legacy tar,
Git-LFS pointer, HTML page, empty or truncated file). The full pickle scan (globals,
opcodes, storages) for torch < 2.10 is added by the doctor issue (#4) behind ``full=True``.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Literal

from ckptcompat.errors import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
)

__all__ = ["FileKind", "Sniff", "precheck", "sniff"]

FileKind = Literal[
    "zip",
    "torchscript",
    "legacy_pickle",
    "legacy_tar",
    "git_lfs_pointer",
    "html",
    "empty",
    "truncated_zip",
    "unknown",
]

_HEAD_BYTES = 512
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_LFS_PREFIX = b"version https://git-lfs"
_TAR_MAGIC_OFFSET = 257


@dataclass(frozen=True)
class Sniff:
    """What the first bytes (and, for zips, the central directory) say about a file.

    Attributes:
        kind: the container kind.
        size_bytes: file size in bytes.
        head: up to the first 512 bytes.
    """

    kind: FileKind
    size_bytes: int
    head: bytes


def _zip_kind(fh: IO[bytes]) -> FileKind:
    try:
        with zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "truncated_zip"
    # torch's own test (_is_torchscript_zip): a "constants.pkl" record marks torch.jit.save.
    if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "zip"


def _read_head(f: str | os.PathLike[str] | IO[bytes]) -> tuple[bytes, int, FileKind | None]:
    """Return (head bytes, size in bytes, zip kind or None when not a zip)."""
    if isinstance(f, (str, os.PathLike)):
        size = os.path.getsize(f)
        with open(f, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            kind = _zip_kind(fh) if head.startswith(_ZIP_MAGIC) else None
        return head, size, kind
    pos = f.tell()
    try:
        head = f.read(_HEAD_BYTES)
        f.seek(0, io.SEEK_END)
        size = f.tell() - pos
        f.seek(pos)
        kind = _zip_kind(f) if head.startswith(_ZIP_MAGIC) else None
    finally:
        f.seek(pos)
    return head, size, kind


def sniff(f: str | os.PathLike[str] | IO[bytes]) -> Sniff:
    """Classify a file by its first bytes without unpickling anything.

    ``f`` is a path or a seekable binary file object (its position is restored).
    Raises OSError only for I/O failures of the path itself.
    """
    head, size, zip_kind = _read_head(f)
    kind: FileKind
    if size == 0:
        kind = "empty"
    elif zip_kind is not None:
        kind = zip_kind
    elif head.startswith(_LFS_PREFIX):
        kind = "git_lfs_pointer"
    elif head.lstrip()[:1] == b"<":
        kind = "html"
    elif len(head) > _TAR_MAGIC_OFFSET + 5 and head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        kind = "legacy_tar"
    elif head[0] == _PICKLE_PROTO:
        kind = "legacy_pickle"
    else:
        kind = "unknown"
    return Sniff(kind=kind, size_bytes=size, head=head)


_CORRUPT: dict[str, tuple[str, str]] = {
    "empty": ("an empty (zero-byte) file", "restore it from its source; a crash mid-copy?"),
    "truncated_zip": (
        "a zip archive without its central directory (truncated)",
        "restore it from its source or pick an earlier checkpoint",
    ),
    "git_lfs_pointer": ("a Git-LFS pointer file", "run `git lfs pull` to fetch the real file"),
    "html": ("an HTML page", "the download returned a web page; download the file again"),
    "unknown": (
        "bytes that are neither a zip archive nor a pickle",
        "check that this is a file written by torch.save",
    ),
}


def precheck(
    f: str | os.PathLike[str] | IO[bytes],
    *,
    allowed: Iterable[str] = (),
    full: bool = False,
) -> Sniff:
    """Refuse files that are not torch checkpoints before any unpickler sees them.

    Args:
        f: a path or a seekable binary file object.
        allowed: fully-qualified global names the caller allowlisted (used by the full scan).
        full: also run the full static pickle scan (torch < 2.10, see torch_compat).

    Raises:
        CorruptCheckpointError: empty, truncated zip, Git-LFS pointer, HTML, unknown bytes.
        IncompatibleCheckpointError: a TorchScript archive (torch <= 2.5 would hand it to
            ``torch.jit.load`` even with ``weights_only=True``; 2.6+ refuses it).
        UnsafeCheckpointError: the legacy ``.tar`` container (the CVE-2025-32434 path on
            <= 2.5.1; 2.6+ refuses it under weights_only).
    """
    del allowed, full  # the full scan arrives with issue #4
    result = sniff(f)
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else None
    if result.kind == "torchscript":
        raise IncompatibleCheckpointError(
            "this is a TorchScript archive, not a torch.save checkpoint",
            path=name,
            expected="a file written by torch.save",
            found="a torch.jit.save archive (it has a constants.pkl record)",
            fix="load it with torch.jit.load; ckptcompat does not manage TorchScript",
        )
    if result.kind == "legacy_tar":
        raise UnsafeCheckpointError(
            "the legacy .tar container cannot be loaded safely",
            path=name,
            expected="a torch.save zip archive",
            found="a pre-1.6 .tar checkpoint",
            fix="convert it with `ckptcompat migrate --trust` only if you trust its source",
        )
    if result.kind in _CORRUPT:
        found, fix = _CORRUPT[result.kind]
        raise CorruptCheckpointError(
            "not a torch checkpoint",
            path=name,
            expected="a torch.save zip archive (or a legacy protocol-2 pickle)",
            found=found,
            fix=fix,
        )
    return result
