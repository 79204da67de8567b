"""Rebuild a pickle's object graph with inert placeholders; never runs the pickle's code.

The C ``pickle.Unpickler`` with ``find_class`` and ``persistent_load`` overridden: every
global and persistent id becomes a placeholder defined here, and what the pickle does to
placeholders is recorded. Standard library only. Callers must vet the stream first
(:mod:`ckptcompat.checkpoint.pickle_scan` refuses EXT opcodes and oversized memo indices).

Why the file's code cannot run: a pickle reaches callables only through ``find_class``
(GLOBAL, STACK_GLOBAL, INST; OBJ and REDUCE then call what is on the stack), through
``persistent_load``, and through the ``copyreg`` extension registry (EXT opcodes, refused
before this runs). Both overrides return placeholders (or, in the quick pass of
:func:`inert_load`, ``persistent_load`` is ``list.append`` and ids stand as None), and no
opcode reads an attribute, so the stack only ever holds placeholders and plain data (str,
bytes, int, float, tuple, list, dict, set, frozenset, bytearray, None). The unpickler's
implicit calls land on placeholder methods that only record and return placeholders:

* REDUCE, and INST/OBJ with arguments: ``callable(*args)`` -> :meth:`_GlobalMeta.__call__`
  or :meth:`_Result.__call__` (never ``type.__call__``, so no ``__init__`` runs);
* NEWOBJ/NEWOBJ_EX (``cls.tp_new``) and INST/OBJ without arguments (``cls.__new__(cls)``)
  -> :meth:`_GlobalBase.__new__`; a placeholder is a class because NEWOBJ requires a type;
* BUILD -> ``__setstate__``; SETITEM(S) -> ``__setitem__``; APPEND(S) -> ``append`` /
  ``extend``; ADDITEMS -> ``add``: all defined, inert, on both placeholder kinds (results
  of one global are shared, except ``collections.OrderedDict``'s, one per call, and
  persistent ids', one per id; those two are made by C, without ``__init__``).

Placeholders define no ``__getattr__`` and no ``__dict__`` (``__slots__``), refuse to be
pickled, and their type names are fixed (the file's text is stored as data, never used as
an identifier). ``find_class`` never calls the base implementation, so nothing is imported.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter, eq, itemgetter
from typing import Any, NamedTuple

from ckptcompat.checkpoint.torch_names import TENSOR_REBUILDS, qualify

__all__ = [
    "PERSISTENT",
    "RESULT",
    "InertRecord",
    "PersistentRef",
    "RootShape",
    "describe_root",
    "inert_load",
]

#: Origin of objects made by ``persistent_load`` (torch: storages).
PERSISTENT = "<persistent id>"
#: Origin of objects returned by calling a call's result.
RESULT = "<result of a call>"
_REBUILD_V3 = "torch._utils._rebuild_tensor_v3"
_PREFETCH_BYTES = 1 << 16


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
        named: the global of every ``find_class`` call, in order (one per GLOBAL,
            STACK_GLOBAL and INST opcode).
        numpy_dtypes: codes given to ``numpy.dtype`` (``"f4"``), in order.
    """

    globals: dict[str, None] = field(default_factory=dict)
    applied: set[tuple[str, str]] = field(default_factory=set)
    persistent_ids: list[PersistentRef] = field(default_factory=list)
    setitem_targets: dict[str, None] = field(default_factory=dict)
    append_targets: dict[str, None] = field(default_factory=dict)
    calls_on_results: dict[str, None] = field(default_factory=dict)
    named: list[str] = field(default_factory=list)
    numpy_dtypes: dict[str, None] = field(default_factory=dict)
    raw_pids: list[object] = field(default_factory=list, repr=False)
    v3_dtypes: dict[int, str] = field(default_factory=dict, repr=False)


