"""The task queue: leases with heartbeats on a PostgreSQL table (docs/design.md section 3).

A worker claims the oldest ``queued`` task of its cell with ``SELECT ... FOR UPDATE SKIP
LOCKED`` (two workers never claim one task), which gives it a fresh ``lease_token`` and
counts an attempt. While it evaluates it heartbeats (``heartbeat_at``) under that token.
:meth:`TaskQueue.reap` (every claim runs it first) takes back every running task whose
heartbeat is older than ``lease_s`` (its worker died: SIGKILL, a lost machine) or whose
attempt has run past ``timeout_s``: queued again while ``attempts < max_attempts``,
``failed`` after. Only these infrastructure failures are retried; whatever the evaluation
itself ends with -- a policy that does not load included -- is a result, stored by
:meth:`TaskQueue.complete` in one transaction that also requires the caller's token to
still hold the lease: a worker whose lease was taken back stores nothing, and of two
completions racing on one lease exactly one is stored (the result's primary key is the
task id).

A lost connection (the server stopped, restarted or reset it) is retried: every method
runs through :meth:`TaskQueue._call`, which reconnects with a capped exponential backoff
(0.1 s doubling to :data:`RECONNECT_MAX_DELAY_S`) for at most ``reconnect_s`` seconds in
all, then raises :class:`~ckptcompat.errors.TaskQueueError`. ``reconnect_s=0`` (the
command line's ``submit``, ``status`` and ``report``) raises at the first loss. Each
method is safe to run again after a loss: a ``complete`` whose commit got through but whose
answer did not finds its own stored result and says so; a ``claim`` whose answer was lost
leaves a running task nobody heartbeats, which its lease gives back to the queue.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ckptcompat.errors import TaskQueueError
from ckptcompat.remote.schema import RESULTS, TASKS, connect

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RECONNECT_S",
    "DEFAULT_TIMEOUT_S",
    "RECONNECT_MAX_DELAY_S",
    "Claim",
    "Reaped",
    "TaskQueue",
    "TaskResult",
]

#: Seconds without a heartbeat after which a running task's worker counts as dead.
DEFAULT_LEASE_S = 30.0
#: Seconds one attempt may run (the old service's 10 minutes).
DEFAULT_TIMEOUT_S = 600.0
#: Claims per task, retries of infrastructure failures included.
DEFAULT_MAX_ATTEMPTS = 3
#: Seconds a worker keeps trying to reach a server that went away before it gives up.
DEFAULT_RECONNECT_S = 300.0
#: The longest pause between two reconnection attempts (the backoff's cap), seconds.
RECONNECT_MAX_DELAY_S = 5.0

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A leased task: what to evaluate and the token that proves the lease.

    Attributes:
        task_id, policy_uri, cell, env_id, episodes, seed: the task.
        attempt: this claim's number, 1 ... ``max_attempts``.
        lease_token: pass it to :meth:`TaskQueue.heartbeat` and :meth:`TaskQueue.complete`.
        lease_s: heartbeat at least this often (seconds); :class:`.worker.Worker` beats
            every third of it.
        timeout_s: seconds this attempt may run before it is taken back.
    """

    task_id: int
    policy_uri: str
    cell: str
    env_id: str
    episodes: int
    seed: int
    attempt: int
    lease_token: str
    lease_s: float
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """What one attempt of a task ended with.

    Attributes:
        outcome: ``pass`` (evaluated), ``fail`` (a typed ckptcompat error about a policy
            that exists: it does not load or does not fit the env) or ``error`` (the URI
            names nothing, a bad input, or an untyped exception: a bug).
        error_type, error_message: the exception's class name and text, None on pass.
        policy_key, policy_version: the stats DB's key of the evaluated policy.
        simulation_id, shard: where its episodes are (the worker's DuckDB shard file).
        mean_return, episode_returns: the returns, in seed order.
        env_steps: env steps over every episode.
        eval_time_s: seconds the evaluation took, loading included.
        episodes_time_s: seconds in the episodes alone.
        episodes_cpu_s: the episodes' CPU seconds in the worker's evaluating thread (what
            env-steps/s divides by: it does not grow when workers share the cores).
        torch_version: the evaluating torch.
    """

    outcome: str
    error_type: str | None = None
    error_message: str | None = None
    policy_key: str | None = None
    policy_version: int | None = None
    simulation_id: str | None = None
    shard: str | None = None
    mean_return: float | None = None
    episode_returns: list[float] | None = None
    env_steps: int | None = None
    eval_time_s: float | None = None
    episodes_time_s: float | None = None
    episodes_cpu_s: float | None = None
    torch_version: str | None = None


