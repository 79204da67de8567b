"""Rebuild a pickle's object graph with inert placeholders; never runs the pickle's code.

The C ``pickle.Unpickler`` with ``find_class`` and ``persistent_load`` overridden: every
global and persistent id becomes a placeholder defined here, and what the pickle does to
placeholders is recorded. Standard library only. Callers must vet the stream first
(:mod:`ckptcompat.checkpoint.pickle_scan` refuses EXT opcodes and oversized memo indices).

Why the file's code cannot run: a pickle reaches callables only through ``find_class``
(GLOBAL, STACK_GLOBAL, INST; OBJ and REDUCE then call what is on the stack), through
``persistent_load``, and through the ``copyreg`` extension registry (EXT opcodes, refused
before this runs). Both overrides return placeholders, and no opcode reads an attribute, so
the stack only ever holds placeholders and plain data (str, bytes, int, float, tuple, list,
dict, set, frozenset, bytearray). The unpickler's implicit calls land on placeholder methods
that only record and return placeholders:

* REDUCE, and INST/OBJ with arguments: ``callable(*args)`` -> :meth:`_GlobalMeta.__call__`
  or :meth:`_Result.__call__` (never ``type.__call__``, so no ``__init__`` runs);
* NEWOBJ/NEWOBJ_EX (``cls.tp_new``) and INST/OBJ without arguments (``cls.__new__(cls)``)
  -> :meth:`_GlobalBase.__new__`; a placeholder is a class because NEWOBJ requires a type;
* BUILD -> ``__setstate__``; SETITEM(S) -> ``__setitem__``; APPEND(S) -> ``append`` /
  ``extend``; ADDITEMS -> ``add``: all defined, inert, on both placeholder kinds.

Placeholders define no ``__getattr__`` and no ``__dict__`` (``__slots__``), refuse to be
pickled, and their type names are fixed (the file's text is stored as data, never used as
an identifier). ``find_class`` never calls the base implementation, so nothing is imported.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ckptcompat.checkpoint.torch_names import qualify

__all__ = ["PERSISTENT", "RESULT", "InertRecord", "PersistentRef", "inert_load"]

#: Origin of objects made by ``persistent_load`` (torch: storages).
PERSISTENT = "<persistent id>"
#: Origin of objects returned by calling a call's result.
RESULT = "<result of a call>"
_REBUILD_V3 = "torch._utils._rebuild_tensor_v3"


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


@dataclass
class InertRecord:
    """What the pickle did to placeholders.

    Attributes:
        globals: ``module.name`` of every class/function asked of ``find_class``, in order.
        applied: (origin, how) pairs; how is REDUCE, NEWOBJ, BUILD, SETITEM or APPEND.
        persistent_ids: parsed persistent ids, in order.
        setitem_targets: origins of non-dict objects given items (SETITEM(S), ADDITEMS).
        append_targets: origins of non-list objects given items (APPEND(S)).
        calls_on_results: origins whose call results were called again.
    """

    globals: dict[str, None] = field(default_factory=dict)
    applied: set[tuple[str, str]] = field(default_factory=set)
    persistent_ids: list[PersistentRef] = field(default_factory=list)
    setitem_targets: dict[str, None] = field(default_factory=dict)
    append_targets: dict[str, None] = field(default_factory=dict)
    calls_on_results: dict[str, None] = field(default_factory=dict)
    raw_pids: list[object] = field(default_factory=list, repr=False)
    v3_dtypes: dict[int, str] = field(default_factory=dict, repr=False)


class _Result:
    """Inert stand-in for what a call, NEWOBJ or persistent id produced."""

    __slots__ = ("_origin", "_rec", "_ref")

    def __init__(self, rec: InertRecord, origin: str, ref: int = -1) -> None:
        self._rec = rec
        self._origin = origin  # the global (or PERSISTENT/RESULT) this object came from
        self._ref = ref  # index into rec.raw_pids for persistent ids, else -1

    def __call__(self, *args: object) -> _Result:
        # Calling a call's result: builtins.getattr(...)(...) chains, nested loaders.
        self._rec.calls_on_results[self._origin] = None
        return _Result(self._rec, RESULT)

    def __setstate__(self, state: object) -> None:
        self._rec.applied.add((self._origin, "BUILD"))

    def __setitem__(self, key: object, value: object) -> None:
        self._rec.setitem_targets[self._origin] = None
        self._rec.applied.add((self._origin, "SETITEM"))

    def add(self, item: object) -> None:
        self.__setitem__(item, None)

    def append(self, item: object) -> None:
        self._rec.append_targets[self._origin] = None
        self._rec.applied.add((self._origin, "APPEND"))

    def extend(self, items: object) -> None:
        self.append(items)

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("scan placeholders cannot be pickled")

    def __repr__(self) -> str:
        return f"<scan placeholder from {self._origin}>"


class _GlobalMeta(type):
    """Metaclass of global placeholders (classes, because NEWOBJ needs a type)."""

    _rec: InertRecord
    _name: str
    _result: _Result  # shared by all calls: identity of results does not matter here
    _reduced: tuple[str, str]

    def __call__(cls, *args: object) -> _Result:
        # No **kwargs: the unpickler never passes keywords to a call (saves a dict per call).
        cls._rec.applied.add(cls._reduced)
        if cls._name == _REBUILD_V3 and len(args) >= 7:
            _note_v3_dtype(cls._rec, args[0], args[6])
        return cls._result

    def __setstate__(cls, state: object) -> None:
        cls._rec.applied.add((cls._name, "BUILD"))

    def __setitem__(cls, key: object, value: object) -> None:
        cls._rec.setitem_targets[cls._name] = None
        cls._rec.applied.add((cls._name, "SETITEM"))

    def add(cls, item: object) -> None:
        cls.__setitem__(item, None)

    def append(cls, item: object) -> None:
        cls._rec.append_targets[cls._name] = None
        cls._rec.applied.add((cls._name, "APPEND"))

    def extend(cls, items: object) -> None:
        cls.append(items)

    def __reduce_ex__(cls, protocol: object) -> Any:
        raise TypeError("scan placeholders cannot be pickled")

    def __repr__(cls) -> str:
        return f"<scan placeholder for {cls._name}>"


class _GlobalBase:
    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> Any:
        meta: Any = cls
        meta._rec.applied.add((meta._name, "NEWOBJ"))
        return meta._result


def _note_v3_dtype(rec: InertRecord, storage: object, dtype: object) -> None:
    """Remember ``_rebuild_tensor_v3``'s dtype argument for its storage's persistent id."""
    if type(storage) is _Result and storage._ref >= 0 and type(dtype) is _GlobalMeta:
        rec.v3_dtypes[storage._ref] = dtype._name.removeprefix("torch.")


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
        and type(pid[1]) is _GlobalMeta
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
    cls_name = cls._name if type(cls) is _GlobalMeta else None
    if typename != "storage" or len(pid) not in (5, 6):
        return PersistentRef(typename, cls_name)
    key, location, numel = _text(pid[2]), _text(pid[3]), pid[4]
    numel_ok = type(numel) is int and numel >= 0
    ok = cls_name is not None and key is not None and location is not None and numel_ok
    return PersistentRef("storage", cls_name, key, location, numel if numel_ok else None, dtype, ok)


class _InertUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, rec: InertRecord) -> None:
        # fix_imports/encoding only matter to the base find_class, which is never called;
        # latin1 decodes any protocol-0/py2 string without failing.
        super().__init__(io.BytesIO(data), fix_imports=False, encoding="latin1")
        self._rec = rec
        self._classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> type:
        """Return a placeholder class for ``module.name``; never imports (no super() call)."""
        key = (module, name)
        cls = self._classes.get(key)
        if cls is None:
            qualified = qualify(module, name)
            # A fixed type name: the file's text is only ever stored as data.
            cls = _GlobalMeta(
                "ScanGlobal",
                (_GlobalBase,),
                {
                    "__slots__": (),
                    "__module__": __name__,
                    "_rec": self._rec,
                    "_name": qualified,
                    "_result": _Result(self._rec, qualified),
                    "_reduced": (qualified, "REDUCE"),
                },
            )
            self._classes[key] = cls
            self._rec.globals[qualified] = None
        return cls

    def persistent_load(self, pid: Any) -> _Result:
        raw = self._rec.raw_pids
        raw.append(pid)
        return _Result(self._rec, PERSISTENT, len(raw) - 1)


def inert_load(data: bytes) -> tuple[InertRecord, object, Exception | None]:
    """Unpickle ``data`` (one vetted pickle) with inert placeholders.

    Returns (record, root object or None, the exception that stopped it or None). Any
    failure of a crafted stream is returned, not raised; the record holds what was seen
    up to that point.
    """
    rec = InertRecord()
    root: object = None
    error: Exception | None = None
    try:
        root = _InertUnpickler(data, rec).load()
    except Exception as exc:  # a crafted stream may fail anywhere; that is a finding
        error = exc
    dtypes = rec.v3_dtypes
    rec.persistent_ids = [_parse_pid(pid, dtypes.get(i)) for i, pid in enumerate(rec.raw_pids)]
    rec.raw_pids = []
    return rec, root, error
