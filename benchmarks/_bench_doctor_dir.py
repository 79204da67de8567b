"""Section 6: ``ckptcompat doctor DIR`` over a store of 1,000 small checkpoints.

Issue 21 item 3 asks for >= 1,000 files/s in one process. The store is ten run folders of
100 safe-format checkpoints each (a 10-tensor, ~40 kB agent; our files as a team's store
holds them), diagnosed through :func:`ckptcompat.doctor.batch.run` (the code behind the
command) in this process, and through the command itself (``python -m ckptcompat doctor
DIR``, a fresh process: its import cost included). The baseline of the same rounds is
``torch_compat.load`` of every file (weights-only), so the ratio says how much cheaper the
static answer is than loading.
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from _bench_io import make_agent
from _timing import interleaved, ratio, summary

from ckptcompat import torch_compat
from ckptcompat.checkpoint.saving import save_agent_file
from ckptcompat.doctor import batch

__all__ = ["bench_doctor_dir"]

GOAL_FILES_PER_S = 1000.0


def _store(root: Path, count: int) -> list[Path]:
    agent = make_agent(40_000, 10)
    paths = []
    for i in range(count):
        run = f"run{i % 10}"
        path = root / run / "checkpoints" / f"{run}_v{i // 10}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_agent_file(agent, path, run=run, epoch=i // 10)
        paths.append(path)
    return paths


def _doctor_in_process(root: Path, count: int) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = batch.run([root], out=out, err=err)
    lines = out.getvalue().count("\n")
    if code != 0 or lines != count:
        raise RuntimeError(f"doctor over the store: exit {code}, {lines} lines of {count}")


def _doctor_command(root: Path, count: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat", "doctor", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or proc.stdout.count("\n") != count:
        raise RuntimeError(f"ckptcompat doctor DIR: exit {proc.returncode}: {proc.stderr[-300:]}")


def _load_all(paths: list[Path]) -> None:
    for path in paths:
        torch_compat.load(path)


def _cpu_seconds(root: Path, count: int, runs: int) -> dict[str, list[float]]:
    """CPU seconds (user + system) of each doctor variant: on a shared machine the wall
    time also counts the other processes' turns, the CPU time only the doctor's work."""
    import time

    cpu: dict[str, list[float]] = {"doctor (in process)": [], "ckptcompat doctor DIR (command)": []}
    for _ in range(runs):
        started = time.process_time()
        _doctor_in_process(root, count)
        cpu["doctor (in process)"].append(time.process_time() - started)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        _doctor_command(root, count)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu["ckptcompat doctor DIR (command)"].append(
            after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        )
    return cpu


def bench_doctor_dir(work: Path, runs: int, count: int = 1000) -> dict[str, Any]:
    """Files per second of the doctor over ``count`` checkpoints, in process and as the
    command, and the per-round ratio to loading every file. Returns a JSON-able dict:
    ``count``, ``bytes`` (the store's total), ``seconds`` per variant (median/min/max),
    ``files_per_s`` per variant, ``ratio`` (load seconds / doctor seconds, in process),
    ``cpu_seconds`` and ``cpu_files_per_s`` of the two doctor variants (user + system
    time), ``goal`` and ``met`` (the command's wall-clock median >= 1,000 files/s: what a
    user waits for, imports included)."""
    root = work / "doctor-store"
    paths = _store(root, count)
    times = interleaved(
        {
            "doctor (in process)": lambda: _doctor_in_process(root, count),
            "ckptcompat doctor DIR (command)": lambda: _doctor_command(root, count),
            "torch_compat.load of every file": lambda: _load_all(paths),
        },
        runs,
    )
    rate = {name: summary([count / s for s in values]) for name, values in times.items()}
    cpu = _cpu_seconds(root, count, runs)
    return {
        "count": count,
        "bytes": sum(p.stat().st_size for p in paths),
        "seconds": {name: summary(values) for name, values in times.items()},
        "files_per_s": rate,
        "cpu_seconds": {name: summary(values) for name, values in cpu.items()},
        "cpu_files_per_s": {name: summary([count / s for s in v]) for name, v in cpu.items()},
        "ratio": ratio(times["torch_compat.load of every file"], times["doctor (in process)"]),
        "goal": f">= {GOAL_FILES_PER_S:g} files/s",
        "met": rate["ckptcompat doctor DIR (command)"]["median"] >= GOAL_FILES_PER_S,
    }
