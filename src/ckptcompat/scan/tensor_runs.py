"""The nesting check over runs of torch.save's tensor records, one regex match a run.

:func:`too_deep` is what the scan calls: for pickles of :data:`_FAST_MIN_BYTES` (2048
bytes) or more it first runs :func:`fast_past`, which is
:func:`ckptcompat.scan.nesting._past` (the reference machine, ~0.3 us per opcode in
Python: 40 ms for a 4096-tensor state_dict's 123k opcodes) with one
addition: where the stream holds a run of tensor records of the form below, it checks the
run's premise and applies the run's effect in one step. :func:`fast_past` returns None
only when ``_past`` returns None; otherwise :data:`ABORT` (or the limit it found), and
:func:`too_deep` answers with the reference :func:`ckptcompat.scan.nesting.too_deep`.
Standard library only.

The record (torch 2.4-2.15: ``torch/serialization.py`` ``persistent_id`` and
``Tensor.__reduce_ex__``; one per tensor of a state_dict)::

    key     BINUNICODE 'w.0' PUT
    value   GET(_rebuild_tensor_v2) MARK
              MARK GET('storage') GET(<dtype>Storage) BINUNICODE '<key>' PUT GET('cpu')
              <numel> TUPLE PUT BINPERSID                   (the storage: an atom)
              <offset> <sizes> <strides> NEWFALSE|NEWTRUE
              GET(OrderedDict) EMPTY_TUPLE REDUCE PUT       (backward hooks)
            TUPLE PUT REDUCE PUT

<sizes> and <strides> are each EMPTY_TUPLE (0-d; not memoized), 1-3 ints and TUPLE1-3
PUT, or MARK, 4-16 ints, TUPLE PUT; ints are BININT1/BININT2/BININT/LONG1 (atoms); strings
are under 256 bytes. A run is consecutive records whose five GETs use the same five
encodings as its first record's.

Why the step is exact. If each GET of a record pushes an atom (0), ``_past`` on the record
pushes the key (0) and the value (REDUCE: the depth of its argument tuple, 2), leaves the
marks as they were (its MARKs close inside it), passes no limit on the way (depth <= 2,
fewer than 50 unfolded tuple items), and changes the memo only at the record's own PUT
indices. Its GETs push atoms when the five indices hold no value in ``_past``'s memo: not
in this machine's ``memo`` (``_past`` stores only non-atoms), and not PUT by any run taken
before nor by this run itself (its PUTs are not applied to ``memo``). "PUT by a run" is
tested by searching the run's bytes for the PUT encodings of the index, which finds every
real PUT (and maybe bytes that only look like one: the run is then not taken, or the
check aborts, which costs time, never correctness). After a run the stack holds its
records' 2n values; when the next opcode is SETITEMS/APPENDS/ADDITEMS, which fold every
item above the mark into one depth, one (key, value) pair folds the same, so the count is
not needed there; elsewhere the records are counted. A later GET of an index a run may
have PUT aborts, unless a PUT of a non-atom outside the runs set it since; MEMOIZE (its
index is the memo's size) aborts.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable
from typing import NamedTuple

from ckptcompat.scan import nesting
from ckptcompat.scan.limits import MAX_NESTING_DEPTH, MAX_UNFOLDED_TUPLE_ITEMS
from ckptcompat.scan.nesting import (
    _ADD_MARK,
    _ADD_ONE,
    _ADD_TWO,
    _ATOM,
    _CALL_TWO,
    _EMPTY,
    _FROM_MARK,
    _GET,
    _KINDS,
    _LEN4U,
    _MARK,
    _MEMOIZE,
    _NOTHING,
    _POP_ONE,
    _PUT,
    _SIZES,
    _STOP,
    _TUPLE_N,
    _TUPLE_ONE,
    _U32,
    _add,
    _container,
    _deepest,
    _index,
    _other,
    _skip,
)

__all__ = ["ABORT", "fast_past", "too_deep"]

ABORT = "abort"  #: :func:`fast_past` cannot vouch for the answer
_FAST_MIN_BYTES = 2048  # smaller pickles: the reference costs <= ~0.2 ms, no compile
_MAX_FAILED = 64  # run matches that found nothing before the search stops (speed only)
_MAX_RUNS = 64  # runs taken before the search stops (bounds the PUT searches)
_BINUNICODE = 0x58
_FOLDS = frozenset(b"ue\x90")  # SETITEMS, APPENDS, ADDITEMS: one depth for all items
_PACK_U32 = struct.Struct("<I").pack


def too_deep(
    data: bytes,
    start: int = 0,
    limit: int = MAX_NESTING_DEPTH,
    max_unfolded: int = MAX_UNFOLDED_TUPLE_ITEMS,
) -> str | None:
    """The limit the pickle at ``data[start:]`` goes past, or None: exactly
    :func:`ckptcompat.scan.nesting.too_deep` (see there for the arguments and the
    limits), sooner on torch.save's state_dicts. Never raises."""
    if len(data) - start >= _FAST_MIN_BYTES and fast_past(data, start, limit, max_unfolded) is None:
        return None
    return nesting.too_deep(data, start, limit, max_unfolded)  # it could not vouch, or a limit


