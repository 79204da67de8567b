"""``python -m ckptcompat.harness.repro FILE``: real loads next to the doctor's prediction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ckptcompat.doctor.verdict import Verdict
from ckptcompat.harness import corpus, repro


@pytest.mark.one_cell
def test_compare_flags_outcome_and_globals_mismatches() -> None:
    """Guards repro reporting agreement when the real load contradicts the doctor (one
    cell: pure comparison logic)."""
    refused = repro.LoadOutcome(ok=False, error_type="UnsafeCheckpointError", globals=("a.B",))
    loaded = repro.LoadOutcome(ok=True, result_type="builtins.dict")
    assert repro.compare("x", Verdict("loads", ""), loaded).agrees
    assert repro.compare("x", Verdict("runs_code", ""), loaded).agrees
    assert not repro.compare("x", Verdict("loads", ""), refused).agrees
    assert not repro.compare("x", Verdict("not_fixable", ""), loaded).agrees
    assert repro.compare("x", Verdict("fixable_by_allowlist", "", ("a.B",)), refused).agrees
    mismatch = repro.compare("x", Verdict("fixable_by_allowlist", "", ("c.D",)), refused)
    assert not mismatch.agrees and "a.B" in mismatch.detail
    by_torch = repro.LoadOutcome(ok=False, globals=("a.B",), cause="UnpicklingError")
    first_c = Verdict("fixable_by_allowlist", "", ("c.D", "a.B"), "Unsupported global: c.D")
    assert not repro.compare("x", first_c, by_torch).agrees  # torch stops at its first
    first_a = Verdict("fixable_by_allowlist", "", ("a.B", "c.D"), "Unsupported global: a.B")
    assert repro.compare("x", first_a, by_torch).agrees


def test_worker_reports_failures_as_outcomes() -> None:
    """Guards a worker that dies on the first refused file instead of reporting it."""
    lfs, ok = corpus.CORPUS_DIR / "git_lfs_pointer.pt", corpus.CORPUS_DIR / "state_dict.pt"
    out = repro.run_loads(
        [
            repro.LoadJob(str(lfs), "load"),
            repro.LoadJob(str(ok), "load"),
            repro.LoadJob(str(lfs.with_name("missing.pt")), "naive"),
        ]
    )
    assert [o.ok for o in out] == [False, True, False]
    assert out[0].error_type == "CorruptCheckpointError"
    assert out[1].result_type == "collections.OrderedDict"
    assert out[2].error_type == "CheckpointNotFoundError"


@pytest.mark.slow
def test_repro_cli_agrees_on_a_numpy_file() -> None:
    """Guards the repro command itself: three subprocess loads (naive, weights-only, with
    the doctor's allowlist) agree with the prediction for this torch; exit 0."""
    path = corpus.CORPUS_DIR / "numpy_float32_array.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.repro", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "with the allowlist" in proc.stdout and " NO" not in proc.stdout


def test_repro_cli_missing_file_exits_2(tmp_path: Path) -> None:
    """Guards a traceback for a missing FILE."""
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.repro", str(tmp_path / "nope.pt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "nope.pt" in proc.stderr
