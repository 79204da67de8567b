"""SimpleCheckpointManager: save, load, select and clean up a run's checkpoints.

Layout (DESIGN section 4)::

    data_dir/<run>/checkpoints/
        <run>_v<epoch>.pt            agent, safe format v1
        <run>_v<epoch>.trainer.pt    optimizer, scheduler, RNG streams
        index.json                   the committed checkpoints, with size and digest
        .lock                        the writer lock (flock)

Every write is atomic and the index is updated after the file it describes, so the index
only ever lists complete files; a checkpoint exists once the index lists it. Writes take
the run's lock for their duration (``RunLockedError`` when another process holds it);
``with manager:`` holds it for a whole training run. Every load goes through
``torch_compat.load`` with no allowlist and rebuilds the agent from the registry by
``class_path`` + saved config, then ``load_state_dict(strict=True)``; the agent is built
on the meta device and adopts the loaded tensors when that is safe
(:mod:`ckptcompat.checkpoint.rebuild`).

``verify=`` on loads: ``"full"`` (default; the digest of the whole file against the
index), ``"size"`` or ``"none"``; :mod:`ckptcompat.checkpoint.loading` says why.

Not thread-safe: use one manager per thread.
"""

from __future__ import annotations

import copy
import numbers
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn

from ckptcompat import torch_compat
from ckptcompat.checkpoint.atomic import (
    CountingWriter,
    RunLock,
    WriteResult,
    fault_point,
    remove_stale_temp_files,
    write_atomic,
    write_bytes_atomic,
)
from ckptcompat.checkpoint.format import (
    build_agent_payload,
    build_trainer_payload,
    validate_trainer_payload,
)
from ckptcompat.checkpoint.index import (
    CheckpointEntry,
    RunIndex,
    TrainerEntry,
    read_index,
)
from ckptcompat.checkpoint.layout import (
    INDEX_NAME,
    agent_filename,
    checkpoints_dir,
    run_dir,
    trainer_filename,
    validate_run_name,
)
from ckptcompat.checkpoint.loading import (
    DEFAULT_VERIFY,
    Device,
    VerifyMode,
    check_verify,
    load_agent_file,
    load_verified,
    restore_state_dict,
)
from ckptcompat.checkpoint.rng import restore_rng_state
from ckptcompat.checkpoint.uri import file_uri, resolve
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
)

__all__ = [
    "DEFAULT_VERIFY",
    "SimpleCheckpointManager",
    "TrainerState",
    "VerifyMode",
    "save_agent_file",
]

_METADATA_KEYS = ("agent_step", "total_time_s", "score", "extra")
_METRICS = ("epoch", "agent_step", "score")
_STRATEGIES = ("latest", "all")


@dataclass(frozen=True)
class TrainerState:
    """A loaded trainer state (already applied to the objects passed to the loader).

    Attributes:
        epoch, agent_step: where training stood.
        optimizer_state: the optimizer's state_dict (tensors on CPU).
        scheduler_state: the scheduler's state_dict, or None when none was saved.
        extra: the primitives passed as ``extra`` when saving.
        uri: ``file://`` URI of the trainer file.
    """

    epoch: int
    agent_step: int
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any] | None
    extra: dict[str, Any]
    uri: str


def _check_epoch(epoch: Any) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise CheckpointError(
            "epoch must be a non-negative int",
            expected="an int >= 0 (0 is a valid epoch), or None for the latest",
            found=repr(epoch),
        )
    return int(epoch)


def _split_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    given = dict(metadata or {})
    unknown = sorted(set(given) - set(_METADATA_KEYS))
    if unknown:
        raise CheckpointError(
            f"unknown checkpoint metadata keys {unknown}",
            expected=f"keys among {list(_METADATA_KEYS)}",
            found=f"{sorted(given)}",
            fix="put other values in metadata['extra'] (a dict of primitives); "
            "wall time is 'total_time_s' in seconds",
        )
    step = given.get("agent_step", 0)
    if isinstance(step, numbers.Integral) and not isinstance(step, bool):
        step = int(step)
    return {
        "agent_step": step,
        "total_time_s": given.get("total_time_s", 0.0),
        "score": given.get("score"),
        "extra": given.get("extra"),
    }


