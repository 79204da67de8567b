"""What a static scan of one checkpoint found: :class:`ScanResult` and its parts.

:class:`ScanAcc` gathers the pickle scans and findings of one file while
:mod:`.archive_scan` reads it; :func:`assemble` turns them into the :class:`ScanResult`.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from ckptcompat.scan.danger import is_dangerous
from ckptcompat.scan.pickle_scan import Finding, PickleScan, StreamFacts
from ckptcompat.scan.torch_names import SETITEM_TARGETS, WEIGHTS_ONLY_GLOBALS

if TYPE_CHECKING:
    from ckptcompat.scan.sniff import FileKind, Sniff

__all__ = ["ScanAcc", "ScanResult", "StorageInfo", "StorageTable", "assemble", "field_getter"]


def field_getter(cls: type[tuple[object, ...]], name: str) -> itemgetter[object]:
    """A C-level getter of a NamedTuple field (about twice as fast as attrgetter in maps)."""
    return itemgetter(cls._fields.index(name))  # type: ignore[attr-defined]


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


_NBYTES, _DTYPE = field_getter(StorageInfo, "nbytes"), field_getter(StorageInfo, "dtype")
_make_info = partial(tuple.__new__, StorageInfo)


class StorageTable(Sequence[StorageInfo]):
    """Storages as parallel columns (one list per :class:`StorageInfo` field, in field
    order); the :class:`StorageInfo` rows are built only if someone reads them, so a
    4096-tensor file's scan does not make 4096 tuples for a count, a sum and a set."""

    __slots__ = ("_columns", "_rows")

    def __init__(self, *columns: list[Any]) -> None:
        self._columns = columns
        self._rows: tuple[StorageInfo, ...] | None = None

    @property
    def total_bytes(self) -> int:
        """Sum of ``nbytes`` (unknown sizes count 0)."""
        return sum(filter(None, self._columns[4]))

    @property
    def dtype_set(self) -> frozenset[str]:
        """The distinct known dtypes."""
        return frozenset(filter(None, self._columns[2]))

    def column(self, name: str) -> list[Any]:
        """One field of every storage, in order (e.g. ``"location"``), without building
        the rows. Raises ValueError for a name that is no :class:`StorageInfo` field."""
        return self._columns[StorageInfo._fields.index(name)]  # type: ignore[no-any-return]

    def _built(self) -> tuple[StorageInfo, ...]:
        if self._rows is None:
            self._rows = tuple(map(_make_info, zip(*self._columns, strict=True)))
        return self._rows

    def __len__(self) -> int:
        return len(self._columns[0])

    @overload
    def __getitem__(self, index: int) -> StorageInfo: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[StorageInfo, ...]: ...
    def __getitem__(self, index: int | slice) -> StorageInfo | tuple[StorageInfo, ...]:
        return self._built()[index]

    def __iter__(self) -> Iterator[StorageInfo]:
        return iter(self._built())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StorageTable, tuple, list)):
            return self._built() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StorageTable({self._built()!r})"


@dataclass(frozen=True)
class ScanResult:
    """What :func:`ckptcompat.scan.scan.scan` found. Finding codes are stable.

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
        storages: one entry per storage key (a :class:`StorageTable` for torch's usual
            zip, whose rows are built on first read).
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
    storages: Sequence[StorageInfo] = ()
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
        """The container kind (see :func:`ckptcompat.scan.sniff.sniff`)."""
        return self.sniff.kind

    @property
    def storage_bytes(self) -> int:
        """Total storage bytes the pickle claims (storages of unknown type count 0)."""
        if isinstance(self.storages, StorageTable):
            return self.storages.total_bytes
        return sum(filter(None, map(_NBYTES, self.storages)))

    @property
    def dtypes(self) -> frozenset[str]:
        """Storage dtypes, e.g. ``{"float32", "int64"}``."""
        if isinstance(self.storages, StorageTable):
            return self.storages.dtype_set
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
class ScanAcc:
    """Pickle scans and findings of one file."""

    scans: list[PickleScan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, ps: PickleScan) -> None:
        self.scans.append(ps)
        self.findings.extend(ps.findings)

    def note(self, code: str, message: str, names: Iterable[str] = ()) -> None:
        self.findings.append(Finding(code, message, tuple(names)))


def assemble(
    acc: ScanAcc,
    sn: Sniff,
    main: PickleScan | None,
    storages: Sequence[StorageInfo],
    **more: object,
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
