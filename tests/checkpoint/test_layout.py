"""The on-disk layout: directories, file-name grammar, run names, temp names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckptcompat.checkpoint.layout import (
    CheckpointName,
    agent_filename,
    checkpoints_dir,
    is_temp_name,
    parse_filename,
    run_dir,
    run_dir_of,
    temp_path,
    trainer_filename,
    validate_run_name,
)
from ckptcompat.errors import CheckpointError

# Pure string and path handling: no torch involved, so one cell suffices.
pytestmark = pytest.mark.one_cell


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("r_v0.pt", CheckpointName("agent", "r", 0)),
        ("r_v12.pt", CheckpointName("agent", "r", 12)),
        ("my_v2_run_v3.pt", CheckpointName("agent", "my_v2_run", 3)),
        ("r_v12.trainer.pt", CheckpointName("trainer", "r", 12)),
        ("model_0007.pt", CheckpointName("g1", None, 7)),
        ("run:v5.pt", CheckpointName("g2_colon", "run", 5)),
        ("run__e3__s100__t5__sc12500.pt", CheckpointName("g2_dunder", "run", 3, 100, 5.0, 1.25)),
        (".r_v1.pt.tmp-123", None),
        ("index.json", None),
        (".lock", None),
        ("weights.pt", None),
    ],
)
def test_file_name_grammar(name: str, expected: CheckpointName | None) -> None:
    """Guards the key scheme drifting between writer and readers (one grammar, one place)."""
    assert parse_filename(name) == expected


def test_file_names_are_unpadded_and_round_trip() -> None:
    """Guards zero padding (model_0001 style) sneaking back into the v1 names."""
    assert agent_filename("r", 0) == "r_v0.pt"
    assert trainer_filename("r", 7) == "r_v7.trainer.pt"
    for epoch in (0, 1, 10, 12345):
        assert parse_filename(agent_filename("a.b-c_d", epoch)) == CheckpointName(
            "agent", "a.b-c_d", epoch
        )


@pytest.mark.parametrize("run", ["", "a/b", "a:b", ".hidden", "with space", "_x", 3])
def test_invalid_run_names_are_refused(run: object) -> None:
    """Guards run names that break paths, URIs (``:latest``) or the temp-file convention."""
    with pytest.raises(CheckpointError, match="invalid run name"):
        validate_run_name(run)


def test_temp_names_are_recognised() -> None:
    """Guards a leftover temp file being mistaken for a checkpoint."""
    name = temp_path("/x/run_v3.pt").name
    assert name == f".run_v3.pt.tmp-{os.getpid()}"
    assert is_temp_name(name)
    assert not is_temp_name("run_v3.pt")
    assert not is_temp_name(".lock")


def test_run_directories_and_run_dir_of() -> None:
    """Guards the run directory being derived two ways (a ``parent.parent`` walk that
    misses G1 files kept directly in the run directory)."""
    assert run_dir("data", "r") == Path("data/r")
    assert checkpoints_dir("data", "r") == Path("data/r/checkpoints")
    assert run_dir_of(checkpoints_dir("data", "r") / agent_filename("r", 3)) == Path("data/r")
    assert run_dir_of(Path("data/oldrun/model_0007.pt")) == Path("data/oldrun")
