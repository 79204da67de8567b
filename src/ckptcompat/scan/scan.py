"""Static inspection of a checkpoint file; never runs any of the file's code.

Standard library only (no torch, no numpy): the doctor imports it on machines without
them, and :mod:`ckptcompat.torch_compat` calls :func:`precheck` before every safe load.

* :func:`sniff` recognises the container kind from the first bytes and the zip directory
  (zip, TorchScript, legacy pickle, legacy tar, Git-LFS pointer, HTML page, empty or
  truncated file).
* :func:`scan` reads the zip directory and the pickle records of a ``torch.save`` zip or
  legacy non-zip file, never the storage bytes, and reports globals, opcodes, storages,
  record sizes and writer hints (:mod:`.archive_scan` and :mod:`.storage_check` per
  container, :mod:`.pickle_scan` per pickle with :mod:`.opcode_walk` and
  :mod:`.inert_unpickler`, :mod:`.archive_reader` for the bytes; results in
  :mod:`.scan_result`).
* :func:`precheck` refuses files before torch's unpickler sees them: by kind always, and by
  the full scan when ``full=True`` (torch < 2.10: <= 2.5.1 had a weights-only bypass,
  CVE-2025-32434; <= 2.9.1 memory-safety bugs via SETITEM on non-dicts and storage-size
  mismatches, CVE-2026-24747).

Finding codes (:class:`Finding`), and what ``precheck(full=True)`` does with them:

* refused as unsafe: ``unsupported_opcode``, ``extension_opcode``,
  ``memo_index_out_of_range``, ``call_on_result``, ``non_storage_persistent_id``,
  ``multiple_pickles``, ``duplicate_record``, ``unknown_storage_type``,
  ``dangerous_global``; ``setitem_non_dict`` and ``append_non_list`` unless the target's
  class was allowlisted by the caller (SETITEM only); globals outside the defaults and
  ``allowed`` (no finding: the allowlist is the caller's).
* refused past a limit (:class:`~ckptcompat.errors.LimitExceededError`, ``.limit`` the
  name of :mod:`.limits`): ``limit_exceeded``, ``pickle_too_large``.
* refused as corrupt: ``truncated_pickle``, ``malformed_pickle``, ``unpickle_failed``,
  ``missing_pickle``, ``prefix_mismatch``, ``unreadable_record``,
  ``inconsistent_storage``, ``missing_storage_record``, ``storage_size_mismatch``,
  ``truncated_storage``, ``legacy_bad_header``.
* reported only: ``unexpected_record``, ``unreferenced_record``, ``trailing_bytes``,
  ``not_scanned``.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator
from typing import IO

from ckptcompat.errors import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
)
from ckptcompat.scan.archive_reader import ArchiveReader, ZipDirectory
from ckptcompat.scan.archive_scan import scan_legacy, scan_zip, zip_limit
from ckptcompat.scan.limits import limit_error
from ckptcompat.scan.pickle_scan import Finding
from ckptcompat.scan.scan_result import ScanResult
from ckptcompat.scan.sniff import Sniff, classify
from ckptcompat.scan.torch_names import SETITEM_TARGETS, WEIGHTS_ONLY_GLOBALS

__all__ = ["precheck", "scan"]


def _scan_open(reader: ArchiveReader, sn: Sniff, entries: ZipDirectory | None) -> ScanResult:
    if sn.kind == "zip" and entries is not None:
        return scan_zip(reader, entries, sn)
    if sn.kind == "legacy_pickle":
        return scan_legacy(reader, sn)
    return ScanResult(sn, findings=(Finding("not_scanned", f"a {sn.kind} file is not scanned"),))


def scan(f: str | os.PathLike[str] | IO[bytes]) -> ScanResult:
    """Statically scan a checkpoint: never unpickles, imports nothing the file names.

    Reads the zip directory, the pickle records and a few tiny records (``version``,
    ``byteorder``, ``.format_version``, ``.storage_alignment``); for the legacy format its
    leading pickles and the 8-byte size header of each storage. Storage bytes are never
    read: a sparse 1 GB checkpoint costs a few kB of reads.

    Args:
        f: a path or a seekable binary file object (its position is restored).

    Returns the :class:`ScanResult`; suspicious content is reported in ``findings``, not
    raised. Only I/O errors of the path itself (e.g. FileNotFoundError) propagate.
    """
    reader = ArchiveReader(f)
    try:
        with _gc_paused():
            return _scan_open(reader, *classify(reader))
    finally:
        reader.close()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one scan.

    A scan allocates a few objects per opcode and storage (tens of thousands for 4096
    tensors), none of them cyclic garbage except a few placeholder classes collected
    later; in a process holding torch (~300k tracked objects) the collections those
    allocations trigger cost about a quarter of the scan.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --------------------------------------------------------------------------- precheck
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

#: Finding codes that make :func:`precheck` refuse a file as unsafe or as corrupt.
_UNSAFE_CODES = frozenset(
    {
        "unsupported_opcode",
        "extension_opcode",
        "memo_index_out_of_range",
        "call_on_result",
        "non_storage_persistent_id",
        "multiple_pickles",
        "duplicate_record",
        "unknown_storage_type",
    }
)
_CORRUPT_CODES = frozenset(
    {
        "truncated_pickle",
        "malformed_pickle",
        "unpickle_failed",
        "missing_pickle",
        "prefix_mismatch",
        "unreadable_record",
        "inconsistent_storage",
        "missing_storage_record",
        "storage_size_mismatch",
        "truncated_storage",
        "legacy_bad_header",
    }
)


def _refuse_kind(result: Sniff, name: str | None) -> None:
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


def _listed(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


#: The fix of a refusal that names a global which runs code: never a way to load it anyway.
_NEVER_LOAD = (
    "do not load or migrate it: it names {}, which runs code when unpickled (a plain "
    "torch.load or a trusted migration would run it); `ckptcompat doctor FILE` explains why"
)


def _refuse_content(result: ScanResult, allowed: frozenset[str], name: str | None) -> None:
    refused = [g for g in result.globals if g not in WEIGHTS_ONLY_GLOBALS and g not in allowed]
    dangerous = list(result.dangerous_globals)
    # SETITEM on anything but dict/OrderedDict/Counter is the CVE-2026-24747 path on
    # torch <= 2.9.1 (2.10 added the same rule); a class the caller allowlisted is its call.
    bad_targets = [
        t
        for t in result.setitem_targets
        if t not in SETITEM_TARGETS and (t in WEIGHTS_ONLY_GLOBALS or t not in allowed)
    ] + [f"{t} (APPEND)" for t in result.append_targets]
    reasons = []
    if refused:
        reasons.append("globals outside the allowlist: " + _listed(refused, limit=50))
    if dangerous:
        reasons.append("dangerous globals, refused even if allowlisted: " + _listed(dangerous))
    if bad_targets:
        reasons.append("items set on non-dict objects: " + _listed(bad_targets))
    reasons += [
        f"{f.message} ({_listed(f.names)})" if f.names else f.message
        for f in result.findings
        if f.code in _UNSAFE_CODES
    ]
    if reasons:
        raise UnsafeCheckpointError(
            "the static scan refused this checkpoint before unpickling",
            path=name,
            globals=[*refused, *dangerous],
            expected="one protocol-2 pickle of tensors, containers and allowlisted globals",
            found="; ".join(reasons),
            fix=_NEVER_LOAD.format(", ".join(dangerous[:5]))
            if dangerous
            else "run `ckptcompat doctor FILE`; allowlist trusted classes for this load, or "
            "`ckptcompat migrate --trust` it only if you trust its source",
        )
    for f in result.findings:
        if f.code == "limit_exceeded":
            raise limit_error(f.names[0], f.message, path=name)
        if f.code == "pickle_too_large":
            raise limit_error("max_pickle_bytes", f.message, path=name)
    corrupt = [f for f in result.findings if f.code in _CORRUPT_CODES]
    if corrupt:
        raise CorruptCheckpointError(
            "the checkpoint's records are inconsistent",
            path=name,
            expected="a complete torch.save file whose storage records match its pickle",
            found="; ".join(
                f"{f.message} ({_listed(f.names)})" if f.names else f.message for f in corrupt
            ),
            fix="restore the file from its source or pick an earlier checkpoint",
        )


def _refuse_limits(
    reader: ArchiveReader, sn: Sniff, entries: ZipDirectory | None, name: str | None
) -> None:
    """Refuse a file whose object pickle goes past a limit any unpickler would meet (torch's
    own hashes dict keys too: a deep tuple key overflows its C stack). The only content
    check without ``full``: the pickle record's sizes, compression and nesting."""
    if sn.kind == "zip" and entries is not None:
        past = zip_limit(reader, entries)
        if past is not None:
            raise limit_error(past[0], past[1], path=name)
    elif sn.kind == "legacy_pickle":
        with _gc_paused():
            result = scan_legacy(reader, sn)
        for f in result.findings:
            if f.code == "limit_exceeded":
                raise limit_error(f.names[0], f.message, path=name)


