"""The matrix's remote-evaluation phase: every producer's policies through the task queue
to workers of every consumer cell (issue 19, item 5).

``python -m ckptcompat.harness.run.remote_phase WORK RECORDS --python CELL=PYTHON ...``
runs after the evaluate phase, in one cell's venv (it needs psycopg, not that cell's
torch; :mod:`ckptcompat.harness.run.driver` starts it in the first cell's). It

1. starts a throw-away PostgreSQL server (:mod:`ckptcompat.remote.pgserver`, a unix socket
   under ``/tmp``), and submits one task per (policy, consumer cell): the policies are the
   runs ``<agent>-<X>-<X>`` each producer X trained and resumed (``<work>/resume-<X>``,
   the evaluate phase's files), evaluated for :attr:`Budget.episodes` greedy episodes from
   seed :attr:`Budget.eval_seed`, exactly as the evaluate phase does;
2. runs one worker per consumer cell, all at once, each in its cell's venv
   (``ckptcompat eval worker --cell C --idle-exit 1``: it drains its cell's tasks and
   stops), into ``<work>/remote/<consumers>/shards``, and collects the shards into
   ``<work>/remote/<consumers>/stats.duckdb`` (``<consumers>``: the cells joined by ``-``;
   the folder is emptied first, so a rerun replaces it);
3. writes one record per task to ``RECORDS/remote-<consumers>-<pid>.jsonl``: ``scenario="remote"``,
   ``artifact="queue_eval"``, loader ``safe``, producer X -> consumer Z -> evaluator Z.

A task's record is ``pass`` when it was stored once (``done``) with a ``pass`` result, keyed
``(<run>, <epoch>)``, evaluated by torch Z, and its mean return agrees with the evaluate
phase's in-process evaluation of the same file under Z (same seeds; relative tolerance
:data:`~ckptcompat.harness.run.steps.EVAL_RETURN_REL`; ``returns_identical`` in the outputs
says whether every episode matched). A result that is a load failure is ``fail`` with its
typed error; a task the queue gave up or a worker that never finished it is ``error``.

Without a server (no ``initdb``/``pg_ctl``, no ``postgres`` user as root, or no psycopg)
every record is ``skip`` with ``skipped: no PostgreSQL (...)``: never a silent pass, and
the gate, whose baseline expects ``pass``, fails on them. With ``CKPTCOMPAT_REQUIRE_PG=1``
they are ``error`` and the phase exits 1.

Exit status: 0 when the phase ran (whatever the outcomes), 1 when a required server is
missing, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptcompat.harness import versions
from ckptcompat.harness.run.scenarios import AGENTS, BUDGET, Budget, Chain, Layout
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.records import Outcome, Record
from ckptcompat.remote import pgserver

__all__ = [
    "ARTIFACT",
    "SCENARIO",
    "WORKER_TIMEOUT_S",
    "Policy",
    "judge_task",
    "main",
    "policies",
    "remote_command",
    "run_remote_phase",
]

SCENARIO, ARTIFACT, LOADER = "remote", "queue_eval", "safe"
#: Seconds every worker together may take to drain the queue before it is killed.
WORKER_TIMEOUT_S = 600.0
#: = ckptcompat.harness.run.steps.EVAL_RETURN_REL (steps imports torch; this module does not).
RETURN_REL = 0.01


def remote_command(
    python: str | os.PathLike[str], work: Path, records: Path, pythons: Mapping[str, str]
) -> list[str]:
    """The command line of the remote phase, run by ``python``, over the cells of
    ``pythons`` (cell id -> its venv's interpreter)."""
    command = [os.fspath(python), "-m", "ckptcompat.harness.run.remote_phase"]
    command += [str(work), str(records)]
    for cell, path in pythons.items():
        command += ["--python", f"{cell}={path}"]
    return command


@dataclass(frozen=True)
class Policy:
    """One producer's policy: run ``<agent>-<X>-<X>`` as resumed under X.

    Attributes:
        agent, producer: the agent label and the producer cell X.
        run: the run name, i.e. the ``policy_key``.
        uri: its ``file://`` URI; None when the resume under X left no sidecar.
        epoch: its epoch (the ``policy_version``); None with ``uri``.
        producer_numpy: numpy of the producing process (from the sidecar).
        missing: why there is no policy (``uri`` None), else "".
    """

    agent: str
    producer: str
    run: str
    uri: str | None
    epoch: int | None
    producer_numpy: str | None
    missing: str = ""


def policies(layout: Layout, cells: Sequence[str], agents: Sequence[str]) -> list[Policy]:
    """Every producer's resumed run of every agent (producer-major), read from the sidecars
    the resume phase left; a run without one is a :class:`Policy` with ``missing`` set."""
    from ckptcompat.checkpoint.uri import agent_filename, file_uri

    found = []
    for producer in cells:
        for agent in agents:
            run = Chain(agent, producer, producer).run
            data_dir = layout.resume_dir(producer)
            sidecar = layout.sidecar(data_dir, run)
            try:
                seen = json.loads(sidecar.read_text(encoding="utf-8"))
                epoch = int(seen["epoch"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                reason = f"no resumed run {run} under {producer} ({type(exc).__name__})"
                found.append(Policy(agent, producer, run, None, None, None, reason))
                continue
            uri = file_uri(data_dir / run / "checkpoints" / agent_filename(run, epoch))
            numpy = seen.get("producer_numpy")
            found.append(Policy(agent, producer, run, uri, epoch, numpy))
    return found


def in_process_returns(records: Path) -> dict[tuple[str, str], list[float]]:
    """The evaluate phase's episode returns per (run, evaluator torch), from its records."""
    out: dict[tuple[str, str], list[float]] = {}
    for file in sorted(records.glob("evaluate-*.jsonl")):
        for record in results.read_records([file]):
            outputs = record.outputs or {}
            returns = outputs.get("episode_returns")
            if record.outcome == Outcome.PASS and returns and record.evaluator_torch:
                out[(str(outputs.get("run")), record.evaluator_torch)] = list(returns)
    return out


def judge_task(
    task: Mapping[str, Any], policy: Policy, cell: str, reference: list[float] | None
) -> tuple[Outcome, str, dict[str, Any]]:
    """One task's ``(outcome, detail, outputs)`` (see the module docstring).

    ``task`` is a :meth:`ckptcompat.remote.queue.TaskQueue.tasks` row; ``reference`` the
    in-process returns of the same file under ``cell`` (None: not available).
    """
    outputs: dict[str, Any] = {
        "run": policy.run,
        "uri": policy.uri,
        "epoch": policy.epoch,
        "task_id": task.get("task_id"),
        "status": task.get("status"),
        "attempts": task.get("attempts"),
        "worker": task.get("worker"),
    }
    if task.get("status") != "done":
        reason = task.get("last_error") or "no worker finished it"
        return (
            Outcome.ERROR,
            f"task {task.get('status')} after {task.get('attempts')} attempts: {reason}",
            outputs,
        )
    returns = task.get("episode_returns")
    steps, seconds = task.get("env_steps"), task.get("episodes_time_s")
    outputs |= {
        "outcome": task.get("outcome"),
        "torch": task.get("torch_version"),
        "mean_return": task.get("mean_return"),
        "episode_returns": returns,
        "in_process_returns": reference,
        "returns_identical": None if reference is None else list(returns or []) == reference,
        "env_steps": steps,
        "steps_per_s": steps / seconds if steps and seconds else None,
        "eval_time_s": task.get("eval_time_s"),
    }
    if task.get("outcome") != "pass":
        return Outcome.FAIL, f"{task.get('error_type')}: {task.get('error_message')}", outputs
    problems = []
    pin = versions.by_id(cell).torch
    here = str(task.get("torch_version") or "").split("+", 1)[0]
    if here != pin:
        return Outcome.ERROR, f"the worker for {cell} ran torch {here}, not {pin}", outputs
    key = (task.get("policy_key"), task.get("policy_version"))
    if key != (policy.run, policy.epoch):
        problems.append(f"keyed {key}, expected ({policy.run}, {policy.epoch})")
    if reference is None:
        outputs["note"] = f"no in-process evaluation of {policy.run} under {cell} to compare"
    else:
        mean, want = float(task["mean_return"]), math.fsum(reference) / len(reference)
        if not math.isclose(mean, want, rel_tol=RETURN_REL):
            problems.append(
                f"mean return {mean:.4g} through the queue vs {want:.4g} in-process under "
                f"{cell} (rel tol {RETURN_REL})"
            )
    return (Outcome.FAIL, "; ".join(problems), outputs) if problems else (Outcome.PASS, "", outputs)


def _record(
    policy: Policy, cell: str, outcome: Outcome, detail: str, outputs: dict[str, Any], took: float
) -> Record:
    return results.make_record(
        scenario=SCENARIO,
        artifact=ARTIFACT,
        agent=policy.agent,
        loader=LOADER,
        outcome=outcome,
        producer_torch=versions.by_id(policy.producer).torch,
        consumer_torch=versions.by_id(cell).torch,
        evaluator_torch=versions.by_id(cell).torch,
        producer_numpy=policy.producer_numpy,
        detail=detail[:2000],
        duration_s=took,
        outputs=outputs,
    )


def _drain(
    pythons: Mapping[str, str], dsn: str, shards: Path, logs: Path, timeout_s: float
) -> dict[str, int | None]:
    """One worker per cell, all at once, until each has drained its cell's tasks; their
    exit codes (None: killed at ``timeout_s``)."""
    procs = {}
    for cell, python in pythons.items():
        command = [
            python, "-m", "ckptcompat", "eval", "worker", "--cell", cell, "--dsn", dsn,
            "--shard-dir", str(shards), "--worker-id", f"matrix-{cell}", "--idle-exit", "1",
            "--poll", "0.2",
        ]  # fmt: skip
        with (logs / f"worker-{cell}.log").open("w", encoding="utf-8") as log:
            procs[cell] = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "CKPTCOMPAT_CELL": cell},
            )
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int | None] = {}
    for cell, proc in procs.items():
        try:
            codes[cell] = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes[cell] = None
    return codes


