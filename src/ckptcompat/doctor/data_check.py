"""``ckptcompat doctor --verify-data``: read every record and check the zip's CRC-32s.

The static scan never reads storage bytes (a 1 GB checkpoint costs a few kB of reads), so
by default the doctor cannot tell a flipped bit inside a tensor from a healthy file, and
says so. Asked to, it reads each record in 1 MiB chunks (never a whole record in memory),
checks its local header against the central directory and its bytes against the
directory's CRC-32, and reports each mismatch as a finding. Standard library only.

torch's zip reader checks no CRC-32 (measured in every default cell by
``tests/security/test_hostile.py``: a flipped bit, a shifted local header and a record
marked as a directory all load, plain and with ``weights_only=True``, as other values), so
those problems are :attr:`DataCheck.silent`: torch loads the file with wrong tensors and
no error. The others (no local header, a record past the end, bytes that do not inflate)
are damaged records.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ckptcompat.scan.archive_reader import ArchiveReader, BadZip, ZipEntry
from ckptcompat.scan.limits import MAX_INFLATED_BYTES

__all__ = ["DataCheck", "not_checked", "verify_data"]

_LOCAL = struct.Struct("<4s2B4HL2L2H")  # 30 bytes
_CHUNK_BYTES = 1 << 20
_DATA_DESCRIPTOR = 0x8


@dataclass(frozen=True)
class DataCheck:
    """What the doctor knows of the file's bytes beyond the static scan.

    Attributes:
        verified: the records were read and checked (``--verify-data``).
        problems: ``"<record>: <why>"`` for each record whose bytes or local header
            disagree with the central directory; empty when all agree or not checked.
        note: one sentence for people: what was (not) checked.
        silent: the problems torch reads past without an error, handing out other tensor
            values than were saved: a CRC-32 mismatch, or a record miniz "extracts" by
            writing nothing (a subset of ``problems``).
    """

    verified: bool = False
    problems: tuple[str, ...] = ()
    note: str = ""
    silent: tuple[str, ...] = ()


def not_checked(kind: str) -> DataCheck:
    """The answer without ``--verify-data``, for a file of container ``kind``."""
    if kind == "zip":
        return DataCheck(
            False,
            note="tensor bytes not read: the zip CRC-32s were not checked "
            "(run with --verify-data to read every record)",
        )
    return DataCheck(False, note=f"a {kind.replace('_', ' ')} file stores no checksums")


def verify_data(path: str, kind: str) -> DataCheck:
    """Read every record of the zip at ``path`` and check it against its CRC-32.

    Args:
        path: the file.
        kind: its container kind (the scan's); only ``"zip"`` files store CRC-32s.

    Returns the :class:`DataCheck`. Never raises for the file's content.

    Raises:
        OSError: the file cannot be read.
    """
    if kind != "zip":
        return not_checked(kind)
    reader = ArchiveReader(path)
    try:
        try:
            directory = reader.zip_directory()
        except BadZip as exc:
            return DataCheck(True, (f"zip directory: {exc}",), "the zip directory is unreadable")
        problems = reader.silent_skips()
        silent = list(problems)
        unchecked = []
        for entry in directory:
            if entry.method == 8 and entry.file_size > MAX_INFLATED_BYTES:
                # Not damage: too big to inflate here (torch inflates it); say so, judge nothing.
                unchecked.append(entry.name)
                continue
            checked = _check(reader, entry)
            if checked is not None:
                why, unnoticed = checked
                problems.append(f"{entry.name}: {why}")
                if unnoticed:
                    silent.append(problems[-1])
    finally:
        reader.close()
    note = (
        f"read {len(directory)} records: {len(problems)} differ from their CRC-32 or header"
        if problems
        else f"read {len(directory)} records: every CRC-32 and local header matches"
    )
    if unchecked:
        note += (
            f"; {len(unchecked)} compressed record(s) over max_inflated_bytes "
            f"({MAX_INFLATED_BYTES}) not checked: {', '.join(unchecked[:3])}"
        )
    return DataCheck(True, tuple(problems), note, tuple(silent))


def _check(reader: ArchiveReader, entry: ZipEntry) -> tuple[str, bool] | None:
    """``(why, torch reads it without an error)`` for a bad record, None for a good one.

    Only a plain CRC-32 mismatch is read without an error (torch's zip reader checks no
    CRC); every other problem here is a damaged record.
    """
    head = reader.read_at(entry.header_offset, _LOCAL.size)
    if len(head) < _LOCAL.size or head[:4] != b"PK\x03\x04":
        return "no local header where the directory points", False
    (_, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = _LOCAL.unpack(head)
    if method != entry.method:
        return f"local header says method {method}, the directory {entry.method}", False
    if not flags & _DATA_DESCRIPTOR and (crc, csize, usize) != (
        entry.crc,
        entry.compress_size,
        entry.file_size,
    ):
        return "local header's CRC or sizes differ from the directory", False
    start = entry.header_offset + _LOCAL.size + name_len + extra_len
    if start + entry.compress_size > reader.size:
        return "the record runs past the end of the file", False
    if method == 0:
        if entry.compress_size != entry.file_size:
            return "stored sizes differ in the directory", False
        got, at, end = 0, start, start + entry.compress_size
        while at < end:
            chunk = reader.read_at(at, min(_CHUNK_BYTES, end - at))
            if not chunk:
                return "the record runs past the end of the file", False
            got = zlib.crc32(chunk, got)
            at += len(chunk)
    elif method == 8:  # records over MAX_INFLATED_BYTES never get here (verify_data)
        try:
            data = zlib.decompressobj(-15).decompress(
                reader.read_at(start, entry.compress_size), entry.file_size + 1
            )
        except zlib.error as exc:
            return f"cannot be inflated: {exc}", False
        if len(data) != entry.file_size:
            return "inflates to another size than the directory says", False
        got = zlib.crc32(data)
    else:
        return f"compression method {method}, which torch cannot read", False
    if got != entry.crc:
        return f"CRC-32 {got:08x}, the directory says {entry.crc:08x}", True
    return None
