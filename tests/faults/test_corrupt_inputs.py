"""Corrupt inputs get typed errors that say what was expected and found, and harm nothing.

Every case replaces one file of a managed run (epochs 0, 1, 2 of a MockAgent, with trainer
states) by damaged bytes, then reads it through the manager (``verify="full"``, the default,
and ``verify="none"``, which hands the bytes to ``torch_compat.load``), through
``load_from_uri`` and through ``torch_compat.load``. Each read must raise a ckptcompat error
(never a bare OSError/zipfile/pickle one) with ``expected`` and ``found`` filled in, the
undamaged epochs must still load, and the run directory must be byte-identical afterwards:
a failed read never "repairs" by deleting or overwriting anything.

Unreadable files: the suite runs as root here, and root ignores permission bits, so
``chmod 000`` alone proves nothing. When running as root the reads happen in a child
process that first drops to uid/gid 65534 (nobody), in a world-traversable directory.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ckptcompat import torch_compat
from ckptcompat.agents.probe import params_digest
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.migrate import migrate
from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
)
from tests.faults import ForkServer, build_run, fork_server, tree_digest

RUN = "victim"
_LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 2640\n"
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>502 Bad Gateway</h1></body></html>\n"
)


@pytest.fixture(scope="module")
def server() -> ForkServer:
    """The shared fork server (torch imported once)."""
    return fork_server()


@pytest.fixture(scope="module")
def base_run(
    server: ForkServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[int, str]]:
    """A managed run with epochs 0, 1, 2 (agent + trainer state); digests per epoch."""
    data = tmp_path_factory.mktemp("base")
    return data, build_run(server, data, RUN, (0, 1, 2))


@pytest.fixture
def run(base_run: tuple[Path, dict[int, str]], tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """A private copy of the base run."""
    data = tmp_path / "data"
    shutil.copytree(base_run[0], data)
    return data, base_run[1]


def _file(data: Path, epoch: int, trainer: bool = False) -> Path:
    suffix = ".trainer.pt" if trainer else ".pt"
    return data / RUN / "checkpoints" / f"{RUN}_v{epoch}{suffix}"


def _raises(
    fn: Callable[[], Any], kind: type[CheckpointError] = CheckpointError
) -> CheckpointError:
    """Call ``fn``; require a ``kind`` error whose message says what was expected and found."""
    with pytest.raises(CheckpointError) as caught:
        fn()
    exc = caught.value
    assert isinstance(exc, kind), f"{type(exc).__name__}: {exc}"
    assert exc.expected and exc.found, f"no expected/found in: {exc}"
    return exc


def _others_still_load(data: Path, digests: dict[int, str]) -> None:
    manager = SimpleCheckpointManager(RUN, data, cache_size=0)
    for epoch in (0, 1):
        assert params_digest(manager.load_agent(epoch)) == digests[epoch]


# --------------------------------------------------------------------------- damaged bytes
def _record_offset(good: bytes, suffix: str) -> int:
    """Offset of the first data byte of the zip record whose name ends with ``suffix``."""
    import io

    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    header = good[info.header_offset : info.header_offset + 30]
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def _random_bytes(size: int) -> bytes:
    data = bytearray(random.Random(7).randbytes(size))
    data[0] = 0x11  # not a zip, pickle, HTML or LFS start: plain garbage
    return bytes(data)


_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated_to_1_byte": lambda b: b[:1],
    "truncated_to_64_bytes": lambda b: b[:64],
    "truncated_to_half": lambda b: b[: len(b) // 2],
    "truncated_end_of_central_directory": lambda b: b[:-22],
    "truncated_last_byte": lambda b: b[:-1],
    "zero_bytes": lambda b: b"",
    "random_bytes": lambda b: _random_bytes(len(b)),
    "git_lfs_pointer": lambda b: _LFS,
    "html_error_page": lambda b: _HTML,
}
_FOUND = {"git_lfs_pointer": "Git-LFS", "html_error_page": "HTML", "zero_bytes": "empty"}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_damaged_checkpoint_gets_a_typed_error(
    run: tuple[Path, dict[int, str]], damage: str
) -> None:
    """Guards truncation (at several offsets, the zip's end-of-central-directory included),
    a zero-byte file, random bytes, a Git-LFS pointer and an HTML error page in place of a
    checkpoint surfacing as a bare zipfile/pickle/EOF error or, worse, loading: the manager
    (verify full and none), load_from_uri and torch_compat.load all raise
    CorruptCheckpointError saying what was expected and found; the other epochs load; no
    file is overwritten or deleted."""
    data, digests = run
    target = _file(data, 2)
    target.write_bytes(_DAMAGE[damage](target.read_bytes()))
    before = tree_digest(data)
    manager = SimpleCheckpointManager(RUN, data, cache_size=0)
    _raises(lambda: manager.load_agent(2), CorruptCheckpointError)  # size differs from index
    _raises(manager.load_agent, CorruptCheckpointError)  # the latest is epoch 2
    unverified = _raises(lambda: manager.load_agent(2, verify="none"), CorruptCheckpointError)
    _raises(lambda: SimpleCheckpointManager.load_from_uri(target), CorruptCheckpointError)
    direct = _raises(lambda: torch_compat.load(target), CorruptCheckpointError)
    if damage in _FOUND:
        assert _FOUND[damage] in direct.found and _FOUND[damage] in unverified.found
    _others_still_load(data, digests)
    assert tree_digest(data) == before


def test_truncated_trainer_state(run: tuple[Path, dict[int, str]]) -> None:
    """Guards resume reading a half-written trainer state (copied by hand, bit rot): it is
    refused with CorruptCheckpointError, with and without digest verification."""
    data, _ = run
    target = _file(data, 2, trainer=True)
    target.write_bytes(target.read_bytes()[:300])
    before = tree_digest(data)
    manager = SimpleCheckpointManager(RUN, data)
    _raises(manager.load_trainer_state, CorruptCheckpointError)
    _raises(lambda: manager.load_trainer_state(2, verify="none"), CorruptCheckpointError)
    assert manager.load_trainer_state(1, restore_rng=False).epoch == 1
    assert tree_digest(data) == before


@pytest.mark.parametrize("record", ["data/0", "data.pkl"])
def test_flipped_byte_caught_by_full_verification(
    run: tuple[Path, dict[int, str]], record: str
) -> None:
    """Guards a single flipped bit (bit rot, a bad copy) inside a tensor record or the
    pickle loading silently: torch does not check the zip's CRC-32s, so only the digest of
    verify="full" (the default) catches it, as CorruptCheckpointError naming both digests."""
    data, digests = run
    target = _file(data, 2)
    good = bytearray(target.read_bytes())
    offset = _record_offset(bytes(good), record) + (3 if record == "data/0" else 40)
    good[offset] ^= 0x01
    target.write_bytes(bytes(good))
    before = tree_digest(data)
    manager = SimpleCheckpointManager(RUN, data)
    exc = _raises(lambda: manager.load_agent(2), CorruptCheckpointError)
    assert "digest" in str(exc) and "xxh3_128:" in exc.expected
    _raises(
        lambda: SimpleCheckpointManager.load_from_uri(data / RUN / "checkpoints" / target.name),
        CorruptCheckpointError,
    )  # a file inside a managed run is verified against its index entry
    _others_still_load(data, digests)
    assert tree_digest(data) == before


def test_directory_where_the_checkpoint_file_is_expected(
    run: tuple[Path, dict[int, str]],
) -> None:
    """Guards a directory in place of a checkpoint (an unpacked archive, a bad sync)
    surfacing as IsADirectoryError: verified loads report the size mismatch, unverified
    ones and torch_compat.load say "a directory"."""
    data, digests = run
    target = _file(data, 2)
    target.unlink()
    target.mkdir()
    (target / "data.pkl").write_bytes(b"\x80\x02}.")
    before = tree_digest(data)
    manager = SimpleCheckpointManager(RUN, data, cache_size=0)
    _raises(lambda: manager.load_agent(2), CorruptCheckpointError)
    exc = _raises(lambda: manager.load_agent(2, verify="none"), CheckpointNotFoundError)
    assert "directory" in exc.found
    _raises(lambda: torch_compat.load(target), CheckpointNotFoundError)
    _others_still_load(data, digests)
    assert tree_digest(data) == before


def test_index_json_that_is_a_directory(run: tuple[Path, dict[int, str]]) -> None:
    """Guards a directory in place of checkpoints/index.json escaping as a bare
    IsADirectoryError from every manager call (read_index catches FileNotFoundError only)."""
    data, _ = run
    index = data / RUN / "checkpoints" / "index.json"
    index.unlink()
    index.mkdir()
    before = tree_digest(data)
    manager = SimpleCheckpointManager(RUN, data)
    _raises(manager.load_agent)
    _raises(manager.list_checkpoints)
    _raises(lambda: SimpleCheckpointManager.load_from_uri(data / RUN))
    assert tree_digest(data) == before


def test_migrate_of_a_corrupt_file_writes_nothing(
    run: tuple[Path, dict[int, str]], tmp_path: Path
) -> None:
    """Guards migrate overwriting or half-writing its destination when the source is
    corrupt: a truncated source into an existing data_dir raises CorruptCheckpointError and
    leaves the destination byte-identical."""
    data, _ = run
    source = tmp_path / "model_0005.pt"
    source.write_bytes(_file(data, 2).read_bytes()[:700])
    before = tree_digest(data)
    _raises(lambda: migrate(source, data, run=RUN, epoch=2), CorruptCheckpointError)
    _raises(lambda: migrate(source, tmp_path / "new.pt"), CorruptCheckpointError)
    assert not (tmp_path / "new.pt").exists()
    assert tree_digest(data) == before


# --------------------------------------------------------------------------- unreadable
@pytest.fixture
def shared_run(base_run: tuple[Path, dict[int, str]]) -> Iterator[Path]:
    """A copy of the base run in a world-traversable temp directory (for uid nobody)."""
    root = Path(tempfile.mkdtemp(prefix="ckptcompat-unreadable-"))
    data = root / "data"
    shutil.copytree(base_run[0], data)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield data
    shutil.rmtree(root)


_READ_AS_NOBODY = """
    import os
    from ckptcompat import torch_compat
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager as M
    if os.geteuid() == 0:  # root ignores permission bits; read as nobody instead
        os.setgid(65534)
        os.setuid(65534)
    data, target = ARGS["data"], ARGS["target"]
    calls = {
        "torch_compat.load": lambda: torch_compat.load(target),
        "load_agent() verify=full": lambda: M("victim", data).load_agent(),
        "load_agent() verify=none": lambda: M("victim", data).load_agent(verify="none"),
        "load_from_uri(path)": lambda: M.load_from_uri(target),
        "list_checkpoints()": lambda: M("victim", data).list_checkpoints(),
    }
    for name, call in calls.items():
        try:
            call()
            emit(call=name, outcome="no error")
        except Exception as exc:
            emit(call=name, outcome=type(exc).__name__, typed=hasattr(exc, "expected"),
                 expected=getattr(exc, "expected", None), found=getattr(exc, "found", None))
"""


@pytest.mark.parametrize("unreadable", ["checkpoint", "index.json"])
def test_unreadable_file_gets_a_typed_error(
    server: ForkServer, shared_run: Path, unreadable: str
) -> None:
    """Guards an unreadable checkpoint or index.json (chmod 000, a foreign owner) escaping
    as a bare PermissionError: every read raises a ckptcompat error saying a readable file
    was expected. Runs the reads in a child that drops root to uid nobody first, because
    permission bits do not stop root; the file is mode 000 either way."""
    folder = shared_run / RUN / "checkpoints"
    target = folder / (f"{RUN}_v2.pt" if unreadable == "checkpoint" else "index.json")
    before = tree_digest(shared_run)
    target.chmod(0)
    args = {"data": str(shared_run), "target": str(folder / f"{RUN}_v2.pt")}
    result = server.run(_READ_AS_NOBODY, args)
    target.chmod(0o644)  # as before, so that the tree can be compared (and cleaned up)
    assert result.error is None, result.error
    outcomes = {m["call"]: m for m in result.messages}
    untyped = [
        f"{call}: {m['outcome']}"
        for call, m in outcomes.items()
        if call != "torch_compat.load" or unreadable == "checkpoint"
        if m["outcome"] != "no error" and not (m["typed"] and m["expected"] and m["found"])
    ]
    assert not untyped, "bare errors: " + "; ".join(untyped)
    if unreadable == "checkpoint":
        assert outcomes["list_checkpoints()"]["outcome"] == "no error"
        assert "readable" in (outcomes["torch_compat.load"]["expected"] or "")
    assert tree_digest(shared_run) == before
