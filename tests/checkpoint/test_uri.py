"""The one key scheme: URI parsing, ``:latest`` and key_and_version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import MockAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.uri import key_and_version, parse_uri, resolve
from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    IncompatibleCheckpointError,
)

one_cell = pytest.mark.one_cell


@pytest.fixture
def run_with_epochs(tmp_path: Path) -> SimpleCheckpointManager:
    manager = SimpleCheckpointManager("demo", tmp_path)
    for epoch in (0, 2, 10):
        manager.save_agent(MockAgent(), epoch)
    return manager


@one_cell
@pytest.mark.parametrize(
    "uri",
    [
        "wandb://run/foo:v3",
        "s3://bucket/run/checkpoints/run_v1.pt",
        "gs://bucket/x.pt",
        "http://example.com/x.pt",
        "https://example.com/x.pt",
        "ftp://host/x.pt",
        "",
        "file://",
        "mock://",
        "mock://key:latest",
    ],
)
def test_unservable_uris_name_the_supported_forms(uri: str) -> None:
    """Guards remote schemes silently treated as local paths (or a generic ValueError).

    one_cell: pure URI parsing.
    """
    with pytest.raises(CheckpointError, match="unsupported checkpoint URI") as info:
        parse_uri(uri)
    assert "file://PATH" in str(info.value)
    assert "mock://KEY" in str(info.value)


@one_cell
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mock://test_policy", ("test_policy", 0)),
        ("mock://test_policy:v0", ("test_policy", 0)),
        ("mock://p:v3", ("p", 3)),
    ],
)
def test_mock_key_is_the_bare_key(uri: str, expected: tuple[str, int]) -> None:
    """Guards the stats-DB NaN: the mock stub keyed rows by "mock://..." instead of the key.

    one_cell: pure URI parsing.
    """
    assert key_and_version(uri) == expected


@one_cell
def test_legacy_names_give_run_and_epoch(tmp_path: Path) -> None:
    """Guards legacy files keyed by their stem with version 0 (Metta's fallback).

    one_cell: the names are parsed, the files are never read.
    """
    g1 = tmp_path / "oldrun" / "checkpoints" / "model_0007.pt"
    g1.parent.mkdir(parents=True)
    g1.write_bytes(b"")
    assert key_and_version(g1) == ("oldrun", 7)
    assert key_and_version(tmp_path / "run:v5.pt") == ("run", 5)
    assert key_and_version(f"file://{tmp_path}/run__e0__s9__t1__sc0.pt") == ("run", 0)


def test_unparsable_name_is_an_error_not_stem_and_zero(tmp_path: Path) -> None:
    """Guards key_and_version guessing ``(stem, 0)`` for a file it cannot key."""
    path = tmp_path / "weights.pt"
    torch_compat.save({"w": torch.zeros(1)}, path)
    with pytest.raises(IncompatibleCheckpointError, match=r"not a ckptcompat\.agent checkpoint"):
        key_and_version(path)


def test_safe_format_key_comes_from_metadata(run_with_epochs: SimpleCheckpointManager) -> None:
    """Guards epoch 0 read as "latest"/None, and keys differing between URI spellings."""
    ckpt = run_with_epochs.checkpoint_dir
    assert key_and_version(ckpt / "demo_v0.pt") == ("demo", 0)
    assert key_and_version(f"file://{ckpt}/demo_v2.pt") == ("demo", 2)
    assert key_and_version(run_with_epochs.run_dir) == ("demo", 10)
    assert key_and_version(ckpt) == ("demo", 10)
    assert key_and_version(f"{run_with_epochs.data_dir}/demo:latest") == ("demo", 10)
    assert key_and_version(f"file://{run_with_epochs.run_dir}/demo:latest") == ("demo", 10)
    assert key_and_version(f"{ckpt}/demo:latest") == ("demo", 10)


def test_latest_resolves_through_the_index(run_with_epochs: SimpleCheckpointManager) -> None:
    """Guards ``:latest`` picking an unindexed (uncommitted) file or sorting names as text."""
    ckpt = run_with_epochs.checkpoint_dir
    shutil.copy(ckpt / "demo_v2.pt", ckpt / "demo_v99.pt")  # on disk, never committed
    resolved = resolve(f"{run_with_epochs.data_dir}/demo:latest")
    assert resolved.path == ckpt / "demo_v10.pt"
    assert resolved.entry is not None
    assert resolved.entry.epoch == 10
    assert resolved.uri == f"file://{ckpt / 'demo_v10.pt'}"


def test_renamed_safe_file_is_refused(
    run_with_epochs: SimpleCheckpointManager, tmp_path: Path
) -> None:
    """Guards a renamed file reporting the epoch in its name instead of the one it holds."""
    ckpt = run_with_epochs.checkpoint_dir
    renamed = tmp_path / "demo_v3.pt"
    shutil.copy(ckpt / "demo_v2.pt", renamed)
    with pytest.raises(CheckpointError, match="disagrees with the checkpoint's metadata"):
        key_and_version(renamed)
    neutral = tmp_path / "exported.pt"  # not in the v1 grammar: the payload alone decides
    shutil.copy(ckpt / "demo_v2.pt", neutral)
    assert key_and_version(neutral) == ("demo", 2)


def test_trainer_file_has_no_policy_key(tmp_path: Path) -> None:
    """Guards a trainer state being recorded in the stats DB as a policy."""
    manager = SimpleCheckpointManager("demo", tmp_path)
    optimizer = torch.optim.SGD(MockAgent().parameters(), lr=0.1)
    uri = manager.save_trainer_state(optimizer, 0, 0)
    with pytest.raises(CheckpointError, match="a trainer state has no policy key"):
        key_and_version(uri)


def test_latest_of_unknown_run_or_plain_directory_is_not_found(tmp_path: Path) -> None:
    """Guards a missing run resolving to None or to some other run's checkpoints."""
    with pytest.raises(CheckpointNotFoundError, match="no checkpoints of run 'ghost'"):
        parse_uri(f"{tmp_path}/ghost:latest")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="not a run directory"):
        parse_uri(tmp_path / "plain")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointNotFoundError, match="no indexed checkpoint"):
        resolve(tmp_path / "empty")


