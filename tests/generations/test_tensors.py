"""Tests of ckptcompat.generations.tensors: checked safetensors bytes -> tensors, and a fuzz.

Runs in every cell: which dtypes torch.frombuffer builds depends on torch's version.
"""

from __future__ import annotations

import random
import struct

import pytest
import torch

from ckptcompat.errors import CheckpointError, IncompatibleCheckpointError
from ckptcompat.generations.tensors import load_safetensors
from tests.generations.builders import safetensors_bytes, tiny_agent


def test_round_trip_of_every_byte_dtype() -> None:
    """Guards the byte view: values, shapes and dtypes come back exactly, scalars and empty
    tensors included, and the tensors own their memory."""
    tensors = {
        "f32": torch.randn(2, 3),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "f16": torch.randn(3).to(torch.float16),
        "f64": torch.randn(()).double(),
        "i64": torch.arange(5),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.tensor([250], dtype=torch.uint8),
        "b": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
    }
    data = safetensors_bytes(tensors)
    back = load_safetensors(data)
    assert list(back) == list(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def test_f8_e8m0_follows_the_torch_version() -> None:
    """Guards the dtype table against torch: F8_E8M0 builds from torch 2.7
    (float8_e8m0fnu), and is a typed IncompatibleCheckpointError before."""
    text = b'{"s": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}}'
    data = struct.pack("<Q", len(text)) + text + b"\x7f\x80"
    if hasattr(torch, "float8_e8m0fnu"):
        assert load_safetensors(data)["s"].dtype == torch.float8_e8m0fnu
    else:
        with pytest.raises(IncompatibleCheckpointError, match="F8_E8M0"):
            load_safetensors(data)


def _mutations(blob: bytes, rng: random.Random) -> list[bytes]:
    out = [blob[:n] for n in range(0, len(blob), 7)]  # truncations
    for _ in range(300):  # bit flips, one to three
        raw = bytearray(blob)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(raw))
            raw[i] ^= 1 << rng.randrange(8)
        out.append(bytes(raw))
    n = struct.unpack_from("<Q", blob)[0]
    for length in (0, 1, n - 1, n + 1, len(blob), 2**32, 2**63, 2**64 - 1):  # header lengths
        out.append(struct.pack("<Q", length) + blob[8:])
    text = blob[8 : 8 + n]
    for old, new in ((b"[0, ", b"[4, "), (b'"data_offsets": [', b'"data_offsets": [99999999, ')):
        forged = text.replace(old, new, 1)  # overlapping / out-of-range offsets
        out.append(struct.pack("<Q", len(forged)) + forged + blob[8 + n :])
    return out


def test_fuzzed_files_load_correctly_or_fail_typed() -> None:
    """Guards the reader against hostile and damaged files (truncations, bit flips, huge
    header lengths, overlapping and out-of-range offsets): every case is a correct load or
    a typed ckptcompat error, never an IndexError, struct.error, RuntimeError or a crash."""
    state = tiny_agent().state_dict()
    blob = safetensors_bytes(state)
    rng = random.Random(22)
    loads = fails = 0
    for case in _mutations(blob, rng):
        try:
            back = load_safetensors(case)
        except CheckpointError:
            fails += 1
            continue
        loads += 1
        assert set(back) <= set(state) | {k for k in back}  # names came from the header
        for tensor in back.values():
            assert isinstance(tensor, torch.Tensor)
    assert fails > 100 and loads > 0  # flips inside the data buffer still load
