"""Which torch and safetensors versions read a safetensors file: predictions from its header.

For one checked header (:mod:`.safetensors_header`, read with ``keep_last_duplicate=True``)
and one (torch minor, safetensors release) pair, three readers:

* ``safetensors.torch.load_file(path)``: the Rust binding's dtype table and
  ``getattr(torch, ...)``; on a torch without the dtype it raises a bare ``AttributeError``
  (F8_E8M0 before torch 2.7, F4 before 2.8, with safetensors 0.6.1+);
* ``safetensors.torch.load(bytes)``: ``_view2torch`` with the Python ``_TYPES`` table, which
  lags the binding (U16/U32/U64 from 0.6.1; F8_E8M0 and F4 in no release through 0.8.0) and
  which, through 0.4.3, fails on an empty tensor (``torch.frombuffer`` of 0 bytes:
  "both buffer length (0) and count (-1) must not be 0"; fixed in 0.4.4);
* ``ckptcompat`` (:func:`ckptcompat.generations.tensors.load_safetensors`, what ``migrate``
  uses): every dtype torch has, ``F4`` from torch 2.8 with an even last dimension (as
  ``load_file`` shapes it); it refuses duplicate keys, which every safetensors release
  reads silently keeping the last.

Every fact comes from the published wheels of safetensors 0.3.3, 0.4.1-0.4.5, 0.5.0, 0.5.3,
0.6.1, 0.6.2, 0.7.0 and 0.8.0 loaded on torch 2.4.1, 2.5.1, 2.6.0 and 2.15.0 (issue 22;
the dtype rows are :data:`~.safetensors_header.DTYPES`); the torch side is the ``dtypes``
rows of :mod:`ckptcompat.versions_facts`. Structural faults (a hole, an overlap, a shared
storage, bytes past the last tensor, bad JSON, a non-string ``__metadata__`` value, a
header over 100,000,000 bytes) are refused by every release probed and by this reader alike.
Standard library only: no torch, no safetensors import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ckptcompat import versions_facts
from ckptcompat.generations.safetensors_header import (
    FORMAT_SINCE,
    OLDEST_PROBED,
    DType,
    SafetensorsHeader,
)

__all__ = [
    "RELEASES",
    "Reading",
    "ckptcompat_reads",
    "first_torch",
    "load_bytes_reads",
    "load_file_reads",
    "load_file_since",
    "predict",
    "release_row",
    "release_span",
    "version_key",
]

#: Each safetensors release where a reader's behaviour changed, oldest first: a prediction
#: for a release holds up to the next one. 0.8.0 is the newest probed.
RELEASES: tuple[str, ...] = ("0.3.3", "0.4.2", "0.4.4", "0.6.1", "0.7.0", "0.8.0")
#: The last release each row of :data:`RELEASES` covers (from PyPI's index: 0.4.3, 0.5.x
#: and 0.6.2 behave as the row before them; 0.6.0 is not on the index).
_LAST = {"0.3.3": "0.4.1", "0.4.2": "0.4.3", "0.4.4": "0.5.3", "0.6.1": "0.6.2"}
#: safetensors' zero-size ``load(bytes)`` fix, first release (0.4.3 still fails).
_EMPTY_LOAD_FIXED = "0.4.4"


def version_key(version: str) -> tuple[int, ...]:
    """``"0.4.2"`` -> ``(0, 4, 2)``."""
    return tuple(int(p) for p in version.split("."))


def release_span(release: str) -> str:
    """The releases a row of :data:`RELEASES` stands for: ``"0.4.4-0.5.3"``, ``"0.8.0+"``."""
    if release == RELEASES[-1]:
        return f"{release}+"
    last = _LAST.get(release)
    return f"{release}-{last}" if last else release


def release_row(version: str) -> str:
    """The row of :data:`RELEASES` that stands for safetensors ``version`` (``"0.5.3"`` ->
    ``"0.4.4"``); releases before the oldest probed map to it.

    Raises:
        ValueError: ``version`` does not start with ``X.Y.Z`` (a suffix such as ``rc1`` or
            ``+cpu`` is dropped).
    """
    match = re.match(r"\d+\.\d+\.\d+", version)
    if match is None:
        raise ValueError(f"not a release number: {version!r}")
    key = version_key(match.group())
    return next((r for r in reversed(RELEASES) if version_key(r) <= key), RELEASES[0])


def _at_least(release: str, since: str | None) -> bool:
    return since is not None and version_key(release) >= version_key(since)


def first_torch(torch_name: str, minors: tuple[str, ...]) -> str | None:
    """The first of ``minors`` whose torch has ``torch.<torch_name>``, else ``None``."""
    return next(
        (m for m in minors if torch_name in versions_facts.names_through("dtypes", m)), None
    )


def _torch_has(dtype: DType, minor: str) -> bool:
    return bool(dtype.torch_name) and dtype.torch_name in versions_facts.names_through(
        "dtypes", minor
    )


def _dtypes(header: SafetensorsHeader) -> list[DType]:
    return list({t.dtype.name: t.dtype for t in header.tensors}.values())


def _format_knows(dtype: DType, release: str) -> bool:
    return _at_least(release, FORMAT_SINCE.get(dtype.name, dtype.safetensors_since))


def load_file_reads(header: SafetensorsHeader, minor: str, release: str) -> str:
    """``safetensors.torch.load_file`` of this file with safetensors ``release`` on torch
    ``minor``: ``"reads"`` or ``"fails: <why>"`` (what that release raises)."""
    for dtype in _dtypes(header):
        if not _format_knows(dtype, release):
            return f"fails: safetensors {release_span(release)} does not know {dtype.name}"
        if dtype.safetensors_since is None:
            return f"fails: {dtype.name} has no torch dtype (SafetensorError: Dtype not understood)"
        if not _torch_has(dtype, minor):
            return f"fails: AttributeError: torch has no {dtype.torch_name} ({dtype.name})"
    return "reads"


def load_bytes_reads(header: SafetensorsHeader, minor: str, release: str) -> str:
    """``safetensors.torch.load(open(path, 'rb').read())``, as :func:`load_file_reads`."""
    for dtype in _dtypes(header):
        if not _format_knows(dtype, release):
            return f"fails: safetensors {release_span(release)} does not know {dtype.name}"
        if not _at_least(release, dtype.load_bytes_since):
            return f"fails: KeyError: {dtype.name!r} (not in load()'s dtype table)"
        if not _torch_has(dtype, minor):
            return f"fails: AttributeError: torch has no {dtype.torch_name} ({dtype.name})"
    if not _at_least(release, _EMPTY_LOAD_FIXED) and any(t.numel == 0 for t in header.tensors):
        return "fails: ValueError: an empty tensor (torch.frombuffer of 0 bytes)"
    return "reads"


def ckptcompat_reads(header: SafetensorsHeader, minor: str, minors: tuple[str, ...]) -> str:
    """What :func:`ckptcompat.generations.tensors.load_safetensors` (``migrate``) does on
    torch ``minor``; ``minors`` name the first torch that would do better."""
    if header.duplicates:
        shown = ", ".join(repr(d[:40]) for d in header.duplicates[:3])
        return f"fails: duplicate keys {shown} (the specification forbids them)"
    for dtype in _dtypes(header):
        if not _torch_has(dtype, minor):
            if not dtype.torch_name:
                return f"fails: {dtype.name} has no torch dtype"
            first = first_torch(dtype.torch_name, minors)
            return f"fails: {dtype.name} needs torch.{dtype.torch_name} (torch >= {first})"
    for entry in header.tensors:
        if entry.dtype.bits == 4 and (not entry.shape or entry.shape[-1] % 2):
            return f"fails: F4 tensor {entry.name[:40]!r} has an odd last dimension"
    return "reads (torch.frombuffer, no unpickling)"


def load_file_since(header: SafetensorsHeader) -> str | None:
    """The first safetensors release whose ``load_file`` knows every dtype of the file
    (:data:`~.safetensors_header.OLDEST_PROBED` for the common ones), ``None`` if none."""
    since = [t.dtype.safetensors_since for t in header.tensors]
    if any(s is None for s in since):
        return None
    return max([OLDEST_PROBED, *(s for s in since if s)], key=version_key)


@dataclass(frozen=True)
class Reading:
    """One (torch minor, safetensors release) cell: each reader's outcome.

    Attributes:
        torch: the torch minor, ``"2.6"``.
        safetensors: a row of :data:`RELEASES` (see :func:`release_span`).
        load_file: ``safetensors.torch.load_file``: ``"reads"`` or ``"fails: ..."``.
        load_bytes: ``safetensors.torch.load(bytes)``, likewise.
    """

    torch: str
    safetensors: str
    load_file: str
    load_bytes: str


def predict(header: SafetensorsHeader, minors: tuple[str, ...]) -> tuple[Reading, ...]:
    """Every (torch minor, safetensors release) reading, torch outer, releases inner."""
    return tuple(
        Reading(m, r, load_file_reads(header, m, r), load_bytes_reads(header, m, r))
        for m in minors
        for r in RELEASES
    )
