"""Regression tests of ckptcompat.doctor.numpy_consumer: predictions per consumer numpy major.

Issue 16 item 3: the doctor assumed the numpy major of its own venv; a numpy-2 bit generator
fails under numpy 1 even with a plain load, and a numpy-1 ``Generator`` needs
``numpy.random._generator.Generator`` allowlisted though the pickle never names it.

Real files: the numpy-1 set is committed (``fixtures/numpy_random/numpy1``, written in
t24np1, see its MANIFEST.json); the numpy-2 set is written here by the same code
(:mod:`ckptcompat.harness.fixtures.numpy_random`). Every default cell checks the row of its
own numpy (2) against real loads through :mod:`ckptcompat.torch_compat`; the numpy-1 row of
torch 2.4 is checked against the loads recorded in t24np1 (``OBSERVED_t24np1.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckptcompat import doctor, torch_compat
from ckptcompat.cli import main
from ckptcompat.errors import CheckpointError, UnsafeCheckpointError
from ckptcompat.harness.fixtures.manifest import sha256_file
from ckptcompat.harness.fixtures.numpy_random import (
    KINDS,
    numpy_major,
    safe_globals_for,
    write,
)

NUMPY1 = Path(__file__).parent.parent / "fixtures" / "numpy_random" / "numpy1"
NAMES = [f"{kind}_numpy{major}.pt" for major in (1, 2) for kind in KINDS]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The committed numpy-1 files and the numpy-2 files written here (this cell's numpy)."""
    assert numpy_major() == 2, "the default cells run numpy 2"
    written = write(tmp_path_factory.mktemp("numpy2"))
    return {p.name: p for p in [*sorted(NUMPY1.glob("*.pt")), *written]}


def _loads(load: object) -> bool:
    try:
        load()  # type: ignore[operator]
    except CheckpointError:
        return False
    return True


