"""How deep a pickle nests its containers, found without building any object.

Hashing a tuple recurses in C with no recursion guard: a pickle that builds a tuple
nested ~200k levels deep and uses it as a dict key or set member (SETITEM, ADDITEMS,
FROZENSET, a persistent id's key) overflows the C stack of whatever unpickles it -- the
inert pass of the scan, the doctor's fallback walk and torch's own weights-only
unpickler alike (SIGSEGV, no exception to catch). :func:`nesting_depth` runs a stack
machine over the opcodes whose only values are depths (ints), so the check itself
cannot recurse, allocate per level or hash anything, and stops at
:data:`~ckptcompat.scan.limits.MAX_NESTING_DEPTH`.

The depth is exact for tuples and frozensets (immutable: their depth is fixed when they
are built, and they are the only containers whose hash recurses) and for containers
filled before they are shared; a list or dict filled after being put into another may be
counted shallower (the count is of the container's depth when it was inserted).
Standard library only.

Speed: the machine costs ~0.3 us per opcode in Python, 40 ms for a 4096-tensor
state_dict (123k opcodes). The scan therefore calls
:func:`ckptcompat.scan.tensor_runs.too_deep`, which takes each run of torch.save's tensor
records in one regular-expression match and answers None only when this module's
machine would; whatever it cannot vouch for is answered by :func:`too_deep` here, the
reference.
"""

from __future__ import annotations

import pickletools
import struct

from ckptcompat.scan.limits import MAX_NESTING_DEPTH, MAX_UNFOLDED_TUPLE_ITEMS

__all__ = ["too_deep"]

_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U64 = struct.Struct("<Q").unpack_from

# Opcode classes: how each changes the stack of depths.
(
    _ATOM,  # push an atom (depth 0): constants, globals, persistent ids
    _NOTHING,  # no stack change: PROTO, FRAME, READONLY_BUFFER, PUT*
    _EMPTY,  # push an empty container (depth 1)
    _FROM_MARK,  # pop to MARK, push a container of those items
    _TUPLE_N,  # pop n (1-3), push a tuple of them
    _ADD_ONE,  # pop an item into stack[-1] (APPEND, BUILD)
    _ADD_TWO,  # pop key and value into stack[-1] (SETITEM)
    _ADD_MARK,  # pop to MARK into stack[-1] (APPENDS, SETITEMS, ADDITEMS)
    _CALL_MARK,  # pop to MARK, push the result (OBJ, INST)
    _CALL_TWO,  # pop args and callable, push the result (REDUCE, NEWOBJ)
    _CALL_THREE,  # NEWOBJ_EX
    _POP_ONE,  # pop one, push an atom (BINPERSID)
    _POP_TWO,  # pop two, push an atom (STACK_GLOBAL)
    _MARK,
    _POP,
    _POP_MARK,
    _DUP,
    _PUT,
    _MEMOIZE,
    _GET,
    _STOP,
) = range(21)

# fmt: off
_ATOMS = (
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NONE",
    "NEWTRUE", "NEWFALSE", "GLOBAL", "PERSID", "NEXT_BUFFER", "EXT1", "EXT2", "EXT4",
)
# fmt: on
_CLASS: dict[str, int] = {
    **dict.fromkeys(_ATOMS, _ATOM),
    **dict.fromkeys(("PROTO", "FRAME", "READONLY_BUFFER"), _NOTHING),
    **dict.fromkeys(("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"), _EMPTY),
    **dict.fromkeys(("TUPLE", "LIST", "DICT", "FROZENSET"), _FROM_MARK),
    **dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3"), _TUPLE_N),
    **dict.fromkeys(("APPEND", "BUILD"), _ADD_ONE),
    "SETITEM": _ADD_TWO,
    **dict.fromkeys(("APPENDS", "SETITEMS", "ADDITEMS"), _ADD_MARK),
    **dict.fromkeys(("OBJ", "INST"), _CALL_MARK),
    **dict.fromkeys(("REDUCE", "NEWOBJ"), _CALL_TWO),
    "NEWOBJ_EX": _CALL_THREE,
    "BINPERSID": _POP_ONE,
    "STACK_GLOBAL": _POP_TWO,
    "MARK": _MARK,
    "POP": _POP,
    "POP_MARK": _POP_MARK,
    "DUP": _DUP,
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _PUT),
    "MEMOIZE": _MEMOIZE,
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _GET),
    "STOP": _STOP,
}

