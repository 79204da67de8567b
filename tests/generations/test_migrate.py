"""Tests of ckptcompat.generations.migrate: G3/G4 checkpoints into the safe format.

Runs in every cell: the tensors are built and the safe file written by that torch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ckptcompat.agents.probe import probe_batch, run_probe
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import AgentMismatchError, CheckpointError, UnsafeCheckpointError
from ckptcompat.generations.migrate import migrate_generation
from tests.generations.builders import architecture_of, tiny_agent, write_bundle, write_mpt


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    obs, done = probe_batch(a)
    return all(
        torch.equal(x, y)
        for x, y in zip(run_probe(a, obs, done)[:4], run_probe(b, obs, done)[:4], strict=True)
    )


@pytest.mark.parametrize("kind", ["mpt", "bundle_dir", "bundle_zip"])
def test_each_generation_migrates_to_equal_outputs(tmp_path: Path, kind: str) -> None:
    """Guards the issue's done-when: an .mpt and a bundle (directory and zip) migrate into a
    safe file whose greedy outputs equal the original agent's on the probe batch."""
    agent = tiny_agent(seed=3)
    src = {
        "mpt": lambda: write_mpt(tmp_path / "team:v7.mpt", agent),
        "bundle_dir": lambda: write_bundle(tmp_path / "team_v7", agent),
        "bundle_zip": lambda: write_bundle(tmp_path / "team_v7.zip", agent, as_zip=True),
    }[kind]()
    report = migrate_generation(src, tmp_path / "data")
    assert (report.run, report.epoch, report.loader) == ("team", 7, "safe")
    assert report.generation == ("g3" if kind == "mpt" else "g4")
    migrated = SimpleCheckpointManager.load_from_uri(report.destination)
    assert _same_outputs(agent, migrated)
    for name, tensor in agent.state_dict().items():
        assert torch.equal(migrated.state_dict()[name], tensor), name


def test_a_foreign_architecture_needs_a_class_path(tmp_path: Path) -> None:
    """Guards resolving a class a file names: off the allowlist it is refused unless the
    user names the class; with --class-path it migrates."""
    agent = tiny_agent()
    src = write_mpt(
        tmp_path / "r:v1.mpt", agent, architecture=architecture_of(agent, "metta.agent.Fast")
    )
    with pytest.raises(UnsafeCheckpointError) as info:
        migrate_generation(src, tmp_path / "a.pt")
    assert info.value.globals == ("metta.agent.Fast",)
    report = migrate_generation(src, tmp_path / "a.pt", class_path="ckptcompat.agents.mlp.MLPAgent")
    assert report.destination.endswith("a.pt")


def test_refusals_and_mismatches_are_typed(tmp_path: Path) -> None:
    """Guards a hostile architecture string (refused, never run), weights that do not fit
    the config, and a name without run/epoch."""
    agent = tiny_agent()
    hostile = write_mpt(tmp_path / "h:v1.mpt", agent, architecture="pkg.A(x=open('/etc/passwd'))")
    with pytest.raises(UnsafeCheckpointError):
        migrate_generation(hostile, tmp_path / "d")
    wrong = architecture_of(agent).replace("hidden_sizes=[8]", "hidden_sizes=[9]")
    misfit = write_mpt(tmp_path / "m:v1.mpt", agent, architecture=wrong)
    with pytest.raises(AgentMismatchError):
        migrate_generation(misfit, tmp_path / "d")
    nameless = write_mpt(tmp_path / "latest.mpt", agent)
    with pytest.raises(CheckpointError, match="run name and epoch"):
        migrate_generation(nameless, tmp_path / "d")
    assert migrate_generation(nameless, tmp_path / "d", run="r", epoch=0).epoch == 0