def test_committed_numpy1_files_match_their_manifest() -> None:
    """Guards the committed numpy-1 fixtures against edits: sha256 as written in t24np1."""
    manifest = json.loads((NUMPY1 / "MANIFEST.json").read_text())
    assert manifest["versions"]["numpy"].startswith("1.")
    assert sorted(manifest["files"]) == sorted(p.name for p in NUMPY1.glob("*.pt"))
    for name, entry in manifest["files"].items():
        assert sha256_file(NUMPY1 / name) == entry["sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_prediction_equals_reality_for_this_cells_numpy(files: dict[str, Path], name: str) -> None:
    """Guards the per-numpy prediction: the plain and the weights-only verdicts of this
    torch and this numpy equal what torch_compat's loads really do, and every allowlist the
    doctor gives makes the file load (the doctor's lists missed numpy.random classes the
    pickle never names: Generator, RandomState, the numpy-1 bit generator's class)."""
    path = files[name]
    report = doctor.diagnose(path).for_torch(str(torch.__version__), numpy_major=2)
    plain, wo = report.plain, report.weights_only
    assert _loads(lambda: torch_compat.naive_load(path)) == (
        plain.outcome in ("loads", "runs_code")
    ), plain
    assert _loads(lambda: torch_compat.load(path)) == (wo.outcome == "loads"), wo
    if wo.outcome != "fixable_by_allowlist":
        return
    objs = safe_globals_for(wo.allowlist)
    dangerous = [e.name for e in wo.allowlist if e.dangerous]
    if dangerous and torch_compat.NEEDS_STATIC_PRESCAN:
        # The doctor says ckptcompat's own load refuses these even when allowlisted (< 2.10).
        assert any("ckptcompat's load also refuses" in n for n in wo.notes)
        with pytest.raises(UnsafeCheckpointError):
            torch_compat.load(path, safe_globals=objs)
        return
    loaded = torch_compat.load(path, safe_globals=objs)
    assert set(loaded) == {"rng"}


def test_unnamed_numpy_random_classes_are_in_the_allowlist(files: dict[str, Path]) -> None:
    """Guards the issue's second numpy symptom: loading a numpy-1.26 Generator with exactly
    the doctor's list failed; the classes torch's BUILD check meets are listed for both
    numpy majors of the loading side."""
    wanted = {
        "generator_numpy1.pt": "numpy.random._generator.Generator",
        "pcg64_numpy1.pt": "numpy.random._pcg64.PCG64",
        "mt19937_numpy1.pt": "numpy.random._mt19937.MT19937",
        "random_state_numpy1.pt": "numpy.random.mtrand.RandomState",
        "random_state_numpy2.pt": "numpy.random.mtrand.RandomState",
    }
    for name, cls in wanted.items():
        diag = doctor.diagnose(files[name])
        for row in diag.numpy_rows:
            for report in row.versions:
                wo = report.weights_only
                if wo.outcome == "fixable_by_allowlist":
                    assert cls in {e.name for e in wo.allowlist}, (name, row.numpy_major)


def test_numpy1_row_equals_the_loads_recorded_in_t24np1(files: dict[str, Path]) -> None:
    """Guards the issue's first numpy symptom: a numpy-2 bit generator (PCG64 state) fails
    under numpy 1 even with a plain load, and the doctor predicted it loads. The numpy-1
    row for torch 2.4 must match what torch 2.4.1 + numpy 1.26.4 really did (recorded by
    the command in OBSERVED_t24np1.json, on these files)."""
    observed = json.loads((NUMPY1 / "OBSERVED_t24np1.json").read_text())
    assert observed["versions"]["numpy"].startswith("1.")
    assert sorted(observed["files"]) == sorted(NAMES)
    for name, seen in observed["files"].items():
        report = doctor.diagnose(files[name], numpy_major=1).for_torch(seen["torch"])
        plain, wo = report.plain, report.weights_only
        assert (seen["plain"] == "loads") == (plain.outcome in ("loads", "runs_code")), name
        assert (seen["weights_only_default"] == "loads") == (wo.outcome == "loads"), name
        if "ValueError" in seen["plain"]:
            assert plain.first_error is not None and plain.first_error in seen["plain"], name
            assert wo.outcome == "not_fixable"
        if "weights_only_with_allowlist" in seen:
            assert seen["weights_only_with_allowlist"] == "loads", name


def test_both_numpy_rows_by_default_and_one_with_the_option(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the CLI contract: both numpy rows by default (text and --json, old fields
    kept), ``--numpy 1|2`` predicts for that major alone."""
    path = str(files["pcg64_numpy2.pt"])
    assert main(["doctor", path, "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [r["numpy_major"] for r in both["numpy"]] == [1, 2]
    assert both["numpy_major"] == 2 and both["versions"] == both["numpy"][1]["versions"]
    row1 = both["numpy"][0]["versions"]
    assert {v["plain"]["outcome"] for v in row1} == {"not_fixable"}
    assert main(["doctor", path, "--numpy", "1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["numpy_major"] == 1 and [r["numpy_major"] for r in one["numpy"]] == [1]
    assert one["versions"] == row1
    assert main(["doctor", path]) == 0
    text = capsys.readouterr().out
    assert "with numpy 1 on the loading side" in text
    assert "with numpy 1 loading:" in text.splitlines()[1]


def test_predictions_are_computed_once_only_where_the_numpy_major_cannot_matter(
    files: dict[str, Path],
) -> None:
    """Guards the doctor's shortcut (issue 21 item 3: one set of predictions when
    :func:`~ckptcompat.doctor.predict.numpy_major_matters` says the numpy major cannot
    change them): on every corpus, malicious and numpy-random file and every torch
    minor, predict() for numpy 1 and numpy 2 differ only where it says they may."""
    from ckptcompat.doctor.numpy_consumer import numpy_facts
    from ckptcompat.doctor.pickle_walk import pickle_facts
    from ckptcompat.doctor.predict import numpy_major_matters, predict
    from ckptcompat.doctor.rules import profiles
    from ckptcompat.scan import scan

    fixtures = Path(__file__).parent.parent / "fixtures"
    paths = [*files.values(), *sorted((fixtures / "corpus").glob("*.pt"))]
    paths += sorted((fixtures / "malicious").glob("*.pt"))
    differing = 0
    for path in paths:
        result = scan.scan(path)
        facts, numpy = pickle_facts(str(path), result), numpy_facts(str(path), result)
        same = all(
            predict(result, facts, p, numpy_major=1, numpy=numpy)
            == predict(result, facts, p, numpy_major=2, numpy=numpy)
            for p in profiles()
        )
        if not numpy_major_matters(result, numpy):
            assert same, path.name
        differing += not same
    assert differing > 0  # the files exercise the other case too
