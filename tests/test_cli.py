"""The ckptcompat command line, as the harness chains it: separate processes, files only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ckptcompat.evaluation.stats_db import EvalStatsDB


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckptcompat.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _record(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "agent", ["ckptcompat.agents.mock.MockAgent", "ckptcompat.agents.recurrent.RecurrentAgent"]
)
def test_train_resume_evaluate_chain_lands_in_the_db(tmp_path: Path, agent: str) -> None:
    """Guards the round trip across processes: train -> stop -> resume -> evaluate -> DB row.

    Each step is a new process that only reads and writes files, as the matrix runs them
    across venvs; the evaluation lands under (run, epoch) of the resumed checkpoint.
    """
    train = _cli("run", "train", "--run", "r", "--dir", "d", "--agent", agent, "--seed", "3",
                 "--epochs", "2", "--checkpoint-every", "1", cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr
    first = _record(train)
    assert first["outcome"] == "pass" and first["outputs"]["epoch"] == 2

    resume = _cli("run", "resume", "--run", "r", "--dir", "d", "--epochs", "4", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    second = _record(resume)
    assert second["outputs"]["epoch"] == 4
    assert second["outputs"]["agent_step"] > first["outputs"]["agent_step"]
    assert second["outputs"]["params_digest"] != first["outputs"]["params_digest"]

    stale = _cli("run", "resume", "--run", "r", "--dir", "d", "--epochs", "3", cwd=tmp_path)
    assert stale.returncode == 1 and "nothing to resume" in _record(stale)["detail"]

    evaluate = _cli("run", "evaluate", "--uri", "d/r:latest", "--db", "eval.duckdb",
                    "--episodes", "2", cwd=tmp_path)  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr
    third = _record(evaluate)
    assert (third["outputs"]["policy_key"], third["outputs"]["policy_version"]) == ("r", 4)
    assert third["outputs"]["params_digest"] == second["outputs"]["params_digest"]
    with EvalStatsDB(tmp_path / "eval.duckdb", read_only=True) as db:
        assert db.potential_samples_for_metric("r", 4) == 2
        assert db.get_average_metric_by_filter("reward", ("r", 4)) == pytest.approx(
            third["outputs"]["mean_return"]
        )


def test_failed_step_prints_a_fail_record_and_exits_1(tmp_path: Path) -> None:
    """Guards a failing step printing a traceback (or nothing) instead of a record."""
    proc = _cli("run", "resume", "--run", "missing", "--dir", "d", "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 1
    record = _record(proc)
    assert record["outcome"] == "fail" and "CheckpointNotFoundError" in record["detail"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Guards usage errors being reported as check failures (exit 1) or passing."""
    assert _cli("run", "train", "--run", "r", cwd=tmp_path).returncode == 2
    bad_json = _cli("migrate", "a.pt", "b.pt", "--config", "{not json", cwd=tmp_path)
    assert bad_json.returncode == 2 and "invalid JSON" in bad_json.stderr


def test_migrate_and_doctor_commands(tmp_path: Path) -> None:
    """Guards the migrate/doctor commands' exit codes and messages on a legacy file."""
    from ckptcompat.agents import MockAgent
    from ckptcompat.checkpoint import legacy

    src = legacy.write_g2(MockAgent(), tmp_path / "r__e1__s10__t2__sc0.pt")
    doctor = _cli("doctor", str(src), "--json", cwd=tmp_path)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["generation"] == "g2"
    migrated = _cli("migrate", str(src), "out", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "outputs equal on the probe batch: True" in migrated.stdout
    again = _cli("migrate", str(src), "out", cwd=tmp_path)
    assert again.returncode == 1 and "never overwrit" in again.stderr
    missing = _cli("doctor", str(tmp_path / "nope.pt"), cwd=tmp_path)
    assert missing.returncode == 2


@pytest.mark.one_cell
def test_python_dash_m_ckptcompat_runs_the_cli(tmp_path: Path) -> None:
    """Guards `python -m ckptcompat doctor FILE` failing with "cannot be directly
    executed" (no __main__, found by a new-user trial). Version-independent: the module
    only dispatches to cli.main."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat", "doctor", "--json", "fixtures/corpus/set.pt"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["file"].endswith("set.pt")