@dataclasses.dataclass(frozen=True)
class Reaped:
    """A running task taken back by :meth:`TaskQueue.reap`: its new status and why."""

    task_id: int
    status: str
    reason: str


# Attempts taken back: past timeout_s since the claim, or silent for lease_s.
_STALE = (
    "status = 'running' AND ("
    "heartbeat_at < clock_timestamp() - make_interval(secs => lease_s) OR "
    "claimed_at < clock_timestamp() - make_interval(secs => timeout_s))"
)
_REAP = f"""
WITH stale AS (
    SELECT id FROM {TASKS} WHERE {_STALE} ORDER BY id FOR UPDATE SKIP LOCKED
)
UPDATE {TASKS} t SET
    status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'queued' END,
    last_error = CASE
        WHEN t.claimed_at < clock_timestamp() - make_interval(secs => t.timeout_s)
        THEN 'timeout: attempt ' || t.attempts || ' on worker ' || coalesce(t.worker, '?')
             || ' ran past ' || t.timeout_s || ' s'
        ELSE 'lease expired: attempt ' || t.attempts || ' on worker '
             || coalesce(t.worker, '?') || ' sent no heartbeat for ' || t.lease_s || ' s'
        END,
    lease_token = NULL,
    finished_at = CASE WHEN t.attempts >= t.max_attempts THEN clock_timestamp() END
FROM stale WHERE t.id = stale.id
RETURNING t.id, t.status, t.last_error
"""
_CLAIM = f"""
UPDATE {TASKS} SET
    status = 'running', attempts = attempts + 1, lease_token = %(token)s,
    worker = %(worker)s, claimed_at = clock_timestamp(), heartbeat_at = clock_timestamp()
WHERE id = (
    SELECT id FROM {TASKS} WHERE cell = %(cell)s AND status = 'queued'
    ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1
)
RETURNING id, policy_uri, cell, env_id, episodes, seed, attempts, lease_token, lease_s, timeout_s
"""
_RESULT_COLUMNS = [f.name for f in dataclasses.fields(TaskResult)]


