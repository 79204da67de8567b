"""The matrix's remote-evaluation phase (ckptcompat.harness.run.remote_phase) and its place
in the driver.

The judging and the plan are one_cell (no torch in them); the round trip through a real
server and a real worker process runs in every cell, since the worker evaluates there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ckptcompat import torch_compat
from ckptcompat.agents.mock import MockAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.evaluation.evaluator import evaluate_policy
from ckptcompat.harness import versions
from ckptcompat.harness.run import driver, remote_phase
from ckptcompat.harness.run.remote_phase import Policy, judge_task
from ckptcompat.harness.run.scenarios import BUDGET, Chain, Layout
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.records import Outcome
from ckptcompat.remote import pgserver
from ckptcompat.rl.envs import make_env


def _this_cell() -> str:
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell is not None:
        return cell
    found = versions.cell_for_torch(str(torch_compat.TORCH_VERSION))
    assert found is not None
    return found.id


POLICY = Policy("mock", "t24", "mock-t24-t24", "file:///w/mock-t24-t24_v4.pt", 4, "2.2.6")


def _task(**changes) -> dict:
    task = {
        "task_id": 1, "status": "done", "attempts": 1, "worker": "w", "outcome": "pass",
        "torch_version": "2.6.0+cu124", "policy_key": "mock-t24-t24", "policy_version": 4,
        "mean_return": 20.0, "episode_returns": [10.0, 30.0], "env_steps": 40,
        "episodes_time_s": 0.5, "eval_time_s": 0.9, "error_type": None, "error_message": None,
        "last_error": None,
    }  # fmt: skip
    return task | changes


@pytest.mark.one_cell
def test_judge_task_outcomes() -> None:
    """Guards the remote records' verdicts: a stored result equal to the in-process
    evaluation passes; a return off the in-process one, a wrong key, a load failure, a
    task the queue gave up and a worker on the wrong torch each get their own outcome."""
    ok = judge_task(_task(), POLICY, "t26", [10.0, 30.0])
    assert ok[0] == Outcome.PASS and ok[2]["returns_identical"] is True
    assert ok[2]["steps_per_s"] == pytest.approx(80.0)
    off = judge_task(
        _task(mean_return=25.0, episode_returns=[20.0, 30.0]), POLICY, "t26", [10.0, 30.0]
    )
    assert (
        off[0] == Outcome.FAIL and "in-process" in off[1] and off[2]["returns_identical"] is False
    )
    key = judge_task(_task(policy_version=3), POLICY, "t26", None)
    assert key[0] == Outcome.FAIL and "keyed" in key[1]
    load = judge_task(
        _task(outcome="fail", error_type="UnsafeCheckpointError", error_message="nope"),
        POLICY, "t26", None,
    )  # fmt: skip
    assert load[:2] == (Outcome.FAIL, "UnsafeCheckpointError: nope")
    gone = judge_task(
        _task(status="failed", attempts=3, last_error="lease expired: attempt 3"),
        POLICY,
        "t26",
        None,
    )
    assert gone[0] == Outcome.ERROR and "failed after 3 attempts: lease expired" in gone[1]
    torch = judge_task(_task(torch_version="2.4.1"), POLICY, "t26", None)
    assert torch[0] == Outcome.ERROR and "ran torch 2.4.1, not 2.6.0" in torch[1]
    unchecked = judge_task(_task(), POLICY, "t26", None)
    assert unchecked[0] == Outcome.PASS and "no in-process evaluation" in unchecked[2]["note"]


@pytest.mark.one_cell
def test_without_postgresql_the_phase_says_skipped_or_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards a silent pass on a machine without PostgreSQL: every (policy, consumer) gets
    a ``skip`` record saying "skipped: no PostgreSQL" (which the gate, expecting pass,
    fails); with CKPTCOMPAT_REQUIRE_PG=1 they are errors and the phase exits 1."""
    monkeypatch.setattr(pgserver, "unavailable_reason", lambda: "no initdb here")
    monkeypatch.delenv(pgserver.REQUIRE_ENV, raising=False)
    work, records = tmp_path / "w", tmp_path / "r"
    argv = [str(work), str(records), "--python", "t24=py24", "--python", "t26=py26"]
    assert remote_phase.main(argv) == 0
    got = list(results.read_records([records]))
    assert len(got) == 2 * 2 * 2  # agents x producers x consumers
    assert {(r.outcome, r.detail) for r in got} == {
        (Outcome.SKIP, "skipped: no PostgreSQL (no initdb here)")
    }
    monkeypatch.setenv(pgserver.REQUIRE_ENV, "1")
    assert remote_phase.main(argv) == 1
    got = list(results.read_records([records]))  # the rerun replaced the records
    assert len(got) == 8 and {r.outcome for r in got} == {Outcome.ERROR}