def _counted_unicode() -> bytes:
    """BINUNICODE of fewer than 256 bytes: ``X``, its little-endian uint32 length, the
    bytes (a trie on the length byte, as in :mod:`.opcode_walk`)."""
    alts = []
    for hi in range(16):
        low = b"|".join(
            re.escape(bytes([16 * hi + lo])) + b"\0\0\0" + b".{%d}" % (16 * hi + lo)
            for lo in range(16)
        )
        lo_b, hi_b = re.escape(bytes([16 * hi])), re.escape(bytes([16 * hi + 15]))
        alts.append(b"(?=[" + lo_b + b"-" + hi_b + b"])(?:" + low + b")")
    return b"X(?:" + b"|".join(alts) + b")"


def _record(get: list[bytes], put: bytes) -> bytes:
    """The record pattern with its five GETs ``get`` and PUTs ``put`` (patterns)."""
    string = _counted_unicode()
    long1 = rb"\x8a(?:" + b"|".join(re.escape(bytes([n])) + b"." * n for n in range(9)) + b")"
    int_ = rb"(?:K.|M..|J....|" + long1 + b")"
    shape = (
        rb"(?:\)|" + int_ + rb"\x85" + put + b"|" + int_ * 2 + rb"\x86" + put + b"|"
        + int_ * 3 + rb"\x87" + put + rb"|\(" + int_ + b"{4,16}t" + put + b")"
    )  # fmt: skip
    return (
        string + put  # the key
        + get[0] + rb"\(\(" + get[1] + get[2] + string + put + get[3] + int_ + b"t" + put
        + b"Q" + int_ + shape + shape + rb"[\x88\x89]" + get[4] + rb"\)R" + put + b"t"
        + put + b"R" + put
    )  # fmt: skip


def _run(put: bytes) -> re.Pattern[bytes]:
    """A run: a record, then records with the same five GET encodings (groups g0-g4)."""
    first = [b"(?P<g%d>h.|j....)" % k for k in range(5)]
    later = [b"(?P=g%d)" % k for k in range(5)]
    return re.compile(b"(?s)" + _record(first, put) + b"(?:" + _record(later, put) + b")*+")


_WIDE_PUT = rb"r(?!.\0\0\0)...."
_ANY_GET = [b"(?:h.|j....)"] * 5


class _Patterns(NamedTuple):
    """The compiled run patterns (compiling them takes ~0.1 s: done on first use, so a
    process that never scans a pickle of :data:`_FAST_MIN_BYTES` pays nothing)."""

    wide: Callable[..., re.Match[bytes] | None]  # runs of LONG_BINPUTs of indices >= 256
    narrow: Callable[..., re.Match[bytes] | None]  # runs of BINPUTs (a file's first records)
    count_wide: re.Pattern[bytes]  # one wide record
    narrow_puts: re.Pattern[bytes]  # one narrow record, its PUT indices as groups


@functools.cache
def _patterns() -> _Patterns:
    return _Patterns(
        wide=_run(_WIDE_PUT).match,
        narrow=_run(b"q.").match,
        count_wide=re.compile(b"(?s)" + _record(_ANY_GET, _WIDE_PUT)),
        narrow_puts=re.compile(b"(?s)" + _record(_ANY_GET, b"q(.)")),
    )


