"""``migrate`` of a G3 (``.mpt``) or G4 (bundle) checkpoint into the safe format, no code run.

The steps: :func:`~ckptcompat.generations.detect.open_generation` (bounded reads, the
architecture string parsed as data), the class chosen by
:func:`~ckptcompat.generations.architecture.resolve_class_path` (allowlist or
``--class-path``), the agent rebuilt with ``build_agent(class_path, config)`` where the
config is the architecture call's keyword arguments (or ``--config``), the weights read by
:func:`~ckptcompat.generations.tensors.load_safetensors` and loaded strictly, then written
with the checkpoint package's public writers and read back; the reloaded agent's greedy
outputs on the probe batch must equal the source agent's bitwise, else the file is removed.
A G4 ``trainer_state.pt`` is not migrated (it is a pickle: ``ckptcompat doctor`` explains it).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint.key_prefixes import load_error, strip_wrapper_prefix
from ckptcompat.checkpoint.migrate import MigrationReport
from ckptcompat.checkpoint.uri import file_uri
from ckptcompat.checkpoint.verified_write import write_verified
from ckptcompat.errors import (
    AgentMismatchError,
    InputError,
    UnsafeCheckpointError,
)
from ckptcompat.generations.architecture import resolve_class_path
from ckptcompat.generations.detect import GenerationSource, open_generation, run_and_epoch
from ckptcompat.generations.tensors import load_safetensors

__all__ = ["migrate_generation"]


def _agent(
    source: GenerationSource, class_path: str | None, config: dict[str, Any] | None
) -> tuple[nn.Module, str, str]:
    """The agent rebuilt and loaded strictly, its class path, and the wrapper prefix
    stripped from the weights' names to fit it (``""``: none)."""
    if source.call is not None:
        chosen = resolve_class_path(source.call, class_path, path=source.path)
        config = source.call.to_config() if config is None else config
    elif class_path is not None and config is not None:
        chosen = class_path
    else:
        raise UnsafeCheckpointError(
            "the architecture string was refused and no agent class and config were given",
            path=source.path,
            found=source.call_error,
            fix="nothing in it was run; pass --class-path and --config",
        )
    agent = build_agent(chosen, config)
    weights = load_safetensors(source.read_weights(), path=source.path, header=source.header)
    weights, prefix = strip_wrapper_prefix(weights, list(agent.state_dict()))
    try:
        agent.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise AgentMismatchError(
            "the safetensors weights do not fit the rebuilt agent",
            path=source.path,
            expected=f"the state_dict of {chosen} with this config",
            found=load_error(exc),
            fix="check --class-path and --config",
        ) from exc
    return agent, chosen, prefix


def migrate_generation(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    run: str | None = None,
    epoch: int | None = None,
    class_path: str | None = None,
    config: dict[str, Any] | None = None,
) -> MigrationReport:
    """Convert the G3/G4 checkpoint ``src`` into a safe-format agent at ``dst``.

    Args:
        src: an ``.mpt`` zip, or a G4 bundle (directory or zip).
        dst: a ``.pt`` path (standalone file) or a data_dir
            (``<dst>/<run>/checkpoints/<run>_v<epoch>.pt``, indexed).
        run, epoch: default from the name ``<run>:v<epoch>.mpt`` / ``<run>_v<epoch>``.
        class_path: the agent class to rebuild; required unless the architecture's name is on
            :data:`~ckptcompat.generations.architecture.ALLOWED_ARCHITECTURES`.
        config: the agent's config (default: the architecture call's keyword arguments).

    Returns:
        A :class:`~ckptcompat.checkpoint.migrate.MigrationReport` with ``generation``
        ``g3``/``g4``, ``loader="safe"`` (nothing unpickled) and ``outputs_equal``.

    Raises:
        CorruptCheckpointError, LimitExceededError, IncompatibleCheckpointError: an
            unreadable container or weights (see :func:`open_generation`).
        UnsafeCheckpointError: the architecture string is refused, or names a class off the
            allowlist without ``class_path``.
        AgentMismatchError: the agent cannot be rebuilt, the weights do not fit it, or the
            migrated file's outputs differ.
        CheckpointError: ``dst`` holds that checkpoint already. InputError: run/epoch
            unknown (the command line exits 2).
    """
    source = open_generation(src)
    named_run, named_epoch = run_and_epoch(src)
    run = run or named_run
    epoch = epoch if epoch is not None else named_epoch
    if not run or epoch is None:
        raise InputError(  # a missing argument: the command line exits 2
            "cannot tell the run name and epoch of this checkpoint",
            path=source.path,
            expected="a name like <run>:v<E>.mpt or <run>_v<E>",
            found=f"run={run!r}, epoch={epoch!r}",
            fix="pass --run and --epoch",
        )
    agent, chosen, prefix = _agent(source, class_path, config)
    architecture = source.call.name if source.call is not None else chosen
    facts = {"extra": {"migrated_from": source.generation, "architecture": architecture}}
    written = write_verified(agent, dst, run=run, epoch=epoch, facts=facts, source=source.path)
    return MigrationReport(
        source.path, file_uri(written), source.generation, "safe", (), run, epoch, True, prefix
    )