class SimpleCheckpointManager:
    """Checkpoints of one run under ``data_dir/<run>/checkpoints/``.

    Args:
        run: run name (letters, digits, ``.``, ``_``, ``-``).
        data_dir: the directory holding run directories; created on the first write.
        cache_size: how many loaded agents to keep (LRU, keyed by file, digest, device,
            verify mode and the file's inode, size and mtime); 0 disables. A cache hit
            trusts the check made when the file was loaded only while the file on disk
            is still that file: replacing it or rewriting it (new inode, size or mtime)
            makes the next load read and verify it again. A file is cached from its
            second load on: the first load returns the loaded agent itself (keeping a
            copy would cost about as much as the load), later ones a private deep copy
            of the cached agent, so training a returned agent never changes the cache.

    Raises:
        CheckpointError: an invalid run name.
        ValueError: a negative ``cache_size``.
    """

    def __init__(self, run: str, data_dir: str | Path, cache_size: int = 3) -> None:
        self.run = validate_run_name(run)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, not {cache_size!r}")
        self.data_dir = Path(data_dir)
        self.run_dir = run_dir(self.data_dir, run)
        self.checkpoint_dir = checkpoints_dir(self.data_dir, run)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[Any, ...], nn.Module] = OrderedDict()
        self._loaded_once: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._lock = RunLock(self.checkpoint_dir)

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> SimpleCheckpointManager:
        """Hold the run's writer lock until ``__exit__`` (RunLockedError if taken)."""
        self._acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()

    def _acquire(self) -> None:
        first = not self._lock.held
        self._lock.acquire()
        if first:
            # Holding the lock proves no live writer owns a temp file: any left is stale.
            try:
                remove_stale_temp_files(self.checkpoint_dir)
            except BaseException:
                self._lock.release()
                raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        self._acquire()
        try:
            yield
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ index
    def _index(self) -> RunIndex:
        return read_index(self.checkpoint_dir, self.run)

    def _write_index(self, index: RunIndex) -> None:
        write_bytes_atomic(self.checkpoint_dir / INDEX_NAME, index.to_json())

    def _entry_path(self, entry: CheckpointEntry | TrainerEntry) -> Path:
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

    def list_checkpoints(self) -> tuple[CheckpointEntry, ...]:
        """The indexed agent checkpoints, ascending by epoch.

        Raises:
            CorruptCheckpointError: a malformed index.json.
        """
        return self._index().checkpoints

    # ------------------------------------------------------------------ agents
    def save_agent(
        self, agent: nn.Module, epoch: int, metadata: dict[str, Any] | None = None
    ) -> str:
        """Save ``agent`` as ``<run>_v<epoch>.pt`` and index it; return its ``file://`` URI.

        Args:
            agent: an agent implementing the protocol.
            epoch: >= 0. Saving an indexed epoch again replaces it.
            metadata: optional ``agent_step`` (default 0), ``total_time_s`` (seconds,
                default 0.0), ``score`` (finite float or None, default None) and ``extra``
                (a dict of primitives). Other keys are refused.

        Raises:
            RunLockedError: another process holds the run's lock.
            AgentMismatchError: the agent's class or config cannot be saved.
            CheckpointError: bad epoch or metadata.
            InjectedFault: a fault point fired (tests).
        """
        epoch = _check_epoch(epoch)
        payload = build_agent_payload(agent, run=self.run, epoch=epoch, **_split_metadata(metadata))
        path = self.checkpoint_dir / agent_filename(self.run, epoch)
        with self._writing():
            index = self._index()
            if index.checkpoint(epoch) is not None:
                # Unlist first: a crash mid-replace must not leave an entry whose size and
                # digest describe the old bytes.
                index = index.without(checkpoints={epoch})
                self._write_index(index)
            result = write_atomic(path, lambda writer: _save(payload, writer))
            fault_point("before_index_update")
            meta = payload["metadata"]
            entry = CheckpointEntry(
                epoch=epoch,
                agent_step=meta["agent_step"],
                score=meta["score"],
                total_time_s=meta["total_time_s"],
                created_at=meta["created_at"],
                file=path.name,
                size_bytes=result.size_bytes,
                digest=result.digest,
            )
            self._write_index(index.with_checkpoint(entry))
        self._forget({path.name})
        return file_uri(path)

    def load_agent(
        self, epoch: int | None = None, device: Device = "cpu", verify: VerifyMode = DEFAULT_VERIFY
    ) -> nn.Module:
        """Load the agent of ``epoch`` (None: the latest indexed; 0 is epoch 0).

        Returns:
            A fresh agent on ``device``, sharing no tensor with anything (a deep copy of
            the cached agent when the file was loaded before; see ``cache_size``).

        Raises:
            CheckpointNotFoundError: no checkpoint, or none at ``epoch`` (the message lists
                the indexed epochs), or the indexed file is gone.
            CorruptCheckpointError: size/digest mismatch, truncated or foreign bytes.
            IncompatibleCheckpointError: a newer format_version; not a ckptcompat agent.
            AgentMismatchError: unknown class_path, rejected config, keys/shapes/dtypes.
            UnsafeCheckpointError: the file needs globals (not written by this manager).
        """
        check_verify(verify)
        index = self._index()
        entry = (
            index.latest_checkpoint() if epoch is None else index.checkpoint(_check_epoch(epoch))
        )
        if entry is None:
            raise CheckpointNotFoundError(
                f"run {self.run!r} has no checkpoint"
                + ("" if epoch is None else f" at epoch {epoch}"),
                path=self.checkpoint_dir,
                expected="an epoch listed in index.json",
                found=f"indexed epochs {[e.epoch for e in index.checkpoints]}",
                fix="pick an indexed epoch, or check run and data_dir",
            )
        path = self._entry_path(entry)
        key = _cache_key(path, entry, device, verify)
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return copy.deepcopy(self._cache[key])
        agent = load_agent_file(path, device, verify, entry)
        if not self.cache_size or key is None:
            return agent
        if key not in self._loaded_once:
            # A first load (resume, one evaluation) keeps nothing: the returned agent
            # owns the loaded tensors and nobody else holds them.
            self._loaded_once[key] = None
            while len(self._loaded_once) > self.cache_size:
                self._loaded_once.popitem(last=False)
            return agent
        del self._loaded_once[key]
        self._cache[key] = agent
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return copy.deepcopy(agent)

    def clear_cache(self) -> None:
        """Drop every cached agent."""
        self._cache.clear()
        self._loaded_once.clear()

    def _forget(self, files: set[str]) -> None:
        for memo in (self._cache, self._loaded_once):
            for key in [k for k in memo if k[0] in files]:
                del memo[key]

    @staticmethod
    def load_from_uri(
        uri: str | Path, device: Device = "cpu", verify: VerifyMode = DEFAULT_VERIFY
    ) -> nn.Module:
        """Load an agent from ``file://PATH``, a bare path, a run directory,
        ``DIR/<run>:latest`` or ``mock://KEY[:vN]`` (a fresh ``MockAgent``).

        A file listed in its directory's index.json is verified against it; a file
        outside a managed run has no recorded size or digest and is loaded unverified.

        Raises:
            CheckpointError: an unsupported URI scheme (wandb, s3, gs, http(s)); and
            everything :meth:`load_agent` raises.
        """
        check_verify(verify)
        resolved = resolve(uri)
        if resolved.path is None:
            from ckptcompat.agents.mock import MockAgent

            return MockAgent().to(device)
        return load_agent_file(resolved.path, device, verify, resolved.entry)

    # ------------------------------------------------------------------ selection
    def select_checkpoints(
        self, strategy: Literal["latest", "all"] = "latest", count: int = 1, metric: str = "epoch"
    ) -> list[str]:
        """``file://`` URIs of checkpoints ranked by ``metric``, best first.

        Args:
            strategy: ``"latest"``: the top ``count``; ``"all"``: every checkpoint.
            count: >= 1 (``"latest"`` only).
            metric: ``"epoch"``, ``"agent_step"`` or ``"score"`` (descending; ties go to
                the later epoch; checkpoints saved with ``score=None`` are left out).

        Raises:
            ValueError: unknown strategy or metric, count < 1.
            CorruptCheckpointError: a malformed index.json.
        """
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, not {strategy!r}")
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, not {metric!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, not {count!r}")
        entries = [e for e in self._index().checkpoints if getattr(e, metric) is not None]
        entries.sort(key=lambda e: (getattr(e, metric), e.epoch), reverse=True)
        if strategy == "latest":
            entries = entries[:count]
        return [file_uri(self._entry_path(e)) for e in entries]

    def find_best_checkpoint(self, metric: str = "score") -> str:
        """``file://`` URI of the best checkpoint by ``metric`` (see select_checkpoints).

        Raises:
            CheckpointNotFoundError: no checkpoint has a value for ``metric``.
        """
        best = self.select_checkpoints("latest", 1, metric)
        if not best:
            raise CheckpointNotFoundError(
                f"run {self.run!r} has no checkpoint with a {metric}",
                path=self.checkpoint_dir,
                expected=f"an indexed checkpoint whose {metric} is not None",
                found=f"{len(self.list_checkpoints())} indexed checkpoints",
                fix="save checkpoints with metadata={'score': ...}" if metric == "score" else None,
            )
        return best[0]

    def cleanup_old_checkpoints(self, keep_last_n: int = 5) -> int:
        """Delete all but the newest ``keep_last_n`` agent checkpoints; return how many went.

        Trainer states older than the oldest kept checkpoint go too (they cannot resume
        anything kept); ``keep_last_n=0`` deletes every checkpoint and trainer state. The
        index is rewritten before the files are deleted, so it never lists a missing file.

        Raises:
            ValueError: ``keep_last_n`` < 0. RunLockedError: another writer holds the lock.
        """
        if isinstance(keep_last_n, bool) or not isinstance(keep_last_n, int) or keep_last_n < 0:
            raise ValueError(f"keep_last_n must be an int >= 0, not {keep_last_n!r}")
        with self._writing():
            index = self._index()
            kept = index.checkpoints[len(index.checkpoints) - keep_last_n :] if keep_last_n else ()
            gone = [e for e in index.checkpoints if e not in kept]
            if keep_last_n == 0:
                gone_trainer = list(index.trainer_states)
            elif kept:
                gone_trainer = [e for e in index.trainer_states if e.epoch < kept[0].epoch]
            else:
                gone_trainer = []
            if not gone and not gone_trainer:
                return 0
            self._write_index(
                index.without(
                    checkpoints={e.epoch for e in gone},
                    trainer_states={e.epoch for e in gone_trainer},
                )
            )
            for entry in [*gone, *gone_trainer]:
                self._entry_path(entry).unlink(missing_ok=True)
        self._forget({e.file for e in gone})
        return len(gone)

    # ------------------------------------------------------------------ trainer state
    def save_trainer_state(
        self,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        agent_step: int,
        scheduler: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Save optimizer, scheduler, the three global RNG states and ``extra``.

        Writes ``<run>_v<epoch>.trainer.pt`` and indexes it; returns its ``file://`` URI.

        Raises:
            RunLockedError, CheckpointError (non-primitive state or extra), InjectedFault.
        """
        epoch = _check_epoch(epoch)
        payload = build_trainer_payload(
            optimizer,
            run=self.run,
            epoch=epoch,
            agent_step=agent_step,
            scheduler=scheduler,
            extra=extra,
        )
        path = self.checkpoint_dir / trainer_filename(self.run, epoch)
        with self._writing():
            index = self._index()
            if index.trainer_state(epoch) is not None:
                index = index.without(trainer_states={epoch})
                self._write_index(index)
            result = write_atomic(path, lambda writer: _save(payload, writer))
            fault_point("before_index_update")
            entry = TrainerEntry(
                epoch=epoch,
                agent_step=payload["agent_step"],
                file=path.name,
                size_bytes=result.size_bytes,
                digest=result.digest,
            )
            self._write_index(index.with_trainer_state(entry))
        return file_uri(path)

    def load_trainer_state(
        self,
        epoch: int | None = None,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        restore_rng: bool = True,
        verify: VerifyMode = DEFAULT_VERIFY,
    ) -> TrainerState | None:
        """Load a trainer state and restore it.

        Restores, in this order and only after the whole file validated: ``optimizer``
        and ``scheduler`` when given (``load_state_dict``), then, with ``restore_rng``,
        torch's global CPU generator, numpy's global generator and python's ``random``.

        Args:
            epoch: None for the latest indexed trainer state; 0 is epoch 0.

        Returns:
            The state, or None only when the run has no trainer state at all.

        Raises:
            CheckpointNotFoundError: an explicit ``epoch`` that has no trainer state.
            CorruptCheckpointError, IncompatibleCheckpointError: as for agents.
            AgentMismatchError: the optimizer/scheduler does not match the saved state
                (parameter groups, a scheduler given but none saved).
        """
        check_verify(verify)
        index = self._index()
        if epoch is None:
            entry = index.latest_trainer_state()
            if entry is None:
                return None
        else:
            entry = index.trainer_state(_check_epoch(epoch))
            if entry is None:
                raise CheckpointNotFoundError(
                    f"run {self.run!r} has no trainer state at epoch {epoch}",
                    path=self.checkpoint_dir,
                    expected="an epoch listed in index.json trainer_states",
                    found=f"trainer states at epochs {[e.epoch for e in index.trainer_states]}",
                    fix="pick a listed epoch, or pass epoch=None for the latest",
                )
        path = self._entry_path(entry)
        payload = validate_trainer_payload(load_verified(path, entry, verify), path)
        if scheduler is not None and payload["scheduler"] is None:
            raise AgentMismatchError(
                "a scheduler was passed but the trainer state saved none",
                path=path,
                fix="pass scheduler=None, or resume from a state saved with a scheduler",
            )
        if optimizer is not None:
            restore_state_dict(optimizer, payload["optimizer"], "optimizer", path)
        if scheduler is not None:
            restore_state_dict(scheduler, payload["scheduler"], "scheduler", path)
        if restore_rng:
            restore_rng_state(payload["rng"], path)
        return TrainerState(
            epoch=payload["epoch"],
            agent_step=payload["agent_step"],
            optimizer_state=payload["optimizer"],
            scheduler_state=payload["scheduler"],
            extra=payload["extra"],
            uri=file_uri(path),
        )


def save_agent_file(
    agent: nn.Module,
    path: str | Path,
    *,
    run: str,
    epoch: int,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> WriteResult:
    """Write one safe-format agent file at ``path``, outside any managed run (no index).

    For callers that choose the path themselves (``migrate`` to a ``.pt``,
    ``PolicyStore.save``). Atomic like every write here; ``metadata`` as for
    :meth:`SimpleCheckpointManager.save_agent`.

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is False; bad epoch or metadata.
        AgentMismatchError: the agent's class or config cannot be saved.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(
            "the destination exists; it is never overwritten silently",
            path=path,
            expected="a new file path",
            found="an existing file",
            fix="choose another destination or remove it yourself",
        )
    payload = build_agent_payload(
        agent, run=run, epoch=_check_epoch(epoch), **_split_metadata(metadata)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda writer: _save(payload, writer))


def _cache_key(
    path: Path, entry: CheckpointEntry, device: Device, verify: VerifyMode
) -> tuple[Any, ...] | None:
    """The cache key of a load: the entry, device and verify mode, and the file's identity.

    The file's ``(st_ino, st_size, st_mtime_ns)`` is part of the key, so a file replaced
    or rewritten since it was cached is loaded (and verified) again instead of being
    answered from memory. None: the file cannot be stat'ed (the load reports why).
    """
    try:
        st = path.stat()
    except OSError:
        return None
    identity = (st.st_ino, st.st_size, st.st_mtime_ns)
    return (entry.file, entry.digest, str(torch.device(device)), verify, identity)


def _save(payload: dict[str, Any], writer: CountingWriter) -> None:
    torch_compat.save(payload, writer)  # type: ignore[arg-type]  # write/flush is enough
