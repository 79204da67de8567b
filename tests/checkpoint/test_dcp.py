"""Tests of ckptcompat.checkpoint.dcp and the DCP side of the manager, index and layout.

One process (world size 1, no process group); the two-process runs are in
tests/rl/test_distributed.py. Every cell: DCP's APIs differ between 2.4 and 2.15.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from ckptcompat.checkpoint.index import DcpEntry, RunIndex, read_index
from ckptcompat.checkpoint.layout import DCP_DIR_RE, dcp_dirname, parse_filename
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import AgentMismatchError, CheckpointNotFoundError, CorruptCheckpointError
from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.resume_contract import state_digest
from ckptcompat.rl.trainer import Trainer, train
from ckptcompat.rl.trainer_config import TrainerConfig

TINY = TrainerConfig(
    seed=3,
    checkpoint_every=1,
    agent_class_path="ckptcompat.agents.mlp.MLPAgent",
    agent_kwargs={"hidden_sizes": [8]},
    ppo=PPOConfig(num_envs=2, num_steps=8, update_epochs=1),
)


def _saved(manager: SimpleCheckpointManager, epoch: int) -> str:
    """Digest of the safe files of ``epoch``: agent state_dict plus optimizer state."""
    agent = manager.load_agent(epoch)
    optimizer = torch.optim.Adam(agent.parameters(), eps=TINY.ppo.adam_eps)
    manager.load_trainer_state(epoch, optimizer=optimizer, restore_rng=False)
    return state_digest(agent, optimizer)


@pytest.fixture(scope="module")
def dcp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("dcp")
    train(TINY, "d", data_dir, 2, progress=False, checkpoint_format="dcp")
    return data_dir


def test_single_process_run_writes_indexed_dcp_directories(dcp_run: Path) -> None:
    """A world-size-1 run with checkpoint_format="dcp" indexes one DCP directory per save."""
    manager = SimpleCheckpointManager("d", dcp_run)
    entries = manager.list_dcp_checkpoints()
    assert [e.epoch for e in entries] == [1, 2]
    for entry in entries:
        assert entry.dir == dcp_dirname("d", entry.epoch)
        assert entry.world_size == 1
        assert entry.files == (".metadata", "__0_0.distcp")
        directory = manager.checkpoint_dir / entry.dir
        assert entry.size_bytes == sum(p.stat().st_size for p in directory.iterdir())


def test_dcp_load_equals_the_safe_files_exactly(dcp_run: Path) -> None:
    """DCP and the safe format hold the same state: loading either gives the same bits.

    Guards against get_state_dict/set_state_dict keying the optimizer state by another
    parameter order, or the zero-gradient step of a fresh optimizer moving a parameter.
    """
    manager = SimpleCheckpointManager("d", dcp_run)
    agent = manager.load_agent(2)
    fresh = torch.optim.Adam(agent.parameters(), eps=TINY.ppo.adam_eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the single-process warning is silenced, not leaked
        manager.load_dcp(agent, fresh, 2)
    assert state_digest(agent, fresh) == _saved(manager, 2)


def test_resume_from_dcp_in_one_process_records_the_source(dcp_run: Path, tmp_path: Path) -> None:
    """Trainer.resume(source="dcp") loads the DCP state and says so in its contract."""
    shutil.copytree(dcp_run / "d", tmp_path / "d")
    trainer = Trainer.resume("d", tmp_path, progress=False, source="dcp")
    assert trainer.contract is not None
    assert trainer.contract.source == "dcp"
    assert trainer.contract.kind == "bitwise"
    assert trainer.contract.loaded_digest == _saved(trainer.manager, 2)
    assert trainer.checkpoint_format == "dcp"  # the run keeps the format it started with


def test_missing_data_file_is_refused_before_torch_reads(dcp_run: Path, tmp_path: Path) -> None:
    """A DCP directory missing a rank's file is a CorruptCheckpointError, not a torch trace.

    Guards the index check (files and total size) that runs before dcp.load.
    """
    shutil.copytree(dcp_run / "d", tmp_path / "d")
    manager = SimpleCheckpointManager("d", tmp_path)
    (manager.checkpoint_dir / dcp_dirname("d", 2) / "__0_0.distcp").unlink()
    agent = manager.load_agent(2)
    with pytest.raises(CorruptCheckpointError, match=r"not a finished|not what index\.json"):
        manager.load_dcp(agent, torch.optim.Adam(agent.parameters()), 2)


def test_unindexed_epoch_and_foreign_agent_are_typed_errors(dcp_run: Path) -> None:
    """No DCP at an epoch: CheckpointNotFoundError; another agent shape: AgentMismatchError."""
    manager = SimpleCheckpointManager("d", dcp_run)
    agent = manager.load_agent(2)
    with pytest.raises(CheckpointNotFoundError, match="no DCP checkpoint at epoch 7"):
        manager.load_dcp(agent, torch.optim.Adam(agent.parameters()), 7)
    from ckptcompat.agents.registry import build_agent

    other = build_agent(TINY.agent_class_path, {**agent.config, "hidden_sizes": [4]})
    with pytest.raises(AgentMismatchError, match="does not fit"):
        manager.load_dcp(other, torch.optim.Adam(other.parameters()), 2)


def test_cleanup_deletes_dcp_directories_with_their_epoch(dcp_run: Path, tmp_path: Path) -> None:
    """cleanup_old_checkpoints unlists and deletes the DCP directory of a deleted epoch."""
    shutil.copytree(dcp_run / "d", tmp_path / "d")
    manager = SimpleCheckpointManager("d", tmp_path)
    assert manager.cleanup_old_checkpoints(keep_last_n=1) == 1
    assert [e.epoch for e in manager.list_dcp_checkpoints()] == [2]
    assert not (manager.checkpoint_dir / dcp_dirname("d", 1)).exists()


def test_index_without_dcp_writes_no_dcp_key(tmp_path: Path) -> None:
    """A run that never wrote DCP keeps its index bytes: no "dcp_checkpoints" key.

    Guards single-process runs (and older readers) against a schema change they never asked for.
    """
    document = json.loads(RunIndex(run="r").to_json())
    assert "dcp_checkpoints" not in document
    entry = DcpEntry(3, 96, "r_v3.dcp", 2, (".metadata", "__0_0.distcp", "__1_0.distcp"), 10)
    (tmp_path / "index.json").write_bytes(RunIndex(run="r").with_dcp_checkpoint(entry).to_json())
    assert read_index(tmp_path, "r").dcp_checkpoints == (entry,)


def test_malformed_dcp_index_entry_is_corrupt(tmp_path: Path) -> None:
    """A dcp_checkpoints entry with a world size of 0 is refused like any malformed entry."""
    document = json.loads(RunIndex(run="r").to_json())
    document["dcp_checkpoints"] = [
        {"epoch": 1, "agent_step": 0, "dir": "r_v1.dcp", "world_size": 0, "files": [],
         "size_bytes": 0}
    ]  # fmt: skip
    (tmp_path / "index.json").write_text(json.dumps(document))
    with pytest.raises(CorruptCheckpointError):
        read_index(tmp_path, "r")


def test_dcp_directory_name_is_no_checkpoint_file_name() -> None:
    """``<run>_v<E>.dcp`` matches the DCP grammar and no file grammar (never read as an agent)."""
    assert DCP_DIR_RE.match(dcp_dirname("run-1", 12))
    assert parse_filename(dcp_dirname("run-1", 12)) is None
