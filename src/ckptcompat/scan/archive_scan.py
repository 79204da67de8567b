"""The two ``torch.save`` containers, scanned statically: the zip archive and the legacy stream.

Standard library only. Reads the zip directory (:mod:`.archive_reader`), the pickle
records (:mod:`.pickle_scan`) and a few tiny records; never the storage bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import compress, repeat
from operator import itemgetter, not_
from typing import TYPE_CHECKING

from ckptcompat.scan.archive_reader import ArchiveReader, BadZip, ZipDirectory, ZipEntry
from ckptcompat.scan.limits import (
    MAX_COMPRESSION_RATIO,
    MAX_INFLATED_BYTES,
    MAX_PICKLE_BYTES,
    MAX_RECORDS,
    MAX_SCAN_BYTES,
)
from ckptcompat.scan.pickle_scan import PAST, PickleScan, scan_pickle
from ckptcompat.scan.scan_result import (
    ScanAcc,
    ScanResult,
    StorageInfo,
    assemble,
    field_getter,
)
from ckptcompat.scan.storage_check import check_storages, storages_in_bulk
from ckptcompat.scan.storage_check import claims as _claims
from ckptcompat.scan.tensor_runs import too_deep
from ckptcompat.scan.torch_names import STORAGE_TYPES

if TYPE_CHECKING:
    from ckptcompat.scan.sniff import Sniff

__all__ = ["scan_legacy", "scan_zip", "zip_limit"]


_SMALL_RECORD = 64  # bytes; version/byteorder/.format_version records are a few bytes
_FIRST_LEGACY_READ = 64 * 1024  # bytes
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION

_INFO_KEY = field_getter(StorageInfo, "key")


# --------------------------------------------------------------------------- zip
_KNOWN_RECORDS = frozenset(
    {
        "data.pkl",
        "version",
        ".data/version",
        "byteorder",
        ".format_version",
        ".storage_alignment",
        ".data/serialization_id",
    }
)


def _small_text(reader: ArchiveReader, entry: ZipEntry | None) -> str | None:
    if entry is None or entry.file_size > _SMALL_RECORD:
        return None
    try:
        return reader.read_entry(entry).decode("ascii", "replace").strip()
    except BadZip:
        return None


def _scan_pickles(
    reader: ArchiveReader, directory: ZipDirectory, order: list[int], acc: ScanAcc
) -> PickleScan | None:
    """Scan the pickle records at ``order`` (data.pkl first); return data.pkl's scan."""
    main_scan = None
    budget = MAX_SCAN_BYTES
    for at in order:
        record = directory[at]
        if record.file_size > MAX_PICKLE_BYTES:
            acc.note(
                "pickle_too_large",
                f"{record.name} is over {MAX_PICKLE_BYTES} bytes (max_pickle_bytes)",
                [record.name],
            )
            continue
        over = _past_limit(record, budget)
        if over is not None:
            acc.note("limit_exceeded", f"{record.name}: {over[1]}", [over[0], record.name])
            continue
        budget -= record.file_size
        try:
            data = reader.read_entry(record)
        except BadZip as exc:
            acc.note("unreadable_record", str(exc), [record.name])
            continue
        ps = scan_pickle(data)
        acc.add(ps)
        if at == order[0]:
            main_scan = ps
            if ps.end is not None and ps.end < len(data):
                acc.note(
                    "trailing_bytes", "data.pkl continues after its STOP opcode", [record.name]
                )
    return main_scan


def _past_limit(record: ZipEntry, budget: int) -> tuple[str, str] | None:
    """(limit, what) when reading ``record`` would go past a limit, checked before the
    read: its declared sizes bound the work (the reader never inflates past them)."""
    if record.file_size > budget:
        return "max_scan_bytes", f"the scan has read {MAX_SCAN_BYTES - budget} bytes already"
    if record.method == 0:
        return None
    if record.file_size > MAX_INFLATED_BYTES:
        return "max_inflated_bytes", f"inflates to {record.file_size} bytes"
    if record.file_size > MAX_COMPRESSION_RATIO * max(record.compress_size, 1):
        ratio = record.file_size // max(record.compress_size, 1)
        return "max_compression_ratio", f"inflates {ratio} times its stored size (a zip bomb)"
    return None