class TaskQueue:
    """The queue on one PostgreSQL connection (one per thread: heartbeats use their own).

    Args:
        dsn: a libpq connection string or ``postgresql://`` URI.
        reconnect_s: seconds in all to keep reconnecting after the connection is lost
            (0: raise at once); see the module docstring.
        log: told (one line each) when the connection is lost and when it is back.

    Raises:
        TaskQueueError: the server cannot be reached now (the first connection is not
            retried: a wrong ``--dsn`` should say so at once).
    """

    def __init__(
        self,
        dsn: str,
        *,
        reconnect_s: float = 0.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.reconnect_s = reconnect_s
        self.log = log
        self.reconnects = 0
        self.conn: psycopg.Connection = connect(dsn)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> TaskQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, operation: Callable[[psycopg.Connection], _T]) -> _T:
        """Run ``operation(conn)``; on a lost connection reconnect and run it again, with a
        capped exponential backoff, for at most ``reconnect_s`` seconds in all.

        Raises:
            TaskQueueError: the connection is lost and could not be made again within
                ``reconnect_s`` (``what`` names the request that was interrupted).
        """
        import psycopg

        started, delay = time.monotonic(), 0.1
        retried_live = announced = False
        while True:
            try:
                if self.conn.closed or self.conn.broken:
                    self.conn = connect(self.dsn)
                    self.reconnects += 1
                    if announced and self.log is not None:
                        back = time.monotonic() - started
                        self.log(f"the task queue's server is back after {back:.1f} s: {what}")
                return operation(self.conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, TaskQueueError) as exc:
                if isinstance(exc, TaskQueueError) and not exc.problem.startswith("cannot connect"):
                    raise
                if not (self.conn.closed or self.conn.broken) and not retried_live:
                    # A statement failed on a live connection (a deadlock, a cancel): its
                    # transaction was rolled back; run it once more at once.
                    retried_live = True
                    continue
                waited = time.monotonic() - started
                text = str(exc).strip()
                reason = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
                if waited + delay > self.reconnect_s:
                    raise TaskQueueError(
                        f"lost the task queue's PostgreSQL server during {what}",
                        expected=f"the server back within {self.reconnect_s:g} s",
                        found=reason + (f" (retried for {waited:.1f} s)" if waited else ""),
                        fix="check that the server runs and is reachable; a worker waits "
                        "longer with --reconnect-s S",
                    ) from exc
                if not announced and self.log is not None:
                    self.log(
                        f"lost the task queue's server during {what} ({reason}); "
                        f"reconnecting for up to {self.reconnect_s:g} s"
                    )
                announced = True
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)

    def submit(
        self,
        policy_uris: Sequence[str],
        cells: Sequence[str],
        *,
        env_id: str,
        episodes: int,
        seed: int,
        lease_s: float = DEFAULT_LEASE_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        batch: str | None = None,
    ) -> tuple[str, list[int]]:
        """Enqueue one task per (policy URI, cell), in one transaction.

        Returns:
            The batch id (default a fresh uuid4 hex) and the new task ids, policy-major.
        """
        batch = batch or uuid.uuid4().hex
        rows = [
            (batch, uri, cell, env_id, episodes, seed, lease_s, timeout_s, max_attempts)
            for uri in policy_uris
            for cell in cells
        ]

        def insert(conn: psycopg.Connection) -> list[int]:
            ids = []
            with conn.transaction(), conn.cursor() as cur:
                for row in rows:
                    cur.execute(
                        f"INSERT INTO {TASKS} (batch, policy_uri, cell, env_id, episodes, "
                        "seed, lease_s, timeout_s, max_attempts) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                        row,
                    )
                    ids.append(cur.fetchone()[0])
            return ids

        return batch, self._call("submit", insert)

    def reap(self) -> list[Reaped]:
        """Take back every running task whose lease expired or whose attempt timed out.

        Returns:
            The tasks taken back: ``queued`` again, or ``failed`` at ``max_attempts``.
        """

        def reap(conn: psycopg.Connection) -> list[Reaped]:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_REAP)
                return [Reaped(*row) for row in cur.fetchall()]

        return self._call("reap", reap)

    def claim(self, cell: str, worker: str) -> Claim | None:
        """Lease the oldest queued task of ``cell`` to ``worker`` (after :meth:`reap`).

        Returns:
            The :class:`Claim`, or None when ``cell`` has no queued task.
        """
        self.reap()
        token = uuid.uuid4().hex

        def claim(conn: psycopg.Connection) -> Claim | None:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_CLAIM, {"token": token, "worker": worker, "cell": cell})
                row = cur.fetchone()
            return None if row is None else Claim(*row)

        return self._call("claim", claim)

    def heartbeat(self, task_id: int, lease_token: str) -> bool:
        """Renew the lease; False when it was taken back or has lapsed (expired, or the
        attempt is past its timeout, reaped or not): the result will be refused."""

        def beat(conn: psycopg.Connection) -> bool:
            with conn.cursor() as cur:
                cur.execute(
                    f"UPDATE {TASKS} SET heartbeat_at = clock_timestamp() "
                    f"WHERE id = %s AND lease_token = %s AND NOT ({_STALE})",
                    (task_id, lease_token),
                )
                return cur.rowcount == 1

        return self._call("heartbeat", beat)

    def complete(self, claim: Claim, worker: str, result: TaskResult) -> bool:
        """Store ``result`` as the task's one result and mark it ``done``.

        Returns:
            True when stored (by this call, or by an earlier run of it whose commit got
            through before the connection was lost); False when the lease is no longer
            this claim's (past its timeout or its lease, reaped or not yet, or another
            completion won): nothing is written then.
        """
        values = dataclasses.asdict(result)
        if values["episode_returns"] is not None:
            values["episode_returns"] = json.dumps(values["episode_returns"])
        columns = [*_RESULT_COLUMNS, "task_id", "worker", "attempt"]
        params = [
            *(values[c] for c in _RESULT_COLUMNS),
            claim.task_id,
            worker,
            claim.attempt,
        ]
        import psycopg

        def store(conn: psycopg.Connection) -> bool:
            stored = False
            with conn.transaction() as tx, conn.cursor() as cur:
                cur.execute(
                    f"UPDATE {TASKS} SET status = 'done', lease_token = NULL, "
                    "finished_at = clock_timestamp(), last_error = NULL WHERE id = %s "
                    f"AND lease_token = %s AND status = 'running' AND NOT ({_STALE})",
                    (claim.task_id, claim.lease_token),
                )
                if cur.rowcount == 1:
                    cur.execute(
                        f"INSERT INTO {RESULTS} ({', '.join(columns)}) VALUES "
                        f"({', '.join(['%s'] * len(columns))}) ON CONFLICT (task_id) DO NOTHING",
                        params,
                    )
                    stored = cur.rowcount == 1
                    if not stored:  # a result already there: keep it, and the task as it was
                        raise psycopg.Rollback(tx)
                    return True
                # Not ours to store now; but ours already, if a run of this call committed
                # and its answer was lost with the connection (attempts are unique per task).
                cur.execute(
                    f"SELECT worker, attempt FROM {RESULTS} WHERE task_id = %s",
                    (claim.task_id,),
                )
                row = cur.fetchone()
            return row is not None and tuple(row) == (worker, claim.attempt)

        return self._call("complete", store)

    def counts(self, batch: str | None = None) -> dict[tuple[str, str], int]:
        """Tasks per (cell, status), of one batch or of all."""
        where, params = ("WHERE batch = %s", (batch,)) if batch else ("", ())

        def count(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT cell, status, count(*) FROM {TASKS} {where} GROUP BY cell, status",
                    params,
                )
                return {(cell, status): n for cell, status, n in cur.fetchall()}

        return self._call("status", count)

    def tasks(self, batch: str | None = None) -> list[dict[str, Any]]:
        """Every task (of one batch) with its result's columns (None before one), by id."""
        where, params = ("WHERE t.batch = %s", (batch,)) if batch else ("", ())

        def read(conn: psycopg.Connection) -> list[dict[str, Any]]:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT t.id AS task_id, t.batch, t.policy_uri, t.cell, t.env_id, "
                    "t.episodes, t.seed, t.status, t.attempts, t.max_attempts, t.last_error, "
                    "t.worker, r.outcome, r.error_type, r.error_message, r.policy_key, "
                    "r.policy_version, r.simulation_id, r.shard, r.mean_return, "
                    "r.episode_returns, r.env_steps, r.eval_time_s, r.episodes_time_s, "
                    "r.episodes_cpu_s, r.torch_version, r.attempt, "
                    "extract(epoch FROM t.finished_at - t.created_at) AS queue_to_done_s "
                    f"FROM {TASKS} t LEFT JOIN {RESULTS} r ON r.task_id = t.id {where} "
                    "ORDER BY t.id",
                    params,
                )
                names = [d.name for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return self._call("reading tasks", read)

    def latest_batch(self) -> str | None:
        """The batch of the newest task, None on an empty queue."""

        def latest(conn: psycopg.Connection) -> str | None:
            with conn.cursor() as cur:
                cur.execute(f"SELECT batch FROM {TASKS} ORDER BY id DESC LIMIT 1")
                row = cur.fetchone()
            return None if row is None else row[0]

        return self._call("reading tasks", latest)
