"""Tests of the doctor on DCP directories: ckptcompat.scan.dcp_metadata and ckptcompat.doctor.dcp.

Every cell writes its own DCP directory (one process) and reads it back inertly; the
cross-version rules are checked on metadata the reader describes (the facts behind them were
measured between cells 2.4.1 and 2.15.0, see ckptcompat.doctor.dcp).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ckptcompat.cli import main
from ckptcompat.doctor.dcp import READERS, _predict, explain_dcp
from ckptcompat.errors import CheckpointNotFoundError
from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer import train
from ckptcompat.rl.trainer_config import TrainerConfig
from ckptcompat.scan.dcp_metadata import DcpMetadata, read_dcp_metadata

TINY = TrainerConfig(
    seed=4,
    checkpoint_every=1,
    agent_class_path="ckptcompat.agents.mlp.MLPAgent",
    agent_kwargs={"hidden_sizes": [8]},
    ppo=PPOConfig(num_envs=2, num_steps=8, update_epochs=1),
)


@pytest.fixture(scope="module")
def dcp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("doctor-dcp")
    train(TINY, "d", data_dir, 1, progress=False, checkpoint_format="dcp")
    return data_dir / "d" / "checkpoints" / "d_v1.dcp"


def test_reads_keys_shapes_dtypes_of_this_cells_dcp(dcp_dir: Path) -> None:
    """The inert reader finds every model tensor with its shape and dtype, and the files."""
    meta = read_dcp_metadata((dcp_dir / ".metadata").read_bytes())
    assert meta.error is None and meta.unexpected == ()
    tensors = {t.key: t for t in meta.tensors}
    assert tensors["model.actor.0.weight"].shape == (8, 4)
    assert tensors["model.actor.0.weight"].dtype == "float32"
    assert tensors["model.obs_mean"].dtype == "float64"
    assert "optim.param_groups.0.lr" in meta.byte_keys
    assert set(meta.files) == {"__0_0.distcp"}
    newer = torch.__version__ >= "2.10"  # TorchVersion compares as a version, not a str
    assert (meta.version is not None) == newer


def test_this_cell_predicts_it_loads_here(dcp_dir: Path) -> None:
    """A directory written by this cell is predicted to load (model at least) in this cell."""
    here = ".".join(torch.__version__.split(".")[:2])
    explanation = explain_dcp(dcp_dir)
    assert explanation.missing == ()
    prediction = {p.torch: p for p in explanation.predictions}[here]
    assert prediction.outcome == "loads", prediction.reason


def test_doctor_cli_explains_a_dcp_directory(
    dcp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ckptcompat doctor DIR --json`` answers for a DCP directory (not "not a file")."""
    assert main(["doctor", str(dcp_dir), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "dcp_directory"
    assert [p["torch"] for p in document["predictions"]] == list(READERS)


def test_missing_rank_file_is_predicted_to_fail(dcp_dir: Path, tmp_path: Path) -> None:
    """A data file the metadata names but the directory lacks fails on every version."""
    copy = tmp_path / "d_v1.dcp"
    shutil.copytree(dcp_dir, copy)
    (copy / "__0_0.distcp").unlink()
    explanation = explain_dcp(copy)
    assert explanation.missing == ("__0_0.distcp",)
    assert {p.outcome for p in explanation.predictions} == {"fails"}


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_metadata_that_names_code_is_unsafe_and_never_runs(tmp_path: Path) -> None:
    """A .metadata naming os.system is reported unsafe everywhere and is not executed.

    Guards the doctor against DCP's own plain pickle.load of .metadata (any torch would
    run it): the doctor must name it, never unpickle it for real.
    """
    marker = tmp_path / "ran"
    directory = tmp_path / "evil.dcp"
    directory.mkdir()
    (directory / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    explanation = explain_dcp(directory)
    assert not marker.exists()
    assert explanation.metadata.unexpected
    assert {p.outcome for p in explanation.predictions} == {"unsafe"}


def test_cross_version_rules() -> None:
    """6-field TensorProperties fail on 2.4-2.6; Adam groups without
    decoupled_weight_decay load only the model on 2.15 (both measured between cells)."""
    base = DcpMetadata(byte_keys=("optim.param_groups.0.amsgrad",), properties_fields=5)
    assert _predict("2.15", base, ()).outcome == "model only"
    assert _predict("2.4", base, ()).outcome == "loads"
    newer = replace(
        base,
        byte_keys=(*base.byte_keys, "optim.param_groups.0.decoupled_weight_decay"),
        properties_fields=6,
    )
    assert [_predict(r, newer, ()).outcome for r in READERS] == ["fails"] * 3 + ["loads"]


def test_not_a_dcp_directory_is_a_typed_error(tmp_path: Path) -> None:
    """A directory without .metadata: CheckpointNotFoundError, not a traceback."""
    with pytest.raises(CheckpointNotFoundError, match=r"not a torch\.distributed\.checkpoint"):
        explain_dcp(tmp_path)


def test_unreadable_metadata_dates_no_writer(tmp_path: Path) -> None:
    """Guards a garbage .metadata being labelled "written by torch 2.4-2.6" (new-user trial,
    2026-12-06): with nothing readable, the writer is unknown, and every reader fails."""
    directory = tmp_path / "bad.dcp"
    directory.mkdir()
    (directory / ".metadata").write_bytes(bytes(range(7, 250)))
    explanation = explain_dcp(directory)
    assert explanation.written_by.startswith("unknown")
    assert {p.outcome for p in explanation.predictions} == {"fails"}


def test_oversized_metadata_is_refused_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards a hostile .metadata read whole into memory (explain_dcp called read_bytes on
    any size), and the single-directory doctor dying with a bare traceback on its error:
    a typed LimitExceededError before reading, exit 2, the error as JSON under --json."""
    from ckptcompat.errors import LimitExceededError
    from ckptcompat.scan.limits import MAX_PICKLE_BYTES

    directory = tmp_path / "huge.dcp"
    directory.mkdir()
    with open(directory / ".metadata", "wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_PICKLE_BYTES + 1)
    with pytest.raises(LimitExceededError):
        explain_dcp(directory)
    assert main(["doctor", str(directory), "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["error"]["type"] == "LimitExceededError"
    assert main(["doctor", str(directory)]) == 2