class _Runs:
    """The runs taken, and whether one of them may have PUT an index.

    A narrow run's PUT indices are read exactly (a few dozen records at most). A wide
    run's are not: a PUT there is LONG_BINPUT of an index from 256 on (its pattern
    refuses smaller ones), so it never PUTs an index below 256, and a PUT of a larger
    ``i`` is the five bytes ``r`` and ``i`` as a little-endian uint32: searching the run's
    bytes for them finds every such PUT (it may also find five bytes that only look like
    one: the caller then gives up).
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.taken = 0
        self.wide: list[tuple[int, int, int]] = []  # (run number, start, end)
        self.narrow: dict[int, int] = {}  # index -> number of the last narrow run PUTting it
        self.cleared: dict[int, int] = {}  # index -> runs taken when a non-atom PUT set it
        self.clean: dict[int, int] = {}  # index -> wide runs searched without a PUT of it
        self.budget = 8 * len(data)  # bytes may_put may search before it gives up

    def may_put(self, index: int) -> bool:
        """True when a run taken since a non-atom PUT outside the runs last set ``index``
        may have PUT it. Each wide run is searched once per index; past the budget, True
        (the caller aborts)."""
        since = self.cleared.get(index, 0)
        if self.narrow.get(index, -1) >= since:
            return True
        if index < 256:
            return False  # no wide run PUTs it
        unsearched = self.wide[self.clean.get(index, 0) :]
        spans = [(at, end) for number, at, end in unsearched if number >= since]
        self.budget -= sum(end - at for at, end in spans)
        if self.budget < 0 or self.found(index, spans):
            self.clean.pop(index, None)
            return True
        self.clean[index] = len(self.wide)
        return False

    def found(self, index: int, spans: list[tuple[int, int]]) -> bool:
        """Whether a LONG_BINPUT of ``index`` may be in the wide runs ``spans`` (see the
        class)."""
        if index < 256:
            return False
        code, find = b"r" + _PACK_U32(index), self.data.find
        return any(find(code, at, end) >= 0 for at, end in spans)


def _take(
    data: bytes, pos: int, memo: dict[int, int], runs: _Runs, marks: list[int], depth: int
) -> tuple[int, int] | None:
    """``(end, values to push)`` for the run of records at ``pos`` when its premise holds
    (module docstring); None when there is no run there or it cannot be taken. ``marks``
    and ``depth`` (the stack's size) say whether the fold after the run reads every value
    the run pushed."""
    patterns = _patterns()
    wide = True
    match = patterns.wide(data, pos)
    if match is None:
        wide, match = False, patterns.narrow(data, pos)
        if match is None:
            return None
    end = match.end()
    gets = {code[1] if len(code) == 2 else _U32(code, 1)[0] for code in match.groups()}
    if not gets.isdisjoint(memo) or any(runs.may_put(g) for g in gets):
        return None
    if wide:
        if any(runs.found(g, [(pos, end)]) for g in gets):
            return None
        runs.wide.append((runs.taken, pos, end))
        count = None
    else:
        rows = patterns.narrow_puts.findall(data, pos, end)
        puts = set(b"".join(b"".join(row) for row in rows))
        if not gets.isdisjoint(puts):
            return None
        runs.narrow.update(dict.fromkeys(puts, runs.taken))
        count = len(rows)
    runs.taken += 1
    if end < len(data) and data[end] in _FOLDS and marks and marks[-1] <= depth:
        return end, 2  # one (key, value) pair: the fold reads only the deepest item
    if count is None:
        count = len(patterns.count_wide.findall(data, pos, end))
    return end, 2 * count


def fast_past(data: bytes, start: int, limit: int, max_unfolded: int) -> str | None:  # noqa: PLR0915 - _past's machine, plus the runs
    """``_past(data, start, limit, max_unfolded)`` when it returns None, else
    :data:`ABORT` or the limit passed (the caller then runs ``_past``). Never raises."""
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    runs = _Runs(data)
    pos, end, kinds, sizes = start, len(data), _KINDS, _SIZES
    push, pop, get, u32 = stack.append, stack.pop, memo.get, _U32
    retry_at, failed = start, 0
    try:
        while pos < end:
            op = data[pos]
            if op == _BINUNICODE and pos >= retry_at:
                try:
                    taken = _take(data, pos, memo, runs, marks, len(stack))
                except Exception:  # never guess: _past answers
                    return ABORT
                if taken is not None:
                    pos, count = taken
                    stack.extend((0, 2) * (count // 2))
                    if runs.taken >= _MAX_RUNS:
                        retry_at = end
                    continue
                failed += 1
                if failed >= _MAX_FAILED and not runs.taken:
                    retry_at = end
            kind = kinds[op]
            size = sizes[op]
            arg_at = pos + 1
            if size >= 0:
                pos = arg_at + size
            elif size == _LEN4U:
                pos = arg_at + 4 + u32(data, arg_at)[0]
            else:
                pos = _skip(data, arg_at, size)
            if pos > end:
                break
            if kind == _PUT:
                top = stack[-1]
                if top:
                    index = data[arg_at] if op == 0x71 else _index(data, op, arg_at, pos)
                    memo[index] = top
                    runs.cleared[index] = runs.taken
                continue
            if kind == _ATOM:
                push(0)
                continue
            if kind == _GET:
                index = data[arg_at] if op == 0x68 else _index(data, op, arg_at, pos)
                if runs.taken and runs.may_put(index):
                    return ABORT  # a run may have PUT it: its value is not in memo
                push(get(index, 0))
                continue
            if kind == _MARK:
                marks.append(len(stack))
                continue
            if kind == _CALL_TWO:
                args = pop() & 255
                func = stack[-1] & 255
                stack[-1] = args if args > func else func
                continue
            if kind == _FROM_MARK:
                at = marks.pop()
                items = stack[at:]
                del stack[at:]
                value = _container(items, op == 0x74)
            elif kind == _TUPLE_N:
                n = op - 0x84
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
                push(_TUPLE_ONE if op == 0x29 else 1)
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
                if kind == _STOP or kind < 0:
                    break
                if kind == _MEMOIZE:
                    return ABORT
                _other(kind, stack, marks, memo)
                continue
            push(value)
            if value & 255 > limit or value >> 8 > max_unfolded:
                break
    except (IndexError, KeyError, ValueError, TypeError, struct.error):
        return None  # where _past stops too: the same steps on the same stack
    for value in stack[-1:]:
        if value & 255 > limit:
            return "max_nesting_depth"
        if value >> 8 > max_unfolded:
            return "max_unfolded_tuple_items"
    return None
