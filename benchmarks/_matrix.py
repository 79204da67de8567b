"""Section 3: wall time of ``nox -s matrix``, cold and warm, per phase and per cell.

* **warm**: the default envdir (``.nox``), whose venvs already exist (a discarded warm-up
  run creates them on a clean clone); the install step only checks them.
* **cold**: a fresh, empty envdir for every run, so nox creates the matrix venv and the four
  cells' tests venvs from scratch. The uv cache stays warm (a truly cold cache would
  download about 17 GB of CUDA torch wheels per run; that cost is measured once, by hand,
  in README) and the page cache is whatever the machine has (no root to drop it).

Runs are interleaved (cold, warm, cold, warm, ...). Each run is the command's whole wall
time; the matrix itself writes the per-phase and per-process figures (wall and CPU seconds,
processes per cell) to ``reports/work/timing.json``, read back after each run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import summary

__all__ = ["bench_matrix", "summarise"]

ROOT = Path(__file__).resolve().parents[1]
TIMING = ROOT / "reports" / "work" / "timing.json"


def _env() -> dict[str, str]:
    """The environment without this bench venv's activation (nox makes its own)."""
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    if venv:
        parts = env.get("PATH", "").split(os.pathsep)
        env["PATH"] = os.pathsep.join(p for p in parts if not p.startswith(venv))
    return env


def _run(envdir: Path | None, log: Path) -> dict[str, Any]:
    """One ``nox -s matrix``; its wall seconds and the matrix's own timing.json.

    Raises:
        RuntimeError: the run failed (its log's path is in the message).
    """
    command = [sys.executable, "-m", "nox", "-s", "matrix"]
    if envdir is not None:
        command += ["--envdir", str(envdir)]
    TIMING.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(log, "wb") as out:
        code = subprocess.run(
            command, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    wall = time.perf_counter() - started
    if code != 0 or not TIMING.is_file():
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {code}); see {log}")
    return {"wall_s": wall, **json.loads(TIMING.read_text())}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/min/max of the whole run, each phase, and each (phase, cell, world size)
    process (the DCP phase runs one process per world size; their times must not be
    pooled into one median)."""
    phases = list(runs[0]["phase_wall_s"])
    procs: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    for run in runs:
        for p in run["processes"]:
            key = (p["phase"], p["cell"], p.get("world_size", 1))
            got = procs.setdefault(key, {"wall_s": [], "cpu_s": []})
            got["wall_s"].append(p["wall_s"])
            got["cpu_s"].append(p["cpu_s"])
    phase_sum = [sum(r["phase_wall_s"].values()) for r in runs]
    return {
        "wall_s": summary([r["wall_s"] for r in runs]),
        "phases_s": summary(phase_sum),
        "outside_phases_s": summary(
            [r["wall_s"] - s for r, s in zip(runs, phase_sum, strict=True)]
        ),
        "phase_wall_s": {ph: summary([r["phase_wall_s"][ph] for r in runs]) for ph in phases},
        "processes_per_cell": {
            cell: max(r["processes_per_cell"][cell] for r in runs)
            for cell in runs[0]["processes_per_cell"]
        },
        "processes": [
            {
                "phase": ph,
                "cell": cell,
                "world_size": world_size,
                "wall_s": summary(v["wall_s"]),
                "cpu_s": summary(v["cpu_s"]),
            }
            for (ph, cell, world_size), v in procs.items()
        ],
    }


def bench_matrix(runs: int, log_dir: Path) -> dict[str, Any]:
    """``runs`` interleaved cold and warm ``nox -s matrix`` runs after one warm warm-up.

    Args:
        runs: rounds (each one cold and one warm run; about 1-3 minutes per run here).
        log_dir: where each run's output goes (``matrix-<kind>-<round>.log``).

    Returns:
        ``{"cold": summary, "warm": summary, "runs": raw runs}``; each summary holds the
        median/min/max wall seconds of the whole command, of the phases' sum, of each phase
        and of each (phase, cell) process (wall and CPU seconds), plus processes per cell.

    Raises:
        RuntimeError: a matrix run failed.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    print("matrix warm-up (creates .nox venvs if missing)", flush=True)
    _run(None, log_dir / "matrix-warmup.log")
    raw: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    for round_ in range(runs):
        envdir = Path(tempfile.mkdtemp(prefix="ckptcompat-cold-nox-"))
        try:
            raw["cold"].append(_run(envdir, log_dir / f"matrix-cold-{round_}.log"))
        finally:
            shutil.rmtree(envdir, ignore_errors=True)
        raw["warm"].append(_run(None, log_dir / f"matrix-warm-{round_}.log"))
        print(
            f"  matrix round {round_}: cold {raw['cold'][-1]['wall_s']:.1f} s, "
            f"warm {raw['warm'][-1]['wall_s']:.1f} s",
            flush=True,
        )
    return {kind: summarise(got) for kind, got in raw.items()} | {"runs": raw}
