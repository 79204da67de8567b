"""Tests of ckptcompat.generations.safetensors_header: the bounded header reader.

Header-only: no tensor is built, so nothing here depends on torch's version (one cell).
"""

from __future__ import annotations

import json
import struct

import pytest

from ckptcompat.errors import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    LimitExceededError,
)
from ckptcompat.generations.safetensors_header import (
    MAX_HEADER_BYTES,
    parse_header,
    read_header,
)

pytestmark = pytest.mark.one_cell


def _file(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_a_valid_header_is_read_in_data_order() -> None:
    """Guards the reader's account of a good file: tensors by offset, metadata, sizes."""
    blob = _file(
        {
            "b": _entry("F32", [2], 8, 16),
            "a": _entry("I64", [], 0, 8),
            "__metadata__": {"format": "pt"},
            "e": _entry("BF16", [0, 3], 16, 16),
        },
        bytes(16),
    )
    header = parse_header(blob, len(blob))
    assert [t.name for t in header.tensors] == ["a", "b", "e"]
    assert header.metadata == {"format": "pt"}
    assert header.data_bytes == 16 and header.dtypes == ("BF16", "F32", "I64")
    assert header.tensors[0].numel == 1 and header.tensors[2].numel == 0


def test_read_header_reads_a_file(tmp_path) -> None:
    """Guards read_header's own path: prefix, then exactly N header bytes, checked."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(_file({"a": _entry("U8", [3], 0, 3)}, b"abc"))
    assert read_header(path).tensors[0].shape == (3,)


@pytest.mark.parametrize(
    ("header", "data", "fragment"),
    [
        ({"a": _entry("F32", [2], 0, 4)}, bytes(4), "do not match its shape"),
        ({"a": _entry("F32", [1], 0, 4), "b": _entry("F32", [1], 2, 6)}, bytes(6), "share bytes"),
        ({"a": _entry("F32", [1], 4, 8)}, bytes(8), "leaves a hole"),
        ({"a": _entry("F32", [1], 0, 4)}, bytes(9), "cover the data buffer exactly"),
        ({"a": _entry("F32", [1], 0, 4)}, bytes(2), "do not cover|cover the data"),
        ({"a": _entry("F32", [-1], 0, 4)}, bytes(4), "malformed shape"),
        ({"a": _entry("F32", [True], 0, 4)}, bytes(4), "malformed shape"),
        ({"a": {"dtype": "F32", "shape": [1]}}, bytes(4), "malformed"),
        ({"a": _entry("F32", [1], 0, 4), "__metadata__": {"k": 1}}, bytes(4), "__metadata__"),
        ([1, 2], b"", "not a JSON object"),
    ],
)
def test_malformed_headers_are_corrupt(header, data, fragment) -> None:
    """Guards offsets that overlap, leave holes or run past the data (polyglot files), bad
    shapes and metadata: each a CorruptCheckpointError before any tensor is read."""
    blob = _file(header, data)  # type: ignore[arg-type]
    with pytest.raises(CorruptCheckpointError, match=fragment):
        parse_header(blob, len(blob))


def test_duplicate_keys_and_nan_are_refused() -> None:
    """Guards JSON the specification forbids: duplicate tensor names, NaN constants."""
    for text in (b'{"a": 1, "a": 2}', b'{"a": NaN}'):
        blob = struct.pack("<Q", len(text)) + text
        with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
            parse_header(blob, len(blob))


def test_a_huge_header_length_is_a_limit_error() -> None:
    """Guards a hostile length prefix (2**64 - 1): refused before any allocation."""
    for length in (MAX_HEADER_BYTES + 1, 2**64 - 1):
        blob = struct.pack("<Q", length) + b"{}"
        with pytest.raises(LimitExceededError) as info:
            parse_header(blob, len(blob))
        assert info.value.limit == "max_safetensors_header"


def test_truncation_and_unknown_dtypes() -> None:
    """Guards a header cut short and a dtype this reader does not know (typed, not KeyError)."""
    blob = _file({"a": _entry("F32", [1], 0, 4)}, bytes(4))
    for cut in (0, 7, 8, 20):
        with pytest.raises(CorruptCheckpointError):
            parse_header(blob[:cut], cut)
    odd = _file({"a": _entry("F7", [1], 0, 1)}, bytes(1))
    with pytest.raises(IncompatibleCheckpointError, match="does not know"):
        parse_header(odd, len(odd))


def test_deep_json_nesting_is_corrupt_not_a_recursion_crash() -> None:
    """Guards json's RecursionError on a hostile header nested 100000 deep."""
    text = b"{" + b'"a":[' * 100_000 + b"]" * 100_000 + b"}"
    blob = struct.pack("<Q", len(text)) + text
    with pytest.raises(CorruptCheckpointError):
        parse_header(blob, len(blob))


def test_f4_counts_half_bytes() -> None:
    """Guards the packed F4 size rule: 4 bits per element, a whole number of bytes."""
    good = _file({"a": _entry("F4", [4], 0, 2)}, bytes(2))
    assert parse_header(good, len(good)).tensors[0].dtype.bits == 4
    odd = _file({"a": _entry("F4", [3], 0, 2)}, bytes(2))
    with pytest.raises(CorruptCheckpointError):
        parse_header(odd, len(odd))


def test_what_every_safetensors_release_reads_is_read() -> None:
    """Guards refusing files every safetensors release (0.3.3-0.8.0, probed) reads:
    JSON whitespace before '{', "__metadata__": null, extra fields of an entry."""
    entry = {**_entry("U8", [2], 0, 2), "note": "x"}
    for text in (
        b'\n\t{"a": ' + json.dumps(entry).encode() + b"}",
        b'{"__metadata__": null, "a": ' + json.dumps(entry).encode() + b"}",
    ):
        blob = struct.pack("<Q", len(text)) + text + b"ab"
        header = parse_header(blob, len(blob))
        assert header.metadata == {} and header.tensors[0].shape == (2,)


def test_duplicates_are_kept_last_only_when_asked() -> None:
    """Guards the doctor's lenient mode: a duplicate tensor name or metadata key is read as
    every safetensors release reads it (the last wins) and listed; strict mode refuses it,
    and a repeated __metadata__ field or entry field is refused in both (as by 0.6+)."""
    text = (
        b'{"__metadata__": {"k": "1", "k": "2"}, '
        b'"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}, '
        b'"a": {"dtype": "I16", "shape": [2], "data_offsets": [0, 4]}}'
    )
    blob = struct.pack("<Q", len(text)) + text + bytes(4)
    with pytest.raises(CorruptCheckpointError, match="duplicate key"):
        parse_header(blob, len(blob))
    header = parse_header(blob, len(blob), keep_last_duplicate=True)
    assert header.tensors[0].dtype.name == "I16" and header.metadata == {"k": "2"}
    assert sorted(header.duplicates) == ["a", "k"]
    for bad in (
        b'{"__metadata__": {}, "__metadata__": {}}',
        b'{"a": {"dtype": "U8", "dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}',
    ):
        blob = struct.pack("<Q", len(bad)) + bad
        with pytest.raises(CorruptCheckpointError, match="duplicate key"):
            parse_header(blob, len(blob), keep_last_duplicate=True)


def test_shared_bytes_name_both_tensors_and_empty_tensors_may_share_an_offset() -> None:
    """Guards the shared-storage account: two tensors over the same bytes are refused
    naming both (safetensors: InvalidOffset); empty tensors at one offset are fine, as in
    every release; an empty tensor inside another's bytes is refused (as there)."""
    shared = _file({"a": _entry("U8", [4], 0, 4), "b": _entry("U8", [4], 0, 4)}, bytes(4))
    with pytest.raises(CorruptCheckpointError, match="'a' and 'b' share bytes"):
        parse_header(shared, len(shared))
    empties = _file(
        {"a": _entry("U8", [0], 0, 0), "b": _entry("U8", [0], 0, 0), "c": _entry("U8", [4], 0, 4)},
        bytes(4),
    )
    assert len(parse_header(empties, len(empties)).tensors) == 3
    inside = _file({"a": _entry("U8", [4], 0, 4), "b": _entry("U8", [0], 2, 2)}, bytes(4))
    with pytest.raises(CorruptCheckpointError):
        parse_header(inside, len(inside))


def test_save_model_aliases_and_f6_sizes() -> None:
    """Guards the reading of save_model's shared-tensor record ({dropped: kept} in
    __metadata__) and the 6-bit dtypes' size rule (4 elements in 3 bytes)."""
    blob = _file(
        {"__metadata__": {"y.w": "x.w", "format": "pt"}, "x.w": _entry("F32", [1], 0, 4)},
        bytes(4),
    )
    assert parse_header(blob, len(blob)).aliases == {"y.w": "x.w"}
    f6 = _file({"a": _entry("F6_E2M3", [4], 0, 3)}, bytes(3))
    assert parse_header(f6, len(f6)).tensors[0].dtype.bits == 6
