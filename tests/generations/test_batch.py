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


def test_a_store_of_run_folders_is_walked_recursively(tmp_path: Path) -> None:
    """Guards `migrate DIR` on a team's store of one folder per run (new-user trial,
    2026-12-06): the checkpoints sat one and two levels down and DIR reported "a directory
    that is neither a G4 bundle nor a DCP checkpoint", migrating nothing. Folders are walked;
    a G4 bundle directory stays one checkpoint; names are relative paths."""
    store = tmp_path / "store"
    (store / "alpha" / "checkpoints").mkdir(parents=True)
    (store / "beta").mkdir()
    (store / "empty").mkdir()
    agent = tiny_agent(seed=2)
    write_mpt(store / "alpha" / "checkpoints" / "alpha:v3.mpt", agent)
    write_bundle(store / "beta" / "beta_v4", agent)
    legacy.write_state_dict(agent.state_dict(), store / "beta" / "beta_v5.pt")
    (store / "beta" / "README.txt").write_text("notes")
    results = migrate_directory(
        store,
        tmp_path / "data",
        class_path="ckptcompat.agents.mlp.MLPAgent",
        config=agent.config,
    )
    outcomes = {r.name: r.outcome for r in results}
    assert outcomes == {
        "alpha/checkpoints/alpha:v3.mpt": "migrated",
        "beta/README.txt": "skipped",
        "beta/beta_v4": "migrated",
        "beta/beta_v5.pt": "migrated",
    }
    assert [
        e.epoch for e in SimpleCheckpointManager("alpha", tmp_path / "data").list_checkpoints()
    ] == [3]
    assert [
        e.epoch for e in SimpleCheckpointManager("beta", tmp_path / "data").list_checkpoints()
    ] == [4, 5]


def test_links_are_skipped_and_depth_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards following symbolic links (doctor DIR skips them; migrate DIR followed them,
    so a link out of the tree or a loop back into it was migrated or walked forever) and an
    unbounded walk of a hostile tree: links are reported skipped, never opened, and folders
    below MAX_DEPTH are reported instead of walked."""
    from ckptcompat.generations import batch

    store = tmp_path / "store"
    deep = store / "a" / "b"
    deep.mkdir(parents=True)
    agent = tiny_agent(seed=3)
    outside = tmp_path / "outside:v2.mpt"
    write_mpt(outside, agent)
    (store / "outside:v2.mpt").symlink_to(outside)
    (store / "loop").symlink_to(store, target_is_directory=True)
    write_mpt(store / "a" / "team:v3.mpt", agent)
    write_mpt(deep / "team:v4.mpt", agent)
    monkeypatch.setattr(batch, "MAX_DEPTH", 1)
    by_name = {r.name: r for r in migrate_directory(store, tmp_path / "data")}
    assert by_name["outside:v2.mpt"].outcome == "skipped"
    assert "symbolic link" in by_name["outside:v2.mpt"].detail
    assert by_name["loop"].outcome == "skipped"
    assert by_name["a/team:v3.mpt"].outcome == "migrated"
    assert by_name["a/b"].outcome == "skipped" and "deeper than 1" in by_name["a/b"].detail
    assert "a/b/team:v4.mpt" not in by_name


def test_a_dcp_run_folder_migrates_each_epoch_once(tmp_path: Path) -> None:
    """Guards a run saved with checkpoint_format="dcp" (new-user trial, 2026-12-06): its
    folder holds <run>_v1.dcp and <run>_v1.pt from one save, the DCP directory migrated first
    and the .pt then failed "already has a checkpoint at epoch 1", so `migrate DIR` exited 1
    on a healthy run. The DCP twin is skipped, naming the .pt, which is migrated."""
    from ckptcompat.rl.ppo import PPOConfig
    from ckptcompat.rl.trainer import train
    from ckptcompat.rl.trainer_config import TrainerConfig

    config = TrainerConfig(
        seed=6,
        checkpoint_every=1,
        agent_class_path="ckptcompat.agents.mlp.MLPAgent",
        agent_kwargs={"hidden_sizes": [8]},
        ppo=PPOConfig(num_envs=2, num_steps=8, update_epochs=1),
    )
    train(config, "m", tmp_path / "runs", 1, progress=False, checkpoint_format="dcp")
    source = tmp_path / "runs" / "m" / "checkpoints"
    assert (source / "m_v1.dcp").is_dir() and (source / "m_v1.pt").is_file()
    by_name = {r.name: r for r in migrate_directory(source, tmp_path / "data")}
    assert by_name["m_v1.pt"].outcome == "migrated"
    assert by_name["m_v1.dcp"].outcome == "skipped"
    assert "twin of m_v1.pt" in by_name["m_v1.dcp"].detail
    assert not any(r.outcome == "failed" for r in by_name.values())


def test_the_directory_report_says_what_was_renamed(tmp_path: Path) -> None:
    """Guards a silent rename in `migrate DIR` (new-user trial, 2026-12-06): the one-file
    report says "renamed: stripped 'module.'", the directory's line for the same file said
    nothing."""
    src = tmp_path / "src"
    src.mkdir()
    agent = tiny_agent(seed=8)
    legacy.write_state_dict(torch.nn.DataParallel(agent).state_dict(), src / "dp_v3.pt")
    (result,) = migrate_directory(
        src, tmp_path / "data", class_path="ckptcompat.agents.mlp.MLPAgent", config=agent.config
    )
    assert result.outcome == "migrated"
    assert "renamed: stripped 'module.' from every key" in result.detail


def test_a_file_without_an_epoch_gets_a_fix_that_works_in_a_directory(tmp_path: Path) -> None:
    """Guards circular advice (a new user's trial, 2026-12-07): a file in `migrate DIR`
    whose name and metadata give no epoch failed with "pass --run/--epoch", and `migrate
    DIR --epoch` is refused ("drop --epoch"). The line now says to rename the file or
    migrate it alone; the one-file message keeps its --run/--epoch fix."""
    src = tmp_path / "src"
    src.mkdir()
    agent = tiny_agent(seed=9)
    legacy.write_state_dict(agent.state_dict(), src / "weights.pt")
    (result,) = migrate_directory(
        src, tmp_path / "data", class_path="ckptcompat.agents.mlp.MLPAgent", config=agent.config
    )
    assert result.outcome == "failed"
    assert "cannot tell the run name and epoch" in result.detail
    assert "--run/--epoch" not in result.detail
    assert "ckptcompat migrate FILE DST --run RUN --epoch E, with the --class-path" in result.detail
    assert "<run>:v<E>.pt" in result.detail
    (src / "weights.pt").rename(src / "weights:v2.pt")
    (result,) = migrate_directory(
        src, tmp_path / "data", class_path="ckptcompat.agents.mlp.MLPAgent", config=agent.config
    )
    assert result.outcome == "migrated" and "epoch 2" in result.detail, result.detail
