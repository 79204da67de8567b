"""The fuzz runner's batches (fuzz/runner.py): one child per case, failures rerun isolated.

Before, every (case, entry point) had its own child: ~1,500 forks of a 400 MiB process
for 250 cases. Now a case's entry points share a child, and the runner must still report
every failure exactly as a child of its own would: these tests judge synthetic child
endings (:func:`runner._settle`), then run a whole fuzz run with entry points that
crash, hang and fail on chosen cases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ckptcompat.harness.fuzz import children, crafted, runner
from tests.faults import SRC

ENTRIES = ["doctor", "load", "cli migrate"]
EXITED_0 = 0  # a wait status: exited with code 0
KILLED_SEGV = signal.SIGSEGV  # a wait status: killed by SIGSEGV
BOUND_KB = 128 << 10


def _job(isolated: bool, entries: list[str] = ENTRIES) -> runner._Running:
    base = runner._Base("state_dict", b"", digest="d0")
    task = runner._Task(7, "bit_flip", base, b"", list(entries), isolated)
    return runner._Running(None, task, [Path(f"/x/{e}") for e in entries], Path("/x"))  # type: ignore[arg-type]


def _line(result: str = "typed", **extra: Any) -> dict[str, Any]:
    return {"result": result, "start_kb": 400_000, "seconds": 0.01, **extra}


def _ended(lines: list[dict[str, Any]], status: int = EXITED_0, **kw: Any) -> children.Ended:
    return children.Ended(
        lines, status, kw.get("maxrss_kb", 410_000), kw.get("timed_out", False), 0.5
    )


def _results(settled: list[tuple[runner.Outcome, Path]]) -> list[tuple[str, str]]:
    return [(out.entry, out.result) for out, _ in settled]


def _rerun(again: list[runner._Task]) -> list[str]:
    assert all(t.isolated and len(t.entries) == 1 and t.case == 7 for t in again)
    return [t.entries[0] for t in again]


def test_a_clean_batch_counts_every_step_and_reruns_nothing() -> None:
    """Guards the common path: all lines, exit 0, no failure -> one outcome per entry."""
    lines = [_line(), _line("loaded", digest="d0"), _line("ok")]
    settled, again = runner._settle(_job(False), _ended(lines), BOUND_KB)
    assert _results(settled) == [
        ("doctor", "typed"),
        ("load", "loaded_same"),
        ("cli migrate", "ok"),
    ]
    assert again == [] and all(out.grown_kb == 10_000 for out, _ in settled)


@pytest.mark.parametrize("result", ["untyped", "bad_exit"])
def test_a_failing_step_and_the_steps_after_it_rerun_isolated(result: str) -> None:
    """Guards failures judged in a shared process: the failing step and every later one
    run again in children of their own, and only those runs count."""
    lines = [_line(), _line(result), _line("ok")]
    settled, again = runner._settle(_job(False), _ended(lines), BOUND_KB)
    assert _results(settled) == [("doctor", "typed")]
    assert _rerun(again) == ["load", "cli migrate"]


def test_a_silent_wrong_load_in_a_batch_reruns_isolated() -> None:
    """Guards the silent-wrong check in batches: a mutated zip loading other data than
    saved is a failure, so it is confirmed in a child of its own."""
    lines = [_line(), _line("loaded", digest="other"), _line("ok")]
    settled, again = runner._settle(_job(False), _ended(lines), BOUND_KB)
    assert _results(settled) == [("doctor", "typed")] and _rerun(again) == ["load", "cli migrate"]


def test_a_crash_reruns_the_step_without_a_line_and_the_rest() -> None:
    """Guards crash attribution: a child killed by a signal after two lines -> the third
    step (running when it died) and later ones rerun; the first two count."""
    settled, again = runner._settle(_job(False), _ended([_line(), _line()], KILLED_SEGV), BOUND_KB)
    assert _results(settled) == [("doctor", "typed"), ("load", "typed")]
    assert _rerun(again) == ["cli migrate"]


def test_a_crash_after_the_last_line_reruns_the_last_step() -> None:
    """Guards a crash no line accounts for: every step wrote its line but the child did
    not exit cleanly, so the last step is not trusted."""
    lines = [_line(), _line(), _line()]
    settled, again = runner._settle(_job(False), _ended(lines, KILLED_SEGV), BOUND_KB)
    assert len(settled) == 2 and _rerun(again) == ["cli migrate"]


def test_a_timeout_reruns_the_hung_step_and_the_rest() -> None:
    """Guards hang attribution: killed after one line -> steps 2 and 3 rerun isolated."""
    ended = _ended([_line()], signal.SIGKILL, timed_out=True)
    settled, again = runner._settle(_job(False), ended, BOUND_KB)
    assert _results(settled) == [("doctor", "typed")] and _rerun(again) == ["load", "cli migrate"]


def test_a_batch_past_the_memory_bound_reruns_every_step() -> None:
    """Guards the memory bound: a batch's peak (wait4) bounds every step's growth but does
    not say which step grew, so all of them rerun isolated."""
    ended = _ended([_line(), _line(), _line()], maxrss_kb=400_000 + BOUND_KB + 1)
    settled, again = runner._settle(_job(False), ended, BOUND_KB)
    assert settled == [] and _rerun(again) == ENTRIES


def test_an_isolated_step_is_judged_as_its_own_child() -> None:
    """Guards the rerun's verdicts: a signal is a crash even after a line; a kill is a
    timeout; a missing line is a crash; growth past the bound is memory."""
    crash = runner._settle(_job(True, ["load"]), _ended([_line()], KILLED_SEGV), BOUND_KB)
    assert _results(crash[0]) == [("load", "crash")] and crash[1] == []
    assert "SIGSEGV" in crash[0][0][0].detail
    hung = _ended([], signal.SIGKILL, timed_out=True)
    assert _results(runner._settle(_job(True, ["load"]), hung, BOUND_KB)[0]) == [
        ("load", "timeout")
    ]
    silent = runner._settle(_job(True, ["load"]), _ended([], 3 << 8), BOUND_KB)[0]
    assert _results(silent) == [("load", "crash")] and "exit 3, no result" in silent[0][0].detail
    big = _ended([_line()], maxrss_kb=400_000 + BOUND_KB + 1)
    assert _results(runner._settle(_job(True, ["load"]), big, BOUND_KB)[0]) == [("load", "memory")]


_FAKE_RUN = """
import faulthandler, json, os, signal, sys, time
from pathlib import Path
from ckptcompat.harness.fuzz import runner

