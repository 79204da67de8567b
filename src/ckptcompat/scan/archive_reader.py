"""Random access to a checkpoint file and its zip directory; standard library only.

The zip reader parses the central directory itself (``zipfile`` spends ~3 us building a
ZipInfo per record, and torch files can hold thousands) and is strict where readers could
disagree: a zip64 end record must sit where both ``zipfile`` and torch's miniz look for it,
the central directory must end where the end record begins, and the record count must
match. Anything else is :class:`BadZip`, which :mod:`.scan` reports as a truncated zip.
:class:`ZipDirectory` keeps a torch file's thousands of records as names and sizes and
builds a :class:`ZipEntry` only for the records read.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import IO, NamedTuple, overload

__all__ = ["ArchiveReader", "BadZip", "ZipDirectory", "ZipEntry"]

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_EOCD64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # 46 bytes
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # 30 bytes
_MAX_COMMENT = 65535
_FLAG_ENCRYPTED, _FLAG_UTF8 = 0x1, 0x800
_DOS_DIRECTORY = 0x10  # in a central record's external attributes


class BadZip(Exception):
    """The zip directory or a record cannot be read consistently."""


class ZipEntry(NamedTuple):
    """One central-directory record (sizes and offsets in bytes)."""

    name: str
    flags: int
    method: int
    crc: int
    compress_size: int
    file_size: int
    header_offset: int


class ZipDirectory(Sequence[ZipEntry]):
    """The central directory, in order: :attr:`names` and :attr:`file_sizes` (bytes) up
    front, the :class:`ZipEntry` records built on first read from the raw records (a torch
    file has one per storage, and a scan needs only the names and sizes of most)."""

    __slots__ = ("_entries", "_records", "file_sizes", "names")

    def __init__(
        self,
        names: Sequence[str],
        file_sizes: Sequence[int],
        records: Sequence[bytes] = (),
        entries: list[ZipEntry] | None = None,
    ) -> None:
        """``records``: each record's bytes after its signature (when ``entries`` is None)."""
        self.names = names
        self.file_sizes = file_sizes
        self._records = records
        self._entries = entries

    @classmethod
    def of(cls, entries: list[ZipEntry]) -> ZipDirectory:
        """The directory of already-built entries."""
        return cls([e.name for e in entries], [e.file_size for e in entries], entries=entries)

    def _entry(self, index: int) -> ZipEntry:
        if self._entries is not None:
            return self._entries[index]
        flags, method, crc, csize, usize, _, _, _, offset = _CENTRAL_REST.unpack_from(
            self._records[index]
        )
        return _make_entry((self.names[index], flags, method, crc, csize, usize, offset))

    def _built(self) -> list[ZipEntry]:
        if self._entries is None:
            self._entries = list(map(self._entry, range(len(self.names))))
        return self._entries

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> ZipEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[ZipEntry]: ...
    def __getitem__(self, index: int | slice) -> ZipEntry | list[ZipEntry]:
        if isinstance(index, slice):
            return self._built()[index]
        return self._entry(range(len(self.names))[index])

    def __iter__(self) -> Iterator[ZipEntry]:
        return iter(self._built())


