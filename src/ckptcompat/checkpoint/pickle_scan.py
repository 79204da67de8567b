"""Static scan of one pickle stream: opcodes, globals, persistent ids. Never runs its code.

Standard library only (no torch, no numpy). Two passes over the bytes:

1. :func:`_walk` tokenizes the opcode stream with a table built from :mod:`pickletools`
   (no stack, no objects); in pickles over 8 KiB, runs of weights-only opcodes are
   tokenized by one regular expression in C (see ``_fast_run``). It yields the opcodes
   used, the protocol, the inline GLOBAL/INST names, the offsets of the opcodes that name
   globals and of the first use of each opcode outside the weights-only set, and the end
   of the pickle, and it vets the stream for pass 2: unknown opcodes, truncation,
   EXT1/EXT2/EXT4 (the C unpickler would consult, and fill, the process-wide ``copyreg``
   extension cache) and memo indices beyond the pickle's size (the C unpickler grows its
   memo array to twice the index: a memory bomb in ten bytes).
2. :func:`~ckptcompat.checkpoint.inert_unpickler.inert_load` rebuilds the object graph
   with the C unpickler and inert placeholders for every global and persistent id, which
   resolves STACK_GLOBAL through the memo exactly as the real unpickler would and records
   what the pickle does to each global (see that module for why nothing can run). The
   same pass yields the :class:`StreamFacts` the doctor needs (root object, numpy dtype
   codes, first offsets of globals), so nothing else reads the pickle again.

Cost on a 4096-tensor state_dict (123k opcodes, t215, one thread): walk ~3 ms (the
Python loop alone took ~9 ms), inert pass ~6-8 ms; a whole
:func:`ckptcompat.checkpoint.scan.scan` of that file takes ~15 ms, about a third of bare
``pickletools.genops`` and a fifteenth of ``torch.load``.
"""

from __future__ import annotations

import functools
import pickletools
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import Any

from ckptcompat.checkpoint.inert_unpickler import (
    InertRecord,
    PersistentRef,
    RootShape,
    describe_root,
    inert_load,
)
from ckptcompat.checkpoint.torch_names import qualify

__all__ = [
    "WEIGHTS_ONLY_OPCODES",
    "Finding",
    "PersistentRef",
    "PickleScan",
    "StreamFacts",
    "scan_pickle",
]

