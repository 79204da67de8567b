"""Read a ``torch.distributed.checkpoint`` directory's ``.metadata`` without running it.

DCP writes ``.metadata`` with a plain ``pickle.dump`` of its ``Metadata`` dataclass and
reads it back with a plain ``pickle.load`` (torch_versions.md section 10): a crafted file
runs code in every torch that opens the directory. So, standard library only:

1. the opcode walk (:mod:`.opcode_walk`) vets the stream (no EXT opcodes, no memo index
   past the data, a STOP);
2. the inert unpickler (:mod:`.inert_unpickler`) lists every global the pickle names; any
   outside :data:`DCP_GLOBALS` (and ``torch.<dtype>``) means the file is not what DCP
   writes, and nothing more is read from it;
3. only then a second pass keeps the *data* of the graph: each global becomes a
   placeholder class whose NEWOBJ instances remember their BUILD state and whose calls
   remember their arguments (``torch.Size((4, 8))``), never importing or calling anything
   the file names. Keys, shapes, dtypes, the storage files' layout, the ``version`` field
   (torch >= 2.9) and ``StorageMeta.modules`` (torch >= 2.7) are read from that data.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from typing import Any

from ckptcompat.scan.inert_unpickler import inert_load
from ckptcompat.scan.opcode_walk import walk

__all__ = ["DCP_GLOBALS", "DcpMetadata", "DcpTensor", "read_dcp_metadata"]

_M = "torch.distributed.checkpoint.metadata."
#: Every global a ``.metadata`` written by torch 2.4 ... 2.15's FileSystemWriter names,
#: besides dtypes (``torch.float32`` ...).
DCP_GLOBALS = frozenset(
    {
        *(_M + n for n in ("Metadata", "TensorStorageMetadata", "TensorProperties")),
        *(_M + n for n in ("ChunkStorageMetadata", "BytesStorageMetadata", "MetadataIndex")),
        *(_M + n for n in ("StorageMeta", "_MEM_FORMAT_ENCODING")),
        "torch.distributed.checkpoint.filesystem._StorageInfo",
        "torch.Size",
        "torch.serialization._get_layout",
        "pathlib.PosixPath",
        "collections.OrderedDict",
    }
)
_DTYPES = frozenset(
    {
        "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
        "uint8", "bool", "complex64", "complex128", "uint16", "uint32", "uint64",
        "float8_e4m3fn", "float8_e5m2",
    }
)  # fmt: skip


@dataclass(frozen=True)
class DcpTensor:
    """One tensor entry: flattened ``key``, ``dtype`` name (``float32``), ``shape``, chunks."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    chunks: int


@dataclass(frozen=True)
class DcpMetadata:
    """What ``.metadata`` says, read inertly.

    Attributes:
        tensors: tensor entries, sorted by key. byte_keys: keys stored as pickled bytes
            (non-tensor values: optimizer hyperparameters, Python objects), sorted.
        files: data file name -> number of items stored in it.
        version: ``Metadata.version`` (torch >= 2.9 writes the field, >= 2.10 sets
            ``"1.0.0"``), None when absent.
        has_modules: ``StorageMeta.modules`` present (written by torch >= 2.7).
        has_storage_meta: ``storage_meta`` present.
        planner_keys: entries of ``planner_data`` (DefaultSavePlanner's key -> path map).
        properties_fields: the most fields a ``TensorProperties`` state tuple has (5 up to
            2.6; 2.15 appends ``strides``: 6), 0 when no tensor.
        globals: every global the pickle names, in order.
        unexpected: globals outside :data:`DCP_GLOBALS` and dtypes (then nothing else is
            read: the file is not DCP's, and torch would run it with a plain pickle.load).
        error: why the file could not be read (truncated, malformed...), else None.
    """

    tensors: tuple[DcpTensor, ...] = ()
    byte_keys: tuple[str, ...] = ()
    files: dict[str, int] = field(default_factory=dict)
    version: str | None = None
    has_modules: bool = False
    has_storage_meta: bool = False
    planner_keys: int = 0
    properties_fields: int = 0
    globals: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    error: str | None = None


class _Kept:
    """A NEWOBJ instance of a placeholder class: its global's name and its BUILD state."""

    __slots__ = ("args", "state")
    name = ""

    def __new__(cls, *args: object) -> _Kept:
        made = object.__new__(cls)
        made.args, made.state = args, None
        return made

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("scan placeholders cannot be pickled")


class _Call:
    """The result of calling a placeholder (REDUCE): its global's name and arguments."""

    __slots__ = ("args", "name", "state")

    def __init__(self, name: str, args: tuple[object, ...]) -> None:
        self.name, self.args, self.state = name, args, None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("scan placeholders cannot be pickled")


