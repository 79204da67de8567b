"""Write a rebuilt agent in the safe format and prove the file reproduces it.

The last step of every migration: :mod:`ckptcompat.checkpoint.migrate` (G1, G2, bare
state_dicts), :mod:`ckptcompat.generations.migrate` (G3/G4) and
:mod:`ckptcompat.generations.family_migrate` (other libraries' files). A ``.pt``
destination is written standalone (:func:`~ckptcompat.checkpoint.saving.save_agent_file`),
any other is a data_dir written through
:class:`~ckptcompat.checkpoint.manager.SimpleCheckpointManager` (indexed). The file is read
back and its greedy outputs on the probe batch compared bitwise with the reference's (the
source's own agent when the source held one, else the rebuilt agent); a mismatch removes
the new file. Either way the write is atomic: nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckptcompat.agents.probe import probe_batch, run_probe
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.saving import save_agent_file
from ckptcompat.errors import AgentMismatchError, CheckpointError

__all__ = ["outputs_equal", "write_verified"]


def outputs_equal(a: nn.Module, b: nn.Module) -> bool:
    """True when ``a`` and ``b`` give bitwise-equal actions, logprobs, entropy and values
    on ``a``'s probe batch."""
    obs, done = probe_batch(a)
    out_a, out_b = run_probe(a, obs, done), run_probe(b, obs, done)
    return all(torch.equal(x, y) for x, y in zip(out_a[:4], out_b[:4], strict=True))


def write_verified(
    agent: nn.Module,
    dst: str | os.PathLike[str],
    *,
    run: str,
    epoch: int,
    facts: dict[str, Any],
    source: str | os.PathLike[str],
    reference: nn.Module | None = None,
) -> Path:
    """Write ``agent`` at ``dst`` (a ``.pt`` file, or a data_dir), read it back, compare.

    Args:
        agent: the rebuilt agent, weights loaded.
        dst: a ``.pt`` path, or a data_dir (``<dst>/<run>/checkpoints/<run>_v<epoch>.pt``).
        run, epoch: the destination's run name and epoch.
        facts: the metadata (``agent_step``, ``total_time_s``, ``score``, ``extra``).
        source: the migrated file (named in errors).
        reference: the agent whose probe outputs the file must reproduce (a whole pickled
            source agent, unpickled); None: ``agent`` itself.

    Returns the path written.

    Raises:
        CheckpointError: ``dst`` holds that file or epoch already (never overwritten).
        AgentMismatchError: the file read back gives other outputs (it was removed).
    """
    dst = Path(dst)
    if dst.suffix == ".pt":
        save_agent_file(agent, dst, run=run, epoch=epoch, metadata=facts)
        written = dst
    else:
        manager = SimpleCheckpointManager(run, dst)
        if any(e.epoch == epoch for e in manager.list_checkpoints()):
            raise CheckpointError(
                f"run {run!r} already has a checkpoint at epoch {epoch}; migrate never overwrites",
                path=manager.checkpoint_dir,
                fix="choose another data_dir, --run or --epoch",
            )
        written = Path(manager.save_agent(agent, epoch, facts).removeprefix("file://"))
    reloaded = SimpleCheckpointManager.load_from_uri(written)
    if not outputs_equal(reference if reference is not None else agent, reloaded):
        written.unlink()
        raise AgentMismatchError(
            "the migrated checkpoint does not reproduce the source's outputs",
            path=os.fspath(source),
            expected="bitwise-equal greedy outputs on the probe batch",
            found="different outputs; the new file was removed",
            fix="the agent's forward may depend on state outside its state_dict; report it",
        )
    return written