def zip_limit(reader: ArchiveReader, directory: ZipDirectory) -> tuple[str, str] | None:
    """``(limit, what)`` when the record torch unpickles (``<first folder>/data.pkl``) goes
    past a limit of :mod:`.limits`, checked before torch reads it: its sizes and
    compression, then the nesting its opcodes build (torch's unpickler hashes dict keys
    too). None when within every limit, or when the record is missing or unreadable
    (torch then fails on its own, and :func:`scan_zip` explains why).
    """
    names = directory.names
    if len(names) > MAX_RECORDS:
        return "max_records", f"{len(names)} records"
    first = names[0].split("/", 1)[0] if names and "/" in names[0] else ""
    wanted = f"{first}/data.pkl"
    if wanted not in names:
        return None
    record = directory[names.index(wanted)]
    if record.file_size > MAX_PICKLE_BYTES:
        return "max_pickle_bytes", f"{wanted} is {record.file_size} bytes"
    over = _past_limit(record, MAX_SCAN_BYTES)
    if over is not None:
        return over[0], f"{wanted}: {over[1]}"
    try:
        data = reader.read_entry(record)
    except BadZip:
        return None
    limit = too_deep(data)
    return None if limit is None else (limit, f"{wanted}: {PAST[limit]}")


def scan_zip(
    reader: ArchiveReader, entries: ZipDirectory | list[ZipEntry], sn: Sniff
) -> ScanResult:
    """Scan a torch.save zip: its pickle record(s) and directory; never its storage bytes."""
    acc = ScanAcc()
    directory = entries if isinstance(entries, ZipDirectory) else ZipDirectory.of(entries)
    names = directory.names
    if len(names) > MAX_RECORDS:  # the directory is parsed; nothing more is done
        acc.note("limit_exceeded", f"{len(names)} zip records", ["max_records"])
        return assemble(acc, sn, None, ())
    # Distinct record names and their directory indices (the first record of a name wins,
    # as in torch); no dict for torch's thousands of distinct names (a few look-ups scan).
    distinct: Sequence[str] = names
    at: Sequence[int] = range(len(names))
    if len(set(names)) != len(names):
        by_name: dict[str, int] = {}
        for i, name in enumerate(names):
            by_name.setdefault(name, i)
        distinct, at = list(by_name), list(by_name.values())
        twice = [n for n, count in Counter(names).items() if count > 1]
        acc.note("duplicate_record", "record names appear twice", twice)

    def index(name: str) -> int | None:
        return names.index(name) if name in names else None  # the first of its name

    def entry(name: str) -> ZipEntry | None:
        i = index(name)
        return None if i is None else directory[i]

    # torch's PyTorchStreamReader takes the archive name from the first record.
    first = names[0].split("/", 1)[0] if names and "/" in names[0] else ""
    pickles = list(compress(range(len(names)), map(str.endswith, names, repeat(".pkl"))))
    main_at = index(f"{first}/data.pkl")
    if main_at is None:
        main_at = next((i for i in pickles if names[i].rsplit("/", 1)[-1] == "data.pkl"), None)
    if main_at is None:
        acc.note("missing_pickle", "no data.pkl record: not a torch.save archive")
        return assemble(acc, sn, None, (), records=tuple(names))
    main = directory[main_at]
    root = main.name[: -len("data.pkl")]
    if not first or root.rstrip("/") != first:
        # torch refuses records outside a folder and reads <first record's folder>/data.pkl.
        acc.note("prefix_mismatch", f"torch would look for {first or '?'}/data.pkl", [main.name])
    if len(pickles) > 1:
        acc.note(
            "multiple_pickles",
            "more than one pickle record; torch.save writes one",
            [names[i] for i in pickles],
        )
    main_scan = _scan_pickles(
        reader, directory, [main_at, *(i for i in pickles if i != main_at)], acc
    )
    # C-level maps and filters: a torch file has one data/<key> record per storage.
    data = root + "data/"
    is_data = list(map(str.startswith, distinct, repeat(data)))
    data_names = list(compress(distinct, is_data))
    sizes = directory.file_sizes
    data_sizes = list(compress(sizes if distinct is names else map(sizes.__getitem__, at), is_data))
    unexpected = [
        name
        for name in compress(distinct, map(not_, is_data))
        if (name[len(root) :] if name.startswith(root) else name) not in _KNOWN_RECORDS
        and not name.endswith(".pkl")
    ]
    if unexpected:
        acc.note("unexpected_record", "records torch.save does not write", unexpected)
    storages: Sequence[StorageInfo] | None = storages_in_bulk(acc, data, data_names, data_sizes)
    unreferenced: list[str] = []
    # A bulk table's keys are distinct and all have records: as many keys as records leaves
    # none unreferenced.
    if storages is None or len(storages) != len(data_names):
        record_bytes = dict(
            zip(map(itemgetter(slice(len(data), None)), data_names), data_sizes, strict=True)
        )
        if storages is None:
            storages = check_storages(acc, _claims(acc), record_bytes)
        unreferenced = sorted(set(record_bytes).difference(map(_INFO_KEY, storages)))
    if unreferenced:
        acc.note("unreferenced_record", "storage records no pickle refers to", unreferenced)
    fmt = _small_text(reader, entry(root + ".format_version"))
    alignment = _small_text(reader, entry(root + ".storage_alignment"))
    return assemble(
        acc,
        sn,
        main_scan,
        storages,
        prefix=root.rstrip("/"),
        records=tuple(names),
        pickle_records=tuple(names[i] for i in pickles),
        format_version=fmt,
        storage_alignment=int(alignment) if alignment and alignment.isdigit() else None,
        byteorder=_small_text(reader, entry(root + "byteorder")),
        archive_version=_small_text(
            reader, entry(root + "version") or entry(root + ".data/version")
        ),
        writer_hint=f"torch >= 2.7 (.format_version {fmt})" if fmt is not None else "torch < 2.7",
    )


