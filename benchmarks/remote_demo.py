"""Remote-evaluation demo (issue 19, "Done when"; not a test): 3 workers, 6 policies, one
worker SIGKILLed mid-task, the regression report.

Starts a throw-away PostgreSQL server (:mod:`ckptcompat.remote.pgserver`), saves the six
demo policies (:mod:`ckptcompat.remote.demo`), queues one task per (policy, cell), starts
one worker per cell in that cell's venv (``.nox/tests-<cell>/bin/python``), SIGKILLs the
``--kill`` cell's worker while it holds a task (each of its tasks waits
``--victim-delay`` seconds first: the window), once a second worker of that cell, started
with the others, has stored a result (the standby: it reclaims the task when the lease
lapses), waits until every worker drained, collects the shards twice, and runs ``ckptcompat eval
report --reference REF --baseline fixtures/remote_baseline.json``.

Prints (and with ``--json FILE`` writes): task throughput (tasks/s from the submit to
the last result, server clock, workers' start-up included), queue overhead per task as a
ratio to the evaluation itself (claim-to-stored time minus the evaluation, over the
evaluation), recovery time after the kill (to the reclaim and to the stored re-run),
the load average, and the report's text and exit code.

Run from a checkout whose tests venvs exist (``nox -s tests --install-only``), with a
python that has ckptcompat and psycopg, e.g.
``.nox/tests-t26/bin/python benchmarks/remote_demo.py [--cells t24,t26,t215] [--kill t26]``.
Figures depend on the machine and its load; the workers share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ckptcompat.remote.demo import DEMO_BASELINE, DEMO_ENV, DEMO_EPISODES, DEMO_SEED, demo_policies
from ckptcompat.remote.pgserver import PgServer
from ckptcompat.remote.queue import TaskQueue
from ckptcompat.remote.schema import RESULTS, TASKS
from ckptcompat.remote.worker import DELAY_ENV

ROOT = Path(__file__).resolve().parents[1]


def _worker(cell: str, dsn: str, shards: Path, name: str, logs: Path, delay: float = 0.0):
    python = ROOT / ".nox" / f"tests-{cell}" / "bin" / "python"
    command = [
        str(python), "-m", "ckptcompat", "eval", "worker", "--cell", cell, "--dsn", dsn,
        "--shard-dir", str(shards), "--worker-id", name, "--idle-exit", "3", "--poll", "0.2",
    ]  # fmt: skip
    env = {**os.environ, "CKPTCOMPAT_CELL": cell, DELAY_ENV: str(delay)}
    with (logs / f"{name}.log").open("w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _sql(dsn: str, query: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def _kill_mid_task(dsn: str, proc: subprocess.Popen, victim: str, standby: str):
    """SIGKILL ``proc`` (worker ``victim``) while it holds a task, once the standby
    worker has stored a result (it is warm); the task id and the server's time of the kill."""
    deadline = time.monotonic() + 900
    while True:
        warm = _sql(dsn, f"SELECT count(*) FROM {RESULTS} WHERE worker = %s", (standby,))
        held = _sql(
            dsn, f"SELECT id FROM {TASKS} WHERE worker = %s AND status = 'running'", (victim,)
        )
        if warm[0][0] >= 1 and held:
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the victim never held a task while the standby was warm")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    [(killed_at,)] = _sql(dsn, "SELECT clock_timestamp()")
    return held[0][0], killed_at


