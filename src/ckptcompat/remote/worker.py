"""A remote-evaluation worker: claims its cell's tasks, evaluates, stores one result each.

Started in one torch cell's venv (``ckptcompat eval worker --cell t26`` or
``nox -s "evalworker(t26)"``; the command line checks that the running torch is that
cell's). Per task: claim (a lease), heartbeat from a thread every third of the lease,
evaluate with :class:`ckptcompat.evaluation.evaluator.PolicyEvaluator` into this worker's
own DuckDB shard ``<shard_dir>/<cell>-<worker_id>.duckdb`` (simulation id
``task<id>-a<attempt>``), then :meth:`~ckptcompat.remote.queue.TaskQueue.complete`. An
exception of the evaluation is the task's result (``fail`` for a typed ckptcompat error
about a policy that exists, ``error`` otherwise), never retried; a worker that dies is
taken care of by the lease.

An attempt whose lease was taken back (past its timeout, or heartbeats that did not get
through) still finishes writing its shard, but its result is refused: its simulation stays
in the shard, unfinished or named by no result; :mod:`.report` reads results only.

A server that goes away (stopped, restarted, a reset connection) is waited for: every
queue request reconnects with a capped backoff for up to ``reconnect_s`` seconds in all
(:meth:`~ckptcompat.remote.queue.TaskQueue._call`; then the worker stops with a
:class:`~ckptcompat.errors.TaskQueueError`). The heartbeat thread keeps beating through an
outage (each beat tries to reconnect); an evaluation that finishes while the server is
down waits for it and then completes: stored if the lease still holds (the outage was
shorter than the lease), refused otherwise -- the lease has lapsed, the task is queued
again by the next reap and re-run, so it is never stored twice nor lost.

``CKPTCOMPAT_REMOTE_DELAY_S`` (tests only) makes the worker wait that many seconds,
heartbeating, between a claim and its evaluation: a deterministic window in which to kill
it or let the timeout pass.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    InputError,
    StatsDBError,
    TaskQueueError,
    UnsupportedEnvError,
)
from ckptcompat.remote.queue import DEFAULT_RECONNECT_S, Claim, TaskQueue, TaskResult

__all__ = ["DELAY_ENV", "Worker", "WorkerStats", "result_of_error"]

DELAY_ENV = "CKPTCOMPAT_REMOTE_DELAY_S"
_BAD_INPUT = (
    InputError,
    CheckpointNotFoundError,
    StatsDBError,
    UnsupportedEnvError,
    OSError,
)


def result_of_error(exc: BaseException) -> TaskResult:
    """The stored result of an evaluation that raised ``exc``: ``error`` for bad input
    (nothing was evaluated) or an untyped exception, ``fail`` for any other typed
    :class:`~ckptcompat.errors.CheckpointError` (the policy exists and does not load or fit).
    """
    outcome = (
        "fail" if isinstance(exc, CheckpointError) and not isinstance(exc, _BAD_INPUT) else "error"
    )
    return TaskResult(outcome=outcome, error_type=type(exc).__name__, error_message=str(exc))


@dataclasses.dataclass
class WorkerStats:
    """What a worker did: tasks stored per outcome, results refused, seconds evaluating."""

    stored: dict[str, int] = dataclasses.field(default_factory=dict)
    refused: int = 0
    eval_time_s: float = 0.0

    @property
    def tasks(self) -> int:
        """Results stored."""
        return sum(self.stored.values())


class _Heartbeat(threading.Thread):
    """Renews one claim's lease every ``lease_s / 3`` seconds on its own connection.

    A beat that cannot get through (the server is down) is not the end: the next beat
    reconnects and tries again, until the worker stops the thread. ``lost`` is set only
    when the server answers that the lease is no longer this claim's.
    """

    def __init__(self, dsn: str, claim: Claim, log: Callable[[str], None]) -> None:
        super().__init__(name=f"heartbeat-{claim.task_id}", daemon=True)
        self.dsn, self.claim, self.log = dsn, claim, log
        self.stop = threading.Event()
        self.lost = threading.Event()
        self.missed = 0

    def run(self) -> None:
        interval = max(self.claim.lease_s / 3, 0.05)
        queue: TaskQueue | None = None
        try:
            while not self.stop.wait(interval):
                try:
                    if queue is None:
                        queue = TaskQueue(self.dsn)  # reconnect_s=0: one try per beat
                    alive = queue.heartbeat(self.claim.task_id, self.claim.lease_token)
                except TaskQueueError as exc:
                    if self.missed == 0:
                        self.log(f"task {self.claim.task_id}: heartbeat missed ({exc.found})")
                    self.missed += 1
                    continue
                if not alive:
                    self.lost.set()
                    return
                if self.missed:
                    self.log(
                        f"task {self.claim.task_id}: heartbeat through again after "
                        f"{self.missed} missed"
                    )
                    self.missed = 0
        finally:
            if queue is not None:
                queue.close()


class Worker:
    """Claims and evaluates ``cell``'s tasks until told to stop.

    Args:
        dsn: the queue's PostgreSQL server.
        cell: the torch cell this process runs in (only its tasks are claimed).
        shard_dir: where this worker's DuckDB shard goes (created if missing).
        worker_id: its name in the queue; default ``<host>-<pid>-<6 hex>``.
        max_tasks: stop after this many claims (None: no limit).
        idle_exit_s: stop after this many seconds without a claimable task (None: never).
        poll_s: seconds between claims while the queue is empty.
        reconnect_s: seconds in all to wait for a server that went away, per request.
        torch_threads: ``torch.set_num_threads`` before the first task (default 1: a small
            policy gains nothing from more, and several workers sharing a machine's cores
            slow each other down badly when each spins up a thread pool; env-steps/s
            ratios between workers compare like with like). None leaves torch's default.
        log: one line per task and event (default: stderr).

    Raises:
        TaskQueueError: the server cannot be reached (at start), or was gone for longer
            than ``reconnect_s`` (from :meth:`run`).
    """

    def __init__(
        self,
        dsn: str,
        cell: str,
        shard_dir: str | os.PathLike[str],
        *,
        worker_id: str | None = None,
        max_tasks: int | None = None,
        idle_exit_s: float | None = None,
        poll_s: float = 1.0,
        reconnect_s: float = DEFAULT_RECONNECT_S,
        torch_threads: int | None = 1,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.torch_threads = torch_threads
        self.dsn, self.cell = dsn, cell
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.shard = Path(shard_dir) / f"{cell}-{self.worker_id}.duckdb"
        self.max_tasks, self.idle_exit_s, self.poll_s = max_tasks, idle_exit_s, poll_s
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.queue = TaskQueue(dsn, reconnect_s=reconnect_s, log=self._say)

    def _say(self, line: str) -> None:
        self.log(f"worker {self.worker_id}: {line}")

    def run(self) -> WorkerStats:
        """Claim, evaluate and complete tasks until ``max_tasks`` or ``idle_exit_s``."""
        from ckptcompat.evaluation.evaluator import (
            PolicyEvaluator,
        )  # torch: before claiming

        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)

        self.shard.parent.mkdir(parents=True, exist_ok=True)
        stats, claims, idle_since = WorkerStats(), 0, time.monotonic()
        try:
            while self.max_tasks is None or claims < self.max_tasks:
                for reaped in self.queue.reap():
                    self.log(
                        f"worker {self.worker_id}: task {reaped.task_id} {reaped.status}: "
                        f"{reaped.reason}"
                    )
                claim = self.queue.claim(self.cell, self.worker_id)
                if claim is None:
                    if self.idle_exit_s is not None and (
                        time.monotonic() - idle_since >= self.idle_exit_s
                    ):
                        break
                    time.sleep(self.poll_s)
                    continue
                claims += 1
                self._one(claim, stats, PolicyEvaluator)
                idle_since = time.monotonic()
        finally:
            self.queue.close()
        return stats

    def _one(self, claim: Claim, stats: WorkerStats, evaluator_cls: type) -> None:
        beat = _Heartbeat(self.dsn, claim, self._say)
        beat.start()
        started = time.perf_counter()
        try:
            delay = float(os.environ.get(DELAY_ENV) or 0)
            if delay > 0:
                time.sleep(delay)
            result = self._evaluate(claim, evaluator_cls)
        finally:
            beat.stop.set()
            beat.join()
        elapsed = time.perf_counter() - started
        stats.eval_time_s += elapsed
        if self.queue.complete(claim, self.worker_id, result):
            stats.stored[result.outcome] = stats.stored.get(result.outcome, 0) + 1
            detail = (
                f"mean_return {result.mean_return:.4g}"
                if result.outcome == "pass"
                else f"{result.error_type}"
            )
            self.log(
                f"worker {self.worker_id}: task {claim.task_id} attempt {claim.attempt}: "
                f"{result.outcome} ({detail}) in {elapsed:.2f} s"
            )
        else:
            stats.refused += 1
            self.log(
                f"worker {self.worker_id}: task {claim.task_id} attempt {claim.attempt}: "
                "result refused, the lease was taken back (timeout or missed heartbeats)"
            )

    def _evaluate(self, claim: Claim, evaluator_cls: type) -> TaskResult:
        import torch

        try:
            evaluator = evaluator_cls(
                claim.env_id,
                episodes=claim.episodes,
                seed=claim.seed,
                sim_name=f"remote/{claim.env_id}",
            )
            result = evaluator.evaluate(
                claim.policy_uri,
                self.shard,
                simulation_id=f"task{claim.task_id}-a{claim.attempt}",
            )
        except Exception as exc:
            if not isinstance(exc, (CheckpointError, *_BAD_INPUT)):
                traceback.print_exc()  # a bug: its traceback goes to the log, too
            return dataclasses.replace(result_of_error(exc), torch_version=torch.__version__)
        return TaskResult(
            outcome="pass",
            policy_key=result.policy_key,
            policy_version=result.policy_version,
            simulation_id=result.simulation_id,
            shard=str(self.shard),
            mean_return=result.mean_return,
            episode_returns=list(result.episode_returns),
            env_steps=sum(result.episode_lengths),
            eval_time_s=result.wall_time_s,
            episodes_time_s=result.episodes_time_s,
            episodes_cpu_s=result.episodes_cpu_s,
            torch_version=torch.__version__,
        )
