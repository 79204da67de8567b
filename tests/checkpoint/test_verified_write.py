"""write_verified(): the one write-reload-compare step every migration ends with."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat.agents import RecurrentAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.verified_write import outputs_equal, write_verified
from ckptcompat.errors import AgentMismatchError, CheckpointError

_FACTS = {"agent_step": 7, "total_time_s": 1.5, "score": None}


def _agent(seed: int) -> RecurrentAgent:
    torch.manual_seed(seed)
    return RecurrentAgent(
        observation_space=gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
        action_space=gym.spaces.Discrete(3),
    )


def test_pt_and_data_dir_destinations_reload_equal(tmp_path: Path) -> None:
    """Guards the standalone and the indexed destination writing files that do not reload
    as the same agent."""
    agent = _agent(0)
    pt = write_verified(agent, tmp_path / "a.pt", run="r", epoch=1, facts=_FACTS, source="s")
    assert pt == tmp_path / "a.pt"
    assert outputs_equal(agent, SimpleCheckpointManager.load_from_uri(pt))
    indexed = write_verified(agent, tmp_path / "data", run="r", epoch=2, facts=_FACTS, source="s")
    entry = SimpleCheckpointManager("r", tmp_path / "data").list_checkpoints()[0]
    assert (entry.epoch, entry.agent_step) == (2, 7)
    assert indexed.is_file()


def test_a_reference_the_file_does_not_reproduce_removes_the_file(tmp_path: Path) -> None:
    """Guards a migration leaving a file on disk whose outputs differ from the source's
    (migrate compares against the unpickled source agent, not the rebuilt one)."""
    dst = tmp_path / "a.pt"
    with pytest.raises(AgentMismatchError, match="does not reproduce"):
        write_verified(
            _agent(0), dst, run="r", epoch=1, facts=_FACTS, source="src.pt", reference=_agent(1)
        )
    assert not dst.exists()


def test_an_existing_epoch_is_never_overwritten(tmp_path: Path) -> None:
    """Guards a second migration into the same run and epoch replacing the first file."""
    write_verified(_agent(0), tmp_path / "data", run="r", epoch=1, facts=_FACTS, source="s")
    first = (tmp_path / "data" / "r" / "checkpoints").iterdir()
    before = {p.name: p.read_bytes() for p in first}
    with pytest.raises(CheckpointError, match="already has a checkpoint at epoch 1"):
        write_verified(_agent(1), tmp_path / "data", run="r", epoch=1, facts=_FACTS, source="s")
    after = {p.name: p.read_bytes() for p in (tmp_path / "data" / "r" / "checkpoints").iterdir()}
    assert after == before