# opcode byte -> (class, argument: fixed size >= 0, or a negative kind as below)
_LINE, _TWO_LINES, _LEN1, _LEN4, _LEN4U, _LEN8U = -1, -2, -3, -4, -5, -6
_ARG_KIND = {
    pickletools.UP_TO_NEWLINE: _LINE,
    pickletools.TAKEN_FROM_ARGUMENT1: _LEN1,
    pickletools.TAKEN_FROM_ARGUMENT4: _LEN4,
    pickletools.TAKEN_FROM_ARGUMENT4U: _LEN4U,
    pickletools.TAKEN_FROM_ARGUMENT8U: _LEN8U,
}
_TABLE: list[tuple[int, int] | None] = [None] * 256
for _op in pickletools.opcodes:
    _arg = _op.arg
    if _arg is None:
        _size = 0
    elif _arg.n >= 0:
        _size = _arg.n
    elif _op.name in ("GLOBAL", "INST"):
        _size = _TWO_LINES
    else:
        _size = _ARG_KIND[_arg.n]
    _TABLE[ord(_op.code)] = (_CLASS[_op.name], _size)
_KINDS = [-1 if entry is None else entry[0] for entry in _TABLE]
_SIZES = [0 if entry is None else entry[1] for entry in _TABLE]


def too_deep(
    data: bytes,
    start: int = 0,
    limit: int = MAX_NESTING_DEPTH,
    max_unfolded: int = MAX_UNFOLDED_TUPLE_ITEMS,
) -> str | None:
    """The limit the pickle at ``data[start:]`` goes past, or None.

    Args:
        data: the bytes holding the pickle.
        start: offset of its first opcode (bytes).
        limit: the deepest container nesting allowed (``"max_nesting_depth"``).
        max_unfolded: the most items one tuple may hold counted through its nested
            tuples, shared ones once per use (``"max_unfolded_tuple_items"``): hashing a
            tuple visits each, so ``t = (t, t)`` forty times over hashes for hours.

    A stream that is malformed, truncated or underflows its stack is judged on what comes
    before the break (other checks report those); the work is one step per opcode at most,
    and it stops at the first limit passed. Never raises.
    """
    return _past(data, start, limit, max_unfolded)


def _past(data: bytes, start: int, limit: int, max_unfolded: int) -> str | None:  # noqa: PLR0915 - one opcode table, inlined for speed
    """The machine: each stack value is ``unfolded items << 8 | depth`` (items of tuples
    only; depth is at most ``limit + 1 < 256`` before it stops). The memo keeps only
    values that are not atoms (a GET of any other index pushes 0: a PUT of an atom over a
    deeper entry leaves the deeper one, which can only overcount)."""
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    pos, end, kinds, sizes = start, len(data), _KINDS, _SIZES
    push, pop, get, u32 = stack.append, stack.pop, memo.get, _U32
    try:
        while pos < end:
            op = data[pos]
            kind = kinds[op]
            size = sizes[op]
            arg_at = pos + 1
            if size >= 0:
                pos = arg_at + size
            elif size == _LEN4U:  # BINUNICODE, BINBYTES: the most frequent variable size
                pos = arg_at + 4 + u32(data, arg_at)[0]
            else:
                pos = _skip(data, arg_at, size)
            if pos > end:
                break
            if kind == _PUT:
                top = stack[-1]
                if top:  # BINPUT (0x71) inline: the most frequent opcode of torch's pickles
                    memo[data[arg_at] if op == 0x71 else _index(data, op, arg_at, pos)] = top
                continue
            if kind == _ATOM:
                push(0)
                continue
            if kind == _GET:
                push(get(data[arg_at] if op == 0x68 else _index(data, op, arg_at, pos), 0))
                continue
            if kind == _MARK:
                marks.append(len(stack))
                continue
            if kind == _CALL_TWO:  # the result is no tuple; as deep as its arguments
                args = pop() & 255
                func = stack[-1] & 255
                stack[-1] = args if args > func else func
                continue
            if kind == _FROM_MARK:
                at = marks.pop()
                items = stack[at:]
                del stack[at:]
                value = _container(items, op == 0x74)  # TUPLE "t"
            elif kind == _TUPLE_N:
                n = op - 0x84  # TUPLE1 0x85, TUPLE2 0x86, TUPLE3 0x87
                if n == 1:
                    item = stack[-1]
                    value = ((item >> 8) + 2) << 8 | ((item & 255) + 1)
                    stack[-1] = value
                    if value & 255 > limit or value >> 8 > max_unfolded:
                        break
                    continue
                if len(stack) < n:
                    break
                value = _container(stack[-n:], True)
                del stack[-n:]
            elif kind == _EMPTY:
                push(_TUPLE_ONE if op == 0x29 else 1)  # EMPTY_TUPLE ")"
                continue
            elif kind == _NOTHING:
                continue
            elif kind == _POP_ONE:
                stack[-1] = 0
                continue
            elif kind == _ADD_ONE:
                value = _add(pop(), pop())
            elif kind == _ADD_TWO:
                value_, key = pop(), pop()
                value = _add(max(value_ & 255, key & 255), pop())
            elif kind == _ADD_MARK:
                at = marks.pop()
                items = stack[at:]
                del stack[at:]
                value = _add(_deepest(items), pop())
            else:
                if kind == _STOP or kind < 0:  # the end, or a byte that is no opcode
                    break
                _other(kind, stack, marks, memo)
                continue
            push(value)
            if value & 255 > limit or value >> 8 > max_unfolded:
                break
    except (IndexError, KeyError, ValueError, TypeError, struct.error):
        return None  # malformed or truncated: the walk and the unpickler report it
    for value in stack[-1:]:
        if value & 255 > limit:
            return "max_nesting_depth"
        if value >> 8 > max_unfolded:
            return "max_unfolded_tuple_items"
    return None


