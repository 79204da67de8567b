"""A binary file for :func:`pickletools.genops` that never reads past a bound.

Standard library only; used by the doctor's fallback pickle walk and its raw-pickle
check, the two places that walk a pickle straight from a file.
"""

from __future__ import annotations

from typing import IO

__all__ = ["BoundedFile"]

_MAX_LINE_BYTES = 1 << 20  # a text opcode's argument line (GLOBAL names, protocol-0 ints)


class BoundedFile:
    """A binary file for :func:`pickletools.genops` that never reads past a bound.

    ``genops`` reads a BINBYTES8/BINUNICODE8 argument with ``read(declared length)``; on
    a plain file that allocates the declared length first (a MemoryError or OverflowError
    for a crafted 2**63). Here a read is cut to the bytes left before ``limit``, so
    ``genops`` sees too few bytes and raises ValueError (a malformed pickle), and a line
    to :data:`_MAX_LINE_BYTES`.

    Args:
        fh: a binary file opened by the caller.
        limit: offset (bytes, from the file's start) no read goes past.
    """

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        self._fh = fh
        self._limit = limit

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes, never past the bound."""
        left = max(self._limit - self._fh.tell(), 0)
        return self._fh.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        """One line of at most :data:`_MAX_LINE_BYTES`, never past the bound."""
        left = max(self._limit - self._fh.tell(), 0)
        return self._fh.readline(min(left, _MAX_LINE_BYTES))

    def tell(self) -> int:
        """The position (bytes)."""
        return self._fh.tell()
