"""Persistent ids as a pickle states them, parsed without loading anything.

:mod:`.inert_unpickler` records each id the pickle passes to ``persistent_load`` as is
(globals in it are placeholders from :mod:`.inert_placeholders`); :func:`parse_pids` turns
them into :class:`PersistentIds`: columns for the thousands of ids torch.save writes, one
:class:`PersistentRef` per id otherwise. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from itertools import chain, repeat
from operator import attrgetter
from typing import Any, NamedTuple, overload

from ckptcompat.scan.inert_placeholders import GLOBAL_TYPES

__all__ = ["PersistentIds", "PersistentRef", "StorageColumns", "parse_pids"]


class PersistentRef(NamedTuple):
    """One persistent id as the pickle states it; nothing is loaded.

    torch writes ``("storage", storage_type, key, location, numel)`` in zip files and adds
    view metadata as a sixth item in the legacy format, which also has
    ``("module", class, source_file, source)`` for whole pickled modules.

    Attributes:
        typename: ``"storage"``, ``"module"``, or ``"?"`` for ids of another shape.
        storage_type: the global naming the storage class, e.g. ``"torch.FloatStorage"``.
        key: the storage key (zip record ``data/<key>``; legacy: a number as text).
        location: e.g. ``"cpu"``, ``"cuda:0"``.
        numel: elements of ``storage_type`` claimed (bytes for ``UntypedStorage``).
        dtype: the dtype ``_rebuild_tensor_v3`` was given with this storage, if any (torch
            2.x stores dtypes without a legacy storage class, e.g. float8, untyped).
        well_formed: the id has the shape torch's ``persistent_load`` expects.
    """

    typename: str
    storage_type: str | None = None
    key: str | None = None
    location: str | None = None
    numel: int | None = None
    dtype: str | None = None
    well_formed: bool = False


def _text(value: object) -> str | None:
    if type(value) is str:
        return value
    if type(value) is bytes:
        return value.decode("ascii", "replace")
    return None


def _parse_pid(pid: object, dtype: str | None) -> PersistentRef:
    if (
        type(pid) is tuple
        and len(pid) == 5
        and pid[0] == "storage"
        and type(pid[1]) in GLOBAL_TYPES
        and type(pid[2]) is str
        and type(pid[3]) is str
        and type(pid[4]) is int
        and pid[4] >= 0
    ):  # what torch.save writes in zip files; checked first, it is most of the ids
        return PersistentRef("storage", pid[1]._name, pid[2], pid[3], pid[4], dtype, True)
    if type(pid) is not tuple or not pid:
        return PersistentRef("?")
    typename = _text(pid[0]) or "?"
    cls = pid[1] if len(pid) > 1 else None
    cls_name = cls._name if type(cls) in GLOBAL_TYPES else None
    if typename != "storage" or len(pid) not in (5, 6):
        return PersistentRef(typename, cls_name)
    key, location, numel = _text(pid[2]), _text(pid[3]), pid[4]
    numel_ok = type(numel) is int and numel >= 0
    ok = cls_name is not None and key is not None and location is not None and numel_ok
    return PersistentRef("storage", cls_name, key, location, numel if numel_ok else None, dtype, ok)


class StorageColumns(NamedTuple):
    """Persistent ids that are all what torch.save writes in zips, as parallel lists.

    Every id is ``("storage", <global>, key: str, location: str, numel: int >= 0)``, i.e.
    a well-formed :class:`PersistentRef` of typename ``"storage"``; ``dtypes`` holds the
    ``_rebuild_tensor_v3`` dtype of each, or None.
    """

    storage_types: Sequence[str]
    keys: Sequence[str]
    locations: Sequence[str]
    numels: Sequence[int]
    dtypes: Sequence[str | None]


class PersistentIds(Sequence[PersistentRef]):
    """Every persistent id of one pickle, in order.

    When the ids are all what torch.save writes in zips (checked in bulk: C-level ``map``s
    over a 4096-tensor file's 4096 ids), they are kept as :attr:`columns` and the
    :class:`PersistentRef` records are only built if someone reads them; else they are
    parsed one by one at once and ``columns`` is None.
    """

    __slots__ = ("_refs", "columns")

    def __init__(self, raw: list[object], dtypes: dict[int, str]) -> None:
        self.columns = _columns(raw, dtypes)
        self._refs: tuple[PersistentRef, ...] | None = (
            None
            if self.columns is not None
            else tuple(_parse_pid(pid, dtypes.get(i)) for i, pid in enumerate(raw))
        )

    @property
    def well_formed(self) -> bool:
        """Every id has the shape torch's ``persistent_load`` expects."""
        return self.columns is not None or all(map(_WELL_FORMED, self._parsed()))

    def _parsed(self) -> tuple[PersistentRef, ...]:
        if self._refs is None:
            c: Any = self.columns
            ids = (repeat("storage"), c.storage_types, c.keys, c.locations, c.numels, c.dtypes)
            self._refs = tuple(map(_make_ref, zip(*ids, repeat(True), strict=False)))
        return self._refs

    def __len__(self) -> int:
        return len(self.columns.keys) if self.columns is not None else len(self._parsed())

    @overload
    def __getitem__(self, index: int) -> PersistentRef: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[PersistentRef, ...]: ...
    def __getitem__(self, index: int | slice) -> PersistentRef | tuple[PersistentRef, ...]:
        return self._parsed()[index]

    def __iter__(self) -> Iterator[PersistentRef]:
        return iter(self._parsed())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PersistentIds, tuple, list)):
            return self._parsed() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PersistentIds({self._parsed()!r})"


_NAME_OF = attrgetter("_name")
_WELL_FORMED = attrgetter("well_formed")
_make_ref = partial(tuple.__new__, PersistentRef)


def _columns(raw: list[object], dtypes: dict[int, str]) -> StorageColumns | None:
    """The ids as :class:`StorageColumns` when :func:`_parse_pid`'s first branch holds for
    every one (the same test, applied to all ids at once); else None."""
    count = len(raw)
    if count and set(map(type, raw)) == {tuple} and set(map(len, raw)) == {5}:  # type: ignore[arg-type]
        kind, cls, key, location, numel = zip(*raw, strict=True)  # type: ignore[call-overload]
        if (
            kind.count("storage") == count
            and set(map(type, cls)) <= GLOBAL_TYPES
            and set(map(type, chain(key, location))) == {str}
            and set(map(type, numel)) == {int}
            and min(numel) >= 0
        ):
            dtype = list(map(dtypes.get, range(count))) if dtypes else [None] * count
            return StorageColumns(list(map(_NAME_OF, cls)), key, location, numel, dtype)
    return None


def parse_pids(raw: list[object], dtypes: dict[int, str]) -> PersistentIds:
    """The :class:`PersistentIds` of ``raw`` (ids as recorded), with the
    ``_rebuild_tensor_v3`` dtypes by id index."""
    return PersistentIds(raw, dtypes)
