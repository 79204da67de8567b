"""Crash-safe writes, the run's writer lock and named fault-injection points.

Atomic write (docs/design.md section 4): bytes go to ``.<name>.tmp-<pid>`` (:mod:`.layout`'s
``temp_path``) in the destination's directory, are flushed and fsynced, then ``os.replace``
moves them over the final name and the directory is fsynced, so a reader sees the old file
or the complete new one, never a prefix. The digest (``xxh3_128``, non-cryptographic: it
detects corruption, not tampering) is of the temp file's bytes, read back from the page
cache *while* the fsync runs in a thread: the fsync waits on the disk with the CPU idle
and the GIL released, so the hash (about 3 ms per 100 MB) costs no wall time, where
hashing inside ``write`` added it to every save. The read-back size must equal the bytes
written, and the rename waits for both, so a failed fsync or a short file never reaches
the final name.

Fault injection: :func:`fault_point` fires when the environment variable ``CKPTCOMPAT_FAULT``
names it. ``CKPTCOMPAT_FAULT=after_fsync`` raises ``errors.InjectedFault`` at that point;
``CKPTCOMPAT_FAULT=after_fsync:exit`` calls ``os._exit(137)`` instead (no cleanup, no
``finally``), as a SIGKILL or power cut would. Points, in the order a save reaches them:

* ``after_temp_write`` -- the temp file holds the bytes, not yet flushed or fsynced;
* ``after_fsync`` -- the temp file is durable, not yet renamed;
* ``after_replace`` -- the final name holds the new bytes, directory not yet fsynced;
* ``before_index_update`` -- (fired by the manager) the checkpoint is written, ``index.json``
  does not list it yet.

Each atomic write passes the first three, so the first write of a save (the checkpoint
file, or ``index.json`` when an indexed epoch is overwritten) is the one that fails.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import xxhash

from ckptcompat.checkpoint.layout import LOCK_NAME, is_temp_name, temp_path
from ckptcompat.errors import InjectedFault, InputError, RunLockedError

__all__ = [
    "DIGEST_ALGORITHM",
    "FAULT_ENV",
    "FAULT_EXIT_CODE",
    "FAULT_POINTS",
    "CountingWriter",
    "RunLock",
    "WriteResult",
    "digest_bytes",
    "fault_point",
    "hash_file",
    "make_dirs",
    "remove_stale_temp_files",
    "unusable_directory",
    "write_atomic",
    "write_bytes_atomic",
]

#: Name of the digest algorithm; digests are written ``"xxh3_128:<32 hex digits>"``.
DIGEST_ALGORITHM = "xxh3_128"
#: Environment variable naming the fault-injection point to fire (``point`` or ``point:exit``).
FAULT_ENV = "CKPTCOMPAT_FAULT"
#: The fault-injection points, in the order a save reaches them.
FAULT_POINTS: tuple[str, ...] = (
    "after_temp_write",
    "after_fsync",
    "after_replace",
    "before_index_update",
)
#: Exit status of a ``point:exit`` fault (128 + SIGKILL, what a killed writer reports).
FAULT_EXIT_CODE = 137

_CHUNK_BYTES = 1 << 20


def fault_point(name: str) -> None:
    """Fire the fault-injection point ``name`` if ``CKPTCOMPAT_FAULT`` names it.

    The variable is read on every call, so tests may set it with ``monkeypatch.setenv``.

    Raises:
        InjectedFault: the variable is ``name``.
        ValueError: ``name`` or the variable's point is not one of :data:`FAULT_POINTS`,
            or its mode is not ``exit`` (a misspelt point would otherwise never fire).
    """
    if name not in FAULT_POINTS:
        raise ValueError(f"unknown fault point {name!r}; known points: {', '.join(FAULT_POINTS)}")
    value = os.environ.get(FAULT_ENV, "")
    if not value:
        return
    point, _, mode = value.partition(":")
    if point not in FAULT_POINTS or mode not in ("", "exit"):
        raise ValueError(
            f"{FAULT_ENV}={value!r} is not a fault point; expected one of "
            f"{', '.join(FAULT_POINTS)}, optionally followed by ':exit'"
        )
    if point != name:
        return
    if mode == "exit":
        os._exit(FAULT_EXIT_CODE)
    raise InjectedFault(f"fault injected at {name!r} ({FAULT_ENV}={value})")


# --------------------------------------------------------------------------- hashing
class CountingWriter:
    """A write-only file object that forwards every byte and counts them.

    ``torch.save`` given a file object calls only ``write`` and ``flush`` (2.4-2.15), and
    names the archive's inner folder ``archive`` instead of deriving it from the temp
    file's name, so the bytes do not depend on the pid in that name.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.size_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write all of ``data``; return its length in bytes."""
        view = memoryview(data).cast("B")
        self._raw.write(view)
        self.size_bytes += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        """Flush the underlying file's user-space buffer (not an fsync)."""
        self._raw.flush()

    def writable(self) -> bool:
        """Always True."""
        return True


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    """``"xxh3_128:<hex>"`` of ``data``."""
    return f"{DIGEST_ALGORITHM}:{xxhash.xxh3_128(data).hexdigest()}"


