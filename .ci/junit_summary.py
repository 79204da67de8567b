"""CI's closing line: ``python .ci/junit_summary.py [reports/junit]``.

Runs :mod:`ckptcompat.harness.verdict.junit` by path (standard library only, so a bare Python
runs it before anything is installed): one line per JUnit report of the folder, the
failing test ids, then ``TESTS: PASS|FAIL - ...``. Partial runs' ``*-partial.xml`` are
not counted. Exits 1 when a test failed or no test ran.
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    harness = Path(__file__).resolve().parents[1] / "src" / "ckptcompat" / "harness"
    junit = harness / "verdict" / "junit.py"
    runpy.run_path(str(junit), run_name="__main__")
