"""The command line of ``ckptcompat eval submit|worker|status|collect|report``: arguments,
help and defaults. The commands themselves are :mod:`ckptcompat.cli_eval`'s.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from ckptcompat.cli_common import HelpFormatter, int_at_least
from ckptcompat.cli_eval import (
    collect_command,
    report_command,
    status_command,
    submit_command,
    worker_command,
)

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


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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
        "--batch",
        metavar="ID",
        help="a batch id printed by submit (default: the newest)",
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
    submit.set_defaults(func=submit_command)

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
    stop.add_argument(
        "--once",
        action="store_true",
        help="stop after one task "
        "(default: off: run until --max-tasks, --idle-exit or interrupted)",
    )
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
        "--reconnect-s",
        type=_seconds,
        default=300.0,  # = ckptcompat.remote.queue.DEFAULT_RECONNECT_S
        metavar="S",
        help="when the server goes away (stopped, restarted), keep reconnecting with a "
        "capped backoff for S seconds in all before exiting 2; a result finished meanwhile "
        "is stored once it is back, if its lease still holds (default: %(default)s)",
    )
    worker.add_argument(
        "--torch-threads",
        type=int_at_least(1),
        default=1,
        metavar="N",
        help="torch threads while evaluating (default: %(default)s: workers sharing cores "
        "do not slow each other down with thread pools)",
    )
    worker.add_argument(
        "--worker-id",
        metavar="NAME",
        help="its name in the queue (default: HOST-PID-RANDOM)",
    )
    _dsn(worker)
    worker.set_defaults(func=worker_command)

    status = add("status", "tasks per cell and status; failed tasks with their last error")
    _batch_arg(status)
    _dsn(status)
    status.set_defaults(func=status_command)

    collect = add("collect", "merge the workers' shards into one stats DB (idempotent)")
    collect.add_argument(
        "--shard-dir",
        required=True,
        metavar="DIR",
        help="the workers' --shard-dir (required)",
    )
    collect.add_argument(
        "--db",
        required=True,
        metavar="FILE",
        help="the stats DB, a DuckDB file created if missing (required)",
    )
    collect.set_defaults(func=collect_command)

    report = add(
        "report",
        "results per policy and cell against a reference cell and a baseline; exit 1 on a "
        "regression",
    )
    _batch_arg(report)
    report.add_argument(
        "--reference",
        metavar="ID",
        help="the cell the others are compared with (default: the first submitted)",
    )
    report.add_argument(
        "--return-tol",
        type=_non_negative,
        default=1e-6,
        metavar="X",
        help="largest accepted difference of mean returns, from the reference cell and "
        "the baseline (default: %(default)s)",
    )
    report.add_argument(
        "--max-slowdown",
        type=_fraction,
        default=0.10,
        metavar="F",
        help="fail a cell slower than the reference by more than this fraction of its "
        "env-steps/s, measured in the same batch (default: %(default)s)",
    )
    report.add_argument(
        "--min-speed-s",
        type=_non_negative,
        default=0.5,
        metavar="S",
        help="judge a speed ratio only over at least this many CPU seconds of episodes on "
        "both sides; shorter policies are shown, not judged, and each cell is also judged "
        "over all its policies (default: %(default)s)",
    )
    report.add_argument(
        "--baseline",
        metavar="FILE",
        help="mean returns a previous --write-baseline recorded; a policy that differs "
        "by more than --return-tol fails (default: none)",
    )
    report.add_argument(
        "--write-baseline",
        metavar="FILE",
        help="write the reference cell's mean returns to FILE (default: none)",
    )
    report.add_argument(
        "--json", action="store_true", help="print JSON instead of a table (default: a table)"
    )
    _dsn(report)
    report.set_defaults(func=report_command)
