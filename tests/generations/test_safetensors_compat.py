"""Tests of ckptcompat.generations.safetensors_compat: predictions == the real safetensors.

Runs in every cell: whether ``safetensors.torch.load_file`` / ``load`` build a dtype depends
on the torch version (F8_E8M0 from 2.7, F4 from 2.8). Each test loads the same bytes with
the installed safetensors (the ``test`` extra's pin) and compares with the prediction for
this torch minor and that release.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

safetensors = pytest.importorskip("safetensors")
from safetensors.torch import load, load_file  # noqa: E402

from ckptcompat.doctor.rules import MINORS  # noqa: E402
from ckptcompat.errors import CheckpointError  # noqa: E402
from ckptcompat.generations import safetensors_compat as compat  # noqa: E402
from ckptcompat.generations.safetensors_header import (  # noqa: E402
    DTYPES,
    parse_header,
)
from ckptcompat.generations.tensors import load_safetensors  # noqa: E402

MINOR = ".".join(torch.__version__.split(".")[:2])
RELEASE = compat.release_row(safetensors.__version__)


def _file(header: dict | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _one(dtype: str, shape: list[int]) -> bytes:
    n = DTYPES[dtype].bits * (shape[0] if shape else 1) // 8
    return _file({"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, n]}}, b"\x01" * n)


def _corpus() -> dict[str, bytes]:
    files = {f"{name}[8]": _one(name, [8]) for name in DTYPES}
    files |= {f"{name}[0]": _one(name, [0]) for name in ("F32", "U16", "F8_E4M3")}
    files["duplicate"] = _file(
        b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        b'"a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}',
        b"\x01\x00\x02\x00",
    )
    files["metadata"] = _file(
        {"__metadata__": {"y": "a"}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
        bytes(4),
    )
    return files


def _outcome(call) -> str:
    try:
        call()
    except Exception as exc:  # the real library's failure, whatever its type
        return f"fails: {type(exc).__name__}"
    return "reads"


@pytest.mark.parametrize("name", sorted(_corpus()))
def test_prediction_equals_the_real_safetensors(name: str, tmp_path: Path) -> None:
    """Guards every dtype row and the load(bytes)/load_file split against the library
    itself in this torch cell: F8_E8M0/F4 need newer torch under load_file and fail
    load(bytes) on every torch; U16 and empties differ by release; duplicates read."""
    blob = _corpus()[name]
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    header = parse_header(blob, len(blob), keep_last_duplicate=True)
    predicted_file = compat.load_file_reads(header, MINOR, RELEASE)
    predicted_bytes = compat.load_bytes_reads(header, MINOR, RELEASE)
    assert _outcome(lambda: load_file(path)).split(":")[0] == predicted_file.split(":")[0]
    assert _outcome(lambda: load(blob)).split(":")[0] == predicted_bytes.split(":")[0]


@pytest.mark.parametrize("name", sorted(_corpus()))
def test_ckptcompat_reader_matches_its_prediction_and_load_file(name: str) -> None:
    """Guards ckptcompat's own reader (migrate's): it reads exactly where predicted on this
    torch, and what it reads equals load_file's tensors bit for bit (F4's halved shape
    included)."""
    blob = _corpus()[name]
    header = parse_header(blob, len(blob), keep_last_duplicate=True)
    predicted = compat.ckptcompat_reads(header, MINOR, MINORS)
    try:
        ours = load_safetensors(blob)
    except CheckpointError:
        assert predicted.startswith("fails"), predicted
        return
    assert predicted.startswith("reads"), predicted
    if compat.load_file_reads(header, MINOR, RELEASE) == "reads":
        theirs = _load_file_bytes(blob)
        assert list(ours) == list(theirs)
        for key, tensor in ours.items():
            assert tensor.dtype == theirs[key].dtype and tensor.shape == theirs[key].shape
            assert torch.equal(tensor.view(torch.uint8), theirs[key].view(torch.uint8))


def _load_file_bytes(blob: bytes) -> dict[str, torch.Tensor]:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(blob)
        f.flush()
        return load_file(f.name)


@pytest.mark.parametrize(
    "blob",
    [
        _file({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
               "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, bytes(4)),
        _file({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
               "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}, bytes(6)),
        _file({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, bytes(8)),
        _file({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, bytes(2)),
        _file({"__metadata__": {"k": 1}}, b""),
        _file(b'{"__metadata__":{},"__metadata__":{}}', b""),
        _file(b'{"a":', b""),
        _file({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)),
        struct.pack("<Q", 100_000_001) + b"{}",
    ],
    ids=["shared", "hole", "trailing", "past-end", "meta-int", "meta-twice", "json", "dtype",
         "huge"],
)  # fmt: skip
def test_structural_faults_are_refused_by_both(blob: bytes, tmp_path: Path) -> None:
    """Guards 'refused by every release': a shared storage, a hole, trailing or missing
    bytes, non-string metadata, a repeated __metadata__, bad JSON, an unknown dtype and a
    header over 100 MB fail the real load_file and load, and our reader raises a typed
    CheckpointError (never a crash) even in its lenient doctor mode."""
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    assert _outcome(lambda: load_file(path)).startswith("fails")
    assert _outcome(lambda: load(blob)).startswith("fails")
    with pytest.raises(CheckpointError):
        parse_header(blob, len(blob), keep_last_duplicate=True)


@pytest.mark.one_cell
def test_release_rows_and_spans() -> None:
    """Guards the mapping of an installed version onto the probed rows (a release between
    two changes behaves as the older one), and the labels the doctor prints.
    One cell: no torch behaviour involved."""
    assert compat.release_row("0.5.3") == "0.4.4"
    assert compat.release_row("0.6.2") == "0.6.1"
    assert compat.release_row("0.2.8") == "0.3.3"
    assert compat.release_row("0.9.1+local") == "0.8.0"
    assert compat.release_row("0.7.0rc1") == "0.7.0"
    with pytest.raises(ValueError):
        compat.release_row("main")
    assert compat.release_span("0.4.4") == "0.4.4-0.5.3"
    assert compat.release_span("0.8.0") == "0.8.0+"
