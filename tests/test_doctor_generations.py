"""Tests of ckptcompat.doctor.generations and ``ckptcompat doctor`` on G3/G4 checkpoints.

The doctor reads headers and strings only (no torch); the fixtures are written with torch
but their reading does not depend on its version (one cell).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ckptcompat.cli import main
from ckptcompat.doctor.generations import explain_generation, to_json
from ckptcompat.torch_compat import save
from tests.generations.builders import tiny_agent, write_bundle, write_mpt

pytestmark = pytest.mark.one_cell


def test_doctor_explains_an_mpt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards the issue's first symptom: the doctor called an .mpt 'not a torch.save
    archive ... not_fixable' and said nothing about what it is."""
    mpt = write_mpt(tmp_path / "r:v1.mpt", tiny_agent())
    assert main(["doctor", str(mpt)]) == 0
    out = capsys.readouterr().out
    assert "Metta G3 .mpt" in out and "ckptcompat.agents.mlp.MLPAgent" in out
    assert "2.4-2.15   fails | reads" in out and "every safetensors release" in out
    assert main(["doctor", str(mpt), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["generation"] == "g3" and data["architecture"]["allowlisted"] is True
    assert len(data["versions"]) == 12


def test_doctor_explains_a_bundle_and_its_trainer_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the G4 report: spec class_path, the architecture, and the trainer state's
    own verdict (a pickle, read by the ordinary doctor)."""
    buf = io.BytesIO()
    save({"optimizer": {"lr": 0.1}}, buf)
    bundle = write_bundle(tmp_path / "r_v2", tiny_agent(), trainer_state=buf.getvalue())
    assert main(["doctor", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "Metta G4 checkpoint bundle" in out and "policy_spec  class_path=metta" in out
    assert "trainer      " in out
    damaged = write_bundle(tmp_path / "r_v4", tiny_agent(), trainer_state=b"")
    assert "trainer_state.pt: " in (explain_generation(damaged).trainer_state or "")
    zipped = write_bundle(tmp_path / "r_v3.zip", tiny_agent(), as_zip=True)
    assert explain_generation(zipped).source.container == "zip"


def test_foreign_and_refused_architectures(tmp_path: Path) -> None:
    """Guards the doctor's naming: a foreign class is listed with the --class-path advice;
    a hostile string is shown refused, never run."""
    agent = tiny_agent()
    foreign = write_mpt(
        tmp_path / "f:v1.mpt", agent, architecture="metta.Fast(head=metta.Head(n=3))"
    )
    exp = explain_generation(foreign)
    assert exp.names == ("metta.Fast", "metta.Head") and not exp.allowlisted
    assert "--class-path" in exp.migrate_command
    hostile = write_mpt(tmp_path / "h:v1.mpt", agent, architecture="__import__('os').getcwd()")
    assert explain_generation(hostile).source.call_error is not None


def test_new_dtypes_are_predicted_per_torch_version(tmp_path: Path) -> None:
    """Guards the reader prediction: F8_E8M0 needs torch >= 2.7 (float8_e8m0fnu) and a
    newer safetensors than F32: 0.6.1, the first on PyPI whose load_file knows it (probed
    in issue 22; the guess 0.6.0 is not on PyPI's index); load(bytes) fails on every torch
    while load_file reads from 2.7 (the weights' per-release readers in --json)."""
    text = b'{"s": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}}'
    path = tmp_path / "e:v1.mpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("weights.safetensors", struct.pack("<Q", len(text)) + text + b"\x7f\x80")
        zf.writestr("modelarchitecture.txt", "metta.Fast()")
    exp = explain_generation(path)
    by_torch = {r.torch: r.migrate for r in exp.readers}
    assert "torch >= 2.7" in by_torch["2.6"] and by_torch["2.7"].startswith("reads")
    assert exp.safetensors_min == "0.6.1"
    readers = {v["torch"]: v["safetensors"][-1] for v in to_json(exp)["weights_readers"]}
    assert readers["2.15"]["load_file"] == "reads"  # load(bytes) never knows F8_E8M0
    assert readers["2.15"]["load"].startswith("fails: KeyError")
    assert readers["2.6"]["load_file"].startswith("fails: AttributeError")


def test_damaged_bundle_fails_typed(tmp_path: Path) -> None:
    """Guards the CLI: a damaged spec exits 2 with a typed message, no traceback, as the
    README promises for every file the doctor cannot read (it exited 1 at first)."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "policy_spec.json").write_text("[]")
    assert main(["doctor", str(bundle)]) == 2


def test_the_doctor_on_g3_g4_imports_neither_torch_nor_the_architecture(tmp_path: Path) -> None:
    """Guards the doctor pulling in torch (seconds, and absent on a bare machine) or the
    module an architecture string names, for .mpt and bundles."""
    agent = tiny_agent()
    files = [
        str(write_mpt(tmp_path / "r:v1.mpt", agent, architecture="this.Zen(strict=True)")),
        str(write_bundle(tmp_path / "r_v2", agent)),
        str(write_bundle(tmp_path / "r_v3.zip", agent, as_zip=True)),
    ]
    code = (
        "import sys, io, contextlib; from ckptcompat.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['doctor', p, *j]) for p in sys.argv[1:] for j in ([], ['--json'])]\n"
        "mods = ('torch', 'numpy', 'this', 'ckptcompat.agents')\n"
        "print('CODES', codes, 'LOADED', [m for m in mods if m in sys.modules])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *files], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "CODES [0, 0, 0, 0, 0, 0] LOADED []"
