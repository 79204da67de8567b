"""Tests of ckptcompat.checkpoint.dcp_migrate: a DCP directory into one safe-format file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ckptcompat.checkpoint.dcp_migrate import is_dcp_dir, migrate_dcp
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.cli import main
from ckptcompat.errors import CheckpointError
from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer import train
from ckptcompat.rl.trainer_config import TrainerConfig

TINY = TrainerConfig(
    seed=6,
    checkpoint_every=1,
    agent_class_path="ckptcompat.agents.mlp.MLPAgent",
    agent_kwargs={"hidden_sizes": [8]},
    ppo=PPOConfig(num_envs=2, num_steps=8, update_epochs=1),
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("migrate-dcp")
    train(TINY, "m", data_dir, 1, progress=False, checkpoint_format="dcp")
    return data_dir / "m" / "checkpoints"


def test_migrated_agent_equals_the_safe_file_of_its_epoch(run_dir: Path, tmp_path: Path) -> None:
    """migrate_dcp writes a safe file whose tensors equal the run's own safe file, bit for bit."""
    source = run_dir / "m_v1.dcp"
    assert is_dcp_dir(source)
    report = migrate_dcp(source, tmp_path / "out.pt")
    assert (report.generation, report.run, report.epoch, report.outputs_equal) == (
        "dcp",
        "m",
        1,
        True,
    )
    migrated = SimpleCheckpointManager.load_from_uri(report.destination)
    original = SimpleCheckpointManager.load_from_uri(run_dir / "m_v1.pt")
    for (name, a), (_, b) in zip(
        migrated.state_dict().items(), original.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_cli_migrate_takes_a_dcp_directory(run_dir: Path, tmp_path: Path) -> None:
    """``ckptcompat migrate DIR.dcp OUT.pt`` converts instead of refusing a directory."""
    assert main(["migrate", str(run_dir / "m_v1.dcp"), str(tmp_path / "cli.pt")]) == 0
    assert (tmp_path / "cli.pt").is_file()


def test_unknown_agent_is_refused(run_dir: Path, tmp_path: Path) -> None:
    """A DCP directory away from its run, with no class path given: a typed error."""
    import shutil

    lone = tmp_path / "lone.dcp"
    shutil.copytree(run_dir / "m_v1.dcp", lone)
    with pytest.raises(CheckpointError, match="run, epoch or agent is unknown"):
        migrate_dcp(lone, tmp_path / "x.pt")