class _KeptMeta(type):
    def __call__(cls, *args: object) -> _Call:  # REDUCE: record, never construct
        return _Call(cls.name, args)  # type: ignore[attr-defined]


class _KeepingUnpickler(pickle.Unpickler):
    """find_class returns placeholder classes (fixed type name; the global kept as data)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), fix_imports=False, encoding="latin1")
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> type:
        qualified = f"{module}.{name}"
        if qualified not in self._classes:
            self._classes[qualified] = _KeptMeta(
                "DcpPlaceholder", (_Kept,), {"__slots__": (), "name": qualified}
            )
        return self._classes[qualified]

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("DCP metadata holds no persistent ids")


def _fields(obj: object) -> dict[str, Any]:
    """The BUILD state of a kept dataclass as a dict (``(dict, slots)`` pairs merged)."""
    state = getattr(obj, "state", None)
    if (
        type(state) is tuple
        and len(state) == 2
        and all(type(s) in (dict, type(None)) for s in state)
    ):
        return {**(state[0] or {}), **(state[1] or {})}
    return state if type(state) is dict else {}


def _name(obj: object) -> str:
    return str(getattr(obj, "name", "") or getattr(type(obj), "name", ""))


def _dtype(properties: object) -> str:
    state = getattr(properties, "state", None)
    # TensorProperties pickles (dtype, layout, requires_grad, memory_format, pin_memory)
    # through its own __getstate__; a plain dataclass state would be a dict.
    dtype = state[0] if type(state) is tuple and state else _fields(properties).get("dtype")
    return _name(dtype).removeprefix("torch.") or "unknown"


def _shape(size: object) -> tuple[int, ...]:
    args = getattr(size, "args", ())
    if type(args) is tuple and args and type(args[0]) in (tuple, list):
        return tuple(int(n) for n in args[0] if type(n) is int)
    return ()


def _interpret(root: object, out: dict[str, Any]) -> None:
    meta = _fields(root)
    tensors, byte_keys, widths = [], [], [0]
    entries = meta.get("state_dict_metadata")
    for key, entry in entries.items() if type(entries) is dict else ():
        fields = _fields(entry)
        if _name(entry).endswith("TensorStorageMetadata"):
            chunks = fields.get("chunks")
            state = getattr(fields.get("properties"), "state", None)
            widths.append(len(state) if type(state) is tuple else 0)
            tensors.append(
                DcpTensor(
                    key=str(key),
                    dtype=_dtype(fields.get("properties")),
                    shape=_shape(fields.get("size")),
                    chunks=len(chunks) if type(chunks) is list else 0,
                )
            )
        else:
            byte_keys.append(str(key))
    files: dict[str, int] = {}
    storage = meta.get("storage_data")
    for info in storage.values() if type(storage) is dict else ():
        path = _fields(info).get("relative_path")
        if type(path) is str:
            files[path] = files.get(path, 0) + 1
    storage_meta = meta.get("storage_meta")
    version = meta.get("version")
    planner = meta.get("planner_data")
    out.update(
        tensors=tuple(sorted(tensors, key=lambda t: t.key)),
        byte_keys=tuple(sorted(byte_keys)),
        files=dict(sorted(files.items())),
        version=version if type(version) is str else None,
        has_storage_meta=storage_meta is not None,
        has_modules="modules" in _fields(storage_meta),
        planner_keys=len(planner) if type(planner) is dict else 0,
        properties_fields=max(widths),
    )


def read_dcp_metadata(data: bytes) -> DcpMetadata:
    """Describe a DCP ``.metadata`` file's bytes (see the module docstring); never raises
    for bad input: a stream that cannot be read comes back with ``error`` set."""
    walked = walk(data, 0)
    if walked.error or walked.truncated or walked.ext_codes or walked.bad_memo is not None:
        reason = walked.error or ("truncated" if walked.truncated else "EXT or bad memo opcodes")
        return DcpMetadata(error=f"not a readable pickle: {reason}")
    record, _, error = inert_load(data, quick=True)
    names = tuple(record.globals)
    unexpected = tuple(
        n
        for n in names
        if n not in DCP_GLOBALS and not (n.startswith("torch.") and n[6:] in _DTYPES)
    )
    if error is not None or unexpected:
        why = None if error is None else f"{type(error).__name__}: {error}"
        return DcpMetadata(globals=names, unexpected=unexpected, error=why)
    out: dict[str, Any] = {}
    try:
        _interpret(_KeepingUnpickler(data).load(), out)
    except Exception as exc:  # a crafted stream may fail anywhere; that is a finding
        return DcpMetadata(globals=names, error=f"{type(exc).__name__}: {exc}")
    return DcpMetadata(globals=names, **out)
