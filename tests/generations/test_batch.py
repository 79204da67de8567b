"""Tests of ckptcompat.generations.batch and ``ckptcompat migrate DIR DATA_DIR``.

Runs in every cell: each file is read and each safe file written by that torch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat.agents import MockAgent, RecurrentAgent
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.cli import main
from ckptcompat.errors import InputError
from ckptcompat.generations.batch import migrate_directory
from tests.generations.builders import tiny_agent, write_bundle, write_mpt


def _store(tmp_path: Path) -> Path:
    """A team's directory mixing G1, G2 (one of a curated agent, one not), a bare state_dict,
    G3, G4 (directory and zip), a trainer state, an index, a note, a damaged file and a
    duplicate epoch."""
    store = tmp_path / "store"
    store.mkdir()
    agent = tiny_agent(seed=5)
    torch.manual_seed(1)
    recurrent = RecurrentAgent(
        observation_space=gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
        action_space=gym.spaces.Discrete(3),
    )
    legacy.write_g2(recurrent, store / legacy.g2_filename("team", 1, agent_step=10))
    legacy.write_g2(agent, store / legacy.g2_filename("mlp", 6))  # MLPAgent: not curated
    legacy.write_state_dict(agent.state_dict(), store / "team_v2.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ckptcompat.policy.policy_metadata import PolicyMetadata
        from ckptcompat.policy.policy_record import PolicyRecord

        record = PolicyRecord(None, "g1", None, PolicyMetadata(epoch=7, agent_step=5))
    record.policy = MockAgent()
    legacy.write_g1(record, store / legacy.g1_filename(7))
    write_mpt(store / "team:v3.mpt", agent)
    write_bundle(store / "team_v4", agent, trainer_state=b"not read")
    write_bundle(store / "team_v5.zip", agent, as_zip=True)
    write_mpt(store / "zdup:v3.mpt", agent)
    (store / "team_v4.trainer.pt").write_bytes(b"x")
    (store / "index.json").write_text("{}")
    (store / "notes.txt").write_text("hello")
    (store / "broken.pt").write_bytes(b"\x80\x02garbage")
    return store


def test_a_mixed_directory_migrates_into_one_run(tmp_path: Path) -> None:
    """Guards item 5 of issue 22: every generation of a directory into one safe run, each
    file reported migrated, skipped (with why) or failed (with the typed error); one bad
    file does not stop the others."""
    store = _store(tmp_path)
    agent = tiny_agent(seed=5)
    results = migrate_directory(
        store,
        tmp_path / "data",
        run="team",
        class_path="ckptcompat.agents.mlp.MLPAgent",
        config=agent.config,
    )
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == sorted(by_name)
    migrated = {n: r.generation for n, r in by_name.items() if r.outcome == "migrated"}
    g2 = next(n for n in by_name if n.startswith("team__e1"))
    assert migrated == {
        "model_0007.pt": "g1",
        g2: "g2",
        "team_v2.pt": "state_dict",
        "team:v3.mpt": "g3",
        "team_v4": "g4",
        "team_v5.zip": "g4",
    }
    skipped = {n for n, r in by_name.items() if r.outcome == "skipped"}
    assert skipped == {"team_v4.trainer.pt", "index.json", "notes.txt"}
    failed = {n: r.detail for n, r in by_name.items() if r.outcome == "failed"}
    assert set(failed) == {
        "broken.pt",
        "zdup:v3.mpt",
        next(n for n in by_name if n.startswith("mlp__")),
    }
    assert all("Error: " in reason for reason in failed.values())
    assert "already has a checkpoint at epoch 3" in failed["zdup:v3.mpt"]
    epochs = [
        e.epoch for e in SimpleCheckpointManager("team", tmp_path / "data").list_checkpoints()
    ]
    assert epochs == [1, 2, 3, 4, 5, 7]


def test_cli_prints_the_report_and_fails_on_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the command's contract: one line per file, exit 1 when any file failed, and
    --epoch refused for a directory (exit 2)."""
    store = _store(tmp_path)
    config = json.dumps(tiny_agent().config)
    argv = ["migrate", str(store), str(tmp_path / "d"), "--run", "team"]
    code = main([*argv, "--class-path", "ckptcompat.agents.mlp.MLPAgent", "--config", config])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0].endswith("6 migrated, 3 skipped, 3 failed")
    assert len(out.splitlines()) == 13
    assert main([*argv, "--epoch", "1"]) == 2


def test_destination_inside_the_source_and_no_checkpoints_are_input_errors(
    tmp_path: Path,
) -> None:
    """Guards migrating a directory into itself (the new files would be read back) and a
    directory without checkpoints reported as a success (issue 20: exit 2, nothing ran)."""
    with pytest.raises(InputError):
        migrate_directory(tmp_path, tmp_path / "data")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no checkpoint"):
        migrate_directory(tmp_path / "src", tmp_path / "data")


def test_a_fifo_in_the_directory_is_skipped_not_opened(tmp_path: Path) -> None:
    """Guards `migrate DIR` hanging on a FIFO named like a checkpoint (new-user trial,
    2026-12-06: 120 s until killed): it is skipped as not a regular file and the rest
    migrates. The migration runs in a thread so that a regression fails instead of
    hanging the test run."""
    import os
    import threading

    src = tmp_path / "src"
    src.mkdir()
    write_mpt(src / "team:v3.mpt", tiny_agent())
    os.mkfifo(src / "pipe.pt")
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.append(migrate_directory(src, tmp_path / "data", run="team")),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "migrate DIR blocked on a FIFO"
    (report,) = results
    outcomes = {r.name: (r.outcome, r.detail) for r in report}  # type: ignore[attr-defined]
    assert outcomes["pipe.pt"][0] == "skipped" and "not a regular file" in outcomes["pipe.pt"][1]
    assert outcomes["team:v3.mpt"][0] == "migrated"