#: Opcodes torch's weights-only unpickler implements (``torch/_weights_only_unpickler.py``;
#: the same 34 in 2.4.1, 2.5.1, 2.6.0 and 2.15.0). Anything else is "Unsupported operand".
WEIGHTS_ONLY_OPCODES: frozenset[str] = frozenset(
    {
        *("APPEND", "APPENDS", "BINFLOAT", "BINGET", "BININT", "BININT1", "BININT2"),
        *("BINPERSID", "BINPUT", "BINUNICODE", "BUILD", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET"),
        *("EMPTY_TUPLE", "GLOBAL", "LONG1", "LONG_BINGET", "LONG_BINPUT", "MARK", "NEWFALSE"),
        *("NEWOBJ", "NEWTRUE", "NONE", "PROTO", "REDUCE", "SETITEM", "SETITEMS"),
        *("SHORT_BINSTRING", "STOP", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"),
    }
)


@dataclass(frozen=True)
class Finding:
    """Something the scan noticed. ``code`` is stable (doctor and precheck key on it).

    Attributes:
        code: e.g. ``"unsupported_opcode"``, ``"storage_size_mismatch"``.
        message: one sentence for people.
        names: the globals, opcodes or record names concerned.
    """

    code: str
    message: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamFacts:
    """What one pickle builds, from the same pass as its scan (never executed).

    Attributes:
        root: the top-level object's shape (kind, origin global, ``format``, tensor mapping).
        numpy_dtypes: codes given to ``numpy.dtype`` (``"f4"``, ``"i8"``), in order.
        global_pos: global -> offset of its first GLOBAL/STACK_GLOBAL/INST (bytes, from the
            pickle's start).
        opcode_pos: opcode name -> offset of its first use (bytes, from the pickle's start),
            for every opcode outside :data:`WEIGHTS_ONLY_OPCODES` and, in pickles the fast
            tokenizer did not cover, every other opcode too.
    """

    root: RootShape
    numpy_dtypes: tuple[str, ...]
    global_pos: Mapping[str, int]
    opcode_pos: Mapping[str, int]


@dataclass(frozen=True)
class PickleScan:
    """What one pickle stream contains, from :func:`scan_pickle`.

    Attributes:
        start: offset of the first opcode (bytes).
        end: offset just past STOP (bytes); None when the stream has no STOP.
        protocol: the PROTO argument, or the highest protocol among the opcodes without one.
        opcodes: names of every opcode used.
        globals: ``"module.name"`` of every GLOBAL/STACK_GLOBAL/INST/OBJ class, first
            appearance order, after torch's py2->py3 renaming.
        applied: origin (a global, ``"<persistent id>"`` or ``"<result of a call>"``) ->
            what the pickle did with it or with objects made from it:
            ``"REDUCE"`` (called: REDUCE, or INST/OBJ with arguments), ``"NEWOBJ"`` (NEWOBJ,
            or INST/OBJ without arguments), ``"BUILD"``, ``"SETITEM"``, ``"APPEND"``.
        persistent_ids: every persistent id, in order.
        setitem_targets: origins of non-dict objects that received SETITEM(S)/ADDITEMS, e.g.
            ``"collections.OrderedDict"`` or ``"torch._utils._rebuild_tensor_v2"`` (a
            tensor); ``"<persistent id>"`` for storages, ``"<result of a call>"``.
        append_targets: origins of non-list objects that received APPEND(S).
        completed: the inert pass reached STOP.
        needed_bytes: when truncated, at least this many more bytes are needed.
        root: with ``keep_root``, the rebuilt top-level object when it is plain data (no
            placeholders), e.g. the legacy format's magic number, sys_info and storage key
            list; else None.
        facts: what the pickle builds (:class:`StreamFacts`), when the inert pass completed
            and its result can be described exactly; else None.
        findings: what looks wrong.
    """

    start: int
    end: int | None
    protocol: int | None
    opcodes: frozenset[str]
    globals: tuple[str, ...]
    applied: Mapping[str, frozenset[str]]
    persistent_ids: tuple[PersistentRef, ...]
    setitem_targets: tuple[str, ...]
    append_targets: tuple[str, ...]
    completed: bool
    needed_bytes: int = 0
    root: Any = field(default=None, repr=False, compare=False)
    facts: StreamFacts | None = field(default=None, repr=False, compare=False)
    findings: tuple[Finding, ...] = ()


_LINE, _TWO_LINES, _LEN1, _LEN4, _LEN4U, _LEN8U = -1, -2, -3, -4, -5, -6
_ARG_KIND = {
    pickletools.UP_TO_NEWLINE: _LINE,
    pickletools.TAKEN_FROM_ARGUMENT1: _LEN1,
    pickletools.TAKEN_FROM_ARGUMENT4: _LEN4,
    pickletools.TAKEN_FROM_ARGUMENT4U: _LEN4U,
    pickletools.TAKEN_FROM_ARGUMENT8U: _LEN8U,
}
_NAMES: dict[int, str] = {}
_PROTO_OF: dict[int, int] = {}
#: opcode byte -> total size (opcode + argument) for fixed-size opcodes, else the arg kind.
_STEP: list[int | None] = [None] * 256
for _op in pickletools.opcodes:
    _code = ord(_op.code)
    _NAMES[_code] = _op.name
    _PROTO_OF[_code] = _op.proto
    _arg = _op.arg
    if _arg is None:
        _STEP[_code] = 1
    elif _arg.n >= 0:
        _STEP[_code] = 1 + _arg.n
    elif _op.name in ("GLOBAL", "INST"):
        _STEP[_code] = _TWO_LINES
    else:
        _STEP[_code] = _ARG_KIND[_arg.n]
_STOP, _PROTO, _FRAME = ord("."), 0x80, 0x95
_LONG_BINPUT, _PUT, _BINUNICODE = ord("r"), ord("p"), ord("X")
_EXT = frozenset({0x82, 0x83, 0x84})
# Opcodes whose call of find_class the inert pass matches to their offsets, in order.
_NAMING = frozenset({ord("c"), ord("i"), 0x93})  # GLOBAL, INST, STACK_GLOBAL
# Opcodes that always take the slow path: they carry something the walk must look at.
_WATCHED = frozenset({_STOP, _PROTO, _FRAME} | _EXT | _NAMING)
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_WELL_FORMED = attrgetter("well_formed")


# ------------------------------------------------------------------ the fast tokenizer
# A torch.save pickle is ~30 opcodes per tensor, all from WEIGHTS_ONLY_OPCODES; a Python
# loop costs ~70 ns per opcode. The regex below tokenizes runs of those opcodes in C: each
# alternative is exactly one opcode with its exact argument size (alternatives start with
# distinct opcode bytes, so at most one matches: the tokenization is the sequential one),
# and an empty group after each opcode byte records which opcodes the run used. It stops
# at anything it does not cover (PROTO, STOP, GLOBAL, strings of 256+ bytes, other
# opcodes, truncation), which the Python loop then handles one opcode at a time. LONG_BINPUT
# is covered only below 2**k <= len(data), so every memo index the memory-bomb check
# would flag reaches the Python loop. Only opcodes in WEIGHTS_ONLY_OPCODES are covered, so
# the first offset of every opcode outside it is still found by the Python loop.
_FAST_FIXED = (  # (opcode, argument bytes), the most frequent in torch pickles first
    *(("r", -1), ("h", 1), ("K", 1), ("X", -4), ("(", 0), ("t", 0), ("\x85", 0)),
    *(("R", 0), ("Q", 0), ("\x89", 0), (")", 0), ("q", 1), ("u", 0), ("}", 0), ("J", 4)),
    *(("M", 2), ("G", 8), ("N", 0), ("j", 4), ("\x88", 0), ("s", 0), ("a", 0), ("e", 0)),
    *(("b", 0), ("]", 0), ("\x8f", 0), ("\x86", 0), ("\x87", 0), ("\x81", 0)),
    *(("U", -1), ("\x8a", -1)),
)
_FAST_OPS = tuple(ord(code) for code, _ in _FAST_FIXED)
_FAST_START = bytes(1 if i in _FAST_OPS else 0 for i in range(256))  # 1: a run may start
_NOT_FAST = frozenset(range(256)) - frozenset(_FAST_OPS)
_FAST_MIN_BYTES = 8192  # smaller pickles: the Python loop is cheaper than compiling
_MAX_FAST_STRING = 256  # bytes


def _byte(value: int) -> bytes:
    return re.escape(bytes([value]))


def _counted(zeros: int) -> bytes:
    """A length (one byte, then ``zeros`` zero bytes) below 256 and that many bytes.

    A two-level trie on the length byte (lookahead on its high nibble), so a match tests
    about 16 alternatives rather than 256.
    """
    high = []
    for hi in range(_MAX_FAST_STRING // 16):
        low = b"|".join(
            _byte(16 * hi + lo) + b"\0" * zeros + (b".{%d}" % (16 * hi + lo)) for lo in range(16)
        )
        high.append(b"(?=[" + _byte(16 * hi) + b"-" + _byte(16 * hi + 15) + b"])(?:" + low + b")")
    return b"(?:" + b"|".join(high) + b")"


def _below(k: int) -> bytes:
    """Four bytes of a little-endian uint32 below ``2**k`` (0 <= k <= 32)."""
    out = b""
    for byte in range(4):
        bits = min(max(k - 8 * byte, 0), 8)
        out += b"." if bits == 8 else b"[\\x00-" + _byte((1 << bits) - 1) + b"]"
    return out


@functools.lru_cache(maxsize=32)
def _fast_run(k: int) -> Callable[[bytes, int], re.Match[bytes]]:
    """``match(data, pos)`` of a run of covered opcodes, for memo indices below ``2**k``."""
    alts = []
    for code, size in _FAST_FIXED:
        head = _byte(ord(code)) + b"()"
        if code == "r":
            alts.append(head + _below(k))
        elif size >= 0:
            alts.append(head + b"." * size)
        else:
            alts.append(head + _counted(3 if size == -4 else 0))
    return re.compile(b"(?s)(?:" + b"|".join(alts) + b")*+").match  # type: ignore[return-value]


class _Truncated(Exception):
    """The bytes end before STOP."""


class _Malformed(Exception):
    """The bytes are not a pickle opcode stream."""


@dataclass
class _Walk:
    end: int | None = None
    protocol: int | None = None
    first: dict[int, int] = field(default_factory=dict)  # opcode -> first offset (see _walk)
    fast_seen: set[int] = field(default_factory=set)  # opcodes the fast runs used
    inline_globals: list[str] = field(default_factory=list)
    naming_pos: list[int] = field(default_factory=list)  # GLOBAL/INST/STACK_GLOBAL offsets
    ext_codes: list[int] = field(default_factory=list)
    bad_memo: int | None = None
    error: str | None = None
    truncated: bool = False
    need: int = 1  # at least this many more bytes are needed to go on (when truncated)

    fast: bool = False  # the fast runs were used

    @property
    def seen(self) -> set[int]:
        return self.fast_seen | self.first.keys()

    @property
    def exact_first(self) -> frozenset[int] | range:
        """Opcodes whose ``first`` offset is their first use (the fast runs skip others)."""
        return _NOT_FAST if self.fast else range(256)


def _walk(data: bytes, pos: int) -> _Walk:
    """Tokenize one pickle from ``pos``; never builds objects. See the module docstring.

    ``first`` holds the first offset of every opcode the Python loop met, which includes
    every opcode outside WEIGHTS_ONLY_OPCODES (the fast runs cover only opcodes inside it).
    """
    out = _Walk()
    # Per-call step table, filled on an opcode's first sighting: the Python loop then only
    # indexes and adds. LONG_BINPUT and BINUNICODE have their own branches: one is
    # checked, one has a length.
    step = [0] * 256
    memo_limit = len(data)
    fast = None
    if len(data) - pos >= _FAST_MIN_BYTES:
        fast = _fast_run(memo_limit.bit_length() - 1)
        out.fast = True
    fast_start, fast_ops, fast_seen, first = _FAST_START, _FAST_OPS, out.fast_seen, out.first
    u32 = _U32
    try:
        while True:
            op = data[pos]
            if fast is not None and fast_start[op]:
                match = fast(data, pos)
                if match.end() > pos:
                    pos = match.end()
                    took_part = map(is_not, match.groups(), repeat(None))
                    fast_seen.update(compress(fast_ops, took_part))
                    op = data[pos]
            s = step[op]
            if s:
                pos += s
                continue
            if op == _LONG_BINPUT:
                first.setdefault(op, pos)
                if u32(data, pos + 1)[0] >= memo_limit and out.bad_memo is None:
                    out.bad_memo = u32(data, pos + 1)[0]
                pos += 5
                continue
            if op == _BINUNICODE:
                first.setdefault(op, pos)
                pos += 5 + u32(data, pos + 1)[0]
                continue
            if op == _STOP:
                first.setdefault(op, pos)
                out.end = pos + 1
                break
            pos = _other(data, pos, op, out, step)
    except (IndexError, struct.error, _Truncated):
        out.truncated = True
        out.need = max(pos + 1 - len(data), 1)
    except _Malformed as exc:
        out.error = str(exc)
    return out


def _other(data: bytes, pos: int, op: int, out: _Walk, step: list[int]) -> int:
    """Return the offset after opcode ``op`` at ``pos`` (any but STOP and the fast ones)."""
    kind = _STEP[op]
    if kind is None:
        raise _Malformed(f"byte 0x{op:02x} at offset {pos} is not a pickle opcode")
    out.first.setdefault(op, pos)
    if op in _NAMING:
        out.naming_pos.append(pos)
    if kind < 0:
        return _skip_variable(data, pos, op, kind, out)
    if op in _WATCHED:
        _watch(data, pos, op, out)
    else:
        step[op] = kind
    return pos + kind


def _watch(data: bytes, pos: int, op: int, out: _Walk) -> None:
    if op == _PROTO:
        out.protocol = data[pos + 1]
    elif op in _EXT:
        size = _STEP[op] - 1  # type: ignore[operator]
        out.ext_codes.append(int.from_bytes(data[pos + 1 : pos + 1 + size], "little"))
    elif op == _FRAME and _U64(data, pos + 1)[0] > len(data) - pos - 9:
        raise _Truncated


def _skip_variable(data: bytes, pos: int, op: int, kind: int, out: _Walk) -> int:
    """Return the offset after a variable-length opcode at ``pos``."""
    if kind == _LEN4U:
        return pos + 5 + _U32(data, pos + 1)[0]
    if kind == _LEN1:
        return pos + 2 + data[pos + 1]
    if kind == _LEN4:
        size = _I32(data, pos + 1)[0]
        if size < 0:
            raise _Malformed(f"{_NAMES[op]} at offset {pos} has a negative length")
        return pos + 5 + size
    if kind == _LEN8U:
        return pos + 9 + _U64(data, pos + 1)[0]
    end = data.find(b"\n", pos + 1)
    if end < 0:
        raise _Truncated
    if kind == _TWO_LINES:
        end2 = data.find(b"\n", end + 1)
        if end2 < 0:
            raise _Truncated
        module = data[pos + 1 : end].decode("utf-8", "replace")
        name = data[end + 1 : end2].decode("utf-8", "replace")
        out.inline_globals.append(qualify(module, name))
        return end2 + 1
    if op == _PUT:
        try:
            index = int(data[pos + 1 : end])
        except ValueError:
            raise _Malformed(f"PUT at offset {pos} has no integer index") from None
        if index >= len(data) and out.bad_memo is None:
            out.bad_memo = index
    return end + 1


def _is_plain(obj: object, budget: int) -> bool:
    """True for data made only of str/bytes/int/float/bool/None/tuple/list/dict.

    ``budget`` caps the visits: the memo lets a list contain itself or the same list twice
    at every level, so a walk without one could run forever (cyclic data counts as not
    plain). No ``id()``-based visited set: it would show up in audit hooks as our own noise.
    """
    stack = [obj]
    while stack:
        budget -= 1
        if budget < 0:
            return False
        item = stack.pop()
        kind = type(item)
        if kind in (str, bytes, int, float, bool, type(None)):
            continue
        if kind is dict:
            stack.extend(item.keys())  # type: ignore[attr-defined]
            stack.extend(item.values())  # type: ignore[attr-defined]
        elif kind in (tuple, list):
            stack.extend(item)  # type: ignore[call-overload]
        else:
            return False
    return True


def _vet(walk: _Walk, findings: list[Finding]) -> bool:
    """Note what the walk found wrong; True when the inert pass may run."""
    ok = walk.end is not None
    if walk.truncated:
        findings.append(Finding("truncated_pickle", "the pickle ends before its STOP opcode"))
    if walk.error is not None:
        findings.append(Finding("malformed_pickle", walk.error))
    if walk.ext_codes:
        findings.append(
            Finding(
                "extension_opcode",
                "EXT opcodes name globals through the process-wide copyreg registry",
                tuple(str(c) for c in walk.ext_codes),
            )
        )
        ok = False
    if walk.bad_memo is not None:
        findings.append(
            Finding(
                "memo_index_out_of_range",
                f"memo index {walk.bad_memo} exceeds the pickle's size (a memory bomb)",
            )
        )
        ok = False
    return ok


def scan_pickle(data: bytes, start: int = 0, *, keep_root: bool = False) -> PickleScan:
    """Scan the pickle that starts at ``data[start]``; never runs any of its code.

    Args:
        data: bytes holding the pickle (possibly followed by other data).
        start: offset of its first opcode (bytes).
        keep_root: return the rebuilt object as ``root`` when it is plain data.

    Returns the scan. Problems are ``findings``, never exceptions; codes:
    ``unsupported_opcode`` (outside :data:`WEIGHTS_ONLY_OPCODES`), ``truncated_pickle``,
    ``malformed_pickle``, ``extension_opcode``, ``memo_index_out_of_range``,
    ``unpickle_failed``, ``call_on_result`` (a call's result called: getattr chains),
    ``non_storage_persistent_id``. The inert pass is skipped when the walk finds the
    stream truncated, malformed, using EXT opcodes or oversized memo indices; ``globals``
    then holds the GLOBAL/INST names read inline.
    """
    walk = _walk(data, start)
    opcodes = frozenset(_NAMES[op] for op in walk.seen)
    protocol = walk.protocol
    if protocol is None and walk.seen:
        protocol = max(_PROTO_OF[op] for op in walk.seen)
    findings: list[Finding] = []
    unsupported = sorted(opcodes - WEIGHTS_ONLY_OPCODES)
    if unsupported:
        findings.append(
            Finding(
                "unsupported_opcode",
                "opcodes outside the protocol-2 set torch's weights-only unpickler implements",
                tuple(unsupported),
            )
        )
    if not _vet(walk, findings):
        return PickleScan(
            start=start,
            end=walk.end,
            protocol=protocol,
            opcodes=opcodes,
            globals=tuple(dict.fromkeys(walk.inline_globals)),
            applied={},
            persistent_ids=(),
            setitem_targets=(),
            append_targets=(),
            completed=False,
            needed_bytes=walk.need if walk.truncated else 0,
            findings=tuple(findings),
        )
    rec, root, error = inert_load(data[start : walk.end], quick=not keep_root)
    facts = _facts(walk, rec, root, start) if error is None else None
    names = dict(rec.globals)
    if error is not None:
        findings.append(Finding("unpickle_failed", f"{type(error).__name__}: {error}"))
        names.update(dict.fromkeys(walk.inline_globals))
    if rec.calls_on_results:
        findings.append(
            Finding(
                "call_on_result",
                "the pickle calls the result of a call (a getattr chain or nested loader)",
                tuple(rec.calls_on_results),
            )
        )
    if not all(map(_WELL_FORMED, rec.persistent_ids)):
        odd = tuple(dict.fromkeys(p.typename for p in rec.persistent_ids if not p.well_formed))
        findings.append(
            Finding(
                "non_storage_persistent_id",
                "persistent ids other than torch's ('storage', type, key, location, numel)",
                odd,
            )
        )
    applied: dict[str, set[str]] = {}
    for origin, how in rec.applied:
        applied.setdefault(origin, set()).add(how)
    return PickleScan(
        start=start,
        end=walk.end,
        protocol=protocol,
        opcodes=opcodes,
        globals=tuple(names),
        applied={k: frozenset(v) for k, v in applied.items()},
        persistent_ids=tuple(rec.persistent_ids),
        setitem_targets=tuple(rec.setitem_targets),
        append_targets=tuple(rec.append_targets),
        completed=error is None,
        root=root
        if keep_root and error is None and _is_plain(root, 4 * (len(data) - start))
        else None,
        facts=facts,
        findings=tuple(findings),
    )


def _facts(walk: _Walk, rec: InertRecord, root: object, start: int) -> StreamFacts | None:
    """The :class:`StreamFacts` of a completed inert pass (offsets relative to ``start``)."""
    shape = describe_root(root)
    # One find_class call per GLOBAL/STACK_GLOBAL/INST, in stream order (EXT never gets here).
    if shape is None or len(rec.named) != len(walk.naming_pos):
        return None
    global_pos: dict[str, int] = {}
    for name, pos in zip(rec.named, walk.naming_pos, strict=True):
        global_pos.setdefault(name, pos - start)
    return StreamFacts(
        root=shape,
        numpy_dtypes=tuple(rec.numpy_dtypes),
        global_pos=global_pos,
        opcode_pos={
            _NAMES[op]: pos - start for op, pos in walk.first.items() if op in walk.exact_first
        },
    )
