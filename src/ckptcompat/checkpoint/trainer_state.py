"""A loaded trainer state, applied: optimizer, scheduler and RNG streams restored.

The manager finds and verifies the trainer file (:mod:`.loading`); this module validates
its payload's objects against what the caller passes and restores them, in this order and
only after the whole file validated: ``optimizer`` and ``scheduler`` (``load_state_dict``),
then torch's global CPU generator, numpy's global generator and python's ``random``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptcompat.checkpoint.rng import restore_rng_state
from ckptcompat.checkpoint.uri import file_uri
from ckptcompat.errors import AgentMismatchError

__all__ = ["TrainerState", "apply_trainer_state", "restore_state_dict"]


_FIELDS = ("epoch", "agent_step", "optimizer_state", "scheduler_state", "extra", "uri")


@dataclass(frozen=True)
class TrainerState:
    """A loaded trainer state (already applied to the objects passed to the loader).

    Also readable as the dict the #2366 ``load_trainer_state()`` returned:
    ``state["epoch"]``, ``state["optimizer_state"]``, ``"stopwatch_state" in state``,
    ``state.get("stopwatch_state")``. Keys: the attributes below, plus every key of
    ``extra`` (e.g. ``stopwatch_state``) that is not one of them.

    Attributes:
        epoch, agent_step: where training stood.
        optimizer_state: the optimizer's state_dict (tensors on CPU).
        scheduler_state: the scheduler's state_dict, or None when none was saved.
        extra: the primitives passed as ``extra`` when saving.
        uri: ``file://`` URI of the trainer file.
        rng_ranks: every rank's RNG streams (rank order) when a distributed run saved it,
            None when one process did (its streams are the one ``rng``).
    """

    epoch: int
    agent_step: int
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any] | None
    extra: dict[str, Any]
    uri: str
    rng_ranks: tuple[dict[str, Any], ...] | None = None

    def keys(self) -> list[str]:
        """The dict-style keys: the fields, then the keys of ``extra``."""
        return [*_FIELDS, *(k for k in self.extra if k not in _FIELDS)]

    def __getitem__(self, key: str) -> Any:
        """``state[key]`` as with the old dict.

        Raises:
            KeyError: not a field and not a key of ``extra``.
        """
        if key in _FIELDS:
            return getattr(self, key)
        if key in self.extra:
            return self.extra[key]
        raise KeyError(f"{key!r}; trainer-state keys: {self.keys()}")

    def __contains__(self, key: object) -> bool:
        return key in _FIELDS or key in self.extra

    def get(self, key: str, default: Any = None) -> Any:
        """``state[key]``, or ``default`` when absent."""
        try:
            return self[key]
        except KeyError:
            return default


def restore_state_dict(target: Any, state: dict[str, Any], what: str, path: Path) -> None:
    """``target.load_state_dict(state)`` for an optimizer or scheduler.

    Raises:
        AgentMismatchError: ``target`` does not match the saved state.
    """
    try:
        target.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise AgentMismatchError(
            f"the saved {what} state does not fit the {what} passed in",
            path=path,
            expected=f"a {type(target).__qualname__} over the same parameter groups",
            found=f"{type(exc).__name__}: {exc}",
            fix=f"build the {what} exactly as in the run that saved it",
        ) from exc


def apply_trainer_state(
    payload: dict[str, Any],
    path: Path,
    *,
    optimizer: Any = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> TrainerState:
    """Restore a validated trainer ``payload`` read from ``path``; return it as a TrainerState.

    Raises:
        AgentMismatchError: the optimizer/scheduler does not match the saved state
            (parameter groups, a scheduler given but none saved).
    """
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
        rng_ranks=tuple(payload["rng_ranks"]) if "rng_ranks" in payload else None,
    )
