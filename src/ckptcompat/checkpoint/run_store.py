"""RunStore: the order of writes in a run's ``checkpoints/`` folder, under its writer lock.

Every write is atomic and the index is updated after the file it describes, so the index
only ever lists complete files; a checkpoint exists once the index lists it. Replacing an
indexed epoch unlists it first; a cleanup rewrites the index before deleting files. Writes
take the run's lock for their duration (``RunLockedError`` when another process holds it);
:meth:`RunStore.acquire` holds it across writes. :mod:`ckptcompat.checkpoint.manager`
(agents, trainer states, selection, the cache) writes and reads through this.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ckptcompat.checkpoint.atomic import (
    RunLock,
    fault_point,
    make_dirs,
    remove_stale_temp_files,
    write_bytes_atomic,
)
from ckptcompat.checkpoint.index import (
    CheckpointEntry,
    DcpEntry,
    RunIndex,
    TrainerEntry,
    read_index,
)
from ckptcompat.checkpoint.layout import (
    INDEX_NAME,
    agent_filename,
    dcp_dirname,
    trainer_filename,
)
from ckptcompat.checkpoint.saving import write_payload
from ckptcompat.errors import CorruptCheckpointError

__all__ = ["RunStore"]


class RunStore:
    """The ``checkpoints/`` folder of run ``run``: its lock, its index, its files."""

    def __init__(self, run: str, checkpoint_dir: Path) -> None:
        self.run = run
        self.checkpoint_dir = checkpoint_dir
        self._lock = RunLock(checkpoint_dir)

    # ------------------------------------------------------------------ lock
    def acquire(self) -> None:
        """Take the run's writer lock (re-entrant; RunLockedError if another holds it)."""
        first = not self._lock.held
        self._lock.acquire()
        if first:
            # Holding the lock proves no live writer owns a temp file: any left is stale.
            try:
                remove_stale_temp_files(self.checkpoint_dir)
            except BaseException:
                self._lock.release()
                raise

    def release(self) -> None:
        """Release one :meth:`acquire`."""
        self._lock.release()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ index
    def index(self) -> RunIndex:
        """The run's index (empty when there is none yet)."""
        return read_index(self.checkpoint_dir, self.run)

    def _write_index(self, index: RunIndex) -> None:
        write_bytes_atomic(self.checkpoint_dir / INDEX_NAME, index.to_json())

    def entry_path(self, entry: CheckpointEntry | TrainerEntry) -> Path:
        """The file of an indexed ``entry``, refusing names outside the key scheme."""
        if isinstance(entry, TrainerEntry):
            expected = trainer_filename(self.run, entry.epoch)
        else:
            expected = agent_filename(self.run, entry.epoch)
        if entry.file != expected:
            raise CorruptCheckpointError(
                "index.json names a file outside the key scheme",
                path=self.checkpoint_dir / INDEX_NAME,
                expected=expected,
                found=entry.file,
                fix="restore index.json from a backup",
            )
        return self.checkpoint_dir / entry.file

    # ------------------------------------------------------------------ writes
    def save_then_index(
        self,
        kind: type[CheckpointEntry] | type[TrainerEntry],
        path: Path,
        payload: dict[str, Any],
        **fields: Any,
    ) -> None:
        """Write ``payload`` to ``path`` atomically, then index it as a ``kind`` entry.

        ``fields`` are the entry's fields other than ``file``, ``size_bytes`` and
        ``digest``, which come from the write.
        """
        epoch = fields["epoch"]
        with self._writing():
            index = self.index()
            # Unlist first: a crash mid-replace must not leave an entry whose size and
            # digest describe the old bytes.
            if kind is TrainerEntry and index.trainer_state(epoch) is not None:
                index = index.without(trainer_states={epoch})
                self._write_index(index)
            elif kind is CheckpointEntry and index.checkpoint(epoch) is not None:
                index = index.without(checkpoints={epoch})
                self._write_index(index)
            result = write_payload(path, payload)
            fault_point("before_index_update")
            entry = kind(
                **fields, file=path.name, size_bytes=result.size_bytes, digest=result.digest
            )
            if isinstance(entry, TrainerEntry):
                self._write_index(index.with_trainer_state(entry))
            else:
                self._write_index(index.with_checkpoint(entry))

    def dcp_path(self, entry: DcpEntry) -> Path:
        """The directory of an indexed DCP ``entry``, refusing names outside the key scheme."""
        expected = dcp_dirname(self.run, entry.epoch)
        if entry.dir != expected:
            raise CorruptCheckpointError(
                "index.json names a DCP directory outside the key scheme",
                path=self.checkpoint_dir / INDEX_NAME,
                expected=expected,
                found=entry.dir,
                fix="restore index.json from a backup",
            )
        return self.checkpoint_dir / entry.dir

    def clear_dcp(self, epoch: int) -> Path:
        """Unlist and delete epoch ``epoch``'s DCP directory (if any); return its path, created.

        Rank 0 calls it before every rank writes the directory again.
        """
        path = self.checkpoint_dir / dcp_dirname(self.run, epoch)
        with self._writing():
            index = self.index()
            if index.dcp_checkpoint(epoch) is not None:
                self._write_index(index.without_dcp({epoch}))
            shutil.rmtree(path, ignore_errors=True)
            make_dirs(path)
        return path

    def index_dcp(self, entry: DcpEntry) -> None:
        """List a finished DCP directory (after every rank wrote it)."""
        with self._writing():
            self._write_index(self.index().with_dcp_checkpoint(entry))

    def cleanup(self, keep_last_n: int) -> list[CheckpointEntry]:
        """Carry out :meth:`RunIndex.cleanup_plan`; return the agent entries deleted.

        The index is rewritten before the files are deleted, so it never lists a missing file.
        """
        with self._writing():
            index = self.index()
            gone, gone_trainer = index.cleanup_plan(keep_last_n)
            # A DCP directory goes with its epoch's agent checkpoint.
            gone_epochs = {e.epoch for e in gone}
            gone_dcp = [e for e in index.dcp_checkpoints if e.epoch in gone_epochs]
            if not gone and not gone_trainer:
                return []
            self._write_index(
                index.without(
                    checkpoints=gone_epochs,
                    trainer_states={e.epoch for e in gone_trainer},
                ).without_dcp({e.epoch for e in gone_dcp})
            )
            for entry in [*gone, *gone_trainer]:
                self.entry_path(entry).unlink(missing_ok=True)
            for dcp_entry in gone_dcp:
                shutil.rmtree(self.dcp_path(dcp_entry), ignore_errors=True)
        return gone