_TUPLE_ONE = 1 << 8 | 1  # an empty tuple: one item's worth of hashing, depth 1


def _container(items: list[int], is_tuple: bool) -> int:
    # Plain loops: generator expressions in max()/sum() cost twice as much on the few
    # items a torch pickle's containers hold.
    depth, unfolded = 0, len(items) + 1
    for v in items:
        if v & 255 > depth:  # noqa: PLR1730 - max() is a call per item
            depth = v & 255
        unfolded += v >> 8
    return (unfolded << 8 | (depth + 1)) if is_tuple else depth + 1


def _deepest(items: list[int]) -> int:
    """The deepest of ``items`` (0 for none)."""
    depth = 0
    for v in items:
        if v & 255 > depth:  # noqa: PLR1730 - max() is a call per item
            depth = v & 255
    return depth


def _add(item: int, target: int) -> int:
    """``target`` (a list, dict, set or object) after ``item`` went into it."""
    depth = (item & 255) + 1
    return target if depth <= target & 255 else (target & ~255) | depth


def _other(kind: int, stack: list[int], marks: list[int], memo: dict[int, int]) -> None:
    """The rarer opcodes, which never deepen anything."""
    if kind == _CALL_MARK:
        stack.append(max((v & 255 for v in _pop_mark(stack, marks)), default=0))
    elif kind == _CALL_THREE:
        kwargs, args, cls = stack.pop(), stack.pop(), stack.pop()
        stack.append(max(kwargs & 255, args & 255, cls & 255))
    elif kind == _POP_ONE:
        stack[-1] = 0
    elif kind == _POP_TWO:
        stack.pop()
        stack[-1] = 0
    elif kind == _POP:
        if stack and (not marks or marks[-1] < len(stack)):
            stack.pop()
        else:
            _pop_mark(stack, marks)
    elif kind == _POP_MARK:
        _pop_mark(stack, marks)
    elif kind == _DUP:
        stack.append(stack[-1])
    elif kind == _MEMOIZE:
        memo[len(memo)] = stack[-1]


def _pop_mark(stack: list[int], marks: list[int]) -> list[int]:
    at = marks.pop()
    items = stack[at:]
    del stack[at:]
    return items


def _index(data: bytes, op: int, arg_at: int, end: int) -> int:
    if op in (0x72, 0x6A):  # LONG_BINPUT, LONG_BINGET
        return _U32(data, arg_at)[0]  # type: ignore[no-any-return]
    if op in (0x71, 0x68):  # BINPUT, BINGET
        return data[arg_at]
    return int(data[arg_at : end - 1])  # PUT/GET: a decimal line


def _skip(data: bytes, at: int, kind: int) -> int:
    """The offset after a variable-length argument starting at ``at``."""
    if kind == _LEN1:
        return at + 1 + data[at]
    if kind == _LEN4U:
        return at + 4 + _U32(data, at)[0]
    if kind == _LEN4:
        size = _I32(data, at)[0]
        if size < 0:
            raise ValueError("negative length")
        return at + 4 + size
    if kind == _LEN8U:
        return at + 8 + _U64(data, at)[0]
    line = data.find(b"\n", at)
    if line < 0:
        raise ValueError("no newline")
    if kind == _TWO_LINES:
        line = data.find(b"\n", line + 1)
        if line < 0:
            raise ValueError("no newline")
    return line + 1
