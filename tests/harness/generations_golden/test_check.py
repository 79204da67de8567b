"""Metta G3/G4 goldens of every producer cell, read and migrated in this cell (marker golden).

Each producer's ``fixtures/golden/metta/<cell>/`` holds, per agent, an ``.mpt`` and a bundle
(directory and zip) written as Metta writes them (:mod:`ckptcompat.harness.generations_golden`).
Here every file must match its MANIFEST, be explained by the doctor, migrate into a safe
file that loads with ``weights_only=True``, and give the producer's probe outputs (bitwise
where same torch and numerics allow, else within the MANIFEST's tolerance); a plain
``torch.load`` must fail with a typed error, as the doctor predicts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ckptcompat import numerics
from ckptcompat.harness import versions
from ckptcompat.harness.generations_golden import check, produce
from ckptcompat.harness.generations_golden.layout import KINDS, metta_golden_dir
from ckptcompat.harness.golden.read import GOLDEN_ROOT, MANIFEST_NAME
from ckptcompat.harness.verdict import records as results

pytestmark = pytest.mark.golden

PRODUCERS = [c.id for c in versions.GOLDEN_PRODUCERS]
AGENTS = [a.name for a in produce.AGENTS]
FILES = [pytest.param(c, a, k, id=f"{c}-{a}-{k}") for c in PRODUCERS for a in AGENTS for k in KINDS]


def _golden(cell: str) -> check.MettaGolden:
    return check.read_metta_golden(metta_golden_dir(GOLDEN_ROOT, cell))


@pytest.mark.parametrize("cell", PRODUCERS)
def test_every_producer_has_its_metta_goldens(cell: str) -> None:
    """Guards a producer cell without committed G3/G4 goldens (a new cell added to
    versions.py and not generated): its manifest names this cell, its torch and every agent."""
    golden = _golden(cell)
    assert golden.cell == cell
    assert golden.producer["torch"].split("+")[0] == versions.by_id(cell).torch
    assert golden.agents == tuple(sorted(AGENTS))


@pytest.mark.parametrize(("cell", "agent", "kind"), FILES)
def test_file_is_explained_migrated_and_reproduces_outputs(
    cell: str, agent: str, kind: str
) -> None:
    """Guards issue 22's done-when: an .mpt and a bundle (directory and zip) from every
    producer cell are explained by the doctor and migrate into safe, weights-only files
    whose outputs equal the originals on the probe batch."""
    result = check.check_file(_golden(cell), agent, kind)
    assert result.outcome == "pass", result.detail
    assert result.outputs["actions"] == _golden(cell).agent(agent)["probe"]["actions"]


@pytest.mark.parametrize(("cell", "agent", "kind"), FILES[:: len(AGENTS)])
def test_plain_torch_load_fails_as_the_doctor_predicts(cell: str, agent: str, kind: str) -> None:
    """Guards the doctor's 'torch.load fails' on G3/G4: a plain load of the .mpt or zip
    (members at the zip's root) or of the bundle directory is a typed refusal, here."""
    result = check.naive_load(_golden(cell), agent, kind)
    assert result.outcome == "fail", result.detail
    expected = "a directory" if kind == "g4_dir" else "not in a subdirectory"
    assert expected in result.detail


def test_a_changed_byte_fails_the_check(tmp_path: Path) -> None:
    """Guards a check that cannot fail: one flipped byte in a committed weights file is
    reported against the MANIFEST (the bytes step), before anything is migrated."""
    root = tmp_path / "metta" / "t26"
    shutil.copytree(metta_golden_dir(GOLDEN_ROOT, "t26"), root)
    weights = root / "g4" / "mlp_v1" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = check.check_file(check.read_metta_golden(root), "mlp", "g4_dir")
    assert result.outcome == "fail" and "bytes differ" in result.detail


def test_outputs_beyond_tolerance_fail(tmp_path: Path) -> None:
    """Guards the probe comparison: expected values moved beyond the MANIFEST's tolerance
    make the check fail, whatever the numerics comparison."""
    root = tmp_path / "metta" / "t26"
    shutil.copytree(metta_golden_dir(GOLDEN_ROOT, "t26"), root)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    values = manifest["agents"]["mlp"]["probe"]["values"]
    values[0][0] += 1e-2
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    result = check.check_file(check.read_metta_golden(root), "mlp", "g3_mpt")
    assert result.outcome == "fail" and "values" in result.detail


def test_run_writes_a_safe_and_a_naive_record_per_file(tmp_path: Path) -> None:
    """Guards the matrix's Metta checks: one record per producer, agent, kind and loader,
    scenario metta, numpy-1 producers apart (t24 and t24np1 share torch 2.4.1)."""
    records_file = tmp_path / "evaluate.jsonl"
    written = check.run(records_file)
    assert len(written) == len(PRODUCERS) * len(AGENTS) * len(KINDS) * 2
    keys = {r.cell_key for r in results.read_records([records_file])}
    assert len(keys) == len(written)
    here = str(torch.__version__).split("+")[0]
    assert f"metta/g3_mpt_numpy1/mlp/safe/2.4.1->{here}->-" in keys
    assert {r.outcome.value for r in written if r.loader == "safe"} == {"pass"}
    own = [r for r in written if r.loader == "safe" and r.producer_torch == here]
    bitwise = {r.outputs["compared"] == "bitwise" for r in own if r.producer_numpy[0] != "1"}
    # The same torch compares bit for bit in the reproducible-numerics mode.
    assert bitwise == {numerics.fingerprint()["reproducible"]}
