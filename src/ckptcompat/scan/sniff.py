"""The container kind of a file from its first bytes and zip directory; never unpickles.

Standard library only. Zip, TorchScript, legacy pickle, legacy tar, Git-LFS pointer, HTML
page, empty or truncated file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, Literal

from ckptcompat.scan.archive_reader import ArchiveReader, BadZip, ZipDirectory

__all__ = ["FileKind", "Sniff", "classify", "sniff"]

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


def classify(reader: ArchiveReader) -> tuple[Sniff, ZipDirectory | None]:
    """Classify; also return the zip directory when there is one."""
    head = reader.read_at(0, _HEAD_BYTES)
    entries: ZipDirectory | None = None
    kind: FileKind
    if reader.size == 0:
        kind = "empty"
    elif head.startswith(_ZIP_MAGIC):
        try:
            entries = reader.zip_directory()
        except BadZip:
            kind = "truncated_zip"
        else:
            # torch's own test (_is_torchscript_zip): a constants.pkl record marks torch.jit.save.
            names = "\n" + "\n".join(entries.names) + "\n"
            ts = "\nconstants.pkl\n" in names or "/constants.pkl\n" in names
            kind = "torchscript" if ts else "zip"
    elif head.startswith(_LFS_PREFIX):
        kind = "git_lfs_pointer"
    elif head.lstrip()[:1] == b"<":
        kind = "html"
    elif (
        len(head) > _TAR_MAGIC_OFFSET + 5
        and head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar"
    ):
        kind = "legacy_tar"
    elif head[0] == _PICKLE_PROTO:
        kind = "legacy_pickle"
    else:
        kind = "unknown"
    return Sniff(kind=kind, size_bytes=reader.size, head=head), entries


def sniff(f: str | os.PathLike[str] | IO[bytes]) -> Sniff:
    """Classify a file by its first bytes (and zip directory) without unpickling anything.

    ``f`` is a path or a seekable binary file object (its position is restored).
    Raises OSError only for I/O failures of the path itself.
    """
    reader = ArchiveReader(f)
    try:
        return classify(reader)[0]
    finally:
        reader.close()