def _through_queue(
    pythons: Mapping[str, str],
    work: Path,
    found: Sequence[Policy],
    budget: Budget,
    timeout_s: float,
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, int | None]]:
    """Server up, submit, drain with one worker per cell, read the tasks, server down,
    collect the shards: the tasks by (policy URI, cell) and the workers' exit codes."""
    from ckptcompat.remote.collect import collect_shards
    from ckptcompat.remote.queue import TaskQueue

    cells = list(pythons)
    # Its own folder per consumer set, emptied first: a rerun's queue numbers its tasks
    # from 1 again, and the old shards' rows under the same ids made collect refuse the
    # merge ("shard disagrees with the merged DB").
    root = work / "remote" / "-".join(cells)
    shutil.rmtree(root, ignore_errors=True)
    shards, logs = root / "shards", root / "logs"
    for folder in (shards, logs):
        folder.mkdir(parents=True, exist_ok=True)
    server = pgserver.PgServer()
    started = time.perf_counter()
    try:
        server.start()
        dsn = server.create_database("matrix")
        with TaskQueue(dsn) as queue:
            batch, ids = queue.submit(
                [p.uri for p in found if p.uri is not None],
                cells,
                env_id=budget.env_id,
                episodes=budget.episodes,
                seed=budget.eval_seed,
            )
        submitted = time.perf_counter()
        codes = _drain(pythons, dsn, shards, logs, timeout_s)
        drained = time.perf_counter()
        with TaskQueue(dsn) as queue:
            queue.reap()
            tasks = {(t["policy_uri"], t["cell"]): t for t in queue.tasks(batch)}
    finally:
        server.remove()
    collected = collect_shards(shards, root / "stats.duckdb")
    for cell, code in codes.items():
        if code != 0:
            print(f"remote: worker {cell} exited {code}; see {logs / f'worker-{cell}.log'}")
    evaluating = sum(float(t.get("eval_time_s") or 0.0) for t in tasks.values())
    draining = max(drained - submitted, 1e-9)
    print(
        f"remote phase: {len(ids)} tasks over {len(cells)} workers drained in {draining:.1f} s "
        f"({len(ids) / draining:.2f} tasks/s, {evaluating:.1f} s evaluating in all; server "
        f"up and tasks submitted in {submitted - started:.1f} s); {len(collected.merged)} "
        f"shards, {collected.episodes} episodes collected",
        flush=True,
    )
    return tasks, codes


