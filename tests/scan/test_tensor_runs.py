"""The nesting check's fast path over runs of tensor records (:mod:`ckptcompat.scan.tensor_runs`).

Every test compares with the reference machine (``nesting._past``): the fast path may
answer None only where the reference does. One cell: the check reads bytes; torch only
writes the real pickles.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile

import pytest
import torch

from ckptcompat.scan import tensor_runs
from ckptcompat.scan.nesting import _past
from ckptcompat.scan.tensor_runs import ABORT, fast_past, too_deep

pytestmark = pytest.mark.one_cell

LIMIT, UNFOLDED = 200, 1 << 22


def _torch_pickle(tensors: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(tensors, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def _both(data: bytes) -> tuple[str | None, str | None]:
    return fast_past(data, 0, LIMIT, UNFOLDED), _past(data, 0, LIMIT, UNFOLDED)


def _put(index: int) -> bytes:
    return b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)


def _get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _record(key: str, gets: list[int], puts: list[int]) -> bytes:
    """One tensor record as torch.save writes it (see the module under test); ``gets``:
    rebuild, 'storage', storage class, location, OrderedDict; ``puts``: eight indices
    (key, storage key, pid tuple, sizes, strides, hooks, arguments, tensor)."""
    g, p = [_get(i) for i in gets], [_put(i) for i in puts]
    return (
        _str(key) + p[0]
        + g[0] + b"((" + g[1] + g[2] + _str(key) + p[1] + g[3] + b"K\x03t" + p[2] + b"Q"
        + b"K\x00K\x03\x85" + p[3] + b"K\x01\x85" + p[4] + b"\x89" + g[4] + b")R" + p[5]
        + b"t" + p[6] + b"R" + p[7]
    )  # fmt: skip


_PRELUDE = (
    b"ctorch._utils\n_rebuild_tensor_v2\n" + _put(1) + b"0"
    + _str("storage") + _put(2) + b"0"
    + b"ctorch\nFloatStorage\n" + _put(3) + b"0"
    + _str("cpu") + _put(4) + b"0"
    + b"ccollections\nOrderedDict\n" + _put(5) + b"0"
)  # fmt: skip


def _stream(records: list[bytes], prelude: bytes = _PRELUDE) -> bytes:
    """A protocol-2 pickle: ``prelude`` (globals and strings memoized at 1-5, popped),
    then a dict of the records."""
    return b"\x80\x02" + prelude + b"}" + _put(0) + b"(" + b"".join(records) + b"u."


def _records(count: int, first_put: int, gets: list[int] | None = None) -> list[bytes]:
    gets = gets or [1, 2, 3, 4, 5]
    return [
        _record(f"w.{i}", gets, list(range(first_put + 8 * i, first_put + 8 * i + 8)))
        for i in range(count)
    ]


@pytest.mark.parametrize("count", [1, 40, 400, 4096])
def test_torch_state_dicts_agree(count: int) -> None:
    """Guards the fast path on what torch.save writes (ranks 0-4, two dtypes, a shared
    storage): it must agree with the reference, and take the common case itself."""
    tensors = {f"w.{i}": torch.zeros((3,) * (i % 5)) for i in range(count)}
    tensors["half"] = torch.zeros(2, dtype=torch.float16)
    tensors["view"] = tensors["w.0"].view(-1)
    data = _torch_pickle(tensors)
    assert _past(data, 0, LIMIT, UNFOLDED) is None
    assert too_deep(data) is None
    if count >= 400:
        assert fast_past(data, 0, LIMIT, UNFOLDED) in (None, ABORT)


def test_a_plain_state_dict_is_taken_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the speed the fast path exists for: a plain 4096-tensor state_dict is
    answered without giving up (no ABORT), its records taken in a few runs."""
    data = _torch_pickle({f"w.{i}": torch.zeros(3) for i in range(4096)})
    taken: list[int] = []

    def spy(*args: object) -> tuple[int, int] | None:
        got = real(*args)
        if got is not None:
            taken.append(got[0] - args[1])  # type: ignore[operator]
        return got

    real = tensor_runs._take
    monkeypatch.setattr(tensor_runs, "_take", spy)
    assert _both(data) == (None, None)
    assert 1 <= len(taken) <= 8
    assert sum(taken) > 0.95 * len(data)


