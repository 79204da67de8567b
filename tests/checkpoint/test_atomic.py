"""Atomic writes, the digest read back during the fsync, fault points and the run lock.

Every test here is marked ``one_cell``: nothing in ``checkpoint.atomic`` imports torch, so
the torch version cannot change the outcome (torch's own write pattern through
CountingWriter is covered in test_manager.py, in every cell).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import xxhash

from ckptcompat.checkpoint import atomic
from ckptcompat.checkpoint.atomic import (
    FAULT_ENV,
    FAULT_EXIT_CODE,
    RunLock,
    fault_point,
    hash_file,
    remove_stale_temp_files,
    unusable_directory,
    write_atomic,
    write_bytes_atomic,
)
from ckptcompat.checkpoint.layout import is_temp_name
from ckptcompat.errors import InjectedFault, InputError, RunLockedError

pytestmark = pytest.mark.one_cell

_HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from ckptcompat.checkpoint.atomic import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path: Path):
    """A live subprocess holding the run lock of ``tmp_path``; killed at teardown."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def test_digest_and_size_come_from_the_bytes_written(tmp_path: Path) -> None:
    """Guards a digest that does not describe the file (it is read back during the fsync)."""
    data = os.urandom(3 * (1 << 20) + 17)
    result = write_bytes_atomic(tmp_path / "x.bin", data)
    assert result.size_bytes == len(data)
    assert result.digest == "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()
    assert (tmp_path / "x.bin").read_bytes() == data


def test_failed_fsync_never_reaches_the_final_name(tmp_path: Path, monkeypatch) -> None:
    """Guards the fsync that now runs in a thread (overlapped with the digest): its failure
    (EIO from a failing disk) must still fail the write, remove the temp and keep the old
    file, not be lost in the thread."""
    target = tmp_path / "r_v1.pt"
    target.write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        write_bytes_atomic(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r_v1.pt"]


def test_short_read_back_fails_the_write(tmp_path: Path, monkeypatch) -> None:
    """Guards a digest of fewer bytes than were written (the temp file changed under the
    writer) being recorded as the file's digest."""
    target = tmp_path / "r_v1.pt"
    monkeypatch.setattr(atomic, "hash_file", lambda path: (1, "xxh3_128:0"))
    with pytest.raises(OSError, match="holds 1 bytes after writing 3000"):
        write_bytes_atomic(target, b"new" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_hash_file_matches_the_write_digest(tmp_path: Path) -> None:
    """Guards verify="full" disagreeing with the digest recorded at save time."""
    result = write_bytes_atomic(tmp_path / "x.bin", b"abc" * 1000)
    assert hash_file(tmp_path / "x.bin") == (result.size_bytes, result.digest)


def test_failed_write_removes_its_temp_and_keeps_the_old_file(tmp_path: Path) -> None:
    """Guards a crash in torch.save leaving a half file under the final name or a temp."""
    target = tmp_path / "r_v1.pt"
    target.write_bytes(b"old")

    def explode(writer: atomic.CountingWriter) -> None:
        writer.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, explode)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r_v1.pt"]


@pytest.mark.parametrize("point", ["after_temp_write", "after_fsync"])
def test_fault_before_rename_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch, point: str
) -> None:
    """Guards an interrupted write replacing the previous file or leaking its temp."""
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    monkeypatch.setenv(FAULT_ENV, point)
    with pytest.raises(InjectedFault, match=point):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_fault_after_replace_has_the_complete_new_file(tmp_path: Path, monkeypatch) -> None:
    """Guards a rename that is not atomic: after it, the final name holds all new bytes."""
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    monkeypatch.setenv(FAULT_ENV, "after_replace")
    with pytest.raises(InjectedFault):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_misspelt_fault_point_is_an_error(monkeypatch) -> None:
    """Guards a fault test passing vacuously because its point name never fires."""
    monkeypatch.setenv(FAULT_ENV, "after_fsnyc")
    with pytest.raises(ValueError, match="after_fsync"):
        fault_point("after_fsync")
    monkeypatch.setenv(FAULT_ENV, "after_fsync:abort")
    with pytest.raises(ValueError, match=":exit"):
        fault_point("after_fsync")
    with pytest.raises(ValueError, match="unknown fault point"):
        fault_point("nowhere")


def test_exit_fault_kills_the_writer_and_leaves_only_a_stale_temp(tmp_path: Path) -> None:
    """Guards a killed writer (no finally blocks run) corrupting the file it replaces."""
    target = tmp_path / "r_v1.pt"
    target.write_bytes(b"old")
    script = (
        "import sys; from ckptcompat.checkpoint.atomic import write_bytes_atomic; "
        "write_bytes_atomic(sys.argv[1], b'new')"
    )
    env = {**os.environ, FAULT_ENV: "after_fsync:exit"}
    proc = subprocess.run([sys.executable, "-c", script, str(target)], env=env, check=False)
    assert proc.returncode == FAULT_EXIT_CODE
    assert target.read_bytes() == b"old"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1
    assert is_temp_name(leftovers[0].name)
    assert remove_stale_temp_files(tmp_path) == leftovers
    assert [p.name for p in tmp_path.iterdir()] == ["r_v1.pt"]


def test_lock_is_reentrant_in_one_object_and_exclusive_across_objects(tmp_path: Path) -> None:
    """Guards two writers in one process (flock is per open file description)."""
    first = RunLock(tmp_path)
    with first, first:
        assert first.held
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not first.held
    with RunLock(tmp_path):  # released: the next writer proceeds
        pass


def test_second_live_writer_gets_run_locked_naming_the_holder(tmp_path: Path, holder) -> None:
    """Guards two processes writing one run's checkpoints and index at once."""
    with pytest.raises(RunLockedError) as info:
        RunLock(tmp_path).acquire()
    assert f"pid {holder.pid}" in str(info.value)
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid


def test_killed_holder_releases_the_lock(tmp_path: Path, holder) -> None:
    """Guards a stale lock file blocking a run forever after its writer was SIGKILLed."""
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock(tmp_path) as lock:
        assert lock.held


def test_unusable_directory_names_the_system_reason(tmp_path: Path) -> None:
    """Guards the message for a directory that exists but cannot be written (tests run as
    root here, so the PermissionError is built, not provoked): the system's reason, and a
    fix about permissions rather than about a file in the path."""
    error = unusable_directory(tmp_path / "ro", PermissionError(13, "Permission denied"))
    assert isinstance(error, InputError)
    assert "PermissionError: Permission denied" in str(error) and "permissions" in str(error)