def precheck(
    f: str | os.PathLike[str] | IO[bytes],
    *,
    allowed: Iterable[str] = (),
    full: bool = False,
) -> Sniff:
    """Refuse files that are not torch checkpoints before any unpickler sees them.

    Args:
        f: a path or a seekable binary file object (its position is restored).
        allowed: fully-qualified global names the caller allowlisted (used by the full scan).
        full: also run the static scan :func:`scan` and refuse on what it finds (torch_compat
            passes ``full=True`` on torch < 2.10; see the module docstring).

    Returns the :class:`Sniff` of the file.

    Raises:
        LimitExceededError: a file past a limit of :mod:`.limits` (a
            CorruptCheckpointError; ``.limit`` names the limit): without ``full``, the
            object pickle's size, compression and nesting; with it, every limit.
        CorruptCheckpointError: empty, truncated zip, Git-LFS pointer, HTML, unknown bytes;
            with ``full``: truncated or malformed pickle, storage records whose sizes
            disagree with the pickle (bytes), missing records.
        IncompatibleCheckpointError: a TorchScript archive (torch <= 2.5 would hand it to
            ``torch.jit.load`` even with ``weights_only=True``; 2.6+ refuses it).
        UnsafeCheckpointError: the legacy ``.tar`` container (the CVE-2025-32434 path on
            <= 2.5.1; 2.6+ refuses it under weights_only); with ``full``: globals outside
            torch's weights-only defaults and ``allowed`` and dangerous globals even if
            allowed (``.globals`` lists every one), opcodes outside protocol 2's
            weights-only set, SETITEM on non-dicts, more than one pickle record.
    """
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else None
    reader = ArchiveReader(f)
    if not full:
        try:
            result, entries = classify(reader)
            _refuse_kind(result, name)
            _refuse_limits(reader, result, entries, name)
        finally:
            reader.close()
        return result
    try:
        result, entries = classify(reader)
        _refuse_kind(result, name)
        with _gc_paused():
            scanned = _scan_open(reader, result, entries)
        _refuse_content(scanned, frozenset(allowed), name)
    finally:
        reader.close()
    return result
