"""Tests of ckptcompat.generations.shards: a sharded safetensors index and its shards.

Headers and JSON only: nothing depends on torch's version (one cell). The shards are
written by the real ``safetensors.torch.save_file`` where the test extra installs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ckptcompat.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    LimitExceededError,
    UnsafeCheckpointError,
)
from ckptcompat.generations import shards
from ckptcompat.generations.shards import check_index, find_indexes, read_index, require_complete

save_file = pytest.importorskip("safetensors.torch").save_file
pytestmark = pytest.mark.one_cell

S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def _sharded(root: Path, weight_map: dict[str, str] | None = None, total: int = 28) -> Path:
    save_file({"a": torch.ones(2, 2), "b": torch.zeros(1)}, str(root / S1))
    save_file({"c": torch.arange(2, dtype=torch.int32)}, str(root / S2))
    index = root / "model.safetensors.index.json"
    weight_map = weight_map or {"a": S1, "b": S1, "c": S2}
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


def test_a_complete_set_from_save_file(tmp_path: Path) -> None:
    """Guards the good case: every shard read, no problem, total_size agreeing."""
    check = check_index(_sharded(tmp_path))
    assert check.complete and check.problems == ()
    assert sorted(check.headers) == [S1, S2]
    assert [t.name for t in check.combined().tensors] == ["a", "b", "c"]
    assert find_indexes(tmp_path) == (str(tmp_path / "model.safetensors.index.json"),)


def test_a_missing_shard_and_a_missing_tensor(tmp_path: Path) -> None:
    """Guards a partial download: a shard the index names is absent, and a tensor the index
    lists is not in its shard; both make the set incomplete and require_complete raises."""
    index = _sharded(tmp_path, {"a": S1, "b": S1, "c": S2, "d": S1})
    os.remove(tmp_path / S2)
    check = check_index(index)
    assert check.errors == {S2: "missing"}
    assert check.missing_tensors == (("d", S1),)
    assert not check.complete
    with pytest.raises(CorruptCheckpointError, match="incomplete"):
        require_complete(check)


def test_a_tensor_in_two_shards_and_listed_twice(tmp_path: Path) -> None:
    """Guards ambiguity: the same tensor name in two shards' headers (which one loads
    depends on order), and an index JSON listing one name twice with two shards."""
    save_file({"a": torch.ones(2, 2), "b": torch.zeros(1)}, str(tmp_path / S1))
    save_file({"c": torch.ones(2, dtype=torch.int32), "a": torch.ones(1)}, str(tmp_path / S2))
    index = tmp_path / "model.safetensors.index.json"
    pairs = [("a", S1), ("b", S1), ("c", S1), ("c", S2)]  # "c" twice: json.dumps cannot
    index.write_text('{"weight_map": {' + ", ".join(f'"{k}": "{v}"' for k, v in pairs) + "}}")
    check = check_index(index)
    assert dict(check.in_two_shards) == {"a": (S1, S2), "c": (S1, S2)}
    assert not check.complete


def test_unlisted_tensors_and_shards_and_a_wrong_total(tmp_path: Path) -> None:
    """Guards what the index does not account for: a tensor in a shard but not in the
    weight_map, a .safetensors file beside it that it does not name, a wrong total_size.
    Reported, yet the set still loads (complete)."""
    index = _sharded(tmp_path, {"a": S1, "c": S2}, total=99)
    save_file({"z": torch.ones(1)}, str(tmp_path / "stray.safetensors"))
    check = check_index(index)
    assert check.unlisted_tensors == (("b", S1),)
    assert check.unlisted_shards == ("stray.safetensors",)
    assert check.total_size == (99, 28)
    assert check.complete and len(check.problems) == 3


def test_a_hostile_index_is_refused_typed(tmp_path: Path, monkeypatch) -> None:
    """Guards the index reader: bad JSON, a wrong shape, a shard name leaving the directory
    (nothing outside is opened), an oversized index, a missing file: typed errors."""
    index = tmp_path / "model.safetensors.index.json"
    for text, error in (
        ("{", CorruptCheckpointError),
        ('{"weight_map": []}', CorruptCheckpointError),
        ('{"weight_map": {"a": 3}}', CorruptCheckpointError),
        ('{"weight_map": {"a": "../../etc/passwd"}}', UnsafeCheckpointError),
        ('{"weight_map": {"a": "/etc/passwd"}}', UnsafeCheckpointError),
    ):
        index.write_text(text)
        with pytest.raises(error):
            read_index(index)
    index.write_text('{"weight_map": {}}' + " " * 64)
    monkeypatch.setattr(shards, "MAX_INDEX_BYTES", 32)
    with pytest.raises(LimitExceededError):
        read_index(index)
    with pytest.raises(CheckpointNotFoundError):
        read_index(tmp_path / "absent.safetensors.index.json")


def test_a_corrupt_or_fifo_shard_is_reported_not_raised(tmp_path: Path) -> None:
    """Guards a shard that is a FIFO (opening it would block forever) or holds a damaged
    header: each is a line in errors, the other shards are still checked."""
    index = _sharded(tmp_path)
    os.remove(tmp_path / S2)
    os.mkfifo(tmp_path / S2)
    (tmp_path / S1).write_bytes((tmp_path / S1).read_bytes()[:-3])
    check = check_index(index)
    assert check.errors[S2] == "not a regular file"
    assert check.errors[S1].startswith("CorruptCheckpointError")
