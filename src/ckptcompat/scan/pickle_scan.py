"""Static scan of one pickle stream: opcodes, globals, persistent ids. Never runs its code.

Standard library only (no torch, no numpy). Two passes over the bytes:

1. :func:`~ckptcompat.scan.opcode_walk.walk` tokenizes the opcode stream (no stack,
   no objects) and vets it for pass 2: unknown opcodes, truncation, EXT opcodes and memo
   indices beyond the pickle's size (see that module).
2. :func:`~ckptcompat.scan.inert_unpickler.inert_load` rebuilds the object graph
   with the C unpickler and inert placeholders for every global and persistent id, which
   resolves STACK_GLOBAL through the memo exactly as the real unpickler would and records
   what the pickle does to each global (see that module for why nothing can run). The
   same pass yields the :class:`StreamFacts` the doctor needs (root object, numpy dtype
   codes, first offsets of globals), so nothing else reads the pickle again.

Cost on a 4096-tensor state_dict (123k opcodes, t215, one thread): walk ~3.3 ms, inert
pass ~3.2 ms plus ~0.9 ms to check its 4096 persistent ids in bulk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ckptcompat.scan.inert_placeholders import InertRecord, RootShape, describe_root
from ckptcompat.scan.inert_unpickler import inert_load
from ckptcompat.scan.limits import MAX_NESTING_DEPTH, MAX_UNFOLDED_TUPLE_ITEMS
from ckptcompat.scan.opcode_walk import OPCODE_NAMES, PROTOCOL_OF, WEIGHTS_ONLY_OPCODES, Walk
from ckptcompat.scan.opcode_walk import walk as _walk_opcodes
from ckptcompat.scan.persistent_ids import PersistentRef
from ckptcompat.scan.tensor_runs import too_deep

__all__ = [
    "PAST",
    "Finding",
    "PickleScan",
    "StreamFacts",
    "scan_pickle",
]
_NAME_OF_OPCODE = OPCODE_NAMES.__getitem__


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
        persistent_ids: every persistent id, in order (a
            :class:`~ckptcompat.scan.persistent_ids.PersistentIds` after an inert
            pass: torch's thousands of storage ids stay columns until read).
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
    persistent_ids: Sequence[PersistentRef]
    setitem_targets: tuple[str, ...]
    append_targets: tuple[str, ...]
    completed: bool
    needed_bytes: int = 0
    root: Any = field(default=None, repr=False, compare=False)
    facts: StreamFacts | None = field(default=None, repr=False, compare=False)
    findings: tuple[Finding, ...] = ()


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


#: limit name -> what a pickle past it holds (the message of its finding).
PAST = {
    "max_nesting_depth": f"containers nested over {MAX_NESTING_DEPTH} levels deep (hashing "
    "such a tuple overflows the C stack)",
    "max_unfolded_tuple_items": f"a tuple holding over {MAX_UNFOLDED_TUPLE_ITEMS} items "
    "through shared nested tuples (hashing it would take hours)",
}


def _vet(walk: Walk, data: bytes, start: int, findings: list[Finding]) -> bool:
    """Note what the walk found wrong; True when the inert pass may run."""
    ok = walk.end is not None
    # Before any unpickler: a deep tuple used as a key overflows the C stack when hashed.
    limit = too_deep(data, start)
    if limit is not None:
        findings.append(Finding("limit_exceeded", PAST[limit], (limit,)))
        ok = False
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
    ``limit_exceeded`` (names the limit: ``max_nesting_depth``), ``unpickle_failed``,
    ``call_on_result`` (a call's result called: getattr chains),
    ``non_storage_persistent_id``. The inert pass is skipped when the walk finds the
    stream truncated, malformed, using EXT opcodes or oversized memo indices, or finds
    containers nested past :data:`~ckptcompat.scan.limits.MAX_NESTING_DEPTH`; ``globals``
    then holds the GLOBAL/INST names read inline.
    """
    walk = _walk_opcodes(data, start)
    opcodes = frozenset(OPCODE_NAMES[op] for op in walk.seen)
    protocol = walk.protocol
    if protocol is None and walk.seen:
        protocol = max(PROTOCOL_OF[op] for op in walk.seen)
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
    if not _vet(walk, data, start, findings):
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
    pids: Any = rec.persistent_ids
    if not pids.well_formed:
        odd = tuple(dict.fromkeys(p.typename for p in pids if not p.well_formed))
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
        persistent_ids=pids,
        setitem_targets=tuple(rec.setitem_targets),
        append_targets=tuple(rec.append_targets),
        completed=error is None,
        root=root
        if keep_root and error is None and _is_plain(root, 4 * (len(data) - start))
        else None,
        facts=facts,
        findings=tuple(findings),
    )


def _facts(walk: Walk, rec: InertRecord, root: object, start: int) -> StreamFacts | None:
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
            OPCODE_NAMES[op]: pos - start
            for op, pos in walk.first.items()
            if op in walk.exact_first
        },
    )