def hash_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Return ``(size in bytes, "xxh3_128:<hex>")`` of a file, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, f"{DIGEST_ALGORITHM}:{digest.hexdigest()}"


# --------------------------------------------------------------------------- atomic write
@dataclass(frozen=True)
class WriteResult:
    """A completed atomic write.

    Attributes:
        path: the final path.
        size_bytes: bytes written.
        digest: ``"xxh3_128:<hex>"`` of those bytes.
    """

    path: Path
    size_bytes: int
    digest: str


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_and_hash(fd: int, temp: Path, size_bytes: int) -> str:
    """fsync ``fd`` in a thread while hashing ``temp`` read back; return the digest.

    Raises:
        OSError: the fsync failed, or the file read back is not ``size_bytes`` long.
    """
    failed: list[BaseException] = []

    def sync() -> None:
        try:
            os.fsync(fd)
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=sync, name="ckptcompat-fsync", daemon=True)
    thread.start()
    try:
        size, digest = hash_file(temp)
    finally:
        thread.join()
    if failed:
        raise failed[0]
    if size != size_bytes:
        raise OSError(f"{temp} holds {size} bytes after writing {size_bytes}")
    return digest


def write_atomic(
    path: str | os.PathLike[str], write: Callable[[CountingWriter], None]
) -> WriteResult:
    """Write ``path`` atomically: ``write`` fills a temp file, which then replaces ``path``.

    Args:
        path: the final path; its directory must exist.
        write: called once with a :class:`CountingWriter` (e.g. ``torch_compat.save(obj, w)``).

    Returns:
        The final path, the size in bytes and the digest of the bytes written.

    Raises:
        InjectedFault: a fault point fired (see the module docstring).
        OSError: from the file system; whatever ``write`` raises. On any failure before
            the rename the temp file is removed and ``path`` is untouched.
    """
    final = Path(path)
    temp = temp_path(final)
    renamed = False
    try:
        with open(temp, "wb") as raw:
            writer = CountingWriter(raw)
            write(writer)
            fault_point("after_temp_write")
            raw.flush()
            digest = _fsync_and_hash(raw.fileno(), temp, writer.size_bytes)
        fault_point("after_fsync")
        os.replace(temp, final)
        renamed = True
    finally:
        if not renamed:
            temp.unlink(missing_ok=True)
    fault_point("after_replace")
    _fsync_dir(final.parent)
    return WriteResult(path=final, size_bytes=writer.size_bytes, digest=digest)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> WriteResult:
    """:func:`write_atomic` of a bytes object (used for ``index.json``)."""

    def write(writer: CountingWriter) -> None:
        writer.write(data)

    return write_atomic(path, write)


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete every ``.<name>.tmp-<pid>`` in ``directory``; return what was removed.

    Call only while holding the run's :class:`RunLock`: the lock guarantees no live
    writer owns any of these files (they are left by a writer that was killed).
    """
    removed = []
    folder = Path(directory)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if is_temp_name(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


# --------------------------------------------------------------------------- directories
def _blocking_file(path: Path) -> Path | None:
    """The first existing component of ``path`` that is not a directory, if any."""
    for component in reversed((path, *path.parents)):
        if component.exists() and not component.is_dir():
            return component
    return None


def unusable_directory(path: str | os.PathLike[str], exc: OSError) -> InputError:
    """The typed error for a directory that cannot be created, read or written.

    Args:
        path: the directory (a run's ``checkpoints/``, a destination folder).
        exc: the ``OSError`` the file system raised for it.

    Returns:
        An :class:`InputError` (the command line exits 2) naming the component that is a
        file, or the system's reason (``PermissionError``, a read-only file system, ...).
    """
    path = Path(path)
    blocking = _blocking_file(path)
    if blocking is not None:
        found = f"{blocking} is a file, not a directory"
        fix = "give a data directory whose path does not run through a file"
    else:
        found = f"{type(exc).__name__}: {exc.strerror or exc}"
        fix = "give a directory this process can create and write, or fix its permissions"
    return InputError(
        "the directory cannot be used for checkpoints",
        path=path,
        expected="a directory this process can create, read and write",
        found=found,
        fix=fix,
    )


def make_dirs(path: str | os.PathLike[str]) -> None:
    """Create directory ``path`` with its parents (``mkdir -p``); a no-op when it exists.

    Raises:
        InputError: a component of ``path`` is a file, or the file system refuses
            (permissions, a read-only file system): see :func:`unusable_directory`.
    """
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unusable_directory(path, exc) from exc


# --------------------------------------------------------------------------- run lock
class RunLock:
    """The run's writer lock: a non-blocking exclusive ``flock`` on ``checkpoints/.lock``.

    The kernel releases a ``flock`` when its holder's last file descriptor closes,
    including when the process is killed, so a dead writer never blocks the next one.
    The holder writes ``{"pid", "host"}`` into the file so :class:`RunLockedError` can
    name it. Re-entrant within one object (nested ``acquire`` calls count), but two
    objects conflict even in one process: ``flock`` belongs to the open file description.

    Caveats: the descriptor is close-on-exec, but a child created by ``fork`` without
    ``exec`` inherits it and keeps the lock alive until the child exits; ``flock`` is not
    reliable on some network file systems.
    """

    def __init__(self, checkpoints_dir: str | os.PathLike[str]) -> None:
        self.path = Path(checkpoints_dir) / LOCK_NAME
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._depth > 0

    def acquire(self) -> None:
        """Take the lock without waiting (creating ``checkpoints/`` if needed).

        Raises:
            RunLockedError: another live process (or another RunLock object) holds it.
            InputError: ``checkpoints/`` cannot be created or written (a path component
                is a file, permissions, a read-only file system).
        """
        if self._depth:
            self._depth += 1
            return
        make_dirs(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise unusable_directory(self.path.parent, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                "another writer holds this run's checkpoint lock",
                path=self.path,
                expected="no other live process writing checkpoints of this run",
                found=f"the lock held by {holder}",
                fix="stop the other writer, or use a different run name; the lock frees "
                "itself when its holder exits",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        self._fd = fd
        self._depth = 1

    def release(self) -> None:
        """Undo one :meth:`acquire`; the last one unlocks. A no-op when not held."""
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth or self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Clear the holder record first so nobody reads a pid that no longer holds it.
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _read_holder(fd: int) -> str:
    """Describe the holder recorded in the lock file (it may not have written it yet)."""
    raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    try:
        record = json.loads(raw)
        return f"pid {int(record['pid'])} on host {record['host']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not recorded its pid yet"