def run_remote_phase(
    pythons: Mapping[str, str],
    work: Path,
    records_file: Path,
    *,
    producers: Sequence[str] | None = None,
    agents: Sequence[str] = tuple(AGENTS),
    budget: Budget = BUDGET,
    timeout_s: float = WORKER_TIMEOUT_S,
) -> list[Record]:
    """Run the phase (see the module docstring) and append its records to ``records_file``.

    ``pythons`` are the consumer cells (one worker each); ``producers`` the cells whose
    resumed runs are evaluated (default: the consumers). CI runs one consumer per job with
    every producer (the ``remote(<cell>)`` nox session).

    Raises:
        pgserver.PgServerError: the server's binaries are there but it does not start.
    """
    cells = list(pythons)
    layout = Layout(work)
    found = policies(layout, list(producers) if producers else cells, agents)
    reference = in_process_returns(records_file.parent)
    written: list[Record] = []

    def emit(policy: Policy, cell: str, outcome: Outcome, detail: str, outputs, took) -> None:
        record = _record(policy, cell, outcome, detail, outputs, took)
        results.append_record(records_file, record)
        written.append(record)
        shown = f"  {detail[:300]}" if detail else ""
        print(f"{record.outcome.value:<5} {record.cell_key}{shown}", flush=True)

    unavailable = pgserver.unavailable_reason()
    if unavailable is not None:
        required = os.environ.get(pgserver.REQUIRE_ENV) == "1"
        outcome = Outcome.ERROR if required else Outcome.SKIP
        detail = f"skipped: no PostgreSQL ({unavailable})"
        if required:
            detail = f"no PostgreSQL ({unavailable}), and {pgserver.REQUIRE_ENV}=1 requires one"
        for policy in found:
            for cell in cells:
                emit(policy, cell, outcome, detail, {"run": policy.run}, 0.0)
        return written

    tasks, codes = _through_queue(pythons, work, found, budget, timeout_s)
    for policy in found:
        for cell in cells:
            pin = versions.by_id(cell).torch
            if policy.uri is None:
                emit(policy, cell, Outcome.SKIP, policy.missing, {"run": policy.run}, 0.0)
                continue
            task = tasks[(policy.uri, cell)]
            outcome, detail, outputs = judge_task(
                task, policy, cell, reference.get((policy.run, pin))
            )
            outputs["worker_exit"] = codes.get(cell)
            emit(policy, cell, outcome, detail, outputs, float(task.get("eval_time_s") or 0.0))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (see the module docstring for arguments and exit status)."""
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.run.remote_phase", description=__doc__.splitlines()[0]
    )
    parser.add_argument("work", type=Path, help="the matrix work directory (required)")
    parser.add_argument("records", type=Path, help="directory for JSONL records (required)")
    parser.add_argument(
        "--python",
        action="append",
        type=versions.cell_python_arg,
        required=True,
        metavar="CELL=PYTHON",
        help="a consumer cell and its venv's interpreter (required, repeatable)",
    )
    parser.add_argument(
        "--producers",
        type=versions.cells_arg,
        help="comma-separated cells whose resumed runs are evaluated, e.g. t24,t25,t26,t215 "
        "(default: the --python cells)",
    )
    args = parser.parse_args(argv)
    pythons = dict(args.python)
    # A rerun for the same consumers replaces its records; other consumers' stay (CI and
    # `nox -s "remote(<cell>)"` run one consumer at a time into one records folder).
    key = "-".join(pythons)
    for stale in args.records.glob(f"remote-{key}-*.jsonl"):
        stale.unlink()
    records_file = args.records / f"remote-{key}-{os.getpid()}.jsonl"
    written = run_remote_phase(pythons, args.work, records_file, producers=args.producers)
    required = os.environ.get(pgserver.REQUIRE_ENV) == "1"
    if required and any("requires one" in r.detail for r in written):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
