"""The nesting check run before any unpickler (:mod:`ckptcompat.scan.nesting`).

One cell: the check is standard library only and reads bytes, not torch objects.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict

import pytest

from ckptcompat.scan.limits import MAX_NESTING_DEPTH
from ckptcompat.scan.nesting import too_deep

pytestmark = pytest.mark.one_cell


def _deep_key(levels: int) -> bytes:
    return b"\x80\x02}" + b")" + b"\x85" * (levels - 2) + b"Ns."


def test_the_limit_is_exact_for_tuples() -> None:
    """Guards an off-by-one that refuses a legal pickle or lets one level too many through:
    the dict is level 1, its key ``levels - 1`` tuples deep below it."""
    assert too_deep(_deep_key(MAX_NESTING_DEPTH)) is None
    assert too_deep(_deep_key(MAX_NESTING_DEPTH + 1)) == "max_nesting_depth"
    assert too_deep(_deep_key(200_000)) == "max_nesting_depth"


def test_hash_bomb_is_caught() -> None:
    """Guards the tuple hash bomb: ``t = (t, t)`` 40 times through the memo is shallow but
    hashes 2**40 items; its unfolded size passes the limit."""
    bomb = b"\x80\x02}q\x00)" + b"q\x01h\x01\x86" * 40 + b"Ns."
    assert too_deep(bomb) == "max_unfolded_tuple_items"
    assert too_deep(b"\x80\x02}q\x00)" + b"q\x01h\x01\x86" * 10 + b"Ns.") is None


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_ordinary_pickles_pass(protocol: int) -> None:
    """Guards false refusals of ordinary data at every protocol."""
    nested: object = 0
    for _ in range(50):
        nested = [nested, {"k": (nested,)}]
    objs = [
        {"a": [1, (2, (3,))], "b": {1, 2}, "c": frozenset({(1,), 2})},
        OrderedDict((f"layer{i}", (i, [i] * 3)) for i in range(500)),
        nested,
        tuple(range(10_000)),
    ]
    for obj in objs:
        assert too_deep(pickle.dumps(obj, protocol=protocol)) is None


def test_lists_nested_through_the_memo() -> None:
    """Guards lists nested by ``L = [L]`` through the memo (no tuple opcode at all)."""
    deep = b"\x80\x02]" + b"q\x000]h\x00a" * 300 + b"."
    assert too_deep(deep) == "max_nesting_depth"


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x80\x02(((", b"\xff\xfe", b"\x80\x02X\xff\xff"])
def test_broken_streams_never_raise(data: bytes) -> None:
    """Guards the check raising on what it exists to judge: broken streams are None
    (the walk and the unpickler report them)."""
    assert too_deep(data) is None
