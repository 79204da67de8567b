"""The task queue's leases on a real PostgreSQL server: claim, heartbeat, reap, complete.

One cell: the queue is SQL and threads, no torch; the same code runs in every cell.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from ckptcompat.errors import TaskQueueError
from ckptcompat.remote.queue import TaskQueue, TaskResult
from ckptcompat.remote.schema import RESULTS, resolve_dsn

pytestmark = pytest.mark.one_cell
ENV = "CartPole-v1"


def _submit(queue: TaskQueue, uris=("a.pt",), cells=("t26",), **kwargs: float) -> list[int]:
    return queue.submit(list(uris), list(cells), env_id=ENV, episodes=2, seed=0, **kwargs)[1]


def _results(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT task_id, worker, mean_return FROM {RESULTS}").fetchall()


def test_submit_claim_complete(dsn: str) -> None:
    """Guards the basic cycle: one task per (policy, cell), a worker claims only its own
    cell's tasks, oldest first, and a completed task is done with its result stored."""
    with TaskQueue(dsn) as queue:
        ids = _submit(queue, uris=("a.pt", "b.pt"), cells=("t24", "t26"))
        assert len(ids) == 4
        claims = [queue.claim("t26", "w26") for _ in range(3)]
        assert [c.policy_uri for c in claims[:2]] == ["a.pt", "b.pt"]
        assert all(c.cell == "t26" and c.attempt == 1 for c in claims[:2])
        assert claims[2] is None  # t24's tasks are not t26's
        assert queue.heartbeat(claims[0].task_id, claims[0].lease_token)
        result = TaskResult(outcome="pass", mean_return=9.5, episode_returns=[9.0, 10.0])
        assert queue.complete(claims[0], "w26", result)
        assert queue.counts() == {("t24", "queued"): 2, ("t26", "done"): 1, ("t26", "running"): 1}
        row = next(t for t in queue.tasks() if t["task_id"] == claims[0].task_id)
        assert (row["outcome"], row["episode_returns"], row["attempt"]) == ("pass", [9.0, 10.0], 1)


def test_two_workers_never_claim_the_same_task(dsn: str) -> None:
    """Guards SKIP LOCKED: workers claiming at once on separate connections each get
    distinct tasks, and every task is claimed exactly once."""
    with TaskQueue(dsn) as queue:
        ids = _submit(queue, uris=[f"p{i}.pt" for i in range(40)])
    got: list[list[int]] = [[], [], [], []]

    def work(slot: int) -> None:
        with TaskQueue(dsn) as mine:
            while (claim := mine.claim("t26", f"w{slot}")) is not None:
                got[slot].append(claim.task_id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [task for slot in got for task in slot]
    assert sorted(claimed) == sorted(ids)


def test_timeout_fails_the_attempt_and_retries_it(dsn: str) -> None:
    """Guards the timeout: an attempt still heartbeating past timeout_s is taken back and
    queued again (attempt 2), its late heartbeat and its late result are refused."""
    with TaskQueue(dsn) as queue:
        [task] = _submit(queue, lease_s=30.0, timeout_s=0.5)
        first = queue.claim("t26", "slow")
        time.sleep(0.3)
        assert queue.heartbeat(task, first.lease_token)
        time.sleep(0.4)
        [reaped] = queue.reap()
        assert (reaped.task_id, reaped.status) == (task, "queued")
        assert reaped.reason.startswith("timeout: attempt 1 on worker slow ran past 0.5 s")
        assert not queue.heartbeat(task, first.lease_token)
        assert not queue.complete(first, "slow", TaskResult(outcome="pass", mean_return=1.0))
        second = queue.claim("t26", "fast")
        assert (second.task_id, second.attempt) == (task, 2)
        assert queue.complete(second, "fast", TaskResult(outcome="pass", mean_return=2.0))
    assert _results(dsn) == [(task, "fast", 2.0)]


def test_expired_leases_give_up_after_max_attempts(dsn: str) -> None:
    """Guards the retry limit: a task whose worker dies on every attempt (no heartbeat
    within lease_s) is claimed at most max_attempts = 3 times, then failed, with the last
    error saying why; it is never claimed again."""
    with TaskQueue(dsn) as queue:
        [task] = _submit(queue, lease_s=0.2)
        for attempt in (1, 2, 3):
            claim = queue.claim("t26", f"doomed{attempt}")
            assert (claim.task_id, claim.attempt) == (task, attempt)
            time.sleep(0.35)  # the worker "died": no heartbeat
        assert queue.claim("t26", "late") is None  # its reap failed the task
        [row] = queue.tasks()
        assert (row["status"], row["attempts"], row["outcome"]) == ("failed", 3, None)
        assert row["last_error"].startswith("lease expired: attempt 3 on worker doomed3")
        assert queue.counts() == {("t26", "failed"): 1}


def test_heartbeats_keep_a_lease(dsn: str) -> None:
    """Guards against reaping a live worker: a task heartbeating more often than lease_s
    is not taken back, however long it runs (below its timeout)."""
    with TaskQueue(dsn) as queue:
        [task] = _submit(queue, lease_s=0.4)
        claim = queue.claim("t26", "alive")
        for _ in range(6):
            time.sleep(0.15)
            assert queue.heartbeat(task, claim.lease_token)
            assert queue.reap() == []
        assert queue.complete(claim, "alive", TaskResult(outcome="pass", mean_return=3.0))


def test_racing_completions_store_one_result(dsn: str) -> None:
    """Guards duplicate completion: two workers completing one task at the same moment
    (here both holding its lease) store exactly one result, and the task is done once."""
    with TaskQueue(dsn) as queue:
        _submit(queue)
        claim = queue.claim("t26", "a")
    barrier = threading.Barrier(2)
    stored: dict[str, bool] = {}

    def finish(worker: str, value: float) -> None:
        with TaskQueue(dsn) as mine:
            barrier.wait()
            stored[worker] = mine.complete(claim, worker, TaskResult("pass", mean_return=value))

    threads = [threading.Thread(target=finish, args=(w, v)) for w, v in (("a", 1.0), ("b", 2.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(stored.values()) == [False, True]
    winner = next(w for w, ok in stored.items() if ok)
    [(_, worker, _)] = _results(dsn)
    assert worker == winner


def test_stale_worker_cannot_overwrite_the_rerun_result(dsn: str) -> None:
    """Guards the race after a lease expiry: the first worker (presumed dead, but only
    slow) finishing after the re-run stored its result leaves that result alone."""
    with TaskQueue(dsn) as queue:
        _submit(queue, lease_s=0.2)
        slow = queue.claim("t26", "slow")
        time.sleep(0.35)
        rerun = queue.claim("t26", "rerun")
        assert rerun.attempt == 2
        assert queue.complete(rerun, "rerun", TaskResult("pass", mean_return=5.0))
        assert not queue.complete(slow, "slow", TaskResult("pass", mean_return=-1.0))
    assert [(w, r) for _, w, r in _results(dsn)] == [("rerun", 5.0)]


def test_unreachable_server_is_a_typed_error(pg_server, monkeypatch) -> None:
    """Guards a traceback on a wrong --dsn: a server that is not there is a TaskQueueError
    saying what to check; no DSN at all says where one comes from."""
    with pytest.raises(TaskQueueError, match="cannot connect"):
        TaskQueue(f"host={pg_server.root}/missing dbname=postgres user=postgres")
    monkeypatch.delenv("CKPTCOMPAT_PG_DSN", raising=False)
    with pytest.raises(TaskQueueError, match="CKPTCOMPAT_PG_DSN"):
        resolve_dsn(None)
