"""verify="full" digests the bytes torch reads (digest_reader.py, loading.load_verified).

The tests that load run in every cell: the order in which torch reads a checkpoint (zip
directory first, records by the pickle's order) is torch's and may change between
versions; the reader must give the whole-file digest whatever the order.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import MockAgent, RecurrentAgent
from ckptcompat.checkpoint.atomic import hash_file
from ckptcompat.checkpoint.digest_reader import DigestingReader
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import CorruptCheckpointError


def _saved(tmp_path: Path) -> tuple[SimpleCheckpointManager, Path]:
    torch.manual_seed(0)
    agent = RecurrentAgent(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
    manager = SimpleCheckpointManager("run", tmp_path / "data", cache_size=0)
    manager.save_agent(agent, 0)
    return manager, manager.checkpoint_dir / "run_v0.pt"


def test_digest_of_a_torch_load_is_the_file_digest(tmp_path: Path) -> None:
    """Guards verify="full" refusing good files (or passing bad ones) because this torch
    reads the archive in an order the reader does not hash correctly."""
    _, path = _saved(tmp_path)
    with DigestingReader(path) as reader:
        payload = torch_compat.load(reader, map_location="cpu")
        assert reader.finish() == hash_file(path)
    assert payload["format"] == "ckptcompat.agent"


@pytest.mark.one_cell
def test_any_read_order_gives_the_file_digest(tmp_path: Path) -> None:
    """Guards the gap and out-of-order logic: random seeks (far ahead, a little ahead,
    back, overlapping the hashed prefix) never skip or double-hash a byte. One cell: no
    torch involved."""
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(5 * (1 << 20) + 123))
    size = path.stat().st_size
    rng = random.Random(7)
    for _ in range(20):
        with DigestingReader(path) as reader:
            for _ in range(30):
                start = rng.choice([0, size - 10, rng.randrange(size), reader.tell()])
                reader.seek(start)
                buffer = bytearray(rng.choice([1, 30, 4096, 1 << 20, 3 << 20]))
                count = reader.readinto(buffer)
                with open(path, "rb") as fh:
                    fh.seek(start)
                    assert bytes(buffer[:count]) == fh.read(count)
            assert reader.finish() == hash_file(path)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["tensor", "pickle", "zip directory"])
def test_full_verification_catches_a_flipped_byte_anywhere(tmp_path: Path, where: str) -> None:
    """Guards bytes the single-pass digest could miss: inside a tensor record (read by
    torch straight into the tensor), in data.pkl (torch's load fails first: the digest
    error must win over the unpickler's) and in the zip directory torch reads first."""
    manager, path = _saved(tmp_path)
    data = path.read_bytes()
    offset = {
        "tensor": data.index(b"data/0") + 200,
        "pickle": data.index(b"\x80\x02", data.index(b"data.pkl")),  # PROTO 2
        "zip directory": data.rindex(b"PK\x01\x02") + 12,
    }[where]
    _flip(path, offset)
    with pytest.raises(CorruptCheckpointError, match="digest differs") as caught:
        manager.load_agent(0)
    assert str(path) in str(caught.value)


def test_trainer_state_is_verified_in_the_same_read(tmp_path: Path) -> None:
    """Guards load_trainer_state skipping the digest now that it reads through the
    reader instead of hashing first."""
    manager = SimpleCheckpointManager("run", tmp_path / "data")
    optimizer = torch.optim.Adam(MockAgent().parameters())
    manager.save_trainer_state(optimizer, 0, agent_step=0)
    path = manager.checkpoint_dir / "run_v0.trainer.pt"
    assert manager.load_trainer_state(0, restore_rng=False) is not None
    _flip(path, path.read_bytes().index(b"data/0") + 100)
    with pytest.raises(CorruptCheckpointError, match="digest differs"):
        manager.load_trainer_state(0, restore_rng=False)
    assert manager.load_trainer_state(0, restore_rng=False, verify="size") is not None