class ArchiveReader:
    """Random access to a path (opened unbuffered, so each read is exactly what we ask) or
    to a seekable binary file object from its current position, restored on close."""

    def __init__(self, f: str | os.PathLike[str] | IO[bytes]) -> None:
        if isinstance(f, (str, os.PathLike)):
            self._fh: IO[bytes] = open(f, "rb", buffering=0)  # noqa: SIM115 - see close()
            self._own, self._base = True, 0
        else:
            self._fh, self._own, self._base = f, False, f.tell()
        #: file size in bytes (from the start position for file objects)
        self.size: int = self._fh.seek(0, io.SEEK_END) - self._base

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (bytes); fewer only at end of file.

        Offsets and lengths come from the file itself (zip fields, legacy size headers),
        so both are checked against :attr:`size` before any seek or allocation: an
        offset outside the file (negative, past its end, past what a seek takes) gives
        ``b""``, a length is cut to the bytes present. Raises only OSError of the file.
        """
        if offset < 0 or n <= 0 or offset >= self.size:
            return b""
        n = min(n, self.size - offset)
        self._fh.seek(self._base + offset)
        chunks, left = [], n
        while left > 0:
            chunk = self._fh.read(left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._own:
            self._fh.close()
        else:
            self._fh.seek(self._base)

    def _end_record(self) -> tuple[int, int, int, int]:
        """Return (entries, directory size, directory offset, where the directory must end)."""
        tail = self.read_at(max(self.size - _EOCD.size, 0), _EOCD.size)
        at = self.size - _EOCD.size
        if len(tail) < _EOCD.size or tail[:4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
            # An archive comment (never written by torch) moves the record back.
            span = min(self.size, _MAX_COMMENT + _EOCD.size)
            tail = self.read_at(self.size - span, span)
            i = tail.rfind(b"PK\x05\x06")
            if i < 0 or i + _EOCD.size > len(tail):
                raise BadZip("no end-of-central-directory record")
            at = self.size - span + i
            tail = tail[i : i + _EOCD.size]
        _, _, _, _, count, cd_size, cd_offset, _ = _EOCD.unpack(tail)
        end = at
        if at >= _EOCD64_LOCATOR.size:
            locator = self.read_at(at - _EOCD64_LOCATOR.size, _EOCD64_LOCATOR.size)
            if locator[:4] == b"PK\x06\x07":
                _, _, rec_at, _ = _EOCD64_LOCATOR.unpack(locator)
                # zipfile reads the record just before the locator, miniz at rec_at: demand both.
                if rec_at != at - _EOCD64_LOCATOR.size - _EOCD64.size:
                    raise BadZip("zip64 end record is not where readers agree to find it")
                rec = _EOCD64.unpack(self.read_at(rec_at, _EOCD64.size))
                if rec[0] != b"PK\x06\x06":
                    raise BadZip("bad zip64 end record")
                count, cd_size, cd_offset, end = rec[7], rec[8], rec[9], rec_at
        if cd_offset + cd_size != end:
            raise BadZip("the central directory does not end where the end record begins")
        return count, cd_size, cd_offset, end

    def zip_entries(self) -> list[ZipEntry]:
        """Parse the central directory. Raises BadZip."""
        return list(self.zip_directory())

    def zip_directory(self) -> ZipDirectory:
        """Parse the central directory. Raises BadZip."""
        count, cd_size, cd_offset, _ = self._end_record()
        cd = self.read_at(cd_offset, cd_size)
        if len(cd) != cd_size:
            raise BadZip("the central directory is cut short")
        directory = _plain_entries(cd, count)
        if directory is not None:
            return directory
        # The loop avoids attribute look-ups and builds each ZipEntry with tuple.__new__
        # (no Python-level __new__).
        entries = []
        append, unpack, make, pos = entries.append, _CENTRAL.unpack_from, _make_entry, 0
        try:
            while pos < cd_size:
                rec = unpack(cd, pos)
                if rec[0] != b"PK\x01\x02":
                    raise BadZip(f"bad central-directory record at {cd_offset + pos}")
                flags, name_len, extra_len = rec[5], rec[12], rec[13]
                start = pos + 46
                name = cd[start : start + name_len].decode(
                    "utf-8" if flags & _FLAG_UTF8 else "cp437"
                )
                csize, usize, offset = rec[10], rec[11], rec[18]
                if _MAX32 in (csize, usize, offset):
                    extra = cd[start + name_len : start + name_len + extra_len]
                    usize, csize, offset = _zip64_sizes(extra, usize, csize, offset)
                append(make((name, flags, rec[6], rec[9], csize, usize, offset)))
                pos = start + name_len + extra_len + rec[14]
        except (struct.error, UnicodeDecodeError) as exc:
            raise BadZip(f"unreadable central directory: {exc}") from None
        if len(entries) != count:
            raise BadZip(f"the directory lists {len(entries)} records, its end record {count}")
        return ZipDirectory.of(entries)

    def silent_skips(self) -> list[str]:
        """Records torch's zip reader (miniz) would skip without an error, as
        ``"<name>: <why>"``: a name without a trailing ``/`` whose DOS attributes mark a
        directory, or a record with no compressed bytes but an uncompressed size. miniz
        "extracts" those by writing nothing, and torch then hands out the uninitialised
        buffer as a tensor (a silent wrong weight no CRC check sees: nothing is read).
        torch.save writes neither. Raises BadZip when the directory cannot be read.
        """
        count, cd_size, cd_offset, _ = self._end_record()
        cd = self.read_at(cd_offset, cd_size)
        pieces = cd.split(_CENTRAL_SIGNATURE)
        if not pieces[0] and len(pieces) == count + 1 and not _odd_pieces(pieces[1:]):
            return []  # every record is one piece (see _plain_entries), none odd
        out, pos = [], 0
        try:
            for _ in range(count):
                rec = _CENTRAL.unpack_from(cd, pos)
                if rec[0] != _CENTRAL_SIGNATURE:
                    raise BadZip(f"bad central-directory record at {cd_offset + pos}")
                name_len, extra_len, comment_len = rec[12], rec[13], rec[14]
                raw = cd[pos + 46 : pos + 46 + name_len]
                csize, usize, attributes = rec[10], rec[11], rec[17]
                name = raw.decode("utf-8" if rec[5] & _FLAG_UTF8 else "cp437", "replace")
                if attributes & _DOS_DIRECTORY and not raw.endswith(b"/"):
                    out.append(f"{name}: marked as a directory, so torch would read nothing")
                elif csize == 0 and usize not in (0, _MAX32):
                    out.append(f"{name}: no stored bytes for {usize} bytes of data")
                pos += 46 + name_len + extra_len + comment_len
        except struct.error as exc:
            raise BadZip(f"unreadable central directory: {exc}") from None
        return out

    def read_entry(self, entry: ZipEntry) -> bytes:
        """The record's bytes, CRC-checked. Raises BadZip."""
        if entry.flags & _FLAG_ENCRYPTED or entry.method not in (0, 8):
            raise BadZip(f"{entry.name}: encrypted or compressed with method {entry.method}")
        # One read for the local header, its name and extra field (torch's extra pads
        # the data to 64 bytes) and the data, as the directory describes them, when the
        # file holds them all; the local header's own lengths are then checked, and what
        # they move is read again.
        name_size = len(
            entry.name.encode("utf-8" if entry.flags & _FLAG_UTF8 else "cp437", "replace")
        )
        guess = _LOCAL.size + name_size + _EXTRA_GUESS
        if entry.header_offset + guess + entry.compress_size <= self.size:
            block = self.read_at(entry.header_offset, guess + entry.compress_size)
        else:  # sizes the file cannot hold: read nothing they claim before the checks below
            block = self.read_at(entry.header_offset, _LOCAL.size + name_size)
        head = block[: _LOCAL.size]
        if len(head) < _LOCAL.size or head[:4] != b"PK\x03\x04":
            raise BadZip(f"{entry.name}: bad local header")
        rec = _LOCAL.unpack(head)
        local_name = block[_LOCAL.size : _LOCAL.size + rec[10]]
        if len(local_name) < rec[10]:
            local_name = self.read_at(entry.header_offset + _LOCAL.size, rec[10])
        if (
            local_name.decode("utf-8" if entry.flags & _FLAG_UTF8 else "cp437", "replace")
            != entry.name
        ):
            raise BadZip(f"{entry.name}: local header names another record")
        skip = _LOCAL.size + rec[10] + rec[11]
        start = entry.header_offset + skip
        if start + entry.compress_size > self.size:  # never allocate what the file lacks
            raise BadZip(f"{entry.name}: the record runs past the end of the file")
        if skip + entry.compress_size <= len(block):
            data = block[skip : skip + entry.compress_size]
        else:
            data = self.read_at(start, entry.compress_size)
        if entry.method == 8:
            try:
                data = zlib.decompressobj(-15).decompress(data, entry.file_size + 1)
            except zlib.error as exc:
                raise BadZip(f"{entry.name}: {exc}") from None
        if len(data) != entry.file_size or zlib.crc32(data) != entry.crc:
            raise BadZip(f"{entry.name}: size or CRC differs from the directory")
        return data


