"""DCP goldens (``fixtures/golden/dcp/<cell>/``, :mod:`ckptcompat.harness.golden.dcp`).

The committed files against their MANIFEST, the semantic digest that compares
regenerations (DCP's ``.metadata`` holds a random ``save_id``, the trainer writes wall
times), a regeneration in this cell, and the doctor's account of each producer's DCP
directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from packaging.version import Version

from ckptcompat import torch_compat
from ckptcompat.checkpoint.atomic import LOCK_NAME
from ckptcompat.doctor.dcp import explain_dcp
from ckptcompat.harness import versions
from ckptcompat.harness.golden import dcp as dcp_golden
from ckptcompat.harness.golden.generate import SIZE_BUDGET_BYTES
from ckptcompat.harness.golden.read import (
    CONFIRMED_CODE_NAME,
    GOLDEN_ROOT,
    MANIFEST_NAME,
    producer_code_digest,
)
from ckptcompat.scan.dcp_metadata import read_dcp_metadata

pytestmark = pytest.mark.golden

DEFAULT = [c.id for c in versions.DEFAULT]


def _manifest(cell: str) -> dict[str, Any]:
    path = dcp_golden.dcp_golden_dir(GOLDEN_ROOT, cell) / MANIFEST_NAME
    return json.loads(path.read_text(encoding="utf-8"))


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )


@pytest.mark.one_cell
def test_every_default_cell_has_dcp_goldens() -> None:
    """Guards a default producer cell without DCP goldens (a cell added to versions.py
    without `nox -s "golden(<id>)"`): the matrix's DCP phase would silently check fewer
    producers. One cell: files only."""
    assert [p.name for p in dcp_golden.dcp_golden_dirs(GOLDEN_ROOT)] == sorted(DEFAULT)


@pytest.mark.parametrize("cell", DEFAULT)
def test_dcp_manifest_matches_files(cell: str) -> None:
    """Guards a committed DCP golden changing or rotting (edited bytes, a stray or missing
    file, an LFS pointer) against its MANIFEST's sha256 and sizes, or bloating past the
    goldens' 1 MB budget; a golden produced in
    the wrong venv or outside the reproducible-numerics mode; and the semantic digest the
    regeneration check relies on no longer describing the committed files (recomputed
    here, in this torch)."""
    root = dcp_golden.dcp_golden_dir(GOLDEN_ROOT, cell)
    manifest = _manifest(cell)
    listed = {e["path"]: e for e in manifest["files"]}
    assert _files(root) == sorted(listed)
    for rel, entry in listed.items():
        data = (root / rel).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (
            entry["sha256"],
            entry["size_bytes"],
        ), rel
        assert dcp_golden.semantic_digest(root / rel) == entry["semantic_sha256"], rel
    total = sum((root / rel).stat().st_size for rel in listed) + len(json.dumps(manifest))
    assert total < SIZE_BUDGET_BYTES, f"{cell}: {total} bytes"
    assert Version(manifest["producer"]["torch"]).base_version == versions.by_id(cell).torch
    assert manifest["producer"]["numerics"]["reproducible"]
    for run, world_size in dcp_golden.RUNS.items():
        dcp_dir = root / manifest["runs"][run]["dcp_dir"]
        ranks = sorted(p.name for p in dcp_dir.glob("__*_0.distcp"))
        assert ranks == [f"__{r}_0.distcp" for r in range(world_size)]


def _safe_copy(tmp_path: Path, name: str, change: Any) -> Path:
    """A copy of t26's ws1 safe file with ``change`` applied to its payload, re-saved."""
    source = dcp_golden.dcp_golden_dir(GOLDEN_ROOT, "t26") / "ws1/checkpoints/ws1_v1.pt"
    payload = torch_compat.load(source, map_location="cpu")
    change(payload)
    path = tmp_path / name / "ws1_v1.pt"
    path.parent.mkdir()
    torch.save(payload, path)
    return path


def test_semantic_digest_sets_aside_wall_times_only(tmp_path: Path) -> None:
    """Guards the semantic comparison hiding a real change: two files differing only in the
    measured ``total_time_s`` have one digest (that is all the trainer's runs differ in),
    while a file with one weight changed by one ulp, or another epoch, has another."""

    def slower(payload: dict[str, Any]) -> None:
        payload["metadata"]["total_time_s"] += 12.5

    def nudged(payload: dict[str, Any]) -> None:
        first = next(iter(payload["state_dict"].values()))
        first.view(-1)[0] = torch.nextafter(first.view(-1)[0], torch.tensor(float("inf")))

    def later(payload: dict[str, Any]) -> None:
        payload["metadata"]["epoch"] += 1

    same = _safe_copy(tmp_path, "same", lambda p: None)
    digest = dcp_golden.semantic_digest(same)
    assert dcp_golden.semantic_digest(_safe_copy(tmp_path, "slower", slower)) == digest
    assert dcp_golden.semantic_digest(_safe_copy(tmp_path, "nudged", nudged)) != digest
    assert dcp_golden.semantic_digest(_safe_copy(tmp_path, "later", later)) != digest