def test_a_deep_value_behind_a_get_is_found() -> None:
    """Guards a run taken over a GET of a deep value: the storage class index holds a
    tuple 250 levels deep, so every pid tuple is deeper than the limit."""
    prelude = _PRELUDE.replace(b"ctorch\nFloatStorage\n", b")" + b"\x85" * 250)
    data = _stream(_records(600, 300), prelude=prelude)
    assert _past(data, 0, LIMIT, UNFOLDED) == "max_nesting_depth"
    assert fast_past(data, 0, LIMIT, UNFOLDED) is not None
    assert too_deep(data) == "max_nesting_depth"


@pytest.mark.parametrize(
    ("chain", "first_put", "count", "limit"),
    [(5000, 10_000, 400, LIMIT), (200, 6, 30, 20), (10_100, 10_000, 400, LIMIT)],
    ids=["wide", "narrow", "index-inside-the-run"],
)
def test_a_chain_through_the_runs_own_puts_is_found(
    chain: int, first_put: int, count: int, limit: int
) -> None:
    """Guards a run whose GET reads a PUT of the same run: each record's storage-string
    GET is the previous record's pid tuple, so depth grows one level a record."""
    records = []
    for i in range(count):
        puts = list(range(first_put + 8 * i, first_put + 8 * i + 8))
        puts[2] = chain
        records.append(_record(f"w.{i}", [1, chain, 3, 4, 5], puts))
    data = _stream(records)
    expected = _past(data, 0, limit, UNFOLDED)
    assert expected == "max_nesting_depth"
    assert fast_past(data, 0, limit, UNFOLDED) is not None
    assert too_deep(data, limit=limit) == expected


def test_a_get_of_a_runs_put_after_the_run_gives_up() -> None:
    """Guards a GET, after a run, of an index the run PUT (tied weights): the value is
    not in the fast path's memo, so it must hand over to the reference."""
    tied = _str("tied") + _get(300 + 7)  # the first record's tensor
    data = _stream([*_records(600, 300), tied])
    assert fast_past(data, 0, LIMIT, UNFOLDED) == ABORT
    assert too_deep(data) == _past(data, 0, LIMIT, UNFOLDED) is None


@pytest.mark.parametrize("unfolded", [10_000, UNFOLDED])
def test_runs_outside_a_fold_are_counted(unfolded: int) -> None:
    """Guards the record count where it matters: records inside a TUPLE (not folded by
    SETITEMS) make a tuple whose unfolded size counts every item (1,201 here)."""
    records = b"".join(_records(600, 300))
    data = b"\x80\x02" + _PRELUDE + b"(" + records + b"t\x85" + _put(9) + b"."
    small = _past(data, 0, LIMIT, 1000)
    assert small == "max_unfolded_tuple_items"
    assert fast_past(data, 0, LIMIT, 1000) is not None
    assert too_deep(data, max_unfolded=1000) == small
    assert fast_past(data, 0, LIMIT, unfolded) is None
    assert _past(data, 0, LIMIT, unfolded) is None


def test_mutated_pickles_agree_with_the_reference() -> None:
    """Guards the fast path's premise checks against arbitrary damage: single-byte and
    splice mutations of a real state_dict pickle, each judged by both machines."""
    base = _torch_pickle({f"w.{i}": torch.zeros((2,) * (i % 4)) for i in range(300)})
    deep = b")" + b"\x85" * 250
    rng = random.Random(21)
    for _ in range(300):
        data = bytearray(base)
        if rng.random() < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            at = rng.randrange(len(data))
            data[at:at] = deep + rng.choice([b"q\x10", b"r\x00\x01\x00\x00", b"0", b"\x85"])
        blob = bytes(data)
        fast, ref = _both(blob)
        if fast is None:
            assert ref is None
        assert too_deep(blob) == ref
