"""A file object that checks the zip CRC-32 of every record torch reads, as torch reads it.

torch never checks the CRC-32s its zip files store (miniz is built without the check), so
a flipped bit inside a tensor record, or a local header whose lengths were edited so that
torch reads from the wrong offset, loads silently as wrong weights. Where no index digest
covers a file (a bare path, a file object), :func:`ckptcompat.torch_compat.load` hands
torch a :class:`CrcCheckingReader` instead of the path, as the manager's indexed load
hands it a digesting reader: one pass over the bytes.

torch (miniz) reads each record as: its 30-byte local header at the offset the central
directory gives, then the data at that offset + 30 + the name and extra lengths *of the
local header*. The reader recognises the first (a read at a record's header offset),
checks the local header against the central directory (signature, method, and sizes and
CRC unless a data descriptor follows), and from then on CRCs the bytes torch reads from
where the local header says the data starts. So the bytes checked are exactly the bytes
torch used, wherever an edited header sent it. :meth:`CrcCheckingReader.mismatches` then
completes records torch read out of order or in part (reading what it skipped) and
returns every record whose bytes differ from the directory. Records torch never opened
are not read; but records miniz would skip without reading (a DOS directory attribute, no
stored bytes: torch then hands out an uninitialised buffer) are refused up front.
Standard library only.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import IO

from ckptcompat.scan.archive_reader import ArchiveReader, ZipDirectory, ZipEntry
from ckptcompat.scan.limits import MAX_INFLATED_BYTES

__all__ = ["CrcCheckingReader"]

_LOCAL = struct.Struct("<4s2B4HL2L2H")  # 30 bytes
_DATA_DESCRIPTOR = 0x8
_CHUNK_BYTES = 1 << 20


def _name_codec(flags: int) -> str:
    return "utf-8" if flags & 0x800 else "cp437"


class _Record:
    """One record torch opened: where its data starts (per its local header) and the CRC
    of its bytes read so far, in order."""

    __slots__ = ("at", "crc", "done", "entry", "problem", "start")

    def __init__(self, entry: ZipEntry, start: int, problem: str | None) -> None:
        self.entry = entry
        self.start = start  # offset of the data, from the local header (bytes)
        self.at = start  # the next offset whose byte extends the CRC
        self.crc = 0
        self.done = entry.method != 0  # deflated records are checked by mismatches()
        self.problem = problem


class CrcCheckingReader(io.RawIOBase):
    """A seekable read-only view of a zip file that CRC-checks the records read through it.

    Args:
        f: a path, or a seekable binary file object (read from its current position,
            which is restored on close).
        directory: the file's central directory, when the caller has parsed it already.

    Raises:
        OSError: the path cannot be opened.
        ckptcompat.scan.archive_reader.BadZip: ``directory`` is None and the central
            directory cannot be read.
    """

    def __init__(
        self, f: str | os.PathLike[str] | IO[bytes], directory: ZipDirectory | None = None
    ) -> None:
        super().__init__()
        self._archive = ArchiveReader(f)
        self.name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "")
        self._fh = self._archive._fh
        self._base = self._archive._base
        self._size = self._archive.size
        try:
            self._directory = directory or self._archive.zip_directory()
            self._skipped = self._archive.silent_skips()
        except BaseException:
            self._archive.close()
            raise
        self._header_at: dict[int, int] | None = None  # header offset -> record index
        self._opened: dict[int, _Record] = {}  # record index -> record
        self._next: dict[int, _Record] = {}  # offset the CRC of a record continues at
        self._pos = 0

    # ------------------------------------------------------------------ file protocol
    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def tell(self) -> int:
        """The current position (bytes)."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (bytes) from the start, the current position or the end."""
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read into ``buffer`` at the current position; CRC what belongs to a record."""
        view = memoryview(buffer).cast("B")
        start = self._pos
        if start < 0 or start >= self._size:
            return 0
        self._fh.seek(self._base + start)
        count = 0
        want = min(len(view), self._size - start)
        while count < want:  # one read(2) returns at most about 2 GiB
            got = self._fh.readinto(view[count:want]) or 0
            if not got:
                break
            count += got
        self._pos = start + count
        if count:
            self._observe(start, view[:count])
        return count

    def close(self) -> None:
        """Close the file (or restore a file object's position)."""
        self._archive.close()
        super().close()

    # ------------------------------------------------------------------ the checks
    def _observe(self, start: int, data: memoryview) -> None:
        record = self._next.pop(start, None)
        if record is not None:
            self._extend(record, data)
            return
        if len(data) >= _LOCAL.size and bytes(data[:4]) == b"PK\x03\x04":
            if self._header_at is None:
                self._header_at = {e.header_offset: i for i, e in enumerate(self._directory)}
            index = self._header_at.get(start)
            if index is not None and index not in self._opened:
                self._open(index, bytes(data[: _LOCAL.size]))
                record = self._next.pop(start + _LOCAL.size, None)
                if record is not None and len(data) > _LOCAL.size:
                    self._extend(record, data[_LOCAL.size :])
                elif record is not None:
                    self._next[record.at] = record

    def _open(self, index: int, head: bytes) -> None:
        entry = self._directory[index]
        (_, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = _LOCAL.unpack(head)
        problem = None
        if method != entry.method:
            problem = f"local header says method {method}, the directory {entry.method}"
        elif not flags & _DATA_DESCRIPTOR and (crc, csize, usize) != (
            entry.crc,
            entry.compress_size,
            entry.file_size,
        ):
            problem = "local header's CRC or sizes differ from the directory"
        elif name_len != len(entry.name.encode(_name_codec(entry.flags), "replace")):
            problem = "local header's name length differs from the directory's name"
        record = _Record(entry, entry.header_offset + _LOCAL.size + name_len + extra_len, problem)
        self._opened[index] = record
        if not record.done:
            if entry.compress_size == 0:
                record.done = True
            else:
                self._next[record.at] = record

    def _extend(self, record: _Record, data: memoryview) -> None:
        left = record.start + record.entry.compress_size - record.at
        part = data[:left] if len(data) > left else data
        record.crc = zlib.crc32(part, record.crc)
        record.at += len(part)
        if record.at >= record.start + record.entry.compress_size:
            record.done = True
        else:
            self._next[record.at] = record

    def mismatches(self) -> list[str]:
        """Every record torch opened whose bytes differ from the directory, as
        ``"<name>: <why>"``; empty when all match. Reads what torch skipped of those
        records (and inflates deflated ones, up to their declared size).

        Raises:
            OSError: the file cannot be read.
        """
        out = list(self._skipped)
        for record in self._opened.values():
            why = record.problem or self._complete(record)
            if why:
                out.append(f"{record.entry.name}: {why}")
        return out

    def _complete(self, record: _Record) -> str | None:
        entry = record.entry
        end = record.start + entry.compress_size
        if end > self._size:
            return "the record runs past the end of the file"
        if entry.method == 0:
            if entry.file_size != entry.compress_size:
                return "stored sizes differ in the directory"
            self._next.pop(record.at, None)
            while record.at < end:
                chunk = self._archive.read_at(record.at, min(_CHUNK_BYTES, end - record.at))
                if not chunk:
                    return "the record runs past the end of the file"
                record.crc = zlib.crc32(chunk, record.crc)
                record.at += len(chunk)
            crc = record.crc
        else:
            if entry.file_size > MAX_INFLATED_BYTES:
                return f"a compressed record over max_inflated_bytes ({MAX_INFLATED_BYTES})"
            try:
                data = zlib.decompressobj(-15).decompress(
                    self._archive.read_at(record.start, entry.compress_size), entry.file_size + 1
                )
            except zlib.error as exc:
                return f"cannot be inflated: {exc}"
            if len(data) != entry.file_size:
                return "inflates to another size than the directory says"
            crc = zlib.crc32(data)
        if crc != entry.crc:
            return f"CRC-32 {crc:08x}, the directory says {entry.crc:08x}"
        return None
