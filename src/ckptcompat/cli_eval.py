"""``ckptcompat eval submit|worker|status|collect|report``: remote evaluation through a
PostgreSQL task queue (:mod:`ckptcompat.remote`).

Every subcommand but ``collect`` talks to the queue named by ``--dsn`` (default
``$CKPTCOMPAT_PG_DSN``). ``submit`` pins ``RUN:latest`` to a concrete file once, so every
cell evaluates the same epoch. ``worker --cell C`` refuses to start unless the running
torch is cell C's (and ``$CKPTCOMPAT_CELL``, when set, says C). Exit codes as every
subcommand's (:func:`ckptcompat.cli_common.exit_code`); an unreachable server is bad
input (2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from importlib import metadata
from typing import Any

from ckptcompat.cli_common import EXIT_OK, HelpFormatter, int_at_least, on_disk
from ckptcompat.errors import CheckpointError, InputError, TaskQueueError

__all__ = ["add_eval_parser"]


def _cells(text: str) -> list[str]:
    from ckptcompat.harness.versions import by_id

    cells = [c.strip() for c in text.split(",") if c.strip()]
    if not cells:
        raise argparse.ArgumentTypeError("expected cell ids separated by commas, e.g. t24,t26")
    for cell in cells:
        try:
            by_id(cell)
        except KeyError as exc:
            raise argparse.ArgumentTypeError(str(exc.args[0])) from None
    return list(dict.fromkeys(cells))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {value}")
    return value


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


def _submit(args: argparse.Namespace) -> int:
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


def _worker(args: argparse.Namespace) -> int:
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


def _status(args: argparse.Namespace) -> int:
    from ckptcompat.remote.report import render_status

    with _queue(args) as queue:
        queue.reap()
        batch = _batch(queue, args.batch)
        counts = queue.counts(batch)
        failed = [t for t in queue.tasks(batch) if t["status"] == "failed"]
    print(f"batch {batch or '(queue empty)'}")
    print(render_status(counts, failed))
    return EXIT_OK


def _collect(args: argparse.Namespace) -> int:
    from ckptcompat.remote.collect import collect_shards

    report = collect_shards(args.shard_dir, args.db)
    for shard, reason in report.skipped:
        print(f"skipped {shard}: {reason}", file=sys.stderr)
    print(
        f"ckptcompat eval collect: merged {len(report.merged)} shards into {args.db} "
        f"({report.episodes} episodes), {len(report.skipped)} skipped"
    )
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from ckptcompat.remote.report import build_report, render_report

    with _queue(args) as queue:
        tasks = queue.tasks(_batch(queue, args.batch))
    rows = build_report(tasks, args.reference)
    reference = args.reference or (tasks[0]["cell"] if tasks else "-")
    print(render_report(rows, reference, as_json=args.json))
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def _dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        metavar="DSN",
        help="the queue's PostgreSQL server: a libpq string or postgresql:// URI "
        "(default: $CKPTCOMPAT_PG_DSN)",
    )


def _batch_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch", metavar="ID", help="a batch id printed by submit (default: the newest)"
    )


def add_eval_parser(sub: Any, *, epilog: str) -> None:
    """Add ``eval`` and its subcommands to the subparsers ``sub``."""
    ev = sub.add_parser(
        "eval",
        help="remote evaluation: a task queue, workers per torch cell, a report",
        description=textwrap.fill(
            "Evaluate policies on workers of other torch cells through a PostgreSQL task "
            "queue: submit tasks, run workers, watch status, collect their shards, report.",
            80,
        ),
        epilog=epilog,
        formatter_class=HelpFormatter,
    )
    cmds = ev.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return cmds.add_parser(name, help=help, epilog=epilog, formatter_class=HelpFormatter)

    submit = add("submit", "queue one task per (policy, evaluator cell)")
    submit.add_argument(
        "--uri",
        required=True,
        action="append",
        metavar="URI",
        help="a policy: a .pt path, DIR/RUN:latest (pinned now to its file), "
        "DIR/RUN:vN; repeat for several (required)",
    )
    submit.add_argument(
        "--cells",
        required=True,
        type=_cells,
        metavar="IDS",
        help="evaluator cells, comma-separated, e.g. t24,t26,t215 (required)",
    )
    submit.add_argument(
        "--episodes",
        type=int_at_least(1),
        default=5,
        metavar="N",
        help="episodes per task, >= 1 (default: %(default)s)",
    )
    submit.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="episode i resets its env with SEED + i (default: %(default)s)",
    )
    submit.add_argument(
        "--env",
        metavar="ENV_ID",
        help="gymnasium env id (default: the run's trainer config, else CartPole-v1)",
    )
    submit.add_argument(
        "--lease-s",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="a worker silent this long (no heartbeat) is taken for dead and "
        "its task re-run (default: %(default)s)",
    )
    submit.add_argument(
        "--timeout-s",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="an attempt running longer is failed and retried (default: %(default)s)",
    )
    submit.add_argument(
        "--max-attempts",
        type=int_at_least(1),
        default=3,
        metavar="N",
        help="claims per task, retries of worker deaths and timeouts "
        "included (default: %(default)s)",
    )
    _dsn(submit)
    submit.set_defaults(func=_submit)

    worker = add("worker", "claim and evaluate one cell's tasks in this venv")
    worker.add_argument(
        "--cell",
        required=True,
        metavar="ID",
        help="this venv's cell, e.g. t26: only its tasks are claimed; must "
        "match the running torch (required)",
    )
    worker.add_argument(
        "--shard-dir",
        required=True,
        metavar="DIR",
        help="where this worker's DuckDB shard goes, created if missing (required)",
    )
    stop = worker.add_mutually_exclusive_group()
    stop.add_argument("--once", action="store_true", help="stop after one task")
    stop.add_argument(
        "--max-tasks",
        type=int_at_least(1),
        metavar="N",
        help="stop after N tasks (default: no limit)",
    )
    worker.add_argument(
        "--idle-exit",
        type=_seconds,
        metavar="S",
        help="stop after S seconds without a claimable task (default: wait forever)",
    )
    worker.add_argument(
        "--poll",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds between claims while the queue is empty (default: %(default)s)",
    )
    worker.add_argument(
        "--worker-id", metavar="NAME", help="its name in the queue (default: HOST-PID-RANDOM)"
    )
    _dsn(worker)
    worker.set_defaults(func=_worker)

    status = add("status", "tasks per cell and status; failed tasks with their last error")
    _batch_arg(status)
    _dsn(status)
    status.set_defaults(func=_status)

    collect = add("collect", "merge the workers' shards into one stats DB (idempotent)")
    collect.add_argument(
        "--shard-dir", required=True, metavar="DIR", help="the workers' --shard-dir (required)"
    )
    collect.add_argument(
        "--db",
        required=True,
        metavar="FILE",
        help="the stats DB, a DuckDB file created if missing (required)",
    )
    collect.set_defaults(func=_collect)

    report = add("report", "results per policy and cell, compared with a reference cell")
    _batch_arg(report)
    report.add_argument(
        "--reference",
        metavar="ID",
        help="the cell the others are compared with (default: the first submitted)",
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _dsn(report)
    report.set_defaults(func=_report)
