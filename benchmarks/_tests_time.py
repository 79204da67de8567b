"""Section 7: how long the test suite takes, ``nox -s tests`` over the default cells.

Issue 21's goal: four cells (2.4, 2.5, 2.6, 2.15), warm uv cache and venvs, 2 cores,
<= 12 minutes with no test weakened. Two ways to measure:

- ``--sections tests`` runs ``nox -s tests`` in a subprocess and times the whole command
  (venv sync and the closing summary included): the figure the goal names.
- ``--tests-junit DIR`` measures nothing: it reads the JUnit reports of a finished run (CI's
  ``reports/junit``) and sums the cells' pytest times, which leave out venv sync (a few
  seconds per cell with warm venvs). The row says which of the two it is.

Either way a run with a failing test, a missing cell or no test at all is not met: a fast
suite that did not pass proves nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ckptcompat.harness import versions

__all__ = ["GOAL_SECONDS", "bench_tests", "read_cells"]

#: Issue 21 item 4: ``nox -s tests`` over four cells in at most 12 minutes.
GOAL_SECONDS = 12 * 60


def _cell(path: Path) -> dict[str, Any]:
    """Totals and pytest seconds (the ``time`` of each ``<testsuite>``) of one JUnit file."""
    out: dict[str, Any] = {"report": path.name, "tests": 0, "failed": 0, "skipped": 0}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        return {**out, "problem": f"{type(exc).__name__}: {exc}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out["pytest_seconds"] = sum(float(s.get("time") or 0.0) for s in suites)
    out["timestamp"] = next((s.get("timestamp") for s in suites if s.get("timestamp")), None)
    for case in root.iter("testcase"):
        out["tests"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            out["failed"] += 1
        elif case.find("skipped") is not None:
            out["skipped"] += 1
    return out


def read_cells(junit_dir: Path) -> dict[str, dict[str, Any]]:
    """Per default cell id, the totals of ``junit_dir/tests-<cell>.xml`` (the full-run
    report ``nox -s tests`` writes), or ``{"problem": ...}`` when it is missing."""
    cells = {}
    for cell in versions.DEFAULT:
        path = junit_dir / f"tests-{cell.id}.xml"
        cells[cell.id] = _cell(path) if path.is_file() else {"problem": f"no {path}"}
    return cells


def bench_tests(root: Path, junit_dir: Path | None, log: Path) -> dict[str, Any]:
    """Run ``nox -s tests`` (``junit_dir`` None) or read a finished run's reports.

    Returns ``how`` ("nox -s tests wall clock" or "sum of the cells' pytest times"),
    ``seconds`` (the figure judged), ``cells`` (per cell: tests, failed, skipped,
    pytest_seconds), ``exit_code`` (None when nothing ran), ``goal`` and ``met``.

    Raises:
        FileNotFoundError: ``nox`` is not on PATH when asked to run it.
    """
    exit_code = None
    if junit_dir is None:
        nox = shutil.which("nox")
        if nox is None:
            raise FileNotFoundError(
                "section tests runs `nox -s tests`, but nox is not on PATH: install it "
                "(python -m pip install nox uv) or pass --tests-junit DIR"
            )
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with log.open("w") as out:
            exit_code = subprocess.run(
                [nox, "-s", "tests"], cwd=root, stdout=out, stderr=subprocess.STDOUT, check=False
            ).returncode
        seconds = time.perf_counter() - start
        how = "nox -s tests wall clock"
        cells = read_cells(root / "reports" / "junit")
    else:
        cells = read_cells(junit_dir)
        seconds = sum(c.get("pytest_seconds", 0.0) for c in cells.values())
        how = f"sum of the cells' pytest times in {junit_dir} (venv sync not included)"
    complete = all("problem" not in c and c["tests"] for c in cells.values())
    green = complete and not any(c["failed"] for c in cells.values()) and exit_code in (None, 0)
    return {
        "how": how,
        "seconds": seconds,
        "cells": cells,
        "exit_code": exit_code,
        "goal": f"<= {GOAL_SECONDS // 60} min, every test passed",
        "met": green and seconds <= GOAL_SECONDS,
    }
