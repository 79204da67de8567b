"""Tests of harness/generations_golden/produce.py: making and re-verifying the Metta goldens."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ckptcompat import numerics
from ckptcompat.harness import versions
from ckptcompat.harness.generations_golden import layout, metta_format, produce
from ckptcompat.harness.golden.read import GOLDEN_ROOT, MANIFEST_NAME, GoldenError


def test_agents_are_on_the_architecture_allowlist() -> None:
    """Guards goldens that only migrate with --class-path: every golden agent's class is on
    the architecture allowlist, so `ckptcompat migrate FILE DIR` needs nothing else."""
    from ckptcompat.generations.architecture import ALLOWED_ARCHITECTURES

    assert {a.class_path for a in produce.AGENTS} <= set(ALLOWED_ARCHITECTURES)


def test_another_cells_venv_is_refused(tmp_path: Path) -> None:
    """Guards goldens labelled with the wrong producer: a cell whose torch is not this
    process's is refused before anything is written."""
    here = str(torch.__version__).split("+")[0]
    other = next(c for c in versions.GOLDEN_PRODUCERS if c.torch != here)
    with pytest.raises(GoldenError, match=other.id):
        produce.generate(tmp_path, other.id)
    assert not (tmp_path / "metta").exists()


def test_a_changed_member_is_a_difference(tmp_path: Path) -> None:
    """Guards the append-only comparison: a zip whose member bytes differ, a missing file
    and an extra file are each reported; a re-deflated identical zip is not."""
    target = tmp_path / "t"
    target.mkdir()
    same = metta_format.mpt_bytes(b"w", "pkg.A(n=1)")
    (target / "a.mpt").write_bytes(same)
    (target / "b.mpt").write_bytes(metta_format.mpt_bytes(b"w", "pkg.A(n=2)"))
    (target / "extra").write_bytes(b"x")
    files = {
        "a.mpt": same,
        "b.mpt": metta_format.mpt_bytes(b"w", "pkg.A(n=1)"),
        "c.json": b"{}",
    }
    assert produce._differences(target, files) == ["c.json", "extra", "b.mpt"]


@pytest.mark.slow
@pytest.mark.golden
def test_regeneration_in_this_cell_reproduces_the_committed_goldens(tmp_path: Path) -> None:
    """Guards producer code drifting from the committed goldens: regenerating this cell's
    Metta goldens over a copy of them verifies every file (zip members by content) and
    changes nothing."""
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell not in {c.id for c in versions.GOLDEN_PRODUCERS}:
        pytest.skip("runs in a producer cell (CKPTCOMPAT_CELL)")
    committed = layout.metta_golden_dir(GOLDEN_ROOT, cell)
    copy = layout.metta_golden_dir(tmp_path, cell)
    shutil.copytree(committed, copy)
    manifest = json.loads((committed / MANIFEST_NAME).read_text())
    if manifest["producer"]["numpy"] != np.__version__:
        pytest.skip(f"numpy {np.__version__}, the producer's was {manifest['producer']['numpy']}")
    comparison = numerics.compare(manifest["producer"]["numerics"], numerics.fingerprint())
    if not comparison.bitwise:
        pytest.skip(comparison.reason)
    _, report = produce.generate(tmp_path, cell)
    assert report.startswith("verified")
    for path in committed.rglob("*"):
        if path.is_file():
            assert (copy / path.relative_to(committed)).read_bytes() == path.read_bytes()
