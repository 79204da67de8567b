"""A database that goes away: workers wait, reconnect, and lose nothing; the command line
says so with a typed error instead of a traceback.

Every test has a server of its own (``own_pg``), stopped with ``pg_ctl stop`` (``fast``:
every session ended; ``immediate``: a crash) and started again on the same socket.

Every test is ``one_cell``: what they check (psycopg reconnects, leases, retried
completions, the CLI's typed errors) is the queue's and the worker's protocol, which does
not depend on torch's version; the worker's evaluation under this cell's torch runs in every
cell in ``test_worker.py``'s round trip and ``test_demo_baseline.py``. (The two worker
outage tests ran in every cell until issue 21 item 4: ~12 s of a worker per cell, most of
it waiting for the server and the lease.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ckptcompat.errors import TaskQueueError
from ckptcompat.remote.pgserver import PgServer
from ckptcompat.remote.queue import TaskQueue
from ckptcompat.remote.schema import RESULTS, TASKS
from ckptcompat.remote.worker import DELAY_ENV, _Heartbeat
from tests.remote.test_worker import ENV, _cell, _policy


def _wait_for(predicate, timeout_s: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _rows(dsn: str, task: int) -> tuple[tuple, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        status = conn.execute(
            f"SELECT status, attempts FROM {TASKS} WHERE id = %s", (task,)
        ).fetchone()
        results = conn.execute(
            f"SELECT worker, attempt, outcome FROM {RESULTS} WHERE task_id = %s", (task,)
        ).fetchall()
    return tuple(status), results


def _start_worker(dsn: str, tmp_path: Path, log: Path, *args: str, delay_s: float):
    command = [
        sys.executable, "-m", "ckptcompat", "eval", "worker", "--cell", _cell(), "--dsn", dsn,
        "--shard-dir", str(tmp_path / "shards"), "--worker-id", "w", "--poll", "0.2",
        "--reconnect-s", "120", *args,
    ]  # fmt: skip
    with log.open("w") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            command,
            env={**os.environ, DELAY_ENV: str(delay_s)},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def _running(dsn: str, task: int) -> bool:
    with TaskQueue(dsn) as queue:
        return next(t for t in queue.tasks() if t["task_id"] == task)["status"] == "running"


@pytest.mark.one_cell
def test_worker_waits_out_a_stopped_server_and_stores_its_result(
    own_pg: PgServer, tmp_path: Path
) -> None:
    """Guards a result lost with the database (the old service's workers died with it):
    the server is stopped (``-m fast``) while a worker evaluates; the worker finishes,
    keeps retrying its completion while the server is down, and once the server is back
    (within the 30 s lease) stores the result: one attempt, exactly one result."""
    dsn = own_pg.create_database("q")
    with TaskQueue(dsn) as queue:
        [task] = queue.submit([_policy(tmp_path)], [_cell()], env_id=ENV, episodes=3, seed=0)[1]
    log = tmp_path / "worker.log"
    worker = _start_worker(dsn, tmp_path, log, "--once", delay_s=1.0)
    try:
        _wait_for(lambda: _running(dsn, task), what="the claim")
        own_pg.stop("fast")
        _wait_for(
            lambda: "during complete" in log.read_text(), what="the completion to hit the outage"
        )
        own_pg.start()
        out, _ = worker.communicate(timeout=180)
    finally:
        worker.kill()
    text = log.read_text()
    assert worker.returncode == 0, text
    assert json.loads(out.splitlines()[-1])["stored"] == {"pass": 1}
    assert "is back after" in text
    assert _rows(dsn, task) == (("done", 1), [("w", 1, "pass")])


@pytest.mark.one_cell
def test_lease_lapsed_while_the_server_was_down_reruns_the_task_once(
    own_pg: PgServer, tmp_path: Path
) -> None:
    """Guards a task stored twice, or never, after a crash of the database (``-m
    immediate``) longer than the 2 s lease: the result computed during the outage is
    refused once the server is back (its lease lapsed), the task is taken back and re-run
    as attempt 2, and that result is the only one."""
    dsn = own_pg.create_database("q")
    with TaskQueue(dsn) as queue:
        [task] = queue.submit(
            [_policy(tmp_path)], [_cell()], env_id=ENV, episodes=3, seed=0, lease_s=2.0
        )[1]
    log = tmp_path / "worker.log"
    worker = _start_worker(dsn, tmp_path, log, "--max-tasks", "2", "--idle-exit", "3", delay_s=0.5)
    try:
        _wait_for(lambda: _running(dsn, task), what="the claim")
        own_pg.stop("immediate")
        _wait_for(
            lambda: "during complete" in log.read_text(), what="the completion to hit the outage"
        )
        time.sleep(2.5)  # past the lease
        own_pg.start()
        out, _ = worker.communicate(timeout=180)
    finally:
        worker.kill()
    text = log.read_text()
    assert worker.returncode == 0, text
    summary = json.loads(out.splitlines()[-1])
    assert (summary["stored"], summary["refused"]) == ({"pass": 1}, 1), text
    assert _rows(dsn, task) == (("done", 2), [("w", 2, "pass")])


@pytest.mark.one_cell
def test_queue_reconnects_within_its_budget_and_says_when_it_gives_up(
    own_pg: PgServer,
) -> None:
    """Guards the reconnection itself: a request on a connection the server dropped
    (``-m fast``) waits for the server to come back within ``reconnect_s`` and then
    answers, on a new connection; with ``reconnect_s=0``, and past a short budget, it is a
    TaskQueueError naming the request, not psycopg's OperationalError."""
    dsn = own_pg.create_database("q")
    lines: list[str] = []
    with TaskQueue(dsn, reconnect_s=60, log=lines.append) as patient, TaskQueue(dsn) as eager:
        patient.submit(["a.pt"], ["t26"], env_id=ENV, episodes=1, seed=0)
        own_pg.stop("fast")
        with pytest.raises(TaskQueueError, match="lost the task queue's PostgreSQL server"):
            eager.counts()
        restart = threading.Timer(1.0, own_pg.start)
        restart.start()
        try:
            assert patient.counts() == {("t26", "queued"): 1}
        finally:
            restart.join()
        assert patient.reconnects == 1
        assert lines[0].startswith("lost the task queue's server during status")
        assert lines[-1].startswith("the task queue's server is back after")
        own_pg.stop("fast")
        patient.reconnect_s = 0.5
        with pytest.raises(TaskQueueError, match="during status") as caught:
            patient.counts()
        assert "retried for" in caught.value.found and "--reconnect-s" in str(caught.value)


@pytest.mark.one_cell
def test_heartbeat_thread_survives_a_restart(own_pg: PgServer) -> None:
    """Guards a lease lost to a short outage: the heartbeat thread misses its beats while
    the server is down, stays alive, and renews the lease once it is back (the lease, 6 s,
    outlasts the outage), so the claim's completion is accepted."""
    dsn = own_pg.create_database("q")
    with TaskQueue(dsn) as queue:
        queue.submit(["a.pt"], ["t26"], env_id=ENV, episodes=1, seed=0, lease_s=6.0)
        claim = queue.claim("t26", "w")
    lines: list[str] = []
    beat = _Heartbeat(dsn, claim, lines.append)
    beat.start()
    try:
        time.sleep(2.2)
        own_pg.stop("fast")
        _wait_for(lambda: beat.missed >= 1, 30, "a missed heartbeat")
        own_pg.start()
        _wait_for(lambda: beat.missed == 0, 30, "a heartbeat after the restart")
        assert beat.is_alive() and not beat.lost.is_set()
    finally:
        beat.stop.set()
        beat.join()
    with TaskQueue(dsn) as queue:
        from ckptcompat.remote.queue import TaskResult

        assert queue.complete(claim, "w", TaskResult(outcome="pass", mean_return=1.0))
    assert any("heartbeat through again" in line for line in lines)


@pytest.mark.one_cell
def test_commands_on_a_stopped_server_exit_2_with_a_typed_error(
    own_pg: PgServer, tmp_path: Path
) -> None:
    """Guards a psycopg traceback from the command line: submit, status and report
    against a server that is down exit 2 with the TaskQueueError's expected/found/fix."""
    dsn = own_pg.create_database("q")
    own_pg.stop("fast")
    commands = [
        ["submit", "--uri", str(tmp_path / "p.pt"), "--cells", _cell(), "--env", ENV],
        ["status"],
        ["report"],
    ]
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-m", "ckptcompat", "eval", *args, "--dsn", dsn],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert "TaskQueueError" in done.stderr and "cannot connect" in done.stderr
        assert "Traceback" not in done.stderr