@one_cell
def test_uri_atomic_and_index_import_neither_torch_nor_numpy() -> None:
    """Guards an import cycle or a heavy import: torch_compat imports checkpoint.scan on
    every load, and the doctor parses names and indexes on machines without torch.

    one_cell: checks imports of our own modules only.
    """
    code = (
        "import sys\n"
        "import ckptcompat.checkpoint, ckptcompat.checkpoint.uri\n"
        "import ckptcompat.checkpoint.atomic, ckptcompat.checkpoint.index\n"
        "print(sorted({'torch', 'numpy'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_version_uri_names_that_epoch(tmp_path: Path) -> None:
    """Guards issue 15b bug 15: SimpleCheckpointManager.load_from_uri("DIR/r:v1") (and the
    deprecated CheckpointManager's) raised CheckpointNotFoundError while
    `ckptcompat run evaluate --uri DIR/r:v1` accepted it: one parser for both now."""
    manager = SimpleCheckpointManager("r", tmp_path)
    manager.save_agent(MockAgent(), 1)
    manager.save_agent(MockAgent(), 2)
    for uri in (f"{tmp_path}/r:v1", f"file://{tmp_path}/r:v1", f"{tmp_path}/r/checkpoints/r:v1"):
        assert parse_uri(uri).path == tmp_path / "r" / "checkpoints" / "r_v1.pt"
        assert isinstance(SimpleCheckpointManager.load_from_uri(uri), MockAgent)
        assert key_and_version(uri) == ("r", 1)
    with pytest.raises(CheckpointNotFoundError, match="epochs 1, 2"):
        SimpleCheckpointManager.load_from_uri(f"{tmp_path}/r:v7")
