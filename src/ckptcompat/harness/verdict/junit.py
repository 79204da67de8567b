"""The closing summary of a test run: totals and failing test ids over JUnit XML reports.

``python src/ckptcompat/harness/verdict/junit.py PATH ...`` (CI: ``.ci/junit_summary.py``; nox: the
``tests_summary`` session after ``nox -s tests``). A PATH is a report file or a folder; a
folder means its full-run reports, every ``*.xml`` but the ``*-partial.xml`` files of runs
narrowed with ``nox -s tests -- -k ...`` (:data:`PARTIAL_SUFFIX`), so nothing is counted
twice. Prints one line per report, every failing test id with its message (the first
:data:`SHOWN`), and a last line that tells a red run from a green one::

    TESTS: FAIL - 2 failed, 3180 passed, 95 skipped in 4 reports (tests-t26: 2 failed)

Standard library only: CI runs it with a bare Python, before anything is installed.
Exit status: 0 when every test passed or skipped; 1 when one failed or errored, a named
report is missing or unreadable, or no test ran at all (a run that tested nothing is red).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PARTIAL_SUFFIX", "SHOWN", "Report", "main", "read_report", "reports_in", "summarise"]

#: The stem suffix of a JUnit file written by a narrowed run (``-- -k ...``).
PARTIAL_SUFFIX = "-partial"
#: Failing test ids printed in full; the rest are counted.
SHOWN = 50


@dataclass
class Report:
    """One JUnit file's totals and failing tests (``classname::name`` - first message line)."""

    name: str
    tests: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    problem: str | None = None  # why the file could not be read

    @property
    def passed(self) -> int:
        """Tests neither failed nor skipped."""
        return self.tests - self.failed - self.skipped


def read_report(path: Path) -> Report:
    """Totals of a JUnit XML file (``<testsuites>`` or one ``<testsuite>``), counted from
    its test cases; a missing or malformed file gives a report with ``problem`` set."""
    report = Report(path.stem)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        report.problem = "no report: the session ended before pytest wrote it"
        return report
    except ET.ParseError as exc:
        report.problem = f"unreadable JUnit XML: {exc}"
        return report
    for case in root.iter("testcase"):
        report.tests += 1
        bad = case.find("failure")
        bad = bad if bad is not None else case.find("error")
        if bad is not None:
            report.failed += 1
            message = (bad.get("message") or "").strip().splitlines()
            test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
            report.failures.append(test_id + (f" - {message[0][:160]}" if message else ""))
        elif case.find("skipped") is not None:
            report.skipped += 1
    return report


def reports_in(paths: Iterable[str | Path]) -> list[Path]:
    """The report files named by ``paths``: files as given, folders' full-run ``*.xml``."""
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            files += [p for p in sorted(given.glob("*.xml")) if not p.stem.endswith(PARTIAL_SUFFIX)]
        else:
            files.append(given)
    return files


def summarise(reports: Sequence[Report]) -> tuple[list[str], bool]:
    """The summary's lines and whether the run is green (see the module docstring)."""
    lines = [
        f"{r.name}: {r.problem}"
        if r.problem
        else f"{r.name}: {r.tests} tests, {r.failed} failed, {r.skipped} skipped"
        for r in reports
    ]
    failing = [f"FAILED {r.name}: {test}" for r in reports for test in r.failures]
    lines += failing[:SHOWN]
    if len(failing) > SHOWN:
        lines.append(f"... {len(failing) - SHOWN} more failing tests in these reports")
    why = [f"{r.name}: {r.failed} failed" for r in reports if r.failed]
    why += [f"{r.name}: no report" for r in reports if r.problem]
    why += [f"{r.name}: no test ran" for r in reports if not r.problem and not r.tests]
    if reports and not why and not any(r.passed for r in reports):
        why.append("no test passed")
    failed = sum(r.failed for r in reports)
    totals = (
        f"{failed} failed, {sum(r.passed for r in reports)} passed, "
        f"{sum(r.skipped for r in reports)} skipped in {len(reports)} "
        + ("report" if len(reports) == 1 else "reports")
        if reports
        else "no JUnit report found"
    )
    green = bool(reports) and not why
    suffix = f" ({'; '.join(why)})" if why else ""
    lines.append(f"TESTS: {'PASS' if green else 'FAIL'} - {totals}{suffix}")
    return lines, green


def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary of the reports under the given paths (default ``reports/junit``)."""
    args = list(sys.argv[1:] if argv is None else argv) or ["reports/junit"]
    lines, green = summarise([read_report(p) for p in reports_in(args)])
    print("\n".join(lines), flush=True)
    return 0 if green else 1


if __name__ == "__main__":
    raise SystemExit(main())
