"""Inert placeholders for what a pickle names, and how to read a graph made of them.

:mod:`.inert_unpickler` hands these to the C unpickler instead of every global and
persistent id (see that module for why the file's code cannot run). Each placeholder method
the unpickler calls implicitly only records into an :class:`InertRecord` and returns a
placeholder:

* REDUCE, and INST/OBJ with arguments: ``callable(*args)`` -> :meth:`GlobalMeta.__call__`
  or :meth:`Result.__call__` (never ``type.__call__``, so no ``__init__`` runs);
* NEWOBJ/NEWOBJ_EX (``cls.tp_new``) and INST/OBJ without arguments (``cls.__new__(cls)``)
  -> :meth:`GlobalBase.__new__`; a placeholder is a class because NEWOBJ requires a type;
* BUILD -> ``__setstate__``; SETITEM(S) -> ``__setitem__``; APPEND(S) -> ``append`` /
  ``extend``; ADDITEMS -> ``add``: all defined, inert, on both placeholder kinds (results
  of one global are shared, except ``collections.OrderedDict``'s, one per call, and
  persistent ids', one per id; those two are made by C, without ``__init__``).

Placeholders define no ``__getattr__`` and no ``__dict__`` (``__slots__``) and refuse to be
pickled. :func:`describe_root` reads the top-level object of such a graph. Standard library
only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ckptcompat.scan.torch_names import TENSOR_REBUILDS

__all__ = [
    "GLOBAL_TYPES",
    "ONE_PER_CALL",
    "PERSISTENT",
    "REBUILD_V3",
    "RESULT",
    "WATCHED",
    "GlobalBase",
    "GlobalMeta",
    "InertRecord",
    "MappingMeta",
    "PersistentResult",
    "Result",
    "RootShape",
    "describe_root",
]

#: Origin of objects made by ``persistent_load`` (torch: storages).
PERSISTENT = "<persistent id>"
#: Origin of objects returned by calling a call's result.
RESULT = "<result of a call>"
REBUILD_V3 = "torch._utils._rebuild_tensor_v3"


@dataclass
class InertRecord:
    """What the pickle did to placeholders.

    Attributes:
        globals: ``module.name`` of every class/function asked of ``find_class``, in order.
        applied: (origin, how) pairs; how is REDUCE, NEWOBJ, BUILD, SETITEM or APPEND.
        persistent_ids: parsed persistent ids, in order (set at the end of the pass): a
            :class:`~ckptcompat.scan.persistent_ids.PersistentIds`, which imports this
            module (for :data:`GLOBAL_TYPES`), so it is typed by its interface here.
        setitem_targets: origins of non-dict objects given items (SETITEM(S), ADDITEMS).
        append_targets: origins of non-list objects given items (APPEND(S)).
        calls_on_results: origins whose call results were called again.
        named: the global of every ``find_class`` call, in order (one per GLOBAL,
            STACK_GLOBAL and INST opcode).
        numpy_dtypes: codes given to ``numpy.dtype`` (``"f4"``), in order.
    """

    globals: dict[str, None] = field(default_factory=dict)
    applied: set[tuple[str, str]] = field(default_factory=set)
    persistent_ids: Sequence[Any] | None = None
    setitem_targets: dict[str, None] = field(default_factory=dict)
    append_targets: dict[str, None] = field(default_factory=dict)
    calls_on_results: dict[str, None] = field(default_factory=dict)
    named: list[str] = field(default_factory=list)
    numpy_dtypes: dict[str, None] = field(default_factory=dict)
    raw_pids: list[object] = field(default_factory=list, repr=False)
    v3_dtypes: dict[int, str] = field(default_factory=dict, repr=False)


class Result:
    """Inert stand-in for what a call, NEWOBJ or persistent id produced."""

    __slots__ = ("_items", "_keys", "_kind", "_origin", "_rec", "_ref")

    def __init__(
        self, rec: InertRecord, origin: str, kind: str, ref: int = -1, items: bool = False
    ) -> None:
        self._rec = rec
        self._origin = origin  # the global (or PERSISTENT/RESULT) this object came from
        self._kind = kind  # "call", "new" or "persistent"
        self._ref = ref  # index into rec.raw_pids for persistent ids, else -1
        # Keys and values given by SETITEM(S), kept only for objects made one per call
        # (mappings).
        self._items: list[object] | None = [] if items else None
        self._keys: list[object] | None = [] if items else None

    def __call__(self, *args: object) -> Result:
        # Calling a call's result: builtins.getattr(...)(...) chains, nested loaders.
        self._rec.calls_on_results[self._origin] = None
        return Result(self._rec, RESULT, "call")

    def __setstate__(self, state: object) -> None:
        self._rec.applied.add((self._origin, "BUILD"))

    def __setitem__(self, key: object, value: object) -> None:
        self._rec.setitem_targets[self._origin] = None
        self._rec.applied.add((self._origin, "SETITEM"))
        if self._items is not None:
            self._items.append(value)
            self._keys.append(key)  # type: ignore[union-attr]

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


class GlobalMeta(type):
    """Metaclass of global placeholders (classes, because NEWOBJ needs a type)."""

    _rec: InertRecord
    _name: str
    # Shared by all calls (and all NEWOBJs) of this global: the identity of results does
    # not matter, except for the mappings in ONE_PER_CALL (the doctor reads their items).
    _result: Result
    _new_result: Result
    _watched: bool  # REBUILD_V3, numpy.dtype or ONE_PER_CALL: see _made
    _noted: bool  # called before and not watched: nothing more to note (set on first call)
    _reduced: tuple[str, str]

    def __call__(cls, *args: object) -> Result:
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


class MappingMeta(GlobalMeta):
    """Metaclass of the placeholders of ``ONE_PER_CALL``: one result per call.

    A torch state_dict calls ``OrderedDict()`` once per tensor (its backward hooks), so
    this call is as short as it can be.
    """

    def __call__(cls, *args: object) -> Result:
        if not cls._noted:
            cls._rec.applied.add(cls._reduced)
            cls._noted = True
        made = _MappingResult()
        made._rec, made._origin = cls._rec, cls._name
        return made


GLOBAL_TYPES = frozenset({GlobalMeta, MappingMeta})


class GlobalBase:
    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> Any:
        meta: Any = cls
        meta._rec.applied.add((meta._name, "NEWOBJ"))
        if meta._watched:
            return _made(meta, args, "new")
        return meta._new_result


# Mappings whose items the doctor reads (a state_dict is an OrderedDict): one result each.
ONE_PER_CALL = frozenset({"collections.OrderedDict"})
_NUMPY_DTYPE = "numpy.dtype"
WATCHED = frozenset({REBUILD_V3, _NUMPY_DTYPE, *ONE_PER_CALL})


def _made(cls: GlobalMeta, args: tuple[object, ...], kind: str) -> Result:
    """The result of calling (or NEWOBJ of) a watched global; notes what its args say."""
    rec, name = cls._rec, cls._name
    if name == REBUILD_V3 and len(args) >= 7:
        # Remember _rebuild_tensor_v3's dtype argument for its storage's persistent id.
        storage, dtype = args[0], args[6]
        if type(storage) is PersistentResult and type(dtype) in GLOBAL_TYPES:
            rec.v3_dtypes[storage._ref] = dtype._name.removeprefix("torch.")
    elif name == _NUMPY_DTYPE and args and type(args[0]) is str:
        # numpy.dtype("f4", False, True): the code decides the class torch's BUILD meets.
        rec.numpy_dtypes[args[0]] = None
    elif name in ONE_PER_CALL:
        return Result(rec, name, kind, items=True)
    return cls._result if kind == "call" else cls._new_result


class _MappingResult(Result):
    """One call's result of a global in ``ONE_PER_CALL``; made by C (no ``__init__``)."""

    __slots__ = ()
    __init__ = object.__init__  # type: ignore[assignment]
    _kind = "call"  # type: ignore[assignment]
    _ref = -1  # type: ignore[assignment]

    def __setitem__(self, key: object, value: object) -> None:
        self._rec.setitem_targets[self._origin] = None
        self._rec.applied.add((self._origin, "SETITEM"))
        try:
            self._items.append(value)  # type: ignore[union-attr]
            self._keys.append(key)  # type: ignore[union-attr]
        except AttributeError:  # the first item: both slots start unset
            self._items = [value]
            self._keys = [key]


