"""``ckptcompat eval submit|worker|status|collect|report``: remote evaluation through a
PostgreSQL task queue (:mod:`ckptcompat.remote`).

Every subcommand but ``collect`` talks to the queue named by ``--dsn`` (default
``$CKPTCOMPAT_PG_DSN``). ``submit`` pins ``RUN:latest`` to a concrete file once, so every
cell evaluates the same epoch. ``worker --cell C`` refuses to start unless the running
torch is cell C's (and ``$CKPTCOMPAT_CELL``, when set, says C). Exit codes as every
subcommand's (:func:`ckptcompat.cli_common.exit_code`); an unreachable server is bad
input (2); ``report`` exits 1 when its verdict fails (a regression, an unfinished task).
The arguments are :mod:`ckptcompat.cli_eval_parser`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata
from typing import Any

from ckptcompat.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    on_disk,
)
from ckptcompat.errors import CheckpointError, InputError, TaskQueueError

__all__ = [
    "collect_command",
    "report_command",
    "status_command",
    "submit_command",
    "worker_command",
]


def _queue(args: argparse.Namespace) -> Any:
    from ckptcompat.remote.queue import TaskQueue
    from ckptcompat.remote.schema import resolve_dsn

    return TaskQueue(resolve_dsn(args.dsn))


# --------------------------------------------------------------------------- commands
def _pin(uri: str, env: str | None) -> tuple[str, str]:
    """The URI with ``:latest`` resolved to its file, and the env to evaluate it on."""
    from ckptcompat.checkpoint.uri import resolve
    from ckptcompat.cli_run import _DEFAULT_ENV, _env_of

    if "://" in uri and not uri.startswith("file://"):
        return uri, env or _DEFAULT_ENV
    resolved = resolve(on_disk(uri))
    if env is not None:
        return resolved.uri, env
    try:
        return resolved.uri, _env_of(resolved.uri)
    except CheckpointError:  # the worker reports the load failure; the env is the default
        return resolved.uri, _DEFAULT_ENV


def submit_command(args: argparse.Namespace) -> int:
    from ckptcompat.cli_run import env_ids

    ids = env_ids()
    if args.env is not None and ids is not None and args.env not in ids:
        raise InputError(
            f"--env {args.env} is not a supported env",
            expected=f"one of {', '.join(ids)}",
            found=args.env,
            fix="pick one of those ids",
        )
    pinned = [_pin(uri, args.env) for uri in args.uri]
    with _queue(args) as queue:
        batch, ids_by_env = None, []
        for uri, env_id in pinned:
            batch, task_ids = queue.submit(
                [uri],
                args.cells,
                env_id=env_id,
                episodes=args.episodes,
                seed=args.seed,
                lease_s=args.lease_s,
                timeout_s=args.timeout_s,
                max_attempts=args.max_attempts,
                batch=batch,
            )
            ids_by_env.extend(task_ids)
    print(json.dumps({"batch": batch, "tasks": ids_by_env}))
    print(
        f"ckptcompat eval submit: queued {len(ids_by_env)} tasks ({len(pinned)} policies x "
        f"{len(args.cells)} cells) in batch {batch}",
        file=sys.stderr,
    )
    return EXIT_OK


def _check_cell(cell: str) -> None:
    from ckptcompat.harness.versions import by_id

    env_cell = os.environ.get("CKPTCOMPAT_CELL")
    if env_cell and env_cell != cell:
        raise TaskQueueError(
            f"--cell {cell} disagrees with CKPTCOMPAT_CELL={env_cell}",
            expected="a worker started in the venv of the cell it claims for",
            found=f"this process's cell {env_cell}",
            fix=f'start it with nox -s "evalworker({cell})", or pass --cell {env_cell}',
        )
    try:
        torch = metadata.version("torch").split("+", 1)[0]
    except metadata.PackageNotFoundError:
        torch = "not installed"
    wanted = by_id(cell).torch
    if torch != wanted:
        raise TaskQueueError(
            f"a worker for cell {cell} must run torch {wanted}",
            expected=f"torch {wanted}",
            found=f"torch {torch} in {sys.executable}",
            fix=f'start it with nox -s "evalworker({cell})" or .nox/tests-{cell}/bin/ckptcompat',
        )


def worker_command(args: argparse.Namespace) -> int:
    _check_cell(args.cell)
    from ckptcompat.remote.schema import resolve_dsn
    from ckptcompat.remote.worker import Worker

    worker = Worker(
        resolve_dsn(args.dsn),
        args.cell,
        args.shard_dir,
        worker_id=args.worker_id,
        max_tasks=1 if args.once else args.max_tasks,
        idle_exit_s=args.idle_exit,
        poll_s=args.poll,
        reconnect_s=args.reconnect_s,
        torch_threads=args.torch_threads,
    )
    stats = worker.run()
    outcomes = ", ".join(f"{n} {o}" for o, n in sorted(stats.stored.items())) or "none"
    print(
        json.dumps(
            {
                "worker": worker.worker_id,
                "shard": str(worker.shard),
                "stored": stats.stored,
                "refused": stats.refused,
            }
        )
    )
    print(
        f"ckptcompat eval worker: {worker.worker_id} stored {stats.tasks} results ({outcomes}), "
        f"{stats.refused} refused",
        file=sys.stderr,
    )
    return EXIT_OK


def _batch(queue: Any, batch: str | None) -> str | None:
    return batch or queue.latest_batch()


def status_command(args: argparse.Namespace) -> int:
    from ckptcompat.remote.report import render_status

    with _queue(args) as queue:
        queue.reap()
        batch = _batch(queue, args.batch)
        counts = queue.counts(batch)
        failed = [t for t in queue.tasks(batch) if t["status"] == "failed"]
    print(f"batch {batch or '(queue empty)'}")
    print(render_status(counts, failed))
    return EXIT_OK


def collect_command(args: argparse.Namespace) -> int:
    from ckptcompat.remote.collect import collect_shards

    report = collect_shards(args.shard_dir, args.db)
    for shard, reason in report.skipped:
        print(f"skipped {shard}: {reason}", file=sys.stderr)
    print(
        f"ckptcompat eval collect: merged {len(report.merged)} shards into {args.db} "
        f"({report.episodes} episodes), {len(report.skipped)} skipped"
    )
    return EXIT_OK


def report_command(args: argparse.Namespace) -> int:
    from ckptcompat.remote.report import (
        build_report,
        judge,
        read_baseline,
        render_report,
        write_baseline,
    )

    baseline = read_baseline(args.baseline) if args.baseline else None
    with _queue(args) as queue:
        batch = _batch(queue, args.batch)
        tasks = queue.tasks(batch)
    if not tasks:
        raise InputError(
            "nothing to report",
            expected="a batch with tasks",
            found=f"no task in batch {batch}" if batch else "an empty queue",
            fix="submit first (ckptcompat eval submit), or pass the --batch it printed",
        )
    cells = list(dict.fromkeys(t["cell"] for t in tasks))
    if args.reference is not None and args.reference not in cells:
        raise InputError(
            f"--reference {args.reference} evaluated nothing in this batch",
            expected=f"one of its cells: {', '.join(cells)}",
            found=args.reference,
            fix="pick one of those cells",
        )
    rows = build_report(tasks, args.reference)
    verdict = judge(
        rows,
        return_tol=args.return_tol,
        max_slowdown=args.max_slowdown,
        baseline=baseline,
        min_speed_s=args.min_speed_s,
    )
    print(render_report(rows, verdict, as_json=args.json))
    if args.write_baseline:
        print(f"wrote {write_baseline(rows, args.write_baseline)}", file=sys.stderr)
    return EXIT_OK if verdict.ok else EXIT_FAILED
