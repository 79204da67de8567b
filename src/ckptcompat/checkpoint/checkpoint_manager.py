"""Deprecated ``CheckpointManager``: the #2366 spellings over SimpleCheckpointManager.

Callers written against the checkpoint manager merged in Metta's #2366 (September 2025)
keep working: ``CheckpointManager(run_name, run_dir)`` (also ``run=``), save metadata with
``total_time`` (seconds), ``save_trainer_state(..., stopwatch_state=...)`` and
``load_trainer_state()["optimizer_state"]``. Everything else is
:class:`~ckptcompat.checkpoint.manager.SimpleCheckpointManager`: files are
``<run>_v<epoch>.pt`` (not ``<run>__e<E>__s<S>__t<T>__sc<SC>.pt``), saved in the safe
format, and nothing is ever a silent ``None`` except a run without a trainer state. Each
constructor call, and each call of the methods whose spelling differs from the replacement
(``save_agent``, ``save_trainer_state``, ``load_trainer_state``), warns once
(DeprecationWarning, at the caller's line). Metadata keys #2366 ignored are ignored here
too, with a UserWarning naming them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ckptcompat.checkpoint.layout import parse_filename
from ckptcompat.checkpoint.loading import DEFAULT_VERIFY, VerifyMode
from ckptcompat.checkpoint.manager import SimpleCheckpointManager, check_selection
from ckptcompat.checkpoint.saving import METADATA_KEYS
from ckptcompat.checkpoint.trainer_state import TrainerState
from ckptcompat.checkpoint.uri import file_uri, key_and_version, resolve
from ckptcompat.errors import InvalidArgumentError

__all__ = ["CheckpointManager"]

#: save_agent metadata keys #2366 read into the file name; others it ignored.
_KEYS_2366 = ("agent_step", "total_time", "score")


def _normalize(uri: str) -> str:
    if "://" in uri and not uri.startswith("file://"):
        return uri
    return file_uri(uri.removeprefix("file://"))


def _deprecated(old: str, replacement: str) -> None:
    """One DeprecationWarning at the caller of the public method that calls this."""
    warnings.warn(
        f"{old} is deprecated and will be removed; use {replacement} instead",
        DeprecationWarning,
        stacklevel=3,
    )


class CheckpointManager(SimpleCheckpointManager):
    """Deprecated: #2366's ``CheckpointManager(run_name="default", run_dir="./train_dir",
    cache_size=3)``; use :class:`SimpleCheckpointManager(run, data_dir)` instead.

    ``run_dir`` is the directory holding run directories (files go to
    ``run_dir/<run>/checkpoints/``, as in #2366), i.e. SimpleCheckpointManager's
    ``data_dir``; the attribute ``run_dir`` keeps #2366's meaning (that directory, not
    SimpleCheckpointManager's ``data_dir/<run>``).

    Raises:
        InvalidArgumentError: an invalid run name, or both ``run`` and ``run_name`` given
            (a ValueError too).
    """

    def __init__(
        self,
        run: str | None = None,
        run_dir: str | Path = "./train_dir",
        cache_size: int = 3,
        *,
        run_name: str | None = None,
    ) -> None:
        warnings.warn(
            "CheckpointManager is deprecated and will be removed; use "
            "ckptcompat.checkpoint.SimpleCheckpointManager(run, data_dir) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        if run is not None and run_name is not None:
            raise InvalidArgumentError(
                "CheckpointManager got both run and run_name",
                expected="one of them (run_name is #2366's first spelling)",
                found=f"run={run!r}, run_name={run_name!r}",
            )
        chosen = run if run is not None else run_name if run_name is not None else "default"
        super().__init__(chosen, run_dir, cache_size)
        self.run_dir = Path(run_dir)

    @property
    def run_name(self) -> str:
        """#2366's name of :attr:`run`."""
        return self.run

    def save_agent(
        self,
        agent: nn.Module,
        epoch: int,
        metadata: dict[str, Any] | None = None,
        wandb_run: Any = None,
    ) -> str:
        """As :meth:`SimpleCheckpointManager.save_agent`; ``total_time`` (seconds) is
        accepted for ``total_time_s``. Other keys #2366 did not store (``upload_to_wandb``,
        ``is_final``, ``total_train_time``, ``avg_reward``, ``category_scores`` ...) are
        ignored with a UserWarning naming them; ``total_time_s`` and ``extra`` are passed on.

        ``wandb_run`` is #2366's upload target. ckptcompat uploads nothing: a run other
        than None gives a UserWarning saying so, and the ``file://`` URI is returned (#2366
        returned a ``wandb://`` URI after uploading). Upload the file yourself.

        Raises:
            InvalidArgumentError: both ``total_time`` and ``total_time_s``.
        """
        _deprecated(
            "CheckpointManager.save_agent",
            "SimpleCheckpointManager.save_agent(agent, epoch, {'agent_step', 'total_time_s', "
            "'score', 'extra'})",
        )
        given = dict(metadata or {})
        ignored = sorted(k for k in given if k not in (*_KEYS_2366, *METADATA_KEYS))
        if ignored:
            warnings.warn(
                f"CheckpointManager.save_agent ignores metadata keys {ignored}, as #2366 did "
                "(it kept agent_step, total_time and score); put values to keep in "
                "metadata['extra'] (a dict of primitives)",
                UserWarning,
                stacklevel=2,
            )
            given = {k: v for k, v in given.items() if k not in ignored}
        if "total_time" in given:
            if "total_time_s" in given:
                raise InvalidArgumentError(
                    "metadata has both total_time and total_time_s",
                    expected="one of them, in seconds",
                    found=f"{given['total_time']!r} and {given['total_time_s']!r}",
                )
            given["total_time_s"] = given.pop("total_time")
        if wandb_run is not None:
            warnings.warn(
                "CheckpointManager.save_agent does not upload to wandb (ckptcompat has no "
                "remote storage); the checkpoint is saved locally and its file:// URI "
                "returned. Upload that file yourself, and pass wandb_run=None",
                UserWarning,
                stacklevel=2,
            )
        return super().save_agent(agent, epoch, given)

    @staticmethod
    def normalize_uri(uri: str) -> str:
        """#2366's URI spelling: a path becomes ``file://<absolute path>``; ``file://``,
        ``mock://`` and remote URIs are kept (remote ones are refused when loaded)."""
        _deprecated("CheckpointManager.normalize_uri", "ckptcompat.checkpoint.uri.file_uri")
        return _normalize(uri)

    @staticmethod
    def get_policy_metadata(uri: str) -> dict[str, Any]:
        """#2366's metadata of a policy URI: ``run_name``, ``epoch``, ``uri`` (normalized),
        ``original_uri``; for a checkpoint file, also ``agent_step``, ``total_time``
        (whole seconds) and ``score`` (0.0 when none was saved, as #2366's names had
        ``sc0``), read from index.json or a #2366 file name.

        Raises:
            InvalidArgumentError: a remote URI (wandb://, s3:// ...).
            CheckpointError: as :func:`ckptcompat.checkpoint.uri.key_and_version`.
        """
        _deprecated(
            "CheckpointManager.get_policy_metadata",
            "ckptcompat.checkpoint.uri.key_and_version(uri) and manager.list_checkpoints()",
        )
        normalized = _normalize(uri)
        run, epoch = key_and_version(normalized)
        metadata: dict[str, Any] = {
            "run_name": run,
            "epoch": epoch,
            "uri": normalized,
            "original_uri": uri,
        }
        resolved = resolve(normalized)
        name = None if resolved.path is None else parse_filename(resolved.path.name)
        if resolved.entry is not None:
            facts = (resolved.entry.agent_step, resolved.entry.total_time_s, resolved.entry.score)
        elif name is not None and name.kind == "g2_dunder":
            facts = (name.agent_step, name.total_time_s, name.score)
        else:
            return metadata
        step, seconds, score = facts
        metadata.update(agent_step=step, total_time=int(seconds or 0), score=score or 0.0)
        return metadata

    def select_checkpoints(
        self, strategy: Literal["latest", "all"] = "latest", count: int = 1, metric: str = "epoch"
    ) -> list[str]:
        """As :meth:`SimpleCheckpointManager.select_checkpoints`, except that ranking by
        ``"score"`` keeps checkpoints saved without a score, counted as 0 (#2366 wrote
        ``sc0`` into their names), so every checkpoint is listed as before.

        Raises:
            ValueError: unknown strategy or metric, count < 1.
        """
        if metric != "score":
            return super().select_checkpoints(strategy, count, metric)
        check_selection(strategy, count, metric)
        entries = sorted(
            self.list_checkpoints(), key=lambda e: (e.score or 0.0, e.epoch), reverse=True
        )
        return self._uris(entries[:count] if strategy == "latest" else entries)

    def save_trainer_state(
        self,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        agent_step: int,
        stopwatch_state: dict[str, Any] | None = None,
        scheduler: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """As :meth:`SimpleCheckpointManager.save_trainer_state`; ``stopwatch_state`` (a
        dict of primitives) is kept in ``extra`` and read back as
        ``load_trainer_state()["stopwatch_state"]``.

        Raises:
            CheckpointError: non-primitive state; and as SimpleCheckpointManager.
        """
        _deprecated(
            "CheckpointManager.save_trainer_state",
            "SimpleCheckpointManager.save_trainer_state(..., extra={'stopwatch_state': ...})",
        )
        merged = dict(extra or {})
        if stopwatch_state is not None:
            merged["stopwatch_state"] = stopwatch_state
        return super().save_trainer_state(
            optimizer, epoch, agent_step, scheduler=scheduler, extra=merged or None
        )

    def load_trainer_state(
        self,
        epoch: int | None = None,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        restore_rng: bool = True,
        verify: VerifyMode = DEFAULT_VERIFY,
    ) -> TrainerState | None:
        """As :meth:`SimpleCheckpointManager.load_trainer_state`: a TrainerState that reads
        as #2366's dict (``state["optimizer_state"]``, ``state["stopwatch_state"]``).

        With ``restore_rng`` (the default) it also restores torch's, numpy's and python's
        global RNGs, which #2366 never saved; pass ``restore_rng=False`` to leave them.
        """
        _deprecated(
            "CheckpointManager.load_trainer_state",
            "SimpleCheckpointManager.load_trainer_state() and its TrainerState attributes",
        )
        return super().load_trainer_state(
            epoch,
            optimizer=optimizer,
            scheduler=scheduler,
            restore_rng=restore_rng,
            verify=verify,
        )