_make_entry = functools.partial(tuple.__new__, ZipEntry)
_EXTRA_GUESS = 128  # bytes of a local header's extra field read with it (torch: < 68)
_MAX32 = 0xFFFFFFFF
_CENTRAL_SIGNATURE = b"PK\x01\x02"
# After the signature: flags, method, crc, compressed and uncompressed size, name, extra
# and comment lengths, local header offset (the other fields skipped as padding).
_CENTRAL_REST = struct.Struct("<4xHH4xLLLHHH8xL")
_CENTRAL_SIZES = struct.Struct("<20xLHHH")  # uncompressed size, name/extra/comment lengths
_ZIP64_MARK = b"\xff\xff\xff\xff"


def _plain_entries(cd: bytes, count: int) -> ZipDirectory | None:
    """The directory as :meth:`ArchiveReader.zip_directory` parses it, in bulk, when every
    record is plain: no extra field, no comment, no zip64 sizes, ASCII names. None otherwise.

    torch writes such a directory with one record per storage (thousands); splitting on the
    record signature and checking that every piece is exactly its header plus the name
    length it states proves the pieces are the records a sequential parse would find. No
    four 0xFF bytes anywhere in the directory proves no 32-bit field is a zip64 marker, so
    only the sizes and name lengths are read now, the other fields on demand.
    """
    pieces = cd.split(_CENTRAL_SIGNATURE)
    if pieces[0] or len(pieces) - 1 != count or _ZIP64_MARK in cd:
        return None
    del pieces[0]
    if not pieces:
        return ZipDirectory([], [])
    head = _CENTRAL_REST.size  # 42 bytes
    try:
        usize, name_len, extra_len, comment_len = zip(
            *map(_CENTRAL_SIZES.unpack_from, pieces), strict=True
        )
    except struct.error:  # a piece shorter than a header
        return None
    raw_names = list(map(itemgetter(slice(head, None)), pieces))
    if (
        name_len != tuple(map(len, raw_names))
        or not b"".join(raw_names).isascii()
        or any(extra_len)
        or any(comment_len)
    ):
        return None
    names = list(map(bytes.decode, raw_names))  # ASCII: the same in UTF-8 and cp437
    return ZipDirectory(names, usize, pieces)


def _odd_pieces(pieces: list[bytes]) -> bool:
    """True when a central record (after its signature) may be one miniz skips: its DOS
    directory bit set, or no compressed bytes (or when one is too short to tell)."""
    if min(map(len, pieces), default=42) < 42:
        return True
    if any(p[34] & _DOS_DIRECTORY for p in pieces):  # external attributes, low byte
        return True
    return any(p[16:20] == b"\0\0\0\0" for p in pieces)  # compressed size 0


def _zip64_sizes(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, pos)
        if tag == 1:
            # Present in this order, each only when its 32-bit field is 0xFFFFFFFF.
            values = list(struct.unpack_from(f"<{size // 8}Q", extra, pos + 4))
            wanted = [usize == 0xFFFFFFFF, csize == 0xFFFFFFFF, offset == 0xFFFFFFFF]
            if sum(wanted) > len(values):
                raise BadZip("zip64 extra field too short")
            found = iter(values)
            usize, csize, offset = (
                next(found) if want else old
                for want, old in zip(wanted, (usize, csize, offset), strict=True)
            )
            return usize, csize, offset
        pos += 4 + size
    raise BadZip("zip64 sizes announced but no zip64 extra field")
