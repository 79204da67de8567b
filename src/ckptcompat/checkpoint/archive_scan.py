"""The two ``torch.save`` containers, scanned statically: the zip archive and the legacy stream.

Standard library only. Reads the zip directory (:mod:`.archive_reader`), the pickle
records (:mod:`.pickle_scan`) and a few tiny records; never the storage bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, compress
from operator import itemgetter, methodcaller, mul, not_
from typing import TYPE_CHECKING, NamedTuple

from ckptcompat.checkpoint.archive_reader import ArchiveReader, BadZip, ZipEntry
from ckptcompat.checkpoint.pickle_scan import (
    Finding,
    PersistentRef,
    PickleScan,
    StreamFacts,
    scan_pickle,
)
from ckptcompat.checkpoint.torch_names import (
    SETITEM_TARGETS,
    STORAGE_TYPES,
    WEIGHTS_ONLY_GLOBALS,
    is_dangerous,
)

if TYPE_CHECKING:
    from ckptcompat.checkpoint.scan import FileKind, Sniff

# ArchiveReader, BadZip and ZipEntry live in archive_reader; re-exported for callers that
# imported them from here.
__all__ = [
    "ArchiveReader",
    "BadZip",
    "ScanResult",
    "StorageInfo",
    "ZipEntry",
    "scan_legacy",
    "scan_zip",
]


def _field(cls: type[tuple[object, ...]], name: str) -> itemgetter[object]:
    """A C-level getter of a NamedTuple field (about twice as fast as attrgetter in maps)."""
    return itemgetter(cls._fields.index(name))  # type: ignore[attr-defined]


_MAX_PICKLE_BYTES = 1 << 30  # refuse to scan a larger pickle record (bytes)
_SMALL_RECORD = 64  # bytes; version/byteorder/.format_version records are a few bytes
_FIRST_LEGACY_READ = 64 * 1024  # bytes
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION


# --------------------------------------------------------------------------- results
class StorageInfo(NamedTuple):
    """One storage as the pickle claims it, next to what the file holds.

    Attributes:
        key: storage key (zip record ``data/<key>``).
        storage_type: e.g. ``"torch.FloatStorage"``, ``"torch.storage.UntypedStorage"``.
        dtype: ``"float32"`` from the storage class, or the ``_rebuild_tensor_v3`` dtype
            for dtypes without a legacy storage class (saved untyped), e.g. float8.
        numel: elements of ``storage_type`` the pickle claims (bytes for UntypedStorage).
        nbytes: ``numel`` x element size, in bytes; None when the storage type is unknown.
        location: e.g. ``"cpu"``.
        record_bytes: size of the zip record, or per the legacy size header, in bytes;
            None when missing.
    """

    key: str
    storage_type: str | None
    dtype: str | None
    numel: int
    nbytes: int | None
    location: str | None
    record_bytes: int | None


_NAME, _FILE_SIZE = _field(ZipEntry, "name"), _field(ZipEntry, "file_size")
_INFO_KEY, _NBYTES = _field(StorageInfo, "key"), _field(StorageInfo, "nbytes")
_DTYPE = _field(StorageInfo, "dtype")
_STORAGE_TYPE, _KEY, _LOCATION, _NUMEL, _REF_DTYPE, _WELL_FORMED = (
    _field(PersistentRef, name)
    for name in ("storage_type", "key", "location", "numel", "dtype", "well_formed")
)


@dataclass(frozen=True)
class ScanResult:
    """What :func:`ckptcompat.checkpoint.scan.scan` found. Finding codes are stable.

    Attributes:
        sniff: the container classification (``kind``, ``size_bytes``).
        prefix: the zip's top folder (``"archive"``, or the file's stem when saved to a path).
        records: every zip record name, in directory order.
        pickle_records: names of the ``*.pkl`` records (torch.save writes exactly one).
        protocol: pickle protocol of the object pickle.
        opcodes: names of every opcode used, over all pickles scanned.
        unsupported_opcodes: those outside the protocol-2 set torch's weights-only
            unpickler implements (2.4-2.15).
        globals: every global named, first-appearance order, ``"module.name"``.
        applied: global -> {"REDUCE", "NEWOBJ", "BUILD", "SETITEM", "APPEND"}.
        storages: one entry per storage key.
        setitem_targets: origins of non-dict objects that received SETITEM(S).
        append_targets: origins of non-list objects that received APPEND(S).
        format_version: the ``.format_version`` record (only torch >= 2.7 writes it).
        storage_alignment: the ``.storage_alignment`` record (torch >= 2.7), in bytes.
        byteorder: the ``byteorder`` record (or legacy sys_info), e.g. ``"little"``.
        archive_version: the ``version`` record, e.g. ``"3"``.
        writer_hint: what wrote the file, as far as its records tell.
        findings: everything suspicious.
        facts: what the object pickle builds (for the doctor), when the scan's inert pass
            completed and could describe it exactly; else None.
    """

    sniff: Sniff
    prefix: str | None = None
    records: tuple[str, ...] = ()
    pickle_records: tuple[str, ...] = ()
    protocol: int | None = None
    opcodes: frozenset[str] = frozenset()
    unsupported_opcodes: frozenset[str] = frozenset()
    globals: tuple[str, ...] = ()
    applied: Mapping[str, frozenset[str]] = field(default_factory=dict)
    storages: tuple[StorageInfo, ...] = ()
    setitem_targets: tuple[str, ...] = ()
    append_targets: tuple[str, ...] = ()
    format_version: str | None = None
    storage_alignment: int | None = None
    byteorder: str | None = None
    archive_version: str | None = None
    writer_hint: str | None = None
    findings: tuple[Finding, ...] = ()
    facts: StreamFacts | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> FileKind:
        """The container kind (see :func:`ckptcompat.checkpoint.scan.sniff`)."""
        return self.sniff.kind

    @property
    def storage_bytes(self) -> int:
        """Total storage bytes the pickle claims (storages of unknown type count 0)."""
        return sum(filter(None, map(_NBYTES, self.storages)))

    @property
    def dtypes(self) -> frozenset[str]:
        """Storage dtypes, e.g. ``{"float32", "int64"}``."""
        return frozenset(filter(None, map(_DTYPE, self.storages)))

    @property
    def nondefault_globals(self) -> tuple[str, ...]:
        """Globals outside the weights-only defaults of every torch 2.4-2.15."""
        return tuple(g for g in self.globals if g not in WEIGHTS_ONLY_GLOBALS)

    @property
    def dangerous_globals(self) -> tuple[str, ...]:
        """Globals refused even when allowlisted (process, eval, import, getattr, loaders)."""
        return tuple(g for g in self.globals if is_dangerous(g))

    def codes(self) -> frozenset[str]:
        """The finding codes."""
        return frozenset(f.code for f in self.findings)


@dataclass
class _Acc:
    """Pickle scans and findings of one file."""

    scans: list[PickleScan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, ps: PickleScan) -> None:
        self.scans.append(ps)
        self.findings.extend(ps.findings)

    def note(self, code: str, message: str, names: Iterable[str] = ()) -> None:
        self.findings.append(Finding(code, message, tuple(names)))


_Claim = tuple[str | None, str | None, int, str | None]  # storage type, dtype, numel, location


_make_info = partial(tuple.__new__, StorageInfo)


def _claims(acc: _Acc) -> dict[str, _Claim]:
    """Storage key -> what its well-formed persistent ids claim; notes disagreeing claims."""
    out: dict[str, _Claim] = {}
    odd: dict[str, None] = {}
    for ps in acc.scans:
        for ref in ps.persistent_ids:
            if not ref.well_formed:
                continue
            claim = (ref.storage_type, ref.dtype, ref.numel, ref.location)
            previous = out.setdefault(ref.key, claim)  # type: ignore[arg-type]
            if previous is not claim and previous[::2] != claim[::2]:
                odd[ref.key] = None  # type: ignore[index]
    if odd:
        acc.note("inconsistent_storage", "a storage key is claimed with two types or sizes", odd)
    return out  # type: ignore[return-value]


def _storages(
    acc: _Acc, claims: Mapping[str, _Claim], record_bytes: Mapping[str, int]
) -> tuple[StorageInfo, ...]:
    """Claimed storage sizes next to the record sizes (bytes); notes every mismatch."""
    infos, unknown, missing, mismatch = [], {}, {}, {}
    for key, (stype, dtype, numel, location) in claims.items():
        spec = STORAGE_TYPES.get(stype)  # type: ignore[arg-type]
        nbytes = numel * spec[1] if spec else None
        actual = record_bytes.get(key)
        if spec is None:
            unknown[stype] = None
        elif actual is None:
            missing[key] = None
        elif actual != nbytes:
            mismatch[key] = None
        infos.append(
            StorageInfo(
                key, stype, dtype or (spec[0] if spec else None), numel, nbytes, location, actual
            )
        )
    if unknown:
        acc.note("unknown_storage_type", "storage classes of unknown element size", unknown)
    if missing:
        acc.note("missing_storage_record", "storages the pickle names are not in the file", missing)
    if mismatch:
        acc.note(
            "storage_size_mismatch", "storage records disagree with the pickle's sizes", mismatch
        )
    return tuple(infos)


def _storages_in_bulk(acc: _Acc, record_bytes: Mapping[str, int]) -> tuple[StorageInfo, ...] | None:
    """``_storages(acc, _claims(acc), record_bytes)`` for the usual file, in C-level maps
    over its thousands of ids: one well-formed id per storage key, every storage type
    known and every record of the claimed size (so there is nothing to note). None when
    any of that fails; the caller then takes the general path."""
    refs = list(chain.from_iterable(ps.persistent_ids for ps in acc.scans))
    if not refs or not all(map(_WELL_FORMED, refs)):
        return None
    keys = list(map(_KEY, refs))
    if len(set(keys)) != len(keys):
        return None
    stypes = list(map(_STORAGE_TYPE, refs))
    specs = list(map(STORAGE_TYPES.get, stypes))
    if None in specs:
        return None
    numels = list(map(_NUMEL, refs))
    nbytes = list(map(mul, numels, map(itemgetter(1), specs)))
    actual = list(map(record_bytes.get, keys))
    if actual != nbytes:
        return None
    dtypes = list(map(_REF_DTYPE, refs))
    if not any(dtypes):
        dtypes = list(map(itemgetter(0), specs))
    elif not all(dtypes):
        dtypes = [d or spec[0] for d, spec in zip(dtypes, specs, strict=True)]
    columns = (keys, stypes, dtypes, numels, nbytes, map(_LOCATION, refs), actual)
    return tuple(map(_make_info, zip(*columns, strict=False)))


def _result(
    acc: _Acc, sn: Sniff, main: PickleScan | None, storages: tuple[StorageInfo, ...], **more: object
) -> ScanResult:
    names = dict.fromkeys(g for ps in acc.scans for g in ps.globals)
    applied: dict[str, set[str]] = {}
    for ps in acc.scans:
        for name, hows in ps.applied.items():
            applied.setdefault(name, set()).update(hows)
    dangerous = [g for g in names if is_dangerous(g)]
    if dangerous:
        acc.note("dangerous_global", "globals that run code or reach the system", dangerous)
    setitem = tuple(dict.fromkeys(t for ps in acc.scans for t in ps.setitem_targets))
    append = tuple(dict.fromkeys(t for ps in acc.scans for t in ps.append_targets))
    if set(setitem) - SETITEM_TARGETS:
        acc.note(
            "setitem_non_dict",
            "items set on objects other than dict/OrderedDict/Counter (refused by torch >= 2.10)",
            [t for t in setitem if t not in SETITEM_TARGETS],
        )
    if append:
        acc.note("append_non_list", "items appended to objects other than lists", append)
    return ScanResult(
        sn,
        protocol=main.protocol if main else None,
        opcodes=frozenset().union(*(ps.opcodes for ps in acc.scans)),
        unsupported_opcodes=frozenset(
            n for f in acc.findings if f.code == "unsupported_opcode" for n in f.names
        ),
        globals=tuple(names),
        applied={k: frozenset(v) for k, v in applied.items()},
        storages=storages,
        setitem_targets=setitem,
        append_targets=append,
        findings=tuple(acc.findings),
        facts=main.facts if main else None,
        **more,  # type: ignore[arg-type]
    )


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


def scan_zip(reader: ArchiveReader, entries: list[ZipEntry], sn: Sniff) -> ScanResult:
    """Scan a torch.save zip: its pickle record(s) and directory; never its storage bytes."""
    acc = _Acc()
    names = list(map(_NAME, entries))
    by_name: dict[str, ZipEntry] = dict(zip(names, entries, strict=True))
    if len(by_name) != len(entries):
        by_name = {}
        for entry in entries:  # the first record of a name wins, as in torch
            by_name.setdefault(entry.name, entry)
        twice = [n for n, count in Counter(names).items() if count > 1]
        acc.note("duplicate_record", "record names appear twice", twice)
    # torch's PyTorchStreamReader takes the archive name from the first record.
    first = names[0].split("/", 1)[0] if names and "/" in names[0] else ""
    pickles = list(compress(entries, map(methodcaller("endswith", ".pkl"), names)))
    main = by_name.get(f"{first}/data.pkl") or next(
        (e for e in pickles if e.name.rsplit("/", 1)[-1] == "data.pkl"), None
    )
    if main is None:
        acc.note("missing_pickle", "no data.pkl record: not a torch.save archive")
        return _result(acc, sn, None, (), records=tuple(names))
    root = main.name[: -len("data.pkl")]
    if not first or root.rstrip("/") != first:
        # torch refuses records outside a folder and reads <first record's folder>/data.pkl.
        acc.note("prefix_mismatch", f"torch would look for {first or '?'}/data.pkl", [main.name])
    if len(pickles) > 1:
        acc.note(
            "multiple_pickles",
            "more than one pickle record; torch.save writes one",
            [e.name for e in pickles],
        )
    main_scan = None
    for entry in [main, *(e for e in pickles if e is not main)]:
        if entry.file_size > _MAX_PICKLE_BYTES:
            acc.note(
                "pickle_too_large", f"{entry.name} is over {_MAX_PICKLE_BYTES} bytes", [entry.name]
            )
            continue
        try:
            data = reader.read_entry(entry)
        except BadZip as exc:
            acc.note("unreadable_record", str(exc), [entry.name])
            continue
        ps = scan_pickle(data)
        acc.add(ps)
        if entry is main:
            main_scan = ps
            if ps.end is not None and ps.end < len(data):
                acc.note("trailing_bytes", "data.pkl continues after its STOP opcode", [entry.name])
    # C-level maps and filters: a torch file has one data/<key> record per storage.
    data = root + "data/"
    is_data = list(map(methodcaller("startswith", data), by_name))
    storage_entries = list(compress(by_name.values(), is_data))
    record_bytes = dict(
        zip(
            map(itemgetter(slice(len(data), None)), map(_NAME, storage_entries)),
            map(_FILE_SIZE, storage_entries),
            strict=True,
        )
    )
    unexpected = [
        name
        for name in compress(by_name, map(not_, is_data))
        if (name[len(root) :] if name.startswith(root) else name) not in _KNOWN_RECORDS
        and not name.endswith(".pkl")
    ]
    if unexpected:
        acc.note("unexpected_record", "records torch.save does not write", unexpected)
    storages = _storages_in_bulk(acc, record_bytes)
    if storages is None:
        storages = _storages(acc, _claims(acc), record_bytes)
    unreferenced = sorted(set(record_bytes).difference(map(_INFO_KEY, storages)))
    if unreferenced:
        acc.note("unreferenced_record", "storage records no pickle refers to", unreferenced)
    fmt = _small_text(reader, by_name.get(root + ".format_version"))
    alignment = _small_text(reader, by_name.get(root + ".storage_alignment"))
    return _result(
        acc,
        sn,
        main_scan,
        storages,
        prefix=root.rstrip("/"),
        records=tuple(names),
        pickle_records=tuple(e.name for e in pickles),
        format_version=fmt,
        storage_alignment=int(alignment) if alignment and alignment.isdigit() else None,
        byteorder=_small_text(reader, by_name.get(root + "byteorder")),
        archive_version=_small_text(
            reader, by_name.get(root + "version") or by_name.get(root + ".data/version")
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
    acc = _Acc()
    buf = reader.read_at(0, min(_FIRST_LEGACY_READ, reader.size))
    scans: list[PickleScan] = []
    pos = 0
    for _ in range(5):
        ps = scan_pickle(buf, pos, keep_root=True)
        while ps.needed_bytes and len(buf) < reader.size:
            buf = reader.read_at(0, min(max(2 * len(buf), len(buf) + ps.needed_bytes), reader.size))
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
    for key in keys:
        spec = STORAGE_TYPES.get(claims[key][0]) if key in claims else None  # type: ignore[arg-type]
        if spec is None:
            break  # unknown type or unclaimed key: _storages() notes it
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
    return _result(
        acc,
        sn,
        scans[3] if len(scans) > 3 else None,
        _storages(acc, claims, record_bytes),
        byteorder=order if sys_info else None,
        writer_hint="torch.save(_use_new_zipfile_serialization=False)",
    )
