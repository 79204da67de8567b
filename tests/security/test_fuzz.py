"""The bounded fuzz run of every cell: a few hundred seeded cases through every entry point.

Each case (the crafted reproducers of issue 23, then mutations of torch-written files:
bit flips, truncation, duplicated and deleted spans, zip fields, pickle opcodes, huge
lengths, deep nesting, memo indices) runs through the doctor (API, ``--json
--verify-data``), the ``ckptcompat doctor`` and ``ckptcompat migrate`` commands,
``torch_compat.load``, ``load_from_uri`` of a bare path and the manager's indexed load,
a case's entry points in one forked child of one runner process, and a failing one again
in a child of its own (:mod:`ckptcompat.harness.fuzz.runner`).
``nox -s fuzz`` runs thousands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import SRC

pytestmark = pytest.mark.slow

CASES = 250
SEED = 2023


def test_bounded_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    """Guards every fault kind of issue 23 at once: a crash (a signal), a timeout (30 s a
    child), an exception that is not a ckptcompat error, a doctor exit other than 0/2, or
    a silent wrong load (a byte-level mutation of a zip loading other data than saved)
    fails the run; the failing files are saved under the run's ``failures/``."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.fuzz", "--cases", str(CASES),
         "--seed", str(SEED), "--out", str(tmp_path), "--timeout", "30"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    failed = "\n".join(json.dumps(f) for f in report["failed"][:10])
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}\n{failed}"
    assert not any(report["failures"].values()), failed
    kinds = set(report["cases_per_kind_and_entry"])
    assert {"crafted", "bit_flip", "deep_nesting", "memo_index", "zip_field"} <= kinds
    entries = {e for row in report["cases_per_kind_and_entry"].values() for e in row}
    assert {"cli doctor", "cli migrate"} <= entries  # the commands' own dispatch is fuzzed


def test_memory_bound_fails_a_case(tmp_path: Path) -> None:
    """Guards the memory bound of issue 23 ("the peak memory of any one case stays under a
    bound"): it was measured but never enforced, so a case that allocated a declared
    length would have passed. With a bound of 0 MiB every case that grows is a
    ``memory`` failure, its reproducer saved, and the run exits 1."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.fuzz", "--cases", "12", "--seed", "5",
         "--out", str(tmp_path), "--timeout", "30", "--max-growth-mib", "0"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert report["max_growth_kb"] == 0 and report["failures"]["memory"] > 0
    assert all(f["result"] == "memory" for f in report["failed"])
    assert "MiB reading one case" in report["failed"][0]["detail"]
    assert any((tmp_path / "failures").iterdir())
