"""Typed errors of ckptcompat (docs/design.md section 9).

Every failure a user can meet while saving, loading or inspecting a checkpoint is one of
these classes, never a bare ``pickle``/``zipfile``/``RuntimeError`` traceback and never a
silent ``None``. Each message says what was expected, what was found and what to do.
This module imports neither torch nor numpy: the doctor uses it on machines without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = [
    "AgentMismatchError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "IncompatibleCheckpointError",
    "InjectedFault",
    "InputError",
    "InvalidArgumentError",
    "LimitExceededError",
    "MissingDependencyError",
    "PolicyMissingError",
    "RunLockedError",
    "StatsDBError",
    "TaskQueueError",
    "TrustedLoadWarning",
    "UnsafeCheckpointError",
    "UnsupportedEnvError",
]


def _compose(problem: str, expected: str | None, found: str | None, fix: str | None) -> str:
    parts = [problem.rstrip(".")]
    if expected:
        parts.append(f"expected {expected}")
    if found:
        parts.append(f"found {found}")
    message = "; ".join(parts) + "."
    if fix:
        message += f" {fix[:1].upper()}{fix[1:].rstrip('.')}."
    return message


class CheckpointError(Exception):
    """Base class of every ckptcompat checkpoint failure.

    Args:
        problem: one sentence naming what went wrong.
        path: the file or directory concerned, if any.
        expected: what a good input looks like.
        found: what was actually there.
        fix: what the user should do.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike[str] | None = None,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = os.fspath(path) if path is not None else None
        self.expected = expected
        self.found = found
        self.fix = fix
        prefix = f"{self.path}: " if self.path else ""
        super().__init__(prefix + _compose(problem, expected, found, fix))


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint (file, epoch, run or URI) does not exist.

    Also a ``FileNotFoundError``: callers of the old API caught that for a missing
    checkpoint (the #2366 CheckpointManager raised it), and their ``except`` must still catch.
    """

    def __str__(self) -> str:
        # OSError.__str__ would format errno/strerror; the composed message is the text.
        return str(self.args[0]) if self.args else ""


class CorruptCheckpointError(CheckpointError):
    """The bytes are not a readable checkpoint: truncated, digest mismatch, LFS pointer, HTML."""


class UnsafeCheckpointError(CheckpointError):
    """Loading would need globals outside the allowlist; ``.globals`` lists every offender."""

    def __init__(self, problem: str, *, globals: Iterable[str] = (), **kwargs: object) -> None:
        self.globals: tuple[str, ...] = tuple(dict.fromkeys(globals))
        super().__init__(problem, **kwargs)  # type: ignore[arg-type]


class LimitExceededError(CorruptCheckpointError):
    """A file goes past one of :mod:`ckptcompat.scan.limits` (nesting depth, a declared
    length, a compressed record ...); ``.limit`` names the limit, e.g. ``"max_nesting_depth"``.

    Raised before the work the limit bounds is done: a hostile or damaged file gets this
    instead of a crash, a MemoryError or a hang.
    """

    def __init__(self, problem: str, *, limit: str, **kwargs: object) -> None:
        self.limit = limit
        super().__init__(problem, **kwargs)  # type: ignore[arg-type]


class IncompatibleCheckpointError(CheckpointError):
    """A valid checkpoint this ckptcompat or torch cannot read (newer format, unknown dtype)."""


class AgentMismatchError(CheckpointError):
    """The saved agent does not match the class, config, keys or shapes it is loaded into."""


class InvalidArgumentError(CheckpointError, ValueError):
    """An argument is malformed: a run name, an epoch, a URI scheme, a metadata key.

    Also a ``ValueError``: the old API raised ValueError for these, and old ``except
    ValueError`` clauses must keep catching.
    """


class RunLockedError(CheckpointError):
    """Another live process holds the run's writer lock."""


class InputError(CheckpointError):
    """An argument names something unusable (no such file, a bad value): nothing was checked.

    The command line exits 2 for it, not 1: the check never ran, so it did not fail.
    """


class MissingDependencyError(InputError):
    """A command needs a package this environment lacks (e.g. torch in a report-only venv)."""


class PolicyMissingError(CheckpointNotFoundError, ValueError):
    """No policy matched the deprecated PolicyStore's URI or selector (a ValueError, as the
    old store raised)."""


class StatsDBError(ValueError):
    """A stats-DB write or query was refused; the message says expected, found and the fix.

    A ``ValueError`` so that callers of the old API that caught ``ValueError`` still do.
    """

    def __init__(
        self,
        problem: str,
        *,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
        path: str | None = None,
    ) -> None:
        self.problem = problem
        self.expected = expected
        self.found = found
        self.fix = fix
        self.path = path
        super().__init__((f"{path}: " if path else "") + _compose(problem, expected, found, fix))


class TaskQueueError(RuntimeError):
    """The remote-evaluation task queue (PostgreSQL) refused or could not serve a request:
    an unreachable server, a worker started in another cell than its ``--cell``, a task id
    that does not exist. The message says expected, found and the fix.
    """

    def __init__(
        self,
        problem: str,
        *,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(_compose(problem, expected, found, fix))


class UnsupportedEnvError(KeyError):
    """The env id is not one of :data:`ckptcompat.rl.envs.ENV_SPECS`."""

    def __str__(self) -> str:
        return str(self.args[0])


class InjectedFault(RuntimeError):
    """A fault-injection point named by ``CKPTCOMPAT_FAULT`` fired (tests only)."""


class TrustedLoadWarning(UserWarning):
    """``torch.load(weights_only=False)`` is about to run; the file can execute code."""