def fake(entry, path, case_dir):
    if "warm" in path.parts:
        return {"result": "ok"}
    case = int(case_dir.name.split("-")[0])
    if (case, entry) == (3, "load"):
        faulthandler.disable()  # pytest's, inherited: no dump in the test's output
        os.kill(os.getpid(), signal.SIGSEGV)
    if (case, entry) == (5, "doctor"):
        time.sleep(600)
    if (case, entry) == (7, "cli doctor"):
        return {"result": "untyped", "detail": "ValueError: planted"}
    return {"result": "ok"}

runner._entry = fake
report = runner.run(Path(sys.argv[1]), cases=9, seed=1, timeout_s=2.0)
print(json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.one_cell
def test_a_fuzz_run_attributes_planted_faults_to_their_case_and_entry(tmp_path: Path) -> None:
    """Guards the whole loop: with entry points that crash (case 3, load), hang (case 5,
    doctor) and raise an untyped error (case 7, cli doctor), the report has exactly those
    three failures, on those cases and entries, every (case, entry point) counted once,
    reproducers saved, and one child per case plus the isolated reruns. One cell: every
    entry point is the planted ``fake`` (no torch call is judged; the run's bookkeeping is
    plain Python), and the real entry points' per-version behaviour is judged in every cell
    by ``test_batches_give_the_report_of_one_child_per_entry_point`` and ``tests/security/
    test_fuzz.py``. Its two 2-second timeouts idle a worker (~7 s per cell)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _FAKE_RUN, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )  # fmt: skip
    report = json.loads(proc.stdout.splitlines()[-1])
    failed = {(f["case"], f["entry"], f["result"]) for f in report["failed"]}
    assert failed == {(3, "load", "crash"), (5, "doctor", "timeout"), (7, "cli doctor", "untyped")}
    per_case = {e for row in report["cases_per_kind_and_entry"].values() for e in row}
    assert report["runs"] == sum(
        sum(row.values()) for row in report["cases_per_kind_and_entry"].values()
    )
    assert per_case <= set(runner.ENTRY_POINTS)
    # The nine cases are crafted files (no managed run): 6 entry points each. Reruns start
    # at the faulty step: load is step 5 (2 rerun), doctor step 1 (6), cli doctor step 3 (4).
    assert len(crafted.BUILDERS) >= 9 and report["runs"] == 9 * 6
    assert report["reruns_in_isolation"] == 2 + 6 + 4
    assert report["children"] == 9 + report["reruns_in_isolation"]
    saved = {p.name for p in (tmp_path / "failures").iterdir()}
    assert any(name.startswith("case3-") and name.endswith("-crash.json") for name in saved)


@pytest.mark.slow
def test_batches_give_the_report_of_one_child_per_entry_point(tmp_path: Path) -> None:
    """Guards outcomes changed by sharing a child among a case's entry points (state one
    entry point leaves for the next, a cache filled by an earlier step): 20 real cases
    (the 11 crafted files, then one of each of the 9 mutation kinds) give the same
    results per kind and per entry point batched and ``--isolated``."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    reports = []
    for mode in ([], ["--isolated"]):
        out = tmp_path / (mode[0][2:] if mode else "batched")
        subprocess.run(
            [sys.executable, "-m", "ckptcompat.harness.fuzz", "--cases", "20", "--seed", "11",
             "--out", str(out), "--timeout", "30", *mode],
            capture_output=True, text=True, env=env, timeout=600, check=True,
        )  # fmt: skip
        reports.append(json.loads((out / "report.json").read_text()))
    batched, isolated = reports
    for key in (
        "runs",
        "failures",
        "cases_per_kind_and_entry",
        "results_per_kind",
        "results_per_entry",
    ):
        assert batched[key] == isolated[key], key
    assert batched["children"] == 20 and isolated["children"] == batched["runs"]