@pytest.mark.one_cell
def test_driver_runs_the_remote_phase_after_evaluate_with_goldens_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the phase dropping out of the matrix (or into runs that have no baseline
    for it): with goldens the driver starts one remote process, in the first cell's venv,
    after evaluate and before dcp, naming every cell's interpreter; --no-golden runs none."""
    started: list[list[str]] = []

    def fake_run_one(command, env, log):
        started.append(command)
        return 0, 0.0, 0.0

    monkeypatch.setattr(driver, "_run_one", fake_run_one)
    pythons = {"t24": "/py24", "t26": "/py26"}
    driver.run_matrix(pythons, tmp_path / "w", tmp_path / "r", jobs=1)
    modules = [c[2] if c[1] == "-m" else c[4] for c in started]
    remote = [c for c in started if "ckptcompat.harness.run.remote_phase" in c]
    assert remote == [remote_phase.remote_command("/py24", tmp_path / "w", tmp_path / "r", pythons)]
    assert remote[0][-4:] == ["--python", "t24=/py24", "--python", "t26=/py26"]
    at = modules.index("ckptcompat.harness.run.remote_phase")
    assert all(m == "ckptcompat.harness.run.phases" for m in modules[:at])
    assert all(m != "ckptcompat.harness.run.phases" for m in modules[at + 1 :])
    started.clear()
    driver.run_matrix(pythons, tmp_path / "w", tmp_path / "r", jobs=1, golden=False)
    assert not [c for c in started if "ckptcompat.harness.run.remote_phase" in c]


def _resumed_run(layout: Layout, cell: str) -> tuple[str, int]:
    """A run as the resume phase leaves it under ``cell``: checkpoint + sidecar."""
    run = Chain("mock", cell, cell).run
    env = make_env(BUDGET.env_id)
    try:
        agent = MockAgent(env.observation_space, env.action_space)
    finally:
        env.close()
    uri = SimpleCheckpointManager(run, layout.resume_dir(cell)).save_agent(agent, epoch=4)
    sidecar = layout.sidecar(layout.resume_dir(cell), run)
    sidecar.write_text(json.dumps({"epoch": 4, "producer_numpy": "2.2.6"}), encoding="utf-8")
    return uri, 4


@pytest.mark.slow
def test_round_trip_through_a_real_server_and_this_cells_worker(tmp_path: Path) -> None:
    """Guards the phase's own path in every cell: a throw-away server, the task queued,
    this cell's worker in its venv draining it, the shard collected, and a pass record
    whose returns are the in-process evaluation's, episode for episode; and a rerun into
    the same work folder (it failed: "shard disagrees with the merged DB")."""
    reason = pgserver.unavailable_reason()
    if reason is not None:
        if os.environ.get(pgserver.REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {pgserver.REQUIRE_ENV}=1 requires a server")
        pytest.skip(reason)
    cell = _this_cell()
    work, records = tmp_path / "w", tmp_path / "r"
    uri, _ = _resumed_run(Layout(work), cell)
    local = evaluate_policy(
        uri, tmp_path / "local.duckdb", env_id=BUDGET.env_id, episodes=BUDGET.episodes,
        seed=BUDGET.eval_seed,
    )  # fmt: skip
    pin = versions.by_id(cell).torch
    reference = results.make_record(
        scenario="evaluate", artifact="safe_v1", agent="mock", loader="safe",
        outcome="pass", producer_torch=pin, consumer_torch=pin, evaluator_torch=pin,
        outputs={"run": Chain("mock", cell, cell).run, "episode_returns": local.episode_returns},
    )  # fmt: skip
    results.append_record(records / "evaluate-x-1.jsonl", reference)
    written = remote_phase.run_remote_phase(
        {cell: sys.executable}, work, records / "remote-1.jsonl", agents=("mock",)
    )
    [record] = written
    assert record.outcome == Outcome.PASS, record.detail
    assert record.cell_key == f"remote/queue_eval/mock/safe/{pin}->{pin}->{pin}"
    outputs = record.outputs
    assert outputs["episode_returns"] == list(local.episode_returns)
    assert (outputs["returns_identical"], outputs["attempts"], outputs["worker_exit"]) == (
        True,
        1,
        0,
    )
    assert (work / "remote" / cell / "stats.duckdb").is_file()
    # A rerun into the same work folder (nox -s "remote(<cell>)" after the matrix): the new
    # queue numbers its tasks from 1 again; the old shards made collect refuse the merge.
    [again] = remote_phase.run_remote_phase(
        {cell: sys.executable}, work, records / "remote-2.jsonl", agents=("mock",)
    )
    assert again.outcome == Outcome.PASS, again.detail
