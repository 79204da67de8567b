"""The closing summary of a test run (harness/verdict/junit.py, .ci/junit_summary.py).

JUnit XML in, text and an exit code out: no torch is involved, so these tests run in one
cell. The reports are written the way pytest's junitxml writes them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ckptcompat.harness.verdict import junit

pytestmark = pytest.mark.one_cell  # XML and text only; no torch involved

ROOT = Path(__file__).resolve().parents[3]


def _write(path: Path, passed: int = 2, failed: tuple[str, ...] = (), skipped: int = 0) -> Path:
    cases = [f'<testcase classname="tests.test_a" name="test_ok{i}"/>' for i in range(passed)]
    cases += [
        f'<testcase classname="tests.test_b" name="{name}">'
        f'<failure message="AssertionError: {name} broke&#10;more">trace</failure></testcase>'
        for name in failed
    ]
    cases += [
        f'<testcase classname="tests.test_c" name="test_skip{i}">'
        '<skipped type="pytest.skip" message="one cell"/></testcase>'
        for i in range(skipped)
    ]
    total = passed + len(failed) + skipped
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites>'
        f'<testsuite name="{path.stem}" errors="0" failures="{len(failed)}" '
        f'skipped="{skipped}" tests="{total}">{"".join(cases)}</testsuite></testsuites>',
        encoding="utf-8",
    )
    return path


def test_green_run_passes_and_a_red_one_names_its_failing_tests(tmp_path: Path) -> None:
    """Guards a tests run whose only hint of a failure was nox's per-session list (issue
    20): the last line says PASS or FAIL with the totals, a failing test is listed with
    its cell's report, its id and the first line of its message, and the exit code is 1."""
    green = [junit.read_report(_write(tmp_path / f"tests-{c}.xml", skipped=1)) for c in "ab"]
    lines, ok = junit.summarise(green)
    assert ok and lines[-1] == "TESTS: PASS - 0 failed, 4 passed, 2 skipped in 2 reports"
    red = [*green, junit.read_report(_write(tmp_path / "tests-t26.xml", failed=("test_x[1]",)))]
    lines, ok = junit.summarise(red)
    assert not ok
    assert "FAILED tests-t26: tests.test_b::test_x[1] - AssertionError: test_x[1] broke" in lines
    assert lines[-1] == (
        "TESTS: FAIL - 1 failed, 6 passed, 2 skipped in 3 reports (tests-t26: 1 failed)"
    )
    assert junit.main([str(tmp_path)]) == 1


def test_a_run_that_tested_nothing_or_lost_a_report_is_red(tmp_path: Path) -> None:
    """Guards a green summary over nothing: no report at all, a cell whose session died
    before pytest wrote its report, a report with no test case, and a run that only
    skipped are all FAIL."""
    assert junit.summarise([])[0][-1] == "TESTS: FAIL - no JUnit report found"
    ok = junit.read_report(_write(tmp_path / "tests-t24.xml"))
    lost = junit.read_report(tmp_path / "tests-t25.xml")
    lines, green = junit.summarise([ok, lost])
    assert not green and lines[-1].endswith("(tests-t25: no report)")
    empty = junit.read_report(_write(tmp_path / "tests-t26.xml", passed=0))
    assert junit.summarise([ok, empty])[0][-1].endswith("(tests-t26: no test ran)")
    skipped = junit.read_report(_write(tmp_path / "tests-t215.xml", passed=0, skipped=3))
    assert junit.summarise([skipped])[0][-1].endswith("(no test passed)")


def test_folder_counts_full_runs_only(tmp_path: Path) -> None:
    """Guards double counting (issue 20): a narrowed run (``nox -s "tests(t24)" -- -k x``)
    writes tests-t24-partial.xml next to the full run's tests-t24.xml; a folder's summary
    counts the full run's files, while a partial file named explicitly is read."""
    _write(tmp_path / "tests-t24.xml", passed=3)
    partial = _write(tmp_path / "tests-t24-partial.xml", passed=1, failed=("test_y",))
    _write(tmp_path / "matrix.xml", passed=5)
    assert junit.reports_in([tmp_path]) == [tmp_path / "matrix.xml", tmp_path / "tests-t24.xml"]
    assert junit.reports_in([partial]) == [partial]
    lines, green = junit.summarise([junit.read_report(p) for p in junit.reports_in([tmp_path])])
    assert green and lines[-1] == "TESTS: PASS - 0 failed, 8 passed, 0 skipped in 2 reports"


def test_ci_script_runs_with_a_bare_python(tmp_path: Path) -> None:
    """Guards .ci/run's last step: ``python .ci/junit_summary.py reports/junit`` runs
    without the package installed (``-I``: no site-packages, no PYTHONPATH), ends with
    the verdict line and exits 1 on a failing test, 0 on a green run."""
    script = ROOT / ".ci" / "junit_summary.py"
    _write(tmp_path / "tests-t24.xml")
    command = [sys.executable, "-I", str(script), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("TESTS: PASS - ")
    _write(tmp_path / "tests-t25.xml", failed=("test_z",))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[-1].startswith("TESTS: FAIL - 1 failed")