def test_dcp_metadata_digest_ignores_save_id_only(tmp_path: Path) -> None:
    """Guards the ``.metadata`` comparison: DCP pickles a random ``save_id`` and the
    directory's path into it (seen: two productions, two uuids), which must not count,
    while another tensor key must."""
    source = dcp_golden.dcp_golden_dir(GOLDEN_ROOT, "t26") / "ws1/checkpoints/ws1_v1.dcp"
    data = (source / ".metadata").read_bytes()
    before = dcp_golden.semantic_digest(source / ".metadata")
    other = tmp_path / "other"
    other.mkdir()
    save_id = re.search(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", data)
    assert save_id is not None  # t26 writes StorageMeta(save_id=uuid4)
    fresh = str(uuid.uuid4()).encode()
    (other / ".metadata").write_bytes(data.replace(save_id.group(0), fresh))
    assert dcp_golden.semantic_digest(other / ".metadata") == before
    resized = data.replace(b"model.", b"model!", 1)
    (other / ".metadata").write_bytes(resized)
    assert dcp_golden.semantic_digest(other / ".metadata") != before
    assert read_dcp_metadata(data).tensors


def _this_cell() -> str:
    return os.environ.get("CKPTCOMPAT_CELL") or "t26"


@pytest.mark.slow
def test_dcp_regeneration_is_equivalent_here(tmp_path: Path) -> None:
    """Guards non-deterministic DCP goldens beyond what the semantic digest sets aside
    (unseeded ranks, thread-dependent kernels, a rank writing other tensors): regenerating
    this cell's DCP goldens -- one process and two torchrun ranks -- gives the committed
    semantic digests, and the ``.distcp`` tensor bytes byte for byte. Skipped where the
    producer code changed (goldens are append-only; the gen2 confirmations list the code
    digests known to reproduce)."""
    cell = _this_cell()
    manifest = _manifest(cell)
    confirmed = GOLDEN_ROOT / "gen2" / CONFIRMED_CODE_NAME
    known = json.loads(confirmed.read_text("utf-8")).get(cell, []) if confirmed.is_file() else []
    digest = producer_code_digest()
    if digest != manifest["producer"]["code_digest"] and digest not in known:
        pytest.skip(f"producer code {digest[:12]} not confirmed for {cell}'s goldens")
    out = tmp_path / "golden"
    shutil.copytree(GOLDEN_ROOT / "dcp" / cell, out / "dcp" / cell)
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.golden.dcp", str(out), cell],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "equivalent" in proc.stdout
    assert not list((out / "dcp" / cell).rglob(LOCK_NAME))


@pytest.mark.slow
@pytest.mark.one_cell
def test_dcp_regeneration_refuses_a_changed_golden(tmp_path: Path) -> None:
    """Guards the verification passing whatever the directory holds: a committed DCP golden
    whose MANIFEST says a file of the one-process run means something else is refused
    (exit 1, the file named) as soon as that run is trained, before the 2-rank run, and
    nothing in the directory is rewritten. (The refusal of a 2-rank file is the same
    comparison after the other run; the equivalence test above passes through it.) One
    cell: the comparison and the refusal are file logic; each cell's regeneration is the
    equivalence test's, in every cell."""
    cell = _this_cell()
    out = tmp_path / "golden"
    target = out / "dcp" / cell
    shutil.copytree(GOLDEN_ROOT / "dcp" / cell, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text("utf-8"))
    entry = next(e for e in manifest["files"] if e["path"].endswith("ws1_v1.pt"))
    entry["semantic_sha256"] = "0" * 64
    (target / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.golden.dcp", str(out), cell],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "ws1/checkpoints/ws1_v1.pt" in proc.stderr
    assert "found after run ws1; ws2 not trained" in proc.stderr
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


@pytest.mark.one_cell
@pytest.mark.parametrize("cell", DEFAULT)
def test_doctor_explains_dcp_golden_of_each_producer(cell: str) -> None:
    """Guards the doctor misreading a real DCP directory of some producer (issue 18 item 4):
    for each default producer's one- and two-rank directories it reads every model tensor
    with the safe file's dtype and shape, finds no file missing, estimates the writing
    torch's era, and predicts this pair's outcome by the measured rules (2.15's six-field
    TensorProperties fail on <= 2.6; 2.15 resumes an older Adam's model only). The doctor
    never imports torch, so one cell suffices."""
    root = dcp_golden.dcp_golden_dir(GOLDEN_ROOT, cell)
    producer = versions.by_id(cell).torch
    for run in dcp_golden.RUNS:
        explanation = explain_dcp(root / run / "checkpoints" / f"{run}_v1.dcp")
        safe = torch_compat.load(root / run / "checkpoints" / f"{run}_v1.pt", map_location="cpu")
        model = {t.key: (t.dtype, t.shape) for t in explanation.metadata.tensors}
        for name, tensor in safe["state_dict"].items():
            dtype = str(tensor.dtype).removeprefix("torch.")
            assert model[f"model.{name}"] == (dtype, tuple(tensor.shape)), name
        assert explanation.missing == ()
        assert set(explanation.files_on_disk) == {
            f"__{r}_0.distcp" for r in range(dcp_golden.RUNS[run])
        }
        newer = Version(producer) >= Version("2.10")
        assert explanation.written_by.startswith("torch >= 2.10" if newer else "torch 2.4-2.6")
        predicted = {p.torch: p.outcome for p in explanation.predictions}
        for reader, outcome in predicted.items():
            if newer:
                want = "loads" if Version(reader) >= Version("2.10") else "fails"
            else:
                want = "model only" if Version(reader) >= Version("2.10") else "loads"
            assert outcome == want, (cell, run, reader)
