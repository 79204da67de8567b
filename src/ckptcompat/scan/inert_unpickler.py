"""Rebuild a pickle's object graph with inert placeholders; never runs the pickle's code.

The C ``pickle.Unpickler`` with ``find_class`` and ``persistent_load`` overridden: every
global and persistent id becomes a placeholder (:mod:`.inert_placeholders`), and what the
pickle does to placeholders is recorded. Standard library only. Callers must vet the
stream first (:mod:`.opcode_walk` finds EXT opcodes and oversized memo indices).

Why the file's code cannot run: a pickle reaches callables only through ``find_class``
(GLOBAL, STACK_GLOBAL, INST; OBJ and REDUCE then call what is on the stack), through
``persistent_load``, and through the ``copyreg`` extension registry (EXT opcodes, refused
before this runs). Both overrides return placeholders (or, in the quick pass of
:func:`inert_load`, ``persistent_load`` is ``list.append`` and ids stand as None), and no
opcode reads an attribute, so the stack only ever holds placeholders and plain data (str,
bytes, int, float, tuple, list, dict, set, frozenset, bytearray, None). The unpickler's
implicit calls land on placeholder methods that only record and return placeholders
(:mod:`.inert_placeholders` lists them).

Placeholders define no ``__getattr__`` and no ``__dict__`` (``__slots__``), refuse to be
pickled, and their type names are fixed (the file's text is stored as data, never used as
an identifier). ``find_class`` never calls the base implementation, so nothing is imported.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from ckptcompat.scan.inert_placeholders import (
    ONE_PER_CALL,
    REBUILD_V3,
    WATCHED,
    GlobalBase,
    GlobalMeta,
    InertRecord,
    MappingMeta,
    PersistentResult,
    Result,
)
from ckptcompat.scan.persistent_ids import parse_pids
from ckptcompat.scan.torch_names import qualify

__all__ = ["inert_load"]

_PREFETCH_BYTES = 1 << 16


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
            meta = MappingMeta if qualified in ONE_PER_CALL else GlobalMeta
            cls = meta(
                "ScanGlobal",
                (GlobalBase,),
                {
                    "__slots__": (),
                    "__module__": __name__,
                    "_rec": self._rec,
                    "_name": qualified,
                    "_result": Result(self._rec, qualified, "call"),
                    "_new_result": Result(self._rec, qualified, "new"),
                    "_watched": qualified in WATCHED,
                    "_noted": False,
                    "_reduced": (qualified, "REDUCE"),
                },
            )
            self._classes[key] = cls
            self._rec.globals[qualified] = None
        self._rec.named.append(cls._name)
        return cls


class _FullUnpickler(_InertUnpickler):
    def persistent_load(self, pid: Any) -> Result:
        raw = self._rec.raw_pids
        raw.append(pid)
        made = PersistentResult()
        made._rec, made._ref = self._rec, len(raw) - 1
        return made


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
            and REBUILD_V3 not in rec.globals
            and not (type(root) is dict and None in root)
        ):
            rec.persistent_ids = parse_pids(rec.raw_pids, {})
            rec.raw_pids = []
            return rec, root, error
    rec, root, error = _load(data, quick=False)
    rec.persistent_ids = parse_pids(rec.raw_pids, rec.v3_dtypes)
    rec.raw_pids = []
    return rec, root, error