class _Result:
    """Inert stand-in for what a call, NEWOBJ or persistent id produced."""

    __slots__ = ("_items", "_kind", "_origin", "_rec", "_ref")

    def __init__(
        self, rec: InertRecord, origin: str, kind: str, ref: int = -1, items: bool = False
    ) -> None:
        self._rec = rec
        self._origin = origin  # the global (or PERSISTENT/RESULT) this object came from
        self._kind = kind  # "call", "new" or "persistent"
        self._ref = ref  # index into rec.raw_pids for persistent ids, else -1
        # Values given by SETITEM(S), kept only for objects made one per call (mappings).
        self._items: list[object] | None = [] if items else None

    def __call__(self, *args: object) -> _Result:
        # Calling a call's result: builtins.getattr(...)(...) chains, nested loaders.
        self._rec.calls_on_results[self._origin] = None
        return _Result(self._rec, RESULT, "call")

    def __setstate__(self, state: object) -> None:
        self._rec.applied.add((self._origin, "BUILD"))

    def __setitem__(self, key: object, value: object) -> None:
        self._rec.setitem_targets[self._origin] = None
        self._rec.applied.add((self._origin, "SETITEM"))
        if self._items is not None:
            self._items.append(value)

    def add(self, item: object) -> None:
        self._rec.setitem_targets[self._origin] = None
        self._rec.applied.add((self._origin, "SETITEM"))

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
    # Shared by all calls (and all NEWOBJs) of this global: the identity of results does
    # not matter, except for the mappings in _ONE_PER_CALL (the doctor reads their items).
    _result: _Result
    _new_result: _Result
    _watched: bool  # _REBUILD_V3, numpy.dtype or _ONE_PER_CALL: see _made
    _noted: bool  # called before and not watched: nothing more to note (set on first call)
    _reduced: tuple[str, str]

    def __call__(cls, *args: object) -> _Result:
        # No **kwargs: the unpickler never passes keywords to a call (saves a dict per call).
        if cls._noted:  # most calls of a 4096-tensor pickle: nothing to look up
            return cls._result
        cls._rec.applied.add(cls._reduced)
        if cls._watched:
            return _made(cls, args, "call")
        cls._noted = True
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


class _MappingMeta(_GlobalMeta):
    """Metaclass of the placeholders of ``_ONE_PER_CALL``: one result per call.

    A torch state_dict calls ``OrderedDict()`` once per tensor (its backward hooks), so
    this call is as short as it can be.
    """

    def __call__(cls, *args: object) -> _Result:
        if not cls._noted:
            cls._rec.applied.add(cls._reduced)
            cls._noted = True
        made = _MappingResult()
        made._rec, made._origin = cls._rec, cls._name
        return made


_METAS = frozenset({_GlobalMeta, _MappingMeta})


class _GlobalBase:
    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> Any:
        meta: Any = cls
        meta._rec.applied.add((meta._name, "NEWOBJ"))
        if meta._watched:
            return _made(meta, args, "new")
        return meta._new_result


# Mappings whose items the doctor reads (a state_dict is an OrderedDict): one result each.
_ONE_PER_CALL = frozenset({"collections.OrderedDict"})
_NUMPY_DTYPE = "numpy.dtype"
_WATCHED = frozenset({_REBUILD_V3, _NUMPY_DTYPE, *_ONE_PER_CALL})


def _made(cls: _GlobalMeta, args: tuple[object, ...], kind: str) -> _Result:
    """The result of calling (or NEWOBJ of) a watched global; notes what its args say."""
    rec, name = cls._rec, cls._name
    if name == _REBUILD_V3 and len(args) >= 7:
        # Remember _rebuild_tensor_v3's dtype argument for its storage's persistent id.
        storage, dtype = args[0], args[6]
        if type(storage) is _PersistentResult and type(dtype) in _METAS:
            rec.v3_dtypes[storage._ref] = dtype._name.removeprefix("torch.")
    elif name == _NUMPY_DTYPE and args and type(args[0]) is str:
        # numpy.dtype("f4", False, True): the code decides the class torch's BUILD meets.
        rec.numpy_dtypes[args[0]] = None
    elif name in _ONE_PER_CALL:
        return _Result(rec, name, kind, items=True)
    return cls._result if kind == "call" else cls._new_result


class _MappingResult(_Result):
    """One call's result of a global in ``_ONE_PER_CALL``; made by C (no ``__init__``)."""

    __slots__ = ()
    __init__ = object.__init__  # type: ignore[assignment]
    _kind = "call"  # type: ignore[assignment]
    _ref = -1  # type: ignore[assignment]

    def __setitem__(self, key: object, value: object) -> None:
        self._rec.setitem_targets[self._origin] = None
        self._rec.applied.add((self._origin, "SETITEM"))
        try:
            self._items.append(value)  # type: ignore[union-attr]
        except AttributeError:  # the first item: the slot starts unset
            self._items = [value]


