"""Facts about a checkpoint's object pickle that the doctor needs beyond the verdict inputs.

The doctor needs three things besides the scan's globals and findings: what the top-level
object is (to tell safe format v1, G1, G2 and state_dicts apart), the dtype codes given to
``numpy.dtype`` (torch's BUILD check needs the concrete ``numpy.dtypes.<X>DType`` class,
which the pickle never names), and where in the stream each global and refused opcode
first appears (torch reports the first refusal).

The scan's single pass over the pickle (:mod:`ckptcompat.scan.pickle_scan`: the C
unpickler with inert placeholders) records them as :class:`~ckptcompat.checkpoint.
pickle_scan.StreamFacts`; :func:`pickle_facts` takes them from there. Only when that pass
could not run or finish (truncated, malformed or crafted streams, EXT opcodes, memo bombs,
dicts keyed by placeholders) does it fall back to a symbolic stack machine over
:func:`pickletools.genops` that models every opcode: every global and every object built
from one is an inert :class:`_Sym` record, so nothing the file names is imported or
called. The same machine gives :func:`root_object`: the top-level object with plain data
as itself (the doctor reads a safe-format file's ``agent`` config and a state_dict's keys
from it). Standard library only; reads only the object pickle (``data.pkl``, or the fourth
pickle of the legacy format), never storage bytes.
"""

from __future__ import annotations

import contextlib
import io
import pickletools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from ckptcompat.doctor.bounded_file import BoundedFile
from ckptcompat.scan.archive_reader import ArchiveReader, BadZip
from ckptcompat.scan.inert_placeholders import RootShape
from ckptcompat.scan.limits import (
    MAX_NESTING_DEPTH,
    MAX_PICKLE_BYTES,
    MAX_UNFOLDED_TUPLE_ITEMS,
)
from ckptcompat.scan.scan_result import ScanResult
from ckptcompat.scan.torch_names import TENSOR_REBUILDS, qualify

__all__ = ["PickleFacts", "mapping_keys", "pickle_facts", "root_object", "tensor_mapping_root"]

_MAX_OPS = 50_000_000  # opcodes; a bound on work for crafted streams


@dataclass(frozen=True)
class PickleFacts:
    """What the object pickle's structure says.

    Attributes:
        complete: the symbolic pass reached STOP (else the fields below are partial).
        root_kind: ``"dict"``, ``"list"``, ``"tuple"``, ``"scalar"``, ``"new"`` (an
            instance made by NEWOBJ/OBJ/INST), ``"call"`` (the result of REDUCE),
            ``"global"`` (a class, function or dtype itself) or ``"unknown"``.
        root_global: the global the root object came from (class or function), if any.
        format: ``root["format"]`` when the root is a plain dict with a str ``format``.
        tensor_mapping: the root is a non-empty dict/OrderedDict whose values are all tensors.
        numpy_dtypes: dtype codes given to ``numpy.dtype`` (``"f4"``, ``"i8"``), in order.
        global_pos: global -> offset of its first GLOBAL/STACK_GLOBAL/INST (bytes).
        opcode_pos: opcode name -> offset of its first use (bytes); from the scan's pass,
            only opcodes outside the weights-only set are sure to be there.
    """

    complete: bool
    root_kind: str = "unknown"
    root_global: str | None = None
    format: str | None = None
    tensor_mapping: bool = False
    numpy_dtypes: tuple[str, ...] = ()
    global_pos: Mapping[str, int] = field(default_factory=dict)
    opcode_pos: Mapping[str, int] = field(default_factory=dict)


class _Sym:
    """An inert stand-in: a global (``kind="global"``) or an object made from one."""

    __slots__ = ("items", "keys", "kind", "origin")

    def __init__(self, origin: str, kind: str) -> None:
        self.origin = origin
        self.kind = kind  # global | call | new | persistent | other
        self.items: list[Any] = []  # values given by SETITEM(S) (for state_dict detection)
        self.keys: list[Any] = []  # their keys, in order (a state_dict's parameter names)


