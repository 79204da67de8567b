"""The torch cell table (harness/versions.py) and the running cell's own torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from ckptcompat.harness import versions

ROOT = Path(__file__).resolve().parents[2]


def test_default_cells_are_exactly_the_four_supported_releases() -> None:
    """Guards the default matrix drifting from docs/design.md sec. 2 (2.4.1 ... 2.15.0)."""
    assert [(c.id, c.torch) for c in versions.DEFAULT] == [
        ("t24", "2.4.1"),
        ("t25", "2.5.1"),
        ("t26", "2.6.0"),
        ("t215", "2.15.0"),
    ]


def test_extended_cells_cover_each_minor_from_2_7_to_2_14_once() -> None:
    """Guards a missing or duplicated minor release in tests_extended."""
    minors = [Version(c.torch).minor for c in versions.EXTENDED]
    assert minors == list(range(7, 15))
    assert all(Version(c.torch).major == 2 for c in versions.EXTENDED)


def test_golden_only_producer_pins_numpy_1() -> None:
    """Guards t24np1 losing its numpy-1 override (numpy-1 pickles name numpy.core.*)."""
    cell = versions.by_id("t24np1")
    assert cell.torch == "2.4.1"
    assert cell.numpy is not None and Version(cell.numpy).major == 1
    assert not cell.is_default
    assert cell in versions.GOLDEN_PRODUCERS


def test_ids_are_unique_and_unknown_ids_name_the_known_ones() -> None:
    """Guards typos in session parameters producing an unhelpful KeyError."""
    ids = [c.id for c in versions.CELLS]
    assert len(ids) == len(set(ids))
    with pytest.raises(KeyError, match="known cells: t24, t25"):
        versions.by_id("t99")


def test_cell_for_torch_ignores_local_build_suffix() -> None:
    """Guards '2.15.0+cu132' failing to match the 2.15.0 pin."""
    assert versions.cell_for_torch("2.15.0+cu132").id == "t215"
    assert versions.cell_for_torch("2.4.1+cu121").id == "t24"
    assert versions.cell_for_torch("2.4.1", numpy_major=1).id == "t24np1"
    assert versions.cell_for_torch("1.13.1") is None


def test_running_torch_matches_the_cell_pin() -> None:
    """Guards the resolver silently installing another torch than the cell's pin."""
    import torch

    cell_id = os.environ.get("CKPTCOMPAT_CELL")
    base = Version(torch.__version__).base_version
    if cell_id is None:
        cell = versions.cell_for_torch(torch.__version__)
        if cell is None:
            pytest.skip(f"torch {torch.__version__} is not a cell (not run by nox)")
    else:
        cell = versions.by_id(cell_id)
    assert base == cell.torch


def test_running_numpy_matches_the_cell() -> None:
    """Guards the numpy override (t24np1) or the shared numpy pin not being applied."""
    import numpy

    cell_id = os.environ.get("CKPTCOMPAT_CELL")
    if cell_id is None:
        pytest.skip("not run by nox")
    cell = versions.by_id(cell_id)
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert numpy.__version__ == (cell.numpy or pins["numpy"])


@pytest.mark.one_cell
def test_nox_lists_the_default_and_extended_sessions() -> None:
    """Guards the noxfile and versions.py disagreeing (nox -l --json is what CI reads).

    One cell only: the session list does not depend on the running torch.
    """
    out = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "--json", "-s", "tests", "tests_extended"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sessions = json.loads(out)
    by_name: dict[str, list[str]] = {}
    for s in sessions:
        by_name.setdefault(s["name"], []).append(s["session"])
    assert by_name["tests"] == [f"tests({c.id})" for c in versions.DEFAULT]
    assert by_name["tests_extended"] == [f"tests_extended({c.id})" for c in versions.EXTENDED]
    # A bare `nox` runs the default cells only: tests_extended was default too (eight more
    # 3-5 GB venvs) although the README says "only when named" (a new user's trial).
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "-l"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    defaults = [line.split()[1] for line in listed.splitlines() if line.startswith("* ")]
    assert defaults == [f"tests({c.id})" for c in versions.DEFAULT]


def test_cell_arguments_of_the_matrix_commands() -> None:
    """Guards the driver's and the remote phase's ``--python CELL=PYTHON`` and
    ``--producers`` (one parser each, spelled twice before): an unknown cell was a KeyError
    traceback out of argparse; it is a usage error naming the known cells."""
    import argparse

    from ckptcompat.harness.versions import cell_python_arg, cells_arg

    assert cell_python_arg("t26=/v/bin/python") == ("t26", "/v/bin/python")
    assert cells_arg("t24, t26,") == ["t24", "t26"]
    for bad in ("t26", "t26=", "t99=/v/bin/python"):
        with pytest.raises(argparse.ArgumentTypeError):
            cell_python_arg(bad)
    for bad in ("", ",", "t24,t99"):
        with pytest.raises(argparse.ArgumentTypeError):
            cells_arg(bad)
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", type=cell_python_arg)
    with pytest.raises(SystemExit):  # argparse's usage error, exit 2
        parser.parse_args(["--python", "t99=/x"])