class _PersistentResult(_Result):
    """What ``persistent_load`` returns; made by C (no ``__init__``)."""

    __slots__ = ()
    __init__ = object.__init__  # type: ignore[assignment]
    _origin = PERSISTENT  # type: ignore[assignment]
    _kind = "persistent"  # type: ignore[assignment]
    _items = None  # type: ignore[assignment]


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
        and type(pid[1]) in _METAS
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
    cls_name = cls._name if type(cls) in _METAS else None
    if typename != "storage" or len(pid) not in (5, 6):
        return PersistentRef(typename, cls_name)
    key, location, numel = _text(pid[2]), _text(pid[3]), pid[4]
    numel_ok = type(numel) is int and numel >= 0
    ok = cls_name is not None and key is not None and location is not None and numel_ok
    return PersistentRef("storage", cls_name, key, location, numel if numel_ok else None, dtype, ok)


class _InertUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, rec: InertRecord, quick: bool) -> None:
        # fix_imports/encoding only matter to the base find_class, which is never called;
        # latin1 decodes any protocol-0/py2 string without failing. A BufferedReader, not a
        # bare BytesIO: the C unpickler prefetches through peek() instead of calling read()
        # twice per opcode (half the time of the pass on a 4096-tensor state_dict).
        stream = io.BufferedReader(io.BytesIO(data), buffer_size=_PREFETCH_BYTES)
        super().__init__(stream, fix_imports=False, encoding="latin1")
        self._rec = rec
        self._classes: dict[tuple[str, str], type] = {}
        if quick:
            # The C setter of the base class: persistent ids are recorded by list.append
            # (no Python call per id) and stand in the graph as None (see inert_load).
            self.persistent_load = rec.raw_pids.append

    def find_class(self, module: str, name: str) -> type:
        """Return a placeholder class for ``module.name``; never imports (no super() call)."""
        key = (module, name)
        cls = self._classes.get(key)
        if cls is None:
            qualified = qualify(module, name)
            # A fixed type name: the file's text is only ever stored as data.
            meta = _MappingMeta if qualified in _ONE_PER_CALL else _GlobalMeta
            cls = meta(
                "ScanGlobal",
                (_GlobalBase,),
                {
                    "__slots__": (),
                    "__module__": __name__,
                    "_rec": self._rec,
                    "_name": qualified,
                    "_result": _Result(self._rec, qualified, "call"),
                    "_new_result": _Result(self._rec, qualified, "new"),
                    "_watched": qualified in _WATCHED,
                    "_noted": False,
                    "_reduced": (qualified, "REDUCE"),
                },
            )
            self._classes[key] = cls
            self._rec.globals[qualified] = None
        self._rec.named.append(cls._name)
        return cls


class _FullUnpickler(_InertUnpickler):
    def persistent_load(self, pid: Any) -> _Result:
        raw = self._rec.raw_pids
        raw.append(pid)
        made = _PersistentResult()
        made._rec, made._ref = self._rec, len(raw) - 1
        return made


class RootShape(NamedTuple):
    """What the top-level object of an inert load is.

    Attributes:
        kind: ``"dict"``, ``"list"``, ``"tuple"``, ``"scalar"``, ``"new"`` (an instance
            made by NEWOBJ/OBJ/INST), ``"call"`` (the result of REDUCE), ``"global"`` (a
            class, function or dtype itself) or ``"unknown"``.
        origin: the global the root came from (class or function), if any.
        format: ``root["format"]`` when the root is a plain dict with a str ``format``.
        tensor_mapping: the root is a non-empty dict/OrderedDict whose values are all tensors.
    """

    kind: str
    origin: str | None
    format: str | None
    tensor_mapping: bool


_PLAIN_KEYS = frozenset({str, bytes, int, float, bool, type(None)})
_SCALARS = (str, bytes, bytearray, int, float, bool, type(None))


_RESULTS = frozenset({_Result, _MappingResult, _PersistentResult})


def _is_tensor(value: object) -> bool:
    kind = type(value)
    if kind in _RESULTS:
        return value._origin in TENSOR_REBUILDS  # type: ignore[attr-defined]
    return kind in _METAS and value._name in TENSOR_REBUILDS  # type: ignore[attr-defined]