# --------------------------------------------------------------------------- legacy
def scan_legacy(reader: ArchiveReader, sn: Sniff) -> ScanResult:
    """Scan the legacy non-zip format (``_use_new_zipfile_serialization=False``).

    Layout (torch/serialization.py ``_legacy_save``): five protocol-2 pickles (magic number,
    protocol version 1001, sys_info, the object, the sorted storage keys), then per key an
    int64 element count in the writer's byte order and that many elements of raw bytes.
    Reads the pickles and the 8-byte counts, seeking over the storage bytes.
    """
    acc = ScanAcc()
    buf = reader.read_at(0, min(_FIRST_LEGACY_READ, reader.size))
    scans: list[PickleScan] = []
    pos = 0
    cap = min(reader.size, MAX_PICKLE_BYTES)  # the leading pickles, bytes
    for _ in range(5):
        ps = scan_pickle(buf, pos, keep_root=True)
        while ps.needed_bytes and len(buf) < cap:
            buf = reader.read_at(0, min(max(2 * len(buf), len(buf) + ps.needed_bytes), cap))
            ps = scan_pickle(buf, pos, keep_root=True)
        acc.add(ps)
        scans.append(ps)
        if ps.end is None:
            break
        pos = ps.end
    roots = [ps.root for ps in scans]
    sys_info = roots[2] if len(roots) > 2 and type(roots[2]) is dict else {}
    if roots[:2] != [_LEGACY_MAGIC, _LEGACY_PROTOCOL] or not sys_info:
        acc.note("legacy_bad_header", "not torch's legacy magic number, protocol and sys_info")
    keys = roots[4] if len(roots) == 5 and type(roots[4]) is list else []
    order = "big" if sys_info.get("little_endian") is False else "little"
    claims = _claims(acc)
    record_bytes: dict[str, int] = {}
    offset, truncated = pos, False
    if not all(type(key) is str for key in keys):
        acc.note("legacy_bad_header", "the storage key list holds something other than str")
        keys = []
    for key in keys:
        spec = STORAGE_TYPES.get(claims[key][0]) if key in claims else None  # type: ignore[arg-type]
        if spec is None:
            break  # unknown type or unclaimed key: check_storages() notes it
        header = reader.read_at(offset, 8)
        if len(header) < 8:
            truncated = True
            break
        nbytes = int.from_bytes(header, order, signed=True) * spec[1]
        record_bytes[key] = nbytes
        offset += 8 + max(nbytes, 0)
    if truncated or offset > reader.size:
        acc.note("truncated_storage", f"storages end past byte {reader.size}, the end of the file")
    elif keys and len(record_bytes) == len(keys) and offset < reader.size:
        acc.note("trailing_bytes", "the file continues after its last storage")
    return assemble(
        acc,
        sn,
        scans[3] if len(scans) > 3 else None,
        check_storages(acc, claims, record_bytes),
        byteorder=order if sys_info else None,
        writer_hint="torch.save(_use_new_zipfile_serialization=False)",
    )