def _too_deep(key: tuple[Any, ...]) -> bool:
    """True when hashing ``key`` would go past a limit: tuples nested deeper than
    ``max_nesting_depth`` (the hash recurses in C, unguarded) or holding more than
    ``max_unfolded_tuple_items`` items through nested tuples (the hash visits each, once
    per use). Iterative; its work stops at the limit."""
    todo: list[tuple[tuple[Any, ...], int]] = [(key, 1)]
    visited = 0
    while todo:
        item, depth = todo.pop()
        visited += len(item)
        if depth > MAX_NESTING_DEPTH or visited > MAX_UNFOLDED_TUPLE_ITEMS:
            return True
        todo.extend((t, depth + 1) for t in item if type(t) is tuple)
    return False


class _Mark:
    """The MARK sentinel."""


_MARK = _Mark()
# Opcodes that push their argument as decoded by pickletools.
_CONSTANTS = frozenset(
    {
        *("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
        *("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE"),
        *("BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"),
    }
)
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_IGNORED = frozenset({"PROTO", "FRAME", "READONLY_BUFFER"})


class _Machine:
    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.dtypes: list[str] = []
        self.global_pos: dict[str, int] = {}
        self.opcode_pos: dict[str, int] = {}

    def pop_mark(self) -> list[Any]:
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def global_(self, name: str, pos: int) -> _Sym:
        self.global_pos.setdefault(name, pos)
        return _Sym(name, "global")

    def made(self, func: Any, kind: str, args: Any) -> _Sym:
        if isinstance(func, _Sym) and func.kind == "global":
            # numpy.dtype("f4", False, True): the code decides the class torch's BUILD meets.
            code = args[0] if isinstance(args, tuple) and args else None
            if func.origin == "numpy.dtype" and isinstance(code, str):
                self.dtypes.append(code)
            return _Sym(func.origin, kind)
        return _Sym("<result of a call>", kind)

    def setitems(self, target: Any, pairs: list[tuple[Any, Any]]) -> None:
        if isinstance(target, dict):
            for key, value in pairs:
                if type(key) is tuple and _too_deep(key):
                    raise ValueError("a dict key nested past max_nesting_depth")
                try:
                    target[key] = value
                except TypeError:  # an unhashable key: keep the value, lose the key
                    target[object()] = value
        elif isinstance(target, _Sym):
            target.keys.extend(k for k, _ in pairs)
            target.items.extend(v for _, v in pairs)

    def appends(self, target: Any, items: list[Any]) -> None:
        if isinstance(target, list):
            target.extend(items)

    def step(self, name: str, arg: Any, pos: int) -> bool:  # noqa: PLR0915 - one opcode table
        """Apply one opcode; False at STOP."""
        self.opcode_pos.setdefault(name, pos)
        stack = self.stack
        if name in _CONSTANTS:
            stack.append(arg)
        elif name in _PUTS:
            self.memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in _GETS:
            stack.append(self.memo[arg])
        elif name == "MARK":
            self.marks.append(len(stack))
        elif name == "STOP":
            return False
        elif name in _IGNORED:
            pass
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("EMPTY_SET", "NEXT_BUFFER") or name.startswith("EXT"):
            stack.append(_Sym(f"<{name}>", "other"))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(self.pop_mark()))
        elif name == "LIST":
            stack.append(self.pop_mark())
        elif name in ("FROZENSET", "POP_MARK"):
            items = self.pop_mark()
            if name == "FROZENSET":
                stack.append(_Sym("<frozenset>", "other"))
        elif name == "DICT":
            items = self.pop_mark()
            stack.append({})
            self.setitems(stack[-1], list(zip(items[::2], items[1::2], strict=False)))
        elif name == "APPEND":
            item = stack.pop()
            self.appends(stack[-1], [item])
        elif name == "APPENDS":
            items = self.pop_mark()
            self.appends(stack[-1], items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            self.setitems(stack[-1], [(key, value)])
        elif name == "SETITEMS":
            items = self.pop_mark()
            self.setitems(stack[-1], list(zip(items[::2], items[1::2], strict=False)))
        elif name == "ADDITEMS":
            self.pop_mark()
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(self.global_(qualify(module, attr), pos))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(self.global_(qualify(str(module), str(attr)), pos))
        elif name == "INST":
            module, _, attr = str(arg).partition(" ")
            cls = self.global_(qualify(module, attr), pos)
            args = self.pop_mark()
            stack.append(self.made(cls, "call" if args else "new", tuple(args)))
        elif name == "OBJ":
            cls, *args = self.pop_mark()
            stack.append(self.made(cls, "call" if args else "new", tuple(args)))
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(self.made(stack.pop(), "call", args))
        elif name == "NEWOBJ":
            args = stack.pop()
            stack.append(self.made(stack.pop(), "new", args))
        elif name == "NEWOBJ_EX":
            stack.pop()
            args = stack.pop()
            stack.append(self.made(stack.pop(), "new", args))
        elif name == "BUILD":
            stack.pop()
        elif name in ("PERSID", "BINPERSID"):
            if name == "BINPERSID":
                stack.pop()
            stack.append(_Sym("<persistent id>", "persistent"))
        elif name == "POP":
            if stack:
                stack.pop()
            else:
                self.pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        else:
            raise ValueError(f"opcode {name} is not modelled")
        return True


def _describe_root(root: Any) -> tuple[str, str | None, str | None, bool]:
    """(kind, origin global, format, tensor_mapping) of the top-level object."""
    if isinstance(root, dict):
        fmt = root.get("format")
        values = list(root.values())
        tensors = bool(values) and all(
            isinstance(v, _Sym) and v.origin in TENSOR_REBUILDS for v in values
        )
        return "dict", None, fmt if isinstance(fmt, str) else None, tensors
    if isinstance(root, _Sym):
        tensors = (
            root.origin == "collections.OrderedDict"
            and bool(root.items)
            and all(isinstance(v, _Sym) and v.origin in TENSOR_REBUILDS for v in root.items)
        )
        kind = root.kind if root.kind in ("call", "new", "global") else "unknown"
        origin = None if root.origin.startswith("<") else root.origin
        return kind, origin, None, tensors
    if isinstance(root, list):
        return "list", None, None, False
    if isinstance(root, tuple):
        return "tuple", None, None, False
    return "scalar", None, None, False


_Ops = Iterator[tuple[pickletools.OpcodeInfo, Any, int | None]]


def _walk(ops: _Ops) -> tuple[_Machine, bool]:
    """Run the stack machine over ``ops``; True when it reached STOP."""
    machine = _Machine()
    try:
        for count, (op, arg, pos) in enumerate(ops):
            if count > _MAX_OPS:
                break
            if not machine.step(op.name, arg, pos or 0):
                return machine, True
    except (ValueError, IndexError, KeyError, TypeError, EOFError, OverflowError):
        pass  # malformed or unmodelled: report what was seen so far
    return machine, False


def _run(ops: _Ops) -> PickleFacts:
    machine, complete = _walk(ops)
    kind, origin, fmt, tensors = (
        _describe_root(machine.stack[-1])
        if complete and machine.stack
        else ("unknown", None, None, False)
    )
    return PickleFacts(
        complete=complete,
        root_kind=kind,
        root_global=origin,
        format=fmt,
        tensor_mapping=tensors,
        numpy_dtypes=tuple(dict.fromkeys(machine.dtypes)),
        global_pos=machine.global_pos,
        opcode_pos=machine.opcode_pos,
    )


def _skip_pickles(fh: IO[bytes], count: int) -> None:
    for _ in range(count):
        for op, _arg, _pos in pickletools.genops(fh):
            if op.name == "STOP":
                break


@contextlib.contextmanager
def _object_pickle(path: str, result: ScanResult) -> Iterator[tuple[_Ops, int] | None]:
    """The opcodes of the object pickle and its offset in the file; None when unreadable."""
    if result.kind == "zip" and result.prefix is not None:
        reader = ArchiveReader(path)
        try:
            wanted = f"{result.prefix}/data.pkl" if result.prefix else "data.pkl"
            entry = next((e for e in reader.zip_entries() if e.name == wanted), None)
            data = None if entry is None else reader.read_entry(entry)
        except BadZip:
            data = None
        finally:
            reader.close()
        yield (None if data is None else (pickletools.genops(io.BytesIO(data)), 0))
    elif result.kind == "legacy_pickle":
        with open(path, "rb") as raw:
            fh = BoundedFile(raw, MAX_PICKLE_BYTES)
            try:
                # Legacy layout: magic number, protocol version, sys_info, then the object.
                _skip_pickles(fh, 3)  # type: ignore[arg-type]
            except (ValueError, EOFError):
                yield None
            else:
                start = fh.tell()
                yield pickletools.genops(fh), start
    else:
        yield None


def pickle_facts(path: str, result: ScanResult) -> PickleFacts:
    """Read the object pickle of the file ``result`` describes and return its facts.

    Only zip (``torch.save``) and legacy non-zip files have an object pickle; for any
    other kind, and for unreadable records, ``complete`` is False. Never raises for the
    file's content; OSError for the path itself propagates. Reads nothing when the scan's
    pass recorded the facts (``result.facts``), which is the case for every file whose
    object pickle the C unpickler could rebuild inertly.
    """
    if result.facts is not None:
        shape = result.facts.root
        return PickleFacts(
            complete=True,
            root_kind=shape.kind,
            root_global=shape.origin,
            format=shape.format,
            tensor_mapping=shape.tensor_mapping,
            numpy_dtypes=result.facts.numpy_dtypes,
            global_pos=result.facts.global_pos,
            opcode_pos=result.facts.opcode_pos,
        )
    if "limit_exceeded" in result.codes():
        return PickleFacts(complete=False)  # walking it is the work the limit forbids
    with _object_pickle(path, result) as found:
        if found is None:
            return PickleFacts(complete=False)
        ops, start = found
        facts = _run(ops)
    if not start:
        return facts
    # Offsets relative to the object pickle, as in a zip's data.pkl.
    return PickleFacts(
        complete=facts.complete,
        root_kind=facts.root_kind,
        root_global=facts.root_global,
        format=facts.format,
        tensor_mapping=facts.tensor_mapping,
        numpy_dtypes=facts.numpy_dtypes,
        global_pos={k: v - start for k, v in facts.global_pos.items()},
        opcode_pos={k: v - start for k, v in facts.opcode_pos.items()},
    )


def root_object(path: str, result: ScanResult) -> object | None:
    """The top-level object of the file's object pickle, rebuilt symbolically.

    Plain data (dict, list, tuple, str, numbers, None) comes back as itself; everything a
    global made is an inert record (:func:`mapping_keys` reads a mapping's keys). None
    when the pickle cannot be walked to its STOP. Nothing is imported or called.
    OSError for the path itself propagates.
    """
    if "limit_exceeded" in result.codes():
        return None
    with _object_pickle(path, result) as found:
        if found is None:
            return None
        machine, complete = _walk(found[0])
    return machine.stack[-1] if complete and machine.stack else None


#: The rebuild function a :func:`tensor_mapping_root`'s values name (the walk names each
#: tensor's own, e.g. ``_rebuild_parameter``; no reader of such a root looks at values).
_TENSOR_ORIGIN = "torch._utils._rebuild_tensor_v2"


def tensor_mapping_root(shape: RootShape) -> object | None:
    """The object :func:`root_object` would rebuild for a tensor mapping, from the scan's
    :class:`~ckptcompat.scan.inert_placeholders.RootShape` alone; None when the shape does
    not say enough (not a tensor mapping, or a key that is not a ``str``).

    A plain dict comes back as a dict, an ``OrderedDict`` as the walk's inert record with
    its keys in pickle order; every value is an inert record of a tensor rebuild, the same
    for every value (the walk's records name each tensor's own rebuild function). Skipping
    the second walk over the pickle (``pickletools.genops`` and this module's stack
    machine) is ~45% of the doctor's time on a small state_dict (issue 21 item 3).
    """
    if not shape.tensor_mapping or shape.keys is None:
        return None
    if shape.kind == "dict" and shape.origin is None:
        return {key: _Sym(_TENSOR_ORIGIN, "call") for key in shape.keys}
    if shape.kind == "call" and shape.origin == "collections.OrderedDict":
        root = _Sym("collections.OrderedDict", "call")
        root.keys = list(shape.keys)
        root.items = [_Sym(_TENSOR_ORIGIN, "call") for _ in shape.keys]
        return root
    return None


def mapping_keys(obj: object) -> tuple[str, ...] | None:
    """The string keys of a dict, or of an ``OrderedDict`` built by the pickle; else None."""
    if isinstance(obj, dict):
        keys: list[Any] = list(obj)
    elif isinstance(obj, _Sym) and obj.origin == "collections.OrderedDict":
        keys = obj.keys
    else:
        return None
    return tuple(keys) if all(isinstance(k, str) for k in keys) else None