def describe_root(root: object) -> RootShape | None:
    """The :class:`RootShape` of an inert load's result; None when it cannot be told exactly.

    Results of one global are shared objects (except mappings made one per call), so a dict
    keyed by placeholders may hold fewer entries than the pickle set: None then.
    """
    kind = type(root)
    if kind is dict:
        if not set(map(type, root)) <= _PLAIN_KEYS:  # type: ignore[call-overload]
            return None
        fmt = root.get("format")  # type: ignore[attr-defined]
        values = root.values()  # type: ignore[attr-defined]
        tensors = bool(values) and all(map(_is_tensor, values))
        return RootShape("dict", None, fmt if type(fmt) is str else None, tensors)
    if kind in _RESULTS:
        res: Any = root
        items = getattr(res, "_items", None)
        tensors = items is not None and bool(items) and all(map(_is_tensor, items))
        origin = None if res._origin.startswith("<") else res._origin
        kind_name = "unknown" if res._kind == "persistent" else res._kind
        return RootShape(kind_name, origin, None, tensors)
    if kind in _METAS:
        return RootShape("global", root._name, None, False)  # type: ignore[attr-defined]
    if kind is list:
        return RootShape("list", None, None, False)
    if kind is tuple:
        return RootShape("tuple", None, None, False)
    if kind in _SCALARS:
        return RootShape("scalar", None, None, False)
    return RootShape("unknown", None, None, False)


def _load(data: bytes, quick: bool) -> tuple[InertRecord, object, Exception | None]:
    rec = InertRecord()
    root: object = None
    error: Exception | None = None
    unpickler = _InertUnpickler(data, rec, True) if quick else _FullUnpickler(data, rec, False)
    try:
        root = unpickler.load()
    except Exception as exc:  # a crafted stream may fail anywhere; that is a finding
        error = exc
    return rec, root, error


def inert_load(data: bytes, *, quick: bool = False) -> tuple[InertRecord, object, Exception | None]:
    """Unpickle ``data`` (one vetted pickle) with inert placeholders.

    Returns (record, root object or None, the exception that stopped it or None). Any
    failure of a crafted stream is returned, not raised; the record holds what was seen
    up to that point.

    ``quick`` first tries a pass where persistent ids are recorded by C code and stand as
    None (a 4096-tensor state_dict has 4096 of them). Its record equals the full pass's
    whenever it is kept: the pickle reached STOP, never did anything to a persistent id
    but pass or store it (calling, BUILD, SETITEM, APPEND on None fail), never named
    ``_rebuild_tensor_v3`` (whose storage argument links a dtype to its id) and its root
    is neither None nor a dict with a None key (where ids could have collided); otherwise
    the full pass runs. Callers that keep the root object itself must not ask for it.
    """
    if quick:
        rec, root, error = _load(data, quick=True)
        if (
            error is None
            and root is not None
            and _REBUILD_V3 not in rec.globals
            and not (type(root) is dict and None in root)
        ):
            rec.persistent_ids = _parse_pids(rec.raw_pids, {})
            rec.raw_pids = []
            return rec, root, error
    rec, root, error = _load(data, quick=False)
    rec.persistent_ids = _parse_pids(rec.raw_pids, rec.v3_dtypes)
    rec.raw_pids = []
    return rec, root, error


_FIELD = tuple(map(itemgetter, range(5)))
_NAME_OF = attrgetter("_name")
_make_ref = partial(tuple.__new__, PersistentRef)


def _parse_pids(raw: list[object], dtypes: dict[int, str]) -> list[PersistentRef]:
    """:func:`_parse_pid` of every id; the ids torch.save writes in zips checked in bulk.

    The bulk path applies the same test as the first branch of :func:`_parse_pid` to all
    ids at once (C-level ``map``s; a 4096-tensor file has 4096 ids), else falls back to
    one call per id.
    """
    count = len(raw)
    if count and set(map(type, raw)) == {tuple} and set(map(len, raw)) == {5}:  # type: ignore[arg-type]
        kind, cls, key, location, numel = (list(map(f, raw)) for f in _FIELD)
        if (
            all(map(eq, kind, repeat("storage")))
            and set(map(type, cls)) <= _METAS
            and set(map(type, key)) == {str}
            and set(map(type, location)) == {str}
            and set(map(type, numel)) == {int}
            and min(numel) >= 0  # type: ignore[type-var]
        ):
            dtype = map(dtypes.get, range(count)) if dtypes else repeat(None, count)
            ids = (repeat("storage"), map(_NAME_OF, cls), key, location, numel, dtype, repeat(True))
            return list(map(_make_ref, zip(*ids, strict=False)))
    return [_parse_pid(pid, dtypes.get(i)) for i, pid in enumerate(raw)]
