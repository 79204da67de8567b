"""Print one 'N passed, N failed, N skipped' line over every JUnit XML in a folder.

Standard library only (it runs in CI's bare Python). Exits 1 when there is no report or
no test ran at all, so a run that tested nothing cannot look green.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(folder: str) -> int:
    reports = sorted(Path(folder).glob("*.xml"))
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for report in reports:
        root = ET.parse(report).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        cell = {k: sum(int(s.get(k, 0)) for s in suites) for k in totals}
        print(f"{report.stem}: {cell['tests']} tests, {cell['failures'] + cell['errors']} failed, "
              f"{cell['skipped']} skipped")
        for key in totals:
            totals[key] += cell[key]
    failed = totals["failures"] + totals["errors"]
    passed = totals["tests"] - failed - totals["skipped"]
    print(f"ckptcompat: {passed} passed, {failed} failed, {totals['skipped']} skipped")
    return 0 if reports and passed > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "reports/junit"))
