"""``python -m ckptcompat.harness.run.driver``: the matrix driver (docs/design.md sections 7, 8).

Runs the phases of :mod:`ckptcompat.harness.run.scenarios` over the cells, one process per
phase and cell (:mod:`ckptcompat.harness.run.phases`), then writes the report and judges
the records by the gate's rules. This module imports neither torch nor numpy:
:func:`run_matrix` only drives the cells' interpreters, given by path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptcompat import numerics
from ckptcompat.harness import versions
from ckptcompat.harness.run.remote_phase import remote_command
from ckptcompat.harness.run.scenarios import PHASES
from ckptcompat.harness.verdict import gate
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.matrix import BaselineError

__all__ = ["DCP_WORLD_SIZES", "PhaseProcess", "dcp_command", "main", "phase_command", "run_matrix"]

#: World sizes the DCP phase resumes each DCP golden on, per consumer cell.
DCP_WORLD_SIZES: tuple[int, ...] = (1, 2)


def phase_command(
    python: str | os.PathLike[str],
    phase: str,
    cell: str,
    work: Path,
    records: Path,
    *,
    cells: Sequence[str],
    golden: bool = True,
    config: Path | None = None,
) -> list[str]:
    """The command line of one phase process (:mod:`ckptcompat.harness.run.phases`)."""
    command = [
        os.fspath(python),
        "-m",
        "ckptcompat.harness.run.phases",
        phase,
        cell,
        "--work",
        str(work),
        "--records",
        str(records),
        "--cells",
        ",".join(cells),
    ]
    if config is not None:
        command += ["--config", str(config)]
    return command if golden else [*command, "--no-golden"]


def dcp_command(
    python: str | os.PathLike[str], cell: str, work: Path, records: Path, world_size: int
) -> list[str]:
    """The command line of the DCP phase in ``cell`` on ``world_size`` ranks
    (:mod:`ckptcompat.harness.run.dcp_phase`; torchrun's ``--standalone`` launcher for
    more than one rank, so each run picks its own free port)."""
    phase = ["-m", "ckptcompat.harness.run.dcp_phase", cell, str(work), str(records)]
    if world_size == 1:
        return [os.fspath(python), *phase]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    return [os.fspath(python), *launcher, str(world_size), *phase]


@dataclass
class PhaseProcess:
    """One finished phase process: what ran, its exit code, wall and CPU seconds.

    CPU seconds (user + system, from ``wait4``, children included: a torchrun launcher's
    ranks count) do not grow when other work shares the cores, so they compare runs on a
    busy machine; wall seconds are what a user waits. ``world_size``: ranks under a
    torchrun launcher (the DCP phase), 1 for a plain process.
    """

    phase: str
    cell: str
    returncode: int
    duration_s: float
    cpu_s: float
    log: Path
    world_size: int = 1

    @property
    def torch_processes(self) -> int:
        """Processes that imported torch: the process itself, plus its ranks under torchrun."""
        return 1 if self.world_size == 1 else 1 + self.world_size


def _run_one(command: list[str], env: Mapping[str, str], log: Path) -> tuple[int, float, float]:
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(env))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    cpu_s = usage.ru_utime + usage.ru_stime
    return proc.returncode, time.perf_counter() - started, cpu_s


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run_matrix(
    pythons: Mapping[str, str],
    work: Path,
    records: Path,
    *,
    jobs: int | None = None,
    golden: bool = True,
    log_dir: Path | None = None,
    config: Path | None = None,
    git_sha: str | None = None,
) -> list[PhaseProcess]:
    """Run every phase over the cells of ``pythons`` (cell id -> interpreter path).

    Empties ``work`` and ``records`` first (a matrix is one run: stale records would mix
    git shas). Phases run one after another; within a phase the cells' processes run
    ``jobs`` at a time (default: the CPU count; each process trains on one thread). Every
    process shares one ``CKPTCOMPAT_RUN_ID`` and ``CKPTCOMPAT_GIT_SHA`` (``git_sha``, by
    default :func:`~ckptcompat.harness.verdict.records.git_sha`). Prints one line
    per process and the wall time of each phase, and writes them (with CPU seconds and
    processes per cell) to ``<work>/timing.json``.

    With ``golden`` and no team ``config``, two more phases follow: ``remote``
    (:mod:`ckptcompat.harness.run.remote_phase`: one process in the first cell's venv that
    starts a throw-away PostgreSQL server and one queue worker per cell), then ``dcp``,
    which resumes every DCP golden in every cell on each of :data:`DCP_WORLD_SIZES` (one
    process, or a torchrun launcher and its ranks), recorded as ``dcp(<cell>, ws<N>)``.

    Returns:
        Every phase process, in start order. A non-zero ``returncode`` means the harness
        itself broke (the checks' outcomes are in the records, not in exit codes).
    """
    cells = list(pythons)
    for directory in (work, records):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    log_dir = log_dir or work / "logs"
    # Phase processes are the harness's own: the reproducible-numerics mode, so their
    # bitwise checks hold on any x86-64 CPU (ckptcompat.numerics).
    env = {
        **numerics.reproducible_env(),
        "CKPTCOMPAT_RUN_ID": results.run_id(),
        "CKPTCOMPAT_GIT_SHA": git_sha or results.git_sha(),
    }
    workers = max(1, jobs or os.cpu_count() or 1)
    done: list[PhaseProcess] = []
    walls: dict[str, float] = {}
    plan: list[tuple[str, dict[str, tuple[str, int, list[str]]]]] = [
        (
            phase,
            {
                cell: (
                    cell,
                    1,
                    phase_command(
                        pythons[cell],
                        phase,
                        cell,
                        work,
                        records,
                        cells=cells,
                        golden=golden,
                        config=config,
                    ),
                )
                for cell in cells
            },
        )
        for phase in PHASES
    ]
    if golden and config is None:
        first = cells[0]
        remote = remote_command(pythons[first], work, records, pythons)
        plan.append(("remote", {"remote": (first, 1, remote)}))
        jobs_dcp = {
            f"{cell}-ws{n}": (cell, n, dcp_command(pythons[cell], cell, work, records, n))
            for cell in cells
            for n in DCP_WORLD_SIZES
        }
        plan.append(("dcp", jobs_dcp))
    for phase, commands in plan:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                label: pool.submit(
                    _run_one,
                    command,
                    {**env, "CKPTCOMPAT_CELL": cell},
                    log_dir / f"{phase}-{label}.log",
                )
                for label, (cell, _, command) in commands.items()
            }
            for label, future in futures.items():
                code, duration, cpu = future.result()
                log = log_dir / f"{phase}-{label}.log"
                cell, world_size, _ = commands[label]
                proc = PhaseProcess(phase, cell, code, duration, cpu, log, world_size)
                done.append(proc)
                status = "ok" if code == 0 else f"exit {code}"
                times = f"{duration:6.1f} s wall, {cpu:5.1f} s CPU"
                print(f"matrix: {phase:<8} {label:<9} {times}  {status}", flush=True)
                if code != 0:
                    print(_tail(proc.log), flush=True)
        walls[phase] = time.perf_counter() - started
        print(f"matrix: phase {phase} took {walls[phase]:.1f} s", flush=True)
    _write_timing(work / "timing.json", done, cells, walls)
    return done


def _write_timing(
    path: Path, done: Sequence[PhaseProcess], cells: Sequence[str], walls: Mapping[str, float]
) -> None:
    data: dict[str, Any] = {
        "processes_per_cell": {cell: sum(1 for p in done if p.cell == cell) for cell in cells},
        "torch_processes_per_cell": {
            cell: sum(p.torch_processes for p in done if p.cell == cell) for cell in cells
        },
        "phase_wall_s": {phase: round(s, 2) for phase, s in walls.items()},
        "processes": [
            {
                "phase": p.phase,
                "cell": p.cell,
                "world_size": p.world_size,
                "wall_s": round(p.duration_s, 2),
                "cpu_s": round(p.cpu_s, 2),
                "returncode": p.returncode,
            }
            for p in done
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _verdict(
    records: Path, baseline: Path, git_sha: str, see: str, config: Path | None = None
) -> bool:
    """Judge the run's records by the gate's rules; print the verdict as the last line.

    With no baseline yet, the line gives the command that proposes one from these records,
    with this run's ``--config`` filled in (a new user's trial: the generic hint's
    placeholders, and the non-team command printed first, failed as printed).
    """
    try:
        verdict = gate.judge_files([records], baseline, git_sha)
    except (BaselineError, ValueError) as exc:
        reason = str(exc)
        if not baseline.exists():
            team = f"--config {config} " if config is not None else ""
            reason = (
                f"no baseline at {baseline}; propose one from this run's records with "
                f"`nox -s gate -- {team}--propose-baseline {baseline}` and give every REVIEW "
                "entry a reason"
            )
        print(f"VERDICT: FAIL - the run cannot be judged: {reason}", flush=True)
        return False
    print(gate.verdict_line(verdict, see=see), flush=True)
    return verdict.passed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ckptcompat.harness.run.driver --python t24=PATH ... --work W --records R``.

    With ``--report DIR`` the report (:mod:`ckptcompat.harness.verdict.report`) is written after
    the phases, even when one of them broke (needs the ``report`` extra for the heatmap).
    With ``--baseline FILE`` the run ends with the gate's verdict on its records
    (:func:`ckptcompat.harness.verdict.gate.judge`, one ``VERDICT: PASS|FAIL - ...`` line).

    Exit status: 0 when every phase process finished, the report was written and the
    verdict (if judged) passes; 1 when a process broke, the report failed, or the verdict
    fails (a regression, an unexpected pass, a missing or unknown cell); 2 on bad usage.
    """
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.run.driver",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--python",
        action="append",
        type=versions.cell_python_arg,
        required=True,
        metavar="CELL=PYTHON",
        help="a cell and its venv's interpreter",
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=None, help="processes at a time")
    parser.add_argument("--no-golden", action="store_true", help="skip the golden checks")
    parser.add_argument("--report", type=Path, help="write the report into this directory")
    parser.add_argument(
        "--baseline", type=Path, help="judge the run against this baseline (and report it)"
    )
    parser.add_argument("--config", type=Path, help="a team's pyproject.toml (team agents)")
    args = parser.parse_args(argv)
    # One sha for the records and the verdict, even if HEAD moves during the run.
    git_sha = results.git_sha()
    done = run_matrix(
        dict(args.python),
        args.work,
        args.records,
        jobs=args.jobs,
        golden=not args.no_golden,
        config=args.config,
        git_sha=git_sha,
    )
    status = 0
    if args.report is not None:
        from ckptcompat.harness.verdict import report

        timing = ["--timing", str(args.work / "timing.json")]
        baseline = ["--baseline", str(args.baseline)] if args.baseline else []
        out = ["--out", str(args.report), "--records", str(args.records)]
        status = 1 if report.main([*out, *timing, *baseline]) else 0
    broken = [f"{p.phase}({p.cell})" for p in done if p.returncode != 0]
    if broken:
        print(
            f"matrix: harness processes failed: {', '.join(broken)}; see their logs",
            file=sys.stderr,
            flush=True,
        )
        status = 1
    if args.baseline is not None:
        see = _shown(args.report / "matrix.md" if args.report is not None else args.records)
        if not _verdict(args.records, args.baseline, git_sha, see, args.config):
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
