"""``migrate`` of a ``torch.distributed.checkpoint`` directory into one safe-format file.

Torch's own semantics first: ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save``
gathers every rank's tensors and pickled values into one nested state dict (``{"model":
{...}, "optim": {...}}`` for a directory the trainer wrote) in a single process, written with
``torch.save``; that file is read back through ``torch_compat.load`` (weights-only: it holds
only tensors and primitives). Then our format: ``model`` is loaded strictly into the agent
rebuilt from ``class_path`` + ``config`` -- given, or taken from the run's safe agent file of
the same epoch beside the directory (``<run>_v<E>.pt`` next to ``<run>_v<E>.dcp``) -- and
written as safe format v1. When that sibling exists, the migrated agent's outputs must equal
its outputs on the probe batch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from ckptcompat import torch_compat
from ckptcompat.agents.probe import probe_batch, run_probe
from ckptcompat.agents.registry import build_agent, class_path_of
from ckptcompat.checkpoint.dcp import dcp_files
from ckptcompat.checkpoint.layout import DCP_DIR_RE, agent_filename, is_dcp_dir
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.migrate import MigrationReport
from ckptcompat.checkpoint.saving import save_agent_file
from ckptcompat.checkpoint.uri import file_uri
from ckptcompat.errors import AgentMismatchError, CheckpointError

__all__ = ["is_dcp_dir", "migrate_dcp"]


def _state(directory: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ckptcompat-dcp-") as tmp:
        out = Path(tmp) / "state.pt"
        dcp_to_torch_save(directory, out)
        state = torch_compat.load(out)
    if type(state) is not dict or type(state.get("model")) is not dict:
        raise CheckpointError(
            "the DCP checkpoint holds no 'model' state dict",
            path=directory,
            expected="a DCP directory written by ckptcompat's trainer ({'model', 'optim'})",
            found=f"top-level keys {sorted(state)[:8] if type(state) is dict else type(state)}",
            fix="migrate it with dcp_to_torch_save and load the state dict yourself",
        )
    return state


def migrate_dcp(
    src: str | Path,
    dst: str | Path,
    *,
    run: str | None = None,
    epoch: int | None = None,
    class_path: str | None = None,
    config: dict[str, Any] | None = None,
) -> MigrationReport:
    """Convert the DCP directory ``src`` into a safe-format agent at ``dst``.

    Args:
        src: a DCP directory (``.metadata`` + ``__<rank>_<n>.distcp``).
        dst: a ``.pt`` path, or a data_dir (``<dst>/<run>/checkpoints/<run>_v<epoch>.pt``).
        run, epoch: default from the name ``<run>_v<epoch>.dcp``.
        class_path, config: default from the sibling safe agent file of the same epoch.

    Raises:
        CorruptCheckpointError: not a finished DCP directory.
        CheckpointError: run/epoch/agent unknown, or ``dst`` exists.
        AgentMismatchError: the state does not fit the agent, or the outputs differ from
            the sibling safe file's.
    """
    src = Path(src)
    dcp_files(src)
    name = DCP_DIR_RE.match(src.name)
    run = run or (name["run"] if name else None)
    epoch = epoch if epoch is not None else (int(name["epoch"]) if name else None)
    sibling_path = src.parent / agent_filename(run, epoch) if run and epoch is not None else None
    sibling: nn.Module | None = None
    if sibling_path is not None and sibling_path.is_file():
        sibling = SimpleCheckpointManager.load_from_uri(sibling_path)
        class_path = class_path or class_path_of(sibling)
        config = config or dict(sibling.config)  # type: ignore[arg-type]
    if run is None or epoch is None or class_path is None or config is None:
        raise CheckpointError(
            "cannot migrate the DCP directory: its run, epoch or agent is unknown",
            path=src,
            expected="a <run>_v<epoch>.dcp beside its <run>_v<epoch>.pt, or explicit values",
            found=f"run={run!r} epoch={epoch!r} class_path={class_path!r}",
            fix="pass --run, --epoch, --class-path and --config",
        )
    state = _state(src)
    agent = build_agent(class_path, config)
    try:
        agent.load_state_dict(state["model"], strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise AgentMismatchError(
            "the DCP model state does not fit the agent",
            path=src,
            expected=f"the keys and shapes of {class_path} with the given config",
            found=str(exc)[:300],
            fix="pass the class path and config the run trained with",
        ) from exc
    dst = Path(dst)
    if dst.suffix == ".pt":
        save_agent_file(agent, dst, run=run, epoch=epoch)
        written = dst
    else:
        written = Path(SimpleCheckpointManager(run, dst).save_agent(agent, epoch)[len("file://") :])
    equal = True
    if sibling is not None:
        obs, done = probe_batch(agent)
        ours, theirs = run_probe(agent, obs, done), run_probe(sibling, obs, done)
        equal = all(torch.equal(x, y) for x, y in zip(ours[:4], theirs[:4], strict=True))
        if not equal:
            written.unlink()
            raise AgentMismatchError(
                "the migrated DCP agent does not reproduce the safe file of the same epoch",
                path=src,
                expected="equal greedy outputs on the probe batch",
                found="different outputs; the new file was removed",
            )
    return MigrationReport(str(src), file_uri(written), "dcp", "safe", (), run, epoch, equal)
