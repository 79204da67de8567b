"""migrate(): any generation to the safe format, verified equal, never weights_only=False
unless asked."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import MockAgent, RecurrentAgent
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.migrate import migrate
from ckptcompat.checkpoint.uri import key_and_version
from ckptcompat.errors import AgentMismatchError, CheckpointError, UnsafeCheckpointError


def _recurrent() -> RecurrentAgent:
    torch.manual_seed(1)
    return RecurrentAgent(
        observation_space=gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
        action_space=gym.spaces.Discrete(3),
    )


def test_g2_migrates_to_a_managed_run_with_training_facts(tmp_path: Path) -> None:
    """Guards the facts in a G2 name (agent_step, time, score) being dropped by migration."""
    src = legacy.write_g2(
        _recurrent(),
        tmp_path / legacy.g2_filename("r", 4, agent_step=40, total_time_s=3, score=0.5),
    )
    report = migrate(src, tmp_path / "data")
    assert (report.generation, report.loader, report.run, report.epoch) == (
        "g2",
        "allowlist",
        "r",
        4,
    )
    assert report.outputs_equal
    entry = SimpleCheckpointManager("r", tmp_path / "data").list_checkpoints()[0]
    assert (entry.agent_step, entry.total_time_s, entry.score) == (40, 3.0, 0.5)
    assert torch_compat.load(report.destination.removeprefix("file://"))["format"] == (
        "ckptcompat.agent"
    )


def test_g1_keeps_the_key_scheme(tmp_path: Path) -> None:
    """Guards the stats-DB key changing across migration: model_NNNN.pt -> (run dir, NNNN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ckptcompat.policy.policy_metadata import PolicyMetadata
        from ckptcompat.policy.policy_record import PolicyRecord

        record = PolicyRecord(None, "other_name", None, PolicyMetadata(epoch=0, agent_step=5))
    record.policy = MockAgent()
    src = legacy.write_g1(record, tmp_path / "myrun" / "checkpoints" / legacy.g1_filename(0))
    report = migrate(src, tmp_path / "out.pt")
    assert key_and_version(src) == key_and_version(report.destination) == ("myrun", 0)


def test_state_dict_needs_class_path_and_config(tmp_path: Path) -> None:
    """Guards a bare state_dict being migrated into an agent of the code's current defaults."""
    agent = _recurrent()
    src = legacy.write_state_dict(agent.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(AgentMismatchError, match="class path or config"):
        migrate(src, tmp_path / "a.pt", run="r", epoch=1)
    report = migrate(
        src, tmp_path / "b.pt", run="r", epoch=1, class_path=agent.class_path, config=agent.config
    )
    assert report.generation == "state_dict" and report.loader == "safe" and report.outputs_equal


def test_unsafe_source_needs_trust(tmp_path: Path) -> None:
    """Guards migrate silently falling back to weights_only=False."""
    src = tmp_path / "r__e1__s0__t0__sc0.pt"
    torch.save(MockAgent(), src)
    ns_src = tmp_path / "ns.pt"
    torch.save({"cfg": argparse.Namespace()}, ns_src)
    with pytest.raises(UnsafeCheckpointError) as info:
        migrate(ns_src, tmp_path / "x.pt")
    assert info.value.globals == ("argparse.Namespace",)
    assert not (tmp_path / "x.pt").exists()


def test_trust_is_the_only_way_to_weights_only_false(tmp_path: Path) -> None:
    """Guards --trust: an agent pickled with an unlisted class migrates only when trusted."""
    src = tmp_path / "r__e2__s0__t0__sc0.pt"
    agent = MockAgent()
    agent.extra_info = argparse.Namespace(note="not curated")  # rich state the allowlist lacks
    torch.save(agent, src)
    with pytest.raises(UnsafeCheckpointError):
        migrate(src, tmp_path / "no.pt")
    with pytest.warns(torch_compat.TrustedLoadWarning):
        report = migrate(src, tmp_path / "yes.pt", trust=True)
    assert report.loader == "trusted" and report.outputs_equal


def test_never_overwrites(tmp_path: Path) -> None:
    """Guards migration destroying an existing file or checkpoint."""
    src = legacy.write_g2(MockAgent(), tmp_path / "r:v1.pt")
    (tmp_path / "exists.pt").write_bytes(b"keep me")
    with pytest.raises(CheckpointError, match="never overwrit"):
        migrate(src, tmp_path / "exists.pt")
    assert (tmp_path / "exists.pt").read_bytes() == b"keep me"
    migrate(src, tmp_path / "data")
    with pytest.raises(CheckpointError, match="never overwrit"):
        migrate(src, tmp_path / "data")
