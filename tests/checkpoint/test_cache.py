"""The manager's cache of loaded agents: private copies, second-load admission, file
identity and verify mode in the key, invalidation on re-save."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from ckptcompat.agents import MockAgent
from ckptcompat.checkpoint.cache import AgentCache
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import CorruptCheckpointError


def _mock(seed: int = 0) -> MockAgent:
    torch.manual_seed(seed)
    return MockAgent()


@pytest.fixture
def manager(tmp_path: Path) -> SimpleCheckpointManager:
    return SimpleCheckpointManager("run", tmp_path / "data")


def _index(manager: SimpleCheckpointManager) -> dict[str, Any]:
    return json.loads((manager.checkpoint_dir / "index.json").read_text())


def test_cached_agents_are_private_copies(manager: SimpleCheckpointManager) -> None:
    """Guards training a loaded agent in place silently changing later loads (shared cache)."""
    manager.save_agent(_mock(0), 0)
    first = manager.load_agent(0)
    with torch.no_grad():
        first.actor.weight.add_(1.0)
    second = manager.load_agent(0)
    assert second is not first
    assert torch.equal(second.actor.weight, _mock(0).actor.weight)


def test_files_are_cached_from_their_second_load(
    manager: SimpleCheckpointManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the cost of the cache on a first load (a deep copy as large as the load
    itself, for resumes and one-off evaluations that never load the file again) and the
    cache no longer serving repeated loads."""
    from ckptcompat.checkpoint import manager as manager_module

    manager.save_agent(_mock(0), 0)
    reads: list[Path] = []
    real = manager_module.load_agent_file

    def counting(path: Path, *args: Any) -> Any:
        reads.append(path)
        return real(path, *args)

    monkeypatch.setattr(manager_module, "load_agent_file", counting)
    agents = [manager.load_agent(0) for _ in range(4)]
    assert len(reads) == 2  # the first load and the one that fills the cache
    assert len({id(a) for a in agents}) == 4
    manager.save_agent(_mock(1), 0)  # re-saving forgets both the cache and the first load
    manager.load_agent(0)
    assert len(reads) == 3 and not manager._cache


@pytest.mark.parametrize("how", ["rewritten_in_place", "replaced_by_rename"])
def test_a_cached_file_changed_on_disk_is_verified_again(
    manager: SimpleCheckpointManager, how: str
) -> None:
    """Guards the cache answering verify="full" from memory after the file on disk was
    corrupted or swapped (a new user's report: a cached agent came back for a file of
    garbage bytes): the file's inode, size and mtime are part of the cache key."""
    manager.save_agent(_mock(0), 0)
    manager.load_agent(0)
    manager.load_agent(0)  # the second load fills the cache
    assert manager._cache
    path = manager.checkpoint_dir / manager.list_checkpoints()[0].file
    if how == "rewritten_in_place":
        path.write_bytes(b"garbage")
    else:
        spare = path.with_name("spare.pt")
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, one byte flipped, a new inode
        spare.write_bytes(bytes(data))
        os.replace(spare, path)
    with pytest.raises(CorruptCheckpointError):
        manager.load_agent(0, verify="full")


def test_a_cache_hit_needs_the_same_verify_mode(
    manager: SimpleCheckpointManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards a verify="full" load answered by an agent cached from verify="none" loads
    (which never hashed the file)."""
    from ckptcompat.checkpoint import manager as manager_module

    manager.save_agent(_mock(0), 0)
    modes: list[str] = []
    real = manager_module.load_agent_file

    def recording(path: Path, device: Any, verify: str, *args: Any) -> Any:
        modes.append(verify)
        return real(path, device, verify, *args)

    monkeypatch.setattr(manager_module, "load_agent_file", recording)
    manager.load_agent(0, verify="none")
    manager.load_agent(0, verify="none")
    manager.load_agent(0, verify="none")
    manager.load_agent(0, verify="full")
    assert modes == ["none", "none", "full"]


def test_resaving_an_epoch_replaces_it_and_invalidates_the_cache(
    manager: SimpleCheckpointManager,
) -> None:
    """Guards a stale cached agent (or a stale index digest) after an epoch is re-saved."""
    manager.save_agent(_mock(0), 0)
    manager.load_agent(0)
    manager.save_agent(_mock(1), 0)
    assert torch.equal(manager.load_agent(0).actor.weight, _mock(1).actor.weight)
    assert [e["epoch"] for e in _index(manager)["checkpoints"]] == [0]


@pytest.mark.parametrize("size", [-1, 1.5, True])
def test_cache_size_must_be_a_non_negative_int(size: object) -> None:
    """Guards a float or bool cache size (True == 1) being taken as a count."""
    with pytest.raises(ValueError, match="cache_size"):
        AgentCache(size)  # type: ignore[arg-type]
