"""The committed allowlist snapshots (fixtures/torch_allowlists) against the running torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckptcompat import torch_compat
from ckptcompat.harness import snapshots, versions

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "fixtures" / "torch_allowlists"


def test_every_default_cell_has_a_committed_snapshot() -> None:
    """Guards a default torch version whose doctor verdicts would fall back to rules."""
    for cell in versions.DEFAULT:
        assert snapshots.snapshot_path(FOLDER, cell.torch).is_file(), cell.id


def test_committed_snapshot_matches_this_torch() -> None:
    """Guards a stale snapshot: the doctor would predict from facts this torch no longer has.

    Regenerate with ``python -m ckptcompat.harness.snapshots fixtures/torch_allowlists``
    inside the cell.
    """
    path = snapshots.snapshot_path(FOLDER)
    if not path.is_file():
        pytest.skip(f"no snapshot committed for torch {torch_compat.TORCH_VERSION}")
    committed = json.loads(path.read_text())
    fresh = snapshots.probe()
    for key in ("generated_by",):
        committed.pop(key)
        fresh.pop(key)
    # Other tests in this worker may have imported modules that register more safe
    # globals (torch registers some on import of its submodules); never fewer.
    assert set(committed.pop("preregistered_safe_globals")) <= set(
        fresh.pop("preregistered_safe_globals")
    )
    assert fresh == committed


def test_probe_sees_the_version_differences() -> None:
    """Guards the probes returning constants instead of measuring torch."""
    snap = snapshots.probe()
    v = torch_compat.TORCH_VERSION
    assert ("builtins.set" in snap["default_globals"]) == (v.release >= (2, 6))
    assert ("_codecs.encode" in snap["default_globals"]) == (v.release >= (2, 5))
    assert snap["setitem_restricted"] == (v.release >= (2, 10))
    assert snap["user_allowlist_key"] == ("qualname" if v.release >= (2, 7) else "name")
    assert "FRAME" not in snap["implemented_opcodes"]
    assert "GLOBAL" in snap["implemented_opcodes"]