def _timings(rows, submitted_at, killed_task, killed_at, victim: str, delay_s: float) -> dict:
    """Throughput, queue overhead and recovery from the tasks' rows (server clock)."""
    stored = [r for r in rows if r[2] == "done"]
    last = max(r[5] for r in stored)
    span = (last - submitted_at).total_seconds()
    overheads, evals = [], []
    for _id, _cell, _st, _att, claimed, finished, worker, eval_s, _eps, _steps in stored:
        delay = delay_s if worker == victim else 0.0
        evals.append(eval_s)
        overheads.append((finished - claimed).total_seconds() - delay - eval_s)
    [killed] = [r for r in rows if r[0] == killed_task]
    return {
        "tasks": len(rows),
        "stored": len(stored),
        "statuses": sorted({r[2] for r in rows}),
        "killed_task": killed_task,
        "killed_task_attempts": killed[3],
        "killed_task_stored_by": killed[6],
        "throughput_tasks_per_s": round(len(stored) / span, 4),
        "span_s": round(span, 2),
        "eval_time_s_total": round(sum(evals), 3),
        "queue_overhead_s_total": round(sum(overheads), 3),
        "queue_overhead_ratio": round(sum(overheads) / sum(evals), 4),
        "queue_overhead_s_per_task_median": round(sorted(overheads)[len(overheads) // 2], 4),
        "recovery_reclaim_s": round((killed[4] - killed_at).total_seconds(), 2),
        "recovery_stored_s": round((killed[5] - killed_at).total_seconds(), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="t24,t26,t215", help="default: %(default)s")
    parser.add_argument("--kill", default="t26", help="the cell whose worker is killed")
    parser.add_argument("--reference", default="t26", help="report's reference cell")
    parser.add_argument("--lease-s", type=float, default=3.0, help="default: %(default)s")
    parser.add_argument(
        "--victim-delay", type=float, default=4.0,
        help="seconds the killed worker waits before each evaluation (a window to kill it in)",
    )  # fmt: skip
    parser.add_argument("--baseline", type=Path, default=DEMO_BASELINE)
    parser.add_argument("--write-baseline", type=Path, help="write the report's baseline too")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    cells = args.cells.split(",")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="remote-demo-"))
    shards, logs = work / "shards", work / "logs"
    shards.mkdir()
    logs.mkdir()
    server = PgServer()
    figures: dict[str, Any] = {"cells": cells, "killed_cell": args.kill, "lease_s": args.lease_s}
    try:
        server.start()
        dsn = server.create_database("demo")
        uris = demo_policies(work / "data")
        with TaskQueue(dsn) as queue:
            batch, _ = queue.submit(
                uris, cells, env_id=DEMO_ENV, episodes=DEMO_EPISODES, seed=DEMO_SEED,
                lease_s=args.lease_s,
            )  # fmt: skip
        victim, standby = f"{args.kill}-a", f"{args.kill}-standby"
        procs = {
            cell: _worker(
                cell, dsn, shards, f"{cell}-a", logs, args.victim_delay if cell == args.kill else 0
            )
            for cell in cells
        }
        # A second worker of the killed cell, started with the others: it shares that
        # cell's tasks, and reclaims the victim's task once its lease lapses.
        procs["standby"] = _worker(args.kill, dsn, shards, standby, logs)
        killed_task, killed_at = _kill_mid_task(dsn, procs[args.kill], victim, standby)
        codes = {name: p.wait(timeout=900) for name, p in procs.items()}
        rows = _sql(
            dsn,
            f"SELECT t.id, t.cell, t.status, t.attempts, t.claimed_at, t.finished_at, "
            f"r.worker, r.eval_time_s, r.episodes_time_s, r.env_steps FROM {TASKS} t "
            f"LEFT JOIN {RESULTS} r ON r.task_id = t.id WHERE t.batch = %s ORDER BY t.id",
            (batch,),
        )
        [(submitted_at,)] = _sql(
            dsn, f"SELECT min(created_at) FROM {TASKS} WHERE batch = %s", (batch,)
        )
        report = subprocess.run(
            [
                sys.executable, "-m", "ckptcompat", "eval", "report", "--dsn", dsn,
                "--batch", batch, "--reference", args.reference, "--baseline",
                str(args.baseline),
                *(["--write-baseline", str(args.write_baseline)] if args.write_baseline else []),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        server.remove()
    collected = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "ckptcompat", "eval", "collect", "--shard-dir", str(shards),
             "--db", str(work / "stats.duckdb")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        collected.append(out.stdout.strip())
    figures |= _timings(rows, submitted_at, killed_task, killed_at, victim, args.victim_delay)
    figures |= {
        "worker_exit_codes": codes,
        "collect": collected,
        "report_exit": report.returncode,
        "report": report.stdout + report.stderr,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "work": str(work),
    }
    text = {k: v for k, v in figures.items() if k != "report"}
    print(json.dumps(text, indent=1, default=str))
    print(figures["report"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
