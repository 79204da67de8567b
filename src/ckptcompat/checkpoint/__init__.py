"""Checkpoint formats, on-disk layout, index, atomic writes, the manager, loading, migrate.

Submodules are imported on use: the doctor reads file names through :mod:`.layout`
(standard library only) on machines without torch, so this package must not import
torch-dependent modules eagerly. ``from ckptcompat.checkpoint import
SimpleCheckpointManager`` works through a lazy module ``__getattr__``. Static inspection
lives in :mod:`ckptcompat.scan`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ckptcompat.checkpoint.checkpoint_manager import CheckpointManager
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.checkpoint.trainer_state import TrainerState

__all__ = ["CheckpointManager", "SimpleCheckpointManager", "TrainerState"]


def __getattr__(name: str) -> Any:
    if name == "CheckpointManager":  # deprecated: #2366's spellings
        from ckptcompat.checkpoint.checkpoint_manager import CheckpointManager

        return CheckpointManager
    if name == "SimpleCheckpointManager":
        from ckptcompat.checkpoint.manager import SimpleCheckpointManager

        return SimpleCheckpointManager
    if name == "TrainerState":
        from ckptcompat.checkpoint.trainer_state import TrainerState

        return TrainerState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
