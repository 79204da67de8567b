"""SimpleCheckpointManager: save, load, select and clean up a run's checkpoints.

Files: ``data_dir/<run>/checkpoints/`` holds ``<run>_v<epoch>.pt`` (agent),
``<run>_v<epoch>.trainer.pt`` (optimizer, scheduler, RNG streams), ``index.json`` and the
writer lock, as :mod:`ckptcompat.checkpoint.layout` spells them.

Every write goes through :class:`~ckptcompat.checkpoint.run_store.RunStore`: atomic, and
the index is updated after the file it describes, so the index only ever lists complete
files; a checkpoint exists once the index lists it. Writes take the run's lock for their
duration (``RunLockedError`` when another process holds it); ``with manager:`` holds it
for a whole training run. Every load goes through
``torch_compat.load`` with no allowlist and rebuilds the agent from the registry by
``class_path`` + saved config, then ``load_state_dict(strict=True)``; the agent is built
on the meta device and adopts the loaded tensors when that is safe
(:mod:`ckptcompat.checkpoint.rebuild`).

``verify=`` on loads: ``"full"`` (default; the digest of the whole file against the
index), ``"size"`` or ``"none"``; :mod:`ckptcompat.checkpoint.loading` says why.

A distributed run's rank 0 writes the safe files (agent from the unwrapped module, trainer
state with every rank's RNG streams); with ``--checkpoint-format dcp`` every rank also
calls :meth:`SimpleCheckpointManager.save_dcp`, a collective that writes a
``torch.distributed.checkpoint`` directory which rank 0 then indexes
(:mod:`ckptcompat.checkpoint.dcp`).

Not thread-safe: use one manager per thread.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn

from ckptcompat import torch_compat
from ckptcompat.checkpoint.cache import AgentCache, cache_key
from ckptcompat.checkpoint.format import (
    build_agent_payload,
    build_trainer_payload,
    validate_trainer_payload,
)
from ckptcompat.checkpoint.index import RANK_METRICS, CheckpointEntry, DcpEntry, TrainerEntry
from ckptcompat.checkpoint.layout import (
    agent_filename,
    checkpoints_dir,
    parse_filename,
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
    load_legacy_agent,
    load_verified,
)
from ckptcompat.checkpoint.run_store import RunStore
from ckptcompat.checkpoint.saving import check_epoch, split_metadata
from ckptcompat.checkpoint.trainer_state import TrainerState, apply_trainer_state
from ckptcompat.checkpoint.uri import file_uri, resolve
from ckptcompat.errors import CheckpointNotFoundError, InvalidArgumentError

__all__ = ["SimpleCheckpointManager", "check_selection"]

_STRATEGIES = ("latest", "all")
#: File names of the generations before the safe format (read by the legacy reader).
_LEGACY_KINDS = ("g1", "g2_colon", "g2_dunder")


def check_selection(strategy: str, count: int, metric: str) -> None:
    """Check :meth:`SimpleCheckpointManager.select_checkpoints`' arguments.

    Raises:
        InvalidArgumentError: (a ValueError) unknown strategy or metric, count < 1.
    """
    if strategy not in _STRATEGIES:
        raise _bad_argument("strategy", f"one of {_STRATEGIES}", strategy)
    if metric not in RANK_METRICS:
        raise _bad_argument("metric", f"one of {RANK_METRICS}", metric)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise _bad_argument("count", "an int >= 1", count)


def _bad_argument(name: str, expected: str, found: object) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{name} must be {expected}, not {found!r}", fix=f"pass a valid {name}"
    )


class SimpleCheckpointManager:
    """Checkpoints of one run under ``data_dir/<run>/checkpoints/``.

    Args:
        run: run name (letters, digits, ``.``, ``_``, ``-``).
        data_dir: the directory holding run directories; created on the first write.
        cache_size: how many loaded agents to keep (LRU, keyed by file, digest, device,
            verify mode and the file's inode, size and mtime); 0 disables. A file is
            cached from its second load on, and a load answers a private copy; see
            :mod:`ckptcompat.checkpoint.cache`.

    Raises:
        CheckpointError: an invalid run name.
        InvalidArgumentError: (a ValueError) a negative ``cache_size``.
    """

    def __init__(self, run: str, data_dir: str | Path, cache_size: int = 3) -> None:
        self.run = validate_run_name(run)
        self._cache = AgentCache(cache_size)
        self.data_dir = Path(data_dir)
        self.run_dir = run_dir(self.data_dir, run)
        self.checkpoint_dir = checkpoints_dir(self.data_dir, run)
        self.cache_size = cache_size
        self._store = RunStore(self.run, self.checkpoint_dir)

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> SimpleCheckpointManager:
        """Hold the run's writer lock until ``__exit__`` (RunLockedError if taken)."""
        self._store.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._store.release()

    # ------------------------------------------------------------------ index
    def list_checkpoints(self) -> tuple[CheckpointEntry, ...]:
        """The indexed agent checkpoints, ascending by epoch.

        Raises:
            CorruptCheckpointError: a malformed index.json.
        """
        return self._store.index().checkpoints

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
        epoch = check_epoch(epoch)
        payload = build_agent_payload(agent, run=self.run, epoch=epoch, **split_metadata(metadata))
        path = self.checkpoint_dir / agent_filename(self.run, epoch)
        meta = payload["metadata"]
        self._store.save_then_index(
            CheckpointEntry,
            path,
            payload,
            epoch=epoch,
            agent_step=meta["agent_step"],
            score=meta["score"],
            total_time_s=meta["total_time_s"],
            created_at=meta["created_at"],
        )
        self._cache.forget({path.name})
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
        index = self._store.index()
        entry = index.latest_checkpoint() if epoch is None else index.checkpoint(check_epoch(epoch))
        if entry is None:
            raise CheckpointNotFoundError(
                f"run {self.run!r} has no checkpoint"
                + ("" if epoch is None else f" at epoch {epoch}"),
                path=self.checkpoint_dir,
                expected="an epoch listed in index.json",
                found=f"indexed epochs {[e.epoch for e in index.checkpoints]}",
                fix="pick an indexed epoch, or check run and data_dir"
                if index.checkpoints
                else "save a checkpoint first, or check run and data_dir",
            )
        path = self._store.entry_path(entry)
        key = cache_key(path, entry, device, verify)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        return self._cache.admit(key, load_agent_file(path, device, verify, entry))

    def clear_cache(self) -> None:
        """Drop every cached agent."""
        self._cache.clear()

    @staticmethod
    def load_from_uri(
        uri: str | Path, device: Device = "cpu", verify: VerifyMode = DEFAULT_VERIFY
    ) -> nn.Module:
        """Load an agent from ``file://PATH``, a bare path, a run directory,
        ``DIR/<run>:latest`` or ``mock://KEY[:vN]`` (a fresh ``MockAgent``).

        Legacy names (G1 ``model_<NNNN>.pt``, #2366's ``<run>__e<E>__s<S>__t<T>__sc<SC>.pt``,
        ``<run>:v<E>.pt``) are read by the legacy reader: ``weights_only=True`` plus the
        curated allowlist, as ``migrate`` reads them. A file listed in its directory's
        index.json is verified against it; a file outside a managed run has no recorded
        size or digest and is loaded unverified.

        Raises:
            CheckpointError: an unsupported URI scheme (wandb, s3, gs, http(s)); and
            everything :meth:`load_agent` raises.
            UnsafeCheckpointError: a legacy file naming globals outside the allowlist.
        """
        check_verify(verify)
        resolved = resolve(uri)
        if resolved.path is None:
            from ckptcompat.agents.mock import MockAgent

            torch_compat.check_device(device)
            return MockAgent().to(device)
        name = parse_filename(resolved.path.name)
        if resolved.entry is None and name is not None and name.kind in _LEGACY_KINDS:
            return load_legacy_agent(resolved.path, device)
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
            InvalidArgumentError: (a ValueError) unknown strategy or metric, count < 1.
            CorruptCheckpointError: a malformed index.json.
        """
        check_selection(strategy, count, metric)
        entries = self._store.index().ranked(metric)
        return self._uris(entries[:count] if strategy == "latest" else entries)

    def _uris(self, entries: list[CheckpointEntry]) -> list[str]:
        return [file_uri(self._store.entry_path(e)) for e in entries]

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
            InvalidArgumentError: (a ValueError) ``keep_last_n`` < 0.
            RunLockedError: another writer holds the lock.
        """
        if isinstance(keep_last_n, bool) or not isinstance(keep_last_n, int) or keep_last_n < 0:
            raise _bad_argument("keep_last_n", "an int >= 0", keep_last_n)
        gone = self._store.cleanup(keep_last_n)
        self._cache.forget({e.file for e in gone})
        return len(gone)

    # ------------------------------------------------------------------ trainer state
    def save_trainer_state(
        self,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        agent_step: int,
        scheduler: Any = None,
        extra: dict[str, Any] | None = None,
        rng_ranks: list[dict[str, Any]] | None = None,
    ) -> str:
        """Save optimizer, scheduler, the three global RNG states and ``extra``.

        Writes ``<run>_v<epoch>.trainer.pt`` and indexes it; returns its ``file://`` URI.
        ``rng_ranks``: a distributed run's every-rank streams (see
        :func:`~ckptcompat.checkpoint.format.build_trainer_payload`).

        Raises:
            RunLockedError, CheckpointError (non-primitive state or extra), InjectedFault.
        """
        epoch = check_epoch(epoch)
        payload = build_trainer_payload(
            optimizer,
            run=self.run,
            epoch=epoch,
            agent_step=agent_step,
            scheduler=scheduler,
            extra=extra,
            rng_ranks=rng_ranks,
        )
        path = self.checkpoint_dir / trainer_filename(self.run, epoch)
        self._store.save_then_index(
            TrainerEntry, path, payload, epoch=epoch, agent_step=payload["agent_step"]
        )
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
        index = self._store.index()
        if epoch is None:
            entry = index.latest_trainer_state()
            if entry is None:
                return None
        else:
            entry = index.trainer_state(check_epoch(epoch))
            if entry is None:
                raise CheckpointNotFoundError(
                    f"run {self.run!r} has no trainer state at epoch {epoch}",
                    path=self.checkpoint_dir,
                    expected="an epoch listed in index.json trainer_states",
                    found=f"trainer states at epochs {[e.epoch for e in index.trainer_states]}",
                    fix="pick a listed epoch, or pass epoch=None for the latest",
                )
        path = self._store.entry_path(entry)
        payload = validate_trainer_payload(load_verified(path, entry, verify), path)
        return apply_trainer_state(
            payload, path, optimizer=optimizer, scheduler=scheduler, restore_rng=restore_rng
        )

    # ------------------------------------------------------------------ DCP
    def list_dcp_checkpoints(self) -> tuple[DcpEntry, ...]:
        """The indexed DCP directories, ascending by epoch."""
        return self._store.index().dcp_checkpoints

    def save_dcp(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, agent_step: int
    ) -> Path:
        """Write epoch ``epoch`` as a DCP directory from every rank; rank 0 indexes it.

        A collective: every rank of the default process group calls it (a process with no
        group writes alone, as world size 1). Rank 0 unlists and clears the directory
        first; the index lists it only after every rank's files and the ``.metadata``
        exist. ``module`` may be DDP-wrapped (the keys are the inner module's).

        Returns:
            The directory, ``checkpoints/<run>_v<epoch>.dcp``.

        Raises:
            RunLockedError: another process holds the run's lock (rank 0).
            CheckpointError: a bad epoch. OSError: from torch's writer.
        """
        from ckptcompat.checkpoint import dcp

        return dcp.write_indexed(self._store, module, optimizer, check_epoch(epoch), agent_step)

    def load_dcp(self, module: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> DcpEntry:
        """Fill ``module`` and ``optimizer`` from epoch ``epoch``'s indexed DCP directory.

        A collective on any world size (resharding is DCP's); see
        :func:`ckptcompat.checkpoint.dcp.load_dcp` for what ``optimizer`` may be.

        Raises:
            CheckpointNotFoundError: no DCP directory is indexed at ``epoch``.
            CorruptCheckpointError, AgentMismatchError: see ``dcp.load_dcp``.
        """
        from ckptcompat.checkpoint import dcp

        return dcp.load_indexed(self._store, module, optimizer, check_epoch(epoch))
