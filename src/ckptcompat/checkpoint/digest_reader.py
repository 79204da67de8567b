"""A file object that digests the bytes ``torch.load`` reads, so verify="full" reads once.

Hashing the whole file and then loading it reads every byte twice; with the agent's
tensors adopted instead of copied, the separate hash pass cost about a third of a load.
:class:`DigestingReader` is handed to ``torch_compat.load`` instead of the path: torch
reads each storage record straight into the tensor's memory through ``readinto`` and
this reader hashes that memory right after, in file order. Bytes torch reads out of
order are not taken from its reads: a read a little ahead of the hashed prefix first
hashes the gap (a record's local header and padding), one far ahead (the zip directory
at the end, read first) passes through, and :meth:`DigestingReader.finish` hashes
whatever torch skipped by reading it. Every byte of the file enters the digest exactly
once and in order, so the digest equals :func:`~ckptcompat.checkpoint.atomic.hash_file`'s,
whatever order a torch version reads in (a different order only costs extra reads).

The tensors come out of the very bytes that were hashed, which a hash-then-load cannot
promise (the file could change in between). The price: the digest is known only after
the unpickler has run on the bytes, as with verify="size"; the caller discards the
payload when the digest differs.
"""

from __future__ import annotations

import io
import os

import xxhash

from ckptcompat.checkpoint.atomic import DIGEST_ALGORITHM

__all__ = ["DigestingReader"]

#: A read starting at most this far past the hashed prefix hashes the gap first.
_GAP_BYTES = 1 << 20
_CHUNK_BYTES = 1 << 20


class DigestingReader(io.RawIOBase):
    """A seekable read-only file whose whole-file digest :meth:`finish` returns.

    Args:
        path: the file; ``name`` is set to it, so errors can name the file.

    Raises:
        OSError: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.name = os.fspath(path)
        self._raw = open(path, "rb", buffering=0)  # noqa: SIM115  # closed by close()
        self._pos = 0
        self._hash = xxhash.xxh3_128()
        self._hashed = 0  # bytes [0, _hashed) are in the digest

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` from the start, the current position or the end."""
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = os.fstat(self._raw.fileno()).st_size + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read into ``buffer`` at the current position; hash what extends the prefix."""
        view = memoryview(buffer).cast("B")
        start = self._pos
        if self._hashed < start <= self._hashed + _GAP_BYTES:
            self._hash_up_to(start)
        self._raw.seek(start)
        count = 0
        while count < len(view):  # one read(2) returns at most about 2 GiB
            got = self._raw.readinto(view[count:]) or 0
            if not got:
                break
            count += got
        self._pos = start + count
        if start <= self._hashed < self._pos:
            self._hash.update(view[self._hashed - start : count])
            self._hashed = self._pos
        return count

    def _hash_up_to(self, end: int | None) -> None:
        """Read and hash ``[hashed, end)`` (to the end of the file when ``end`` is None)."""
        self._raw.seek(self._hashed)
        while end is None or self._hashed < end:
            want = _CHUNK_BYTES if end is None else min(_CHUNK_BYTES, end - self._hashed)
            chunk = self._raw.read(want)
            if not chunk:
                return
            self._hash.update(chunk)
            self._hashed += len(chunk)

    def finish(self) -> tuple[int, str]:
        """Hash the rest of the file; return ``(size in bytes, "xxh3_128:<hex>")``.

        Raises:
            OSError: the file cannot be read.
        """
        self._hash_up_to(None)
        return self._hashed, f"{DIGEST_ALGORITHM}:{self._hash.hexdigest()}"

    def close(self) -> None:
        """Close the file."""
        self._raw.close()
        super().close()
