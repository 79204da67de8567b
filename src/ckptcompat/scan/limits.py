"""The limits every reader of a checkpoint enforces before it does the work they bound.

A hostile or damaged file must never crash, hang or exhaust the memory of an entry point
(the doctor, ``torch_compat.load``, the manager). Each limit below is checked before the
work it bounds; a file past one gets a finding ``limit_exceeded`` naming it (the scan) or
a :class:`~ckptcompat.errors.LimitExceededError` whose ``.limit`` is the name here
(:func:`limit_error`). Standard library only.

Why these values (torch.save's own files stay far inside every one):

* ``max_nesting_depth`` 200 containers: a state_dict is 2-4 levels deep, an optimizer
  state 5, a config rarely 20. Hashing a tuple recurses in C without a guard (a 200k-level
  tuple used as a dict key or set member overflows the C stack: SIGSEGV), and Python-level
  consumers (json, copy, repr) take one to three frames per level of the 1000 allowed.
* ``max_unfolded_tuple_items`` 2**22: hashing a tuple visits every item of every nested
  tuple, once per use (tuples cache no hash), so sharing one through the memo,
  ``t = (t, t)`` forty times, makes a 300-byte pickle whose first SETITEM hashes for
  hours. 4M item visits hash in well under a second; torch's tuples (sizes, strides,
  rebuild arguments) hold a handful.
* ``max_memo_index``: a memo index must be below the pickle's size in bytes (each PUT
  takes at least 2 bytes, so a real index is always smaller); the C unpickler grows its
  memo to twice the index, a memory bomb in ten bytes.
* ``max_pickle_bytes`` 256 MiB per pickle record and ``max_scan_bytes`` 512 MiB read by
  one scan in all: torch writes ~100 bytes of pickle per tensor (a 1M-tensor checkpoint
  has a ~100 MiB data.pkl); the walk costs up to ~0.6 s per MiB of crafted opcodes.
* ``max_compression_ratio`` 32 and ``max_inflated_bytes`` 64 MiB for a compressed
  (deflated) record: torch never compresses, but re-zipped files load; a real data.pkl
  deflates 4-5x (measured on a 4096-tensor state_dict), a bomb of cheap opcodes 1000x.
* ``max_records`` 2**20 zip records: one per storage plus five; the directory is parsed
  whole, so this bounds its cost together with the file size.
* zip offsets and sizes, and every declared length (BINBYTES8, BINUNICODE8, legacy
  storage headers), are checked against the bytes actually present before a read or an
  allocation: never a read past the end of the file, never an allocation of a declared
  length larger than what is there.
"""

from __future__ import annotations

from ckptcompat.errors import LimitExceededError

__all__ = [
    "LIMITS",
    "MAX_COMPRESSION_RATIO",
    "MAX_INFLATED_BYTES",
    "MAX_NESTING_DEPTH",
    "MAX_PICKLE_BYTES",
    "MAX_RECORDS",
    "MAX_SCAN_BYTES",
    "MAX_UNFOLDED_TUPLE_ITEMS",
    "limit_error",
]

MAX_NESTING_DEPTH = 200  # containers (tuples, lists, dicts, sets, objects' state)
MAX_UNFOLDED_TUPLE_ITEMS = 1 << 22  # items one tuple holds, through its nested tuples
MAX_PICKLE_BYTES = 256 << 20  # one pickle record, bytes
MAX_SCAN_BYTES = 512 << 20  # every record one scan reads, bytes
MAX_COMPRESSION_RATIO = 32  # inflated / compressed size of one record
MAX_INFLATED_BYTES = 64 << 20  # one compressed record once inflated, bytes
MAX_RECORDS = 1 << 20  # zip records

#: limit name -> (its value, what it bounds); the names are the ``.limit`` of errors.
LIMITS: dict[str, tuple[int, str]] = {
    "max_nesting_depth": (MAX_NESTING_DEPTH, "containers nested in one pickle"),
    "max_unfolded_tuple_items": (
        MAX_UNFOLDED_TUPLE_ITEMS,
        "items one tuple holds counted through nested tuples (what hashing it visits)",
    ),
    "max_memo_index": (0, "memo indices, below the pickle's size in bytes"),
    "max_pickle_bytes": (MAX_PICKLE_BYTES, "bytes of one pickle record"),
    "max_scan_bytes": (MAX_SCAN_BYTES, "bytes one scan reads"),
    "max_compression_ratio": (MAX_COMPRESSION_RATIO, "inflated/compressed size of a record"),
    "max_inflated_bytes": (MAX_INFLATED_BYTES, "bytes of a compressed record once inflated"),
    "max_records": (MAX_RECORDS, "records in a zip directory"),
}


def limit_error(limit: str, found: str, *, path: str | None = None) -> LimitExceededError:
    """The typed error for a file past ``limit`` (a key of :data:`LIMITS`).

    Args:
        limit: the limit's name, e.g. ``"max_nesting_depth"``.
        found: what the file holds, e.g. ``"a pickle nested over 200 levels deep"``.
        path: the file, when known.

    Returns the error (the caller raises it); its ``.limit`` is ``limit``.
    """
    value, what = LIMITS[limit]
    bound = f" ({value})" if value else ""
    return LimitExceededError(
        f"the checkpoint goes past the limit {limit}{bound} on {what}",
        limit=limit,
        path=path,
        expected=f"a file within {limit}{bound}, as every torch.save file is",
        found=found,
        fix="do not load it: restore the file from its source (a damaged or crafted file); "
        "`ckptcompat doctor FILE` lists what else is wrong with it",
    )
