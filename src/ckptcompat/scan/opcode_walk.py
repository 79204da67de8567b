"""Tokenize one pickle's opcode stream without building objects; standard library only.

:func:`walk` reads opcodes with a table built from :mod:`pickletools` (no stack, no
objects); in pickles over 8 KiB, runs of weights-only opcodes are tokenized by one regular
expression in C (see ``_fast_run``). It yields the opcodes used, the protocol, the inline
GLOBAL/INST names, the offsets of the opcodes that name globals and of the first use of
each opcode outside the weights-only set, and the end of the pickle, and it vets the stream
for the inert pass (:mod:`.inert_unpickler`): unknown opcodes, truncation, EXT1/EXT2/EXT4
(the C unpickler would consult, and fill, the process-wide ``copyreg`` extension cache) and
memo indices beyond the pickle's size (the C unpickler grows its memo array to twice the
index: a memory bomb in ten bytes).

Cost on a 4096-tensor state_dict (123k opcodes, t215, one thread): ~3 ms (the Python loop
alone took ~9 ms).
"""

from __future__ import annotations

import functools
import pickletools
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_not

from ckptcompat.scan.torch_names import qualify

__all__ = ["OPCODE_NAMES", "PROTOCOL_OF", "WEIGHTS_ONLY_OPCODES", "Walk", "walk"]

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


_LINE, _TWO_LINES, _LEN1, _LEN4, _LEN4U, _LEN8U = -1, -2, -3, -4, -5, -6
_ARG_KIND = {
    pickletools.UP_TO_NEWLINE: _LINE,
    pickletools.TAKEN_FROM_ARGUMENT1: _LEN1,
    pickletools.TAKEN_FROM_ARGUMENT4: _LEN4,
    pickletools.TAKEN_FROM_ARGUMENT4U: _LEN4U,
    pickletools.TAKEN_FROM_ARGUMENT8U: _LEN8U,
}
#: opcode byte -> name, and -> the protocol that introduced it.
OPCODE_NAMES: dict[int, str] = {}
PROTOCOL_OF: dict[int, int] = {}
#: opcode byte -> total size (opcode + argument) for fixed-size opcodes, else the arg kind.
_STEP: list[int | None] = [None] * 256
for _op in pickletools.opcodes:
    _code = ord(_op.code)
    OPCODE_NAMES[_code] = _op.name
    PROTOCOL_OF[_code] = _op.proto
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
class Walk:
    """What :func:`walk` found in one pickle (offsets in bytes from the buffer's start)."""

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


def walk(data: bytes, pos: int) -> Walk:
    """Tokenize one pickle from ``pos``; never builds objects. See the module docstring.

    ``first`` holds the first offset of every opcode the Python loop met, which includes
    every opcode outside WEIGHTS_ONLY_OPCODES (the fast runs cover only opcodes inside it).
    """
    out = Walk()
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


def _other(data: bytes, pos: int, op: int, out: Walk, step: list[int]) -> int:
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


def _watch(data: bytes, pos: int, op: int, out: Walk) -> None:
    if op == _PROTO:
        out.protocol = data[pos + 1]
    elif op in _EXT:
        size = _STEP[op] - 1  # type: ignore[operator]
        out.ext_codes.append(int.from_bytes(data[pos + 1 : pos + 1 + size], "little"))
    elif op == _FRAME and _U64(data, pos + 1)[0] > len(data) - pos - 9:
        raise _Truncated


def _skip_variable(data: bytes, pos: int, op: int, kind: int, out: Walk) -> int:
    """Return the offset after a variable-length opcode at ``pos``."""
    if kind == _LEN4U:
        return pos + 5 + _U32(data, pos + 1)[0]
    if kind == _LEN1:
        return pos + 2 + data[pos + 1]
    if kind == _LEN4:
        size = _I32(data, pos + 1)[0]
        if size < 0:
            raise _Malformed(f"{OPCODE_NAMES[op]} at offset {pos} has a negative length")
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