class PersistentResult(Result):
    """What ``persistent_load`` returns; made by C (no ``__init__``)."""

    __slots__ = ()
    __init__ = object.__init__  # type: ignore[assignment]
    _origin = PERSISTENT  # type: ignore[assignment]
    _kind = "persistent"  # type: ignore[assignment]
    _items = None  # type: ignore[assignment]


class RootShape(NamedTuple):
    """What the top-level object of an inert load is.

    Attributes:
        kind: ``"dict"``, ``"list"``, ``"tuple"``, ``"scalar"``, ``"new"`` (an instance
            made by NEWOBJ/OBJ/INST), ``"call"`` (the result of REDUCE), ``"global"`` (a
            class, function or dtype itself) or ``"unknown"``.
        origin: the global the root came from (class or function), if any.
        format: ``root["format"]`` when the root is a plain dict with a str ``format``.
        tensor_mapping: the root is a non-empty dict/OrderedDict whose values are all tensors.
        keys: a tensor mapping's keys in pickle order (an OrderedDict's repeated keys
            repeated), when every key is a ``str``; else None. The doctor rebuilds such a
            root from them instead of walking the pickle a second time.
    """

    kind: str
    origin: str | None
    format: str | None
    tensor_mapping: bool
    keys: tuple[str, ...] | None = None


_PLAIN_KEYS = frozenset({str, bytes, int, float, bool, type(None)})
_SCALARS = (str, bytes, bytearray, int, float, bool, type(None))


_RESULTS = frozenset({Result, _MappingResult, PersistentResult})


def _is_tensor(value: object) -> bool:
    kind = type(value)
    if kind in _RESULTS:
        return value._origin in TENSOR_REBUILDS  # type: ignore[attr-defined]
    return kind in GLOBAL_TYPES and value._name in TENSOR_REBUILDS  # type: ignore[attr-defined]


def _str_keys(keys: Any) -> tuple[str, ...] | None:
    """``tuple(keys)`` when every key is exactly a ``str`` (not a subclass); else None."""
    found = tuple(keys)
    return found if found and all(type(k) is str for k in found) else None


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
        keys = _str_keys(root) if tensors else None  # type: ignore[arg-type]
        return RootShape("dict", None, fmt if type(fmt) is str else None, tensors, keys)
    if kind in _RESULTS:
        res: Any = root
        items = getattr(res, "_items", None)
        tensors = items is not None and bool(items) and all(map(_is_tensor, items))
        origin = None if res._origin.startswith("<") else res._origin
        kind_name = "unknown" if res._kind == "persistent" else res._kind
        keys = _str_keys(getattr(res, "_keys", None) or ()) if tensors else None
        return RootShape(kind_name, origin, None, tensors, keys)
    if kind in GLOBAL_TYPES:
        return RootShape("global", root._name, None, False)  # type: ignore[attr-defined]
    if kind is list:
        return RootShape("list", None, None, False)
    if kind is tuple:
        return RootShape("tuple", None, None, False)
    if kind in _SCALARS:
        return RootShape("scalar", None, None, False)
    return RootShape("unknown", None, None, False)
