"""Save side of the manager: argument checks and the one way a payload reaches the disk.

Every safe-format file is written by :func:`write_payload`: ``torch_compat.save`` into a
:class:`~ckptcompat.checkpoint.atomic.CountingWriter` (a file object, so the archive's
inner folder is ``archive/`` and the bytes do not depend on the temp file's name) inside
an atomic write. :func:`save_agent_file` writes one agent outside any managed run.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

from torch import nn

from ckptcompat import torch_compat
from ckptcompat.checkpoint.atomic import CountingWriter, WriteResult, make_dirs, write_atomic
from ckptcompat.checkpoint.format import build_agent_payload
from ckptcompat.errors import CheckpointError, InvalidArgumentError

__all__ = ["METADATA_KEYS", "check_epoch", "save_agent_file", "split_metadata", "write_payload"]

#: The keys ``metadata=`` of an agent save accepts.
METADATA_KEYS = ("agent_step", "total_time_s", "score", "extra")


def check_epoch(epoch: Any) -> int:
    """Return ``epoch`` as an int.

    Raises:
        InvalidArgumentError: not a non-negative int (a bool included); a ValueError too.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise InvalidArgumentError(
            "epoch must be a non-negative int",
            expected="an int >= 0 (0 is a valid epoch), or None for the latest",
            found=repr(epoch),
        )
    return int(epoch)


def split_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of ``build_agent_payload`` for ``metadata``, defaults filled.

    Raises:
        InvalidArgumentError: a key outside :data:`METADATA_KEYS`.
    """
    given = dict(metadata or {})
    unknown = sorted(set(given) - set(METADATA_KEYS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown checkpoint metadata keys {unknown}",
            expected=f"keys among {list(METADATA_KEYS)}",
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


def write_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> WriteResult:
    """``torch_compat.save`` of ``payload`` to ``path``, atomically (see :mod:`.atomic`)."""

    def save(writer: CountingWriter) -> None:
        torch_compat.save(payload, writer)  # type: ignore[arg-type]  # write/flush is enough

    return write_atomic(path, save)


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
        agent, run=run, epoch=check_epoch(epoch), **split_metadata(metadata)
    )
    make_dirs(path.parent)
    return write_payload(path, payload)
