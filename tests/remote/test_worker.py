"""Real worker processes against a real server: kill recovery, timeouts, load failures,
the cell check, and the whole round trip through the command line.

Every test but the round trip is ``one_cell``: what it checks (leases, retries, result
typing) is the queue's and the worker's logic, the same on every torch. The round trip
runs in every cell: it evaluates there for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ckptcompat.agents import RecurrentAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.evaluation.evaluator import evaluate_policy
from ckptcompat.evaluation.stats_db import SimulationStatsDB
from ckptcompat.harness.versions import DEFAULT, cell_for_torch
from ckptcompat.remote.queue import TaskQueue
from ckptcompat.remote.worker import DELAY_ENV
from ckptcompat.rl.envs import make_env

ENV = "CartPole-v1"


def _cell() -> str:
    cell = os.environ.get("CKPTCOMPAT_CELL") or cell_for_torch(torch.__version__).id
    return cell


def _policy(tmp_path: Path, run: str = "policy") -> str:
    env = make_env(ENV)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            agent = RecurrentAgent(env.observation_space, env.action_space, hidden_size=16)
    finally:
        env.close()
    return SimpleCheckpointManager(run, tmp_path / "data").save_agent(agent, epoch=0)


def _cli(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "ckptcompat", "eval", *args]


def _worker(dsn: str, shards: Path, *args: str, delay_s: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, DELAY_ENV: str(delay_s)}
    command = _cli("worker", "--cell", _cell(), "--dsn", dsn, "--shard-dir", str(shards), *args)
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout_s: float = 240) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err
    return out, err


def _task(dsn: str, task_id: int) -> dict:
    with TaskQueue(dsn) as queue:
        return next(t for t in queue.tasks() if t["task_id"] == task_id)


def _wait_running(dsn: str, task_id: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while _task(dsn, task_id)["status"] != "running":
        assert time.monotonic() < deadline, "the worker never claimed the task"
        time.sleep(0.1)


def _submit(dsn: str, uris: list[str], **kwargs: float) -> list[int]:
    with TaskQueue(dsn) as queue:
        return queue.submit(uris, [_cell()], env_id=ENV, episodes=3, seed=0, **kwargs)[1]


@pytest.mark.one_cell
def test_sigkilled_worker_loses_its_lease_and_another_reruns_the_task(
    dsn: str, tmp_path: Path
) -> None:
    """Guards a task lost with its worker (the old service's dead workers): a worker
    SIGKILLed mid-task stops heartbeating, its 2 s lease expires, and a second worker
    re-runs the task as attempt 2 and stores the one result."""
    [task] = _submit(dsn, [_policy(tmp_path)], lease_s=2.0)
    doomed = _worker(dsn, tmp_path / "shards", "--once", "--worker-id", "doomed", delay_s=120)
    try:
        _wait_running(dsn, task)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate()
    killed = time.monotonic()
    rescuer = _worker(
        dsn,
        tmp_path / "shards",
        "--once",
        "--worker-id",
        "rescuer",
        "--poll",
        "0.2",
        "--idle-exit",
        "60",
    )
    _finish(rescuer)
    row = _task(dsn, task)
    assert (row["status"], row["attempts"], row["outcome"], row["attempt"]) == (
        "done",
        2,
        "pass",
        2,
    )
    assert row["worker"] == "rescuer"
    print(f"recovered {time.monotonic() - killed:.1f} s after the SIGKILL (lease 2 s)")


@pytest.mark.one_cell
def test_timed_out_attempts_are_refused_retried_then_failed(dsn: str, tmp_path: Path) -> None:
    """Guards a hung evaluation holding its task for ever: each attempt past its 1 s
    timeout is taken back although it heartbeats, its late result refused, the task retried
    until max_attempts (2 here) and then failed with the timeout as its last error."""
    [task] = _submit(dsn, [_policy(tmp_path)], timeout_s=1.0, max_attempts=2)
    worker = _worker(
        dsn,
        tmp_path / "shards",
        "--max-tasks",
        "3",
        "--idle-exit",
        "4",
        "--poll",
        "0.2",
        delay_s=2.5,
    )
    out, _ = _finish(worker)
    assert json.loads(out.splitlines()[-1])["refused"] == 2
    row = _task(dsn, task)
    assert (row["status"], row["attempts"], row["outcome"]) == ("failed", 2, None)
    assert row["last_error"].startswith("timeout: attempt 2")


@pytest.mark.one_cell
def test_policies_that_fail_to_load_are_results_not_retries(dsn: str, tmp_path: Path) -> None:
    """Guards a bad policy burning three attempts (or a worker) : a file that is no
    checkpoint and a path with nothing there each get one stored result with the typed
    error's name, after one attempt; the worker goes on to the next task."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint\n" * 10)
    tasks = _submit(dsn, [str(bad), str(tmp_path / "missing.pt"), _policy(tmp_path)])
    _finish(_worker(dsn, tmp_path / "shards", "--max-tasks", "3", "--idle-exit", "5"))
    rows = [_task(dsn, t) for t in tasks]
    assert [(r["status"], r["attempts"], r["outcome"]) for r in rows] == [
        ("done", 1, "fail"),
        ("done", 1, "error"),
        ("done", 1, "pass"),
    ]
    assert rows[0]["error_type"] == "CorruptCheckpointError"
    assert rows[1]["error_type"] == "CheckpointNotFoundError"
    assert str(bad) in rows[0]["error_message"]


@pytest.mark.one_cell
def test_worker_refuses_a_cell_it_does_not_run(dsn: str, tmp_path: Path) -> None:
    """Guards results filed under the wrong torch: ``--cell`` naming another cell than the
    running torch's exits 2 with a typed message before it claims anything."""
    other = next(c.id for c in DEFAULT if c.id != _cell())
    command = _cli("worker", "--cell", other, "--dsn", dsn, "--shard-dir", str(tmp_path))
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 2
    assert "TaskQueueError" in done.stderr and f"cell {other}" in done.stderr


def _episodes(db: Path) -> tuple[int, int]:
    with SimulationStatsDB(db) as stats:
        return (
            int(stats._scalar("SELECT count(*) FROM episodes")),
            int(stats._scalar("SELECT count(*) FROM simulations")),
        )


def test_round_trip_submit_worker_collect_report(dsn: str, tmp_path: Path) -> None:
    """Guards the remote path drifting from the local one, in every cell: a policy
    submitted as RUN:latest is pinned, evaluated by this cell's worker with the returns an
    in-process evaluation gives, its shard collected twice with no change, and reported."""
    uri = _policy(tmp_path, run="trip")
    run_latest = f"{tmp_path / 'data'}/trip:latest"
    run = lambda *args: subprocess.run(  # noqa: E731
        _cli(*args, "--dsn", dsn) if args[0] != "collect" else _cli(*args),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    submitted = run("submit", "--uri", run_latest, "--cells", _cell(), "--episodes", "3")
    assert submitted.returncode == 0, submitted.stderr
    batch = json.loads(submitted.stdout.splitlines()[-1])["batch"]
    shards = tmp_path / "shards"
    _finish(_worker(dsn, shards, "--once", "--idle-exit", "30"))
    status = run("status", "--batch", batch)
    assert status.returncode == 0 and f"{_cell()}" in status.stdout, status.stderr
    db = tmp_path / "stats.duckdb"
    for _ in range(2):
        collected = run("collect", "--shard-dir", str(shards), "--db", str(db))
        assert collected.returncode == 0, collected.stderr
        assert _episodes(db) == (3, 1)
    reported = run("report", "--batch", batch, "--json")
    assert reported.returncode == 0, reported.stderr
    [row] = json.loads(reported.stdout)["rows"]
    local = evaluate_policy(uri, tmp_path / "local.duckdb", env_id=ENV, episodes=3, seed=0)
    assert (row["outcome"], row["policy_key"], row["policy_version"]) == ("pass", "trip", 0)
    assert row["mean_return"] == local.mean_return
    assert row["returns_identical"] is True
