"""Tests of ckptcompat.generations.detect: recognising and opening G3/G4 containers.

Standard-library reads of files the tests write; nothing depends on torch's version (one
cell; torch only writes the fixtures).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from ckptcompat.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    LimitExceededError,
    UnsafeCheckpointError,
)
from ckptcompat.generations import detect
from ckptcompat.generations.detect import generation_of, open_generation, run_and_epoch
from tests.generations.builders import tiny_agent, write_bundle, write_mpt

pytestmark = pytest.mark.one_cell


def test_each_container_is_recognised(tmp_path: Path) -> None:
    """Guards recognition by root names: .mpt (zip), bundle (directory and zip), and a
    torch.save zip or a plain directory as neither."""
    agent = tiny_agent()
    mpt = write_mpt(tmp_path / "r:v1.mpt", agent)
    bundle = write_bundle(tmp_path / "r_v2", agent, trainer_state=b"x")
    zipped = write_bundle(tmp_path / "r_v3.zip", agent, as_zip=True)
    assert [generation_of(p) for p in (mpt, bundle, zipped)] == ["g3", "g4", "g4"]
    assert generation_of(tmp_path) is None and generation_of(tmp_path / "nothing") is None
    source = open_generation(bundle)
    assert source.container == "dir" and source.trainer_state == "trainer_state.pt"
    assert source.call is not None and source.call.name == "ckptcompat.agents.mlp.MLPAgent"
    assert open_generation(mpt).header.tensors


def test_run_and_epoch_from_metta_names() -> None:
    """Guards the G3/G4 key scheme: <run>:v<E>.mpt and <run>_v<E>[.zip]."""
    assert run_and_epoch("/x/team.a:v12.mpt") == ("team.a", 12)
    assert run_and_epoch("b_v3") == ("b", 3)
    assert run_and_epoch("latest.mpt") == (None, None)


def test_data_path_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    """Guards a policy_spec.json whose data_path climbs out of the bundle (../../etc)."""
    spec = {"class_path": "x.Y", "data_path": "../secret", "init_kwargs": {"architecture": "a.B()"}}
    bundle = write_bundle(tmp_path / "b", tiny_agent(), spec=spec)
    with pytest.raises(UnsafeCheckpointError, match="leaves the bundle"):
        open_generation(bundle)


def test_a_refused_architecture_still_opens(tmp_path: Path) -> None:
    """Guards the doctor's path: a hostile architecture string is reported, not run."""
    mpt = write_mpt(tmp_path / "r:v1.mpt", tiny_agent(), architecture="__import__('os')")
    source = open_generation(mpt)
    assert source.call is None and "UnsafeCheckpointError" in (source.call_error or "")


def test_damaged_containers_fail_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards missing members, bad JSON specs, damaged zips and oversized members: each a
    typed error."""
    with pytest.raises(CheckpointNotFoundError):
        open_generation(tmp_path / "missing.mpt")
    bad_spec = tmp_path / "s"
    bad_spec.mkdir()
    (bad_spec / "policy_spec.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError):
        open_generation(bad_spec)
    no_weights = tmp_path / "n"
    no_weights.mkdir()
    (no_weights / "policy_spec.json").write_text(
        json.dumps({"class_path": "a.B", "init_kwargs": {"architecture": "a.B()"}})
    )
    with pytest.raises(CorruptCheckpointError):
        open_generation(no_weights)
    mpt = write_mpt(tmp_path / "r:v1.mpt", tiny_agent())
    raw = bytearray(mpt.read_bytes())
    raw[40:60] = bytes(20)  # inside the first member's compressed data
    damaged = tmp_path / "d:v1.mpt"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError):
        open_generation(damaged)
    monkeypatch.setattr(detect, "MAX_TEXT_BYTES", 10)
    with pytest.raises(LimitExceededError):
        open_generation(mpt)


def test_not_a_generation_is_corrupt(tmp_path: Path) -> None:
    """Guards open_generation on a zip of something else."""
    other = tmp_path / "o.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("archive/data.pkl", b"")
    with pytest.raises(CorruptCheckpointError, match="not a Metta"):
        open_generation(other)
