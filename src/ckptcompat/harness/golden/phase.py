"""The golden checks of one consumer cell, run inside the evaluate phase's process.

Every committed golden (``fixtures/golden/<producer>/``) is checked under this torch by the
golden verification tests themselves -- the consumer-side tests of
``tests/harness/golden/test_golden.py`` named in :data:`SELECTED` -- run in-process with
``pytest.main`` and ``CKPTCOMPAT_RECORDS`` pointing at a scratch directory, so the matrix
and ``nox -s tests`` judge the goldens with the same code. The tests are selected, not
deselected: the producer-side ones (regeneration, determinism) start generator processes
and emit no records, and ``nox -s tests`` runs them anyway. The one other record-emitting
test, the naive ``torch.load`` (:data:`REPLACED`), runs a repro worker subprocess;
:func:`naive_loads` does the same loads here instead -- still in a harness subprocess,
only on goldens this repository wrote (never the malicious corpus), and last, so nothing
a whole-object unpickle imports can touch another check of this process. The matrix's
budget is three torch processes per cell.

The scratch records are then appended to the phase's records file: one file per process.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

from ckptcompat import locator, torch_compat
from ckptcompat.errors import CheckpointError
from ckptcompat.harness.golden.read import GOLDEN_ROOT, KINDS, GoldenError, golden_dirs, read_golden
from ckptcompat.harness.golden.records import RECORDS_ENV, emit_record
from ckptcompat.harness.verdict import records as results

__all__ = ["GOLDEN_TESTS", "REPLACED", "SELECTED", "naive_loads", "pytest_args", "run"]

#: The golden verification tests, relative to the checkout.
GOLDEN_TESTS = Path("tests") / "harness" / "golden" / "test_golden.py"
#: Keywords of the consumer-side golden tests run here, each naming one test function
#: (tests/harness/run/test_scenarios.py checks them against test_golden.py).
SELECTED: tuple[str, ...] = (
    "safe_v1_loads",
    "legacy_generation",
    "stored_ppo_update",
    "trainer_state_resumes",
    "greedy_evaluation",
)
#: The record-emitting golden test that :func:`naive_loads` replaces in-process.
REPLACED = "naive_torch_load"
#: pytest exit codes that mean the checks ran (0: all passed, 1: some failed).
_RAN = (0, 1)


def pytest_args() -> list[str]:
    """Arguments of the in-process ``pytest.main`` call."""
    return [
        str(locator.CHECKOUT / GOLDEN_TESTS),
        "-m",
        "golden",
        "-k",
        " or ".join(SELECTED),
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
    ]


def naive_loads() -> int:
    """What a plain ``torch.load(FILE)`` does here on every golden; one record each.

    ``pass``: it returned an object; ``fail``: a typed refusal; ``error``: anything else.
    Returns the number of loads.
    """
    count = 0
    for directory in golden_dirs(GOLDEN_ROOT):
        try:
            golden = read_golden(directory)
        except GoldenError as exc:
            print(f"golden: {exc}", flush=True)  # its missing records fail the gate
            continue
        for name in golden.agents:
            for kind in KINDS:
                started = time.perf_counter()
                outcome: results.Outcome = "pass"
                try:
                    with warnings.catch_warnings():
                        # 2.4/2.5 warn about the weights_only default; the outcome is the point
                        warnings.simplefilter("ignore")
                        obj = torch_compat.naive_load(golden.path(name, kind), map_location="cpu")
                    detail = f"{type(obj).__module__}.{type(obj).__qualname__}"
                except CheckpointError as exc:
                    outcome, detail = "fail", f"{type(exc).__name__}: {str(exc)[:300]}"
                except Exception as exc:  # recorded as the outcome
                    outcome, detail = "error", f"{type(exc).__name__}: {str(exc)[:300]}"
                emit_record(
                    golden,
                    name,
                    kind,
                    "naive",
                    outcome,
                    detail=detail,
                    duration_s=time.perf_counter() - started,
                )
                count += 1
    return count


def run(cell: str, records_file: Path, scratch: Path) -> int:
    """Run the golden checks and the naive loads; append their records to ``records_file``.

    Returns:
        0 when the checks ran (their outcomes are in the records), 1 when pytest could not
        run them (collection or usage error, no golden tests found).
    """
    import pytest

    tests = locator.CHECKOUT / GOLDEN_TESTS
    if not tests.is_file():
        print(f"golden: {tests} is missing; the matrix runs from a source checkout", flush=True)
        return 1
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ[RECORDS_ENV] = str(scratch)
    os.environ["CKPTCOMPAT_CELL"] = cell
    try:
        code = int(pytest.main(pytest_args()))
        loads = naive_loads()
        print(f"golden: pytest exit {code}; {loads} naive loads", flush=True)
        for record in results.read_records([scratch]):
            results.append_record(records_file, record)
    finally:
        os.environ.pop(RECORDS_ENV, None)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if code in _RAN else 1
