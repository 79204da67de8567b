"""``torch.distributed.checkpoint`` (DCP) directories of a run: write and read them back.

A distributed run with ``--checkpoint-format dcp`` writes, besides rank 0's safe files, one
DCP directory per checkpoint epoch (``<run>_v<epoch>.dcp``, :mod:`.layout`): every rank
calls :func:`save_dcp` with its (DDP-wrapped or plain) module and optimizer, and
``torch.distributed.checkpoint.state_dict.get_state_dict`` turns them into state dicts
keyed by the *unwrapped* module's names (no ``module.`` prefix; the optimizer's state keyed
by parameter name rather than by index), which ``dcp.save`` writes as ``__<rank>_0.distcp``
files plus one ``.metadata``. :func:`load_dcp` is the inverse on any number of ranks: the
state dicts of the module and optimizer to be filled come from ``get_state_dict`` (for a
fresh optimizer it first takes one zero-gradient step at learning rate 0, which leaves
Adam's parameters unchanged), ``dcp.load`` fills them in place and ``set_state_dict``
applies them. A DDP run replicates every tensor, so loading on another world size is
only a question of which rank reads which bytes (DCP's planner decides).

Stored keys (flattened by DCP's planner): ``model.<name>`` and ``optim.state.<name>.<field>``
/ ``optim.param_groups...`` for tensors and for the pickled non-tensor values.

Torch versions (checked in cells 2.4.1, 2.5.1, 2.6.0 and 2.15.0): ``dcp.save``/``dcp.load``
without a process group warn that they assume a single process; 2.15 adds a ``no_dist``
argument but warns all the same, so a single process silences exactly that warning on every
version instead of branching. ``.metadata`` is a plain pickle (docs: torch_versions.md
section 10); the doctor reads it through the inert unpickler, never through this module.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ckptcompat.checkpoint.index import DcpEntry
from ckptcompat.checkpoint.layout import DCP_DATA_RE, DCP_METADATA_NAME, dcp_dirname
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
)

if TYPE_CHECKING:
    from ckptcompat.checkpoint.run_store import RunStore

__all__ = [
    "dcp_files",
    "load_dcp",
    "load_indexed",
    "process_rank",
    "save_dcp",
    "write_indexed",
]

_SINGLE_PROCESS_WARNING = r"torch\.distributed is .*assuming the intent is to (save|load)"


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silence DCP's "assuming a single process" warning when no process group exists."""
    if dist.is_available() and dist.is_initialized():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE_PROCESS_WARNING, category=UserWarning)
        yield


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """``dist.barrier()`` when a process group exists; nothing alone."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_dcp(module: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Write ``module``'s and ``optimizer``'s state as a DCP directory (a collective).

    Every rank of the default process group must call it with the same ``directory``;
    without a process group it writes alone. ``module`` may be DDP-wrapped: the keys are
    the inner module's. Overwrites files of the same names; callers unlist an indexed
    directory before writing it again.

    Raises:
        OSError: the directory cannot be written (torch raises it from the rank that failed).
    """
    model_state, optim_state = get_state_dict(module, optimizer)
    with _single_process_quiet(), warnings.catch_warnings():
        # 2.6's FileSystemWriter calls tensor.storage() itself, which warns that
        # TypedStorage is deprecated: torch's own call, nothing a caller can change.
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        dcp.save(
            {"model": model_state, "optim": optim_state},
            storage_writer=dcp.FileSystemWriter(os.fspath(directory)),
        )


def dcp_files(directory: Path) -> list[tuple[str, int]]:
    """``(name, size_bytes)`` of a finished DCP directory's files, sorted by name.

    Raises:
        CorruptCheckpointError: no ``.metadata`` (an unfinished or foreign directory), or
            a file DCP does not write.
    """
    names = sorted(p.name for p in directory.iterdir())
    foreign = [n for n in names if n != DCP_METADATA_NAME and not DCP_DATA_RE.match(n)]
    if DCP_METADATA_NAME not in names or foreign:
        raise CorruptCheckpointError(
            "not a finished torch.distributed.checkpoint directory",
            path=directory,
            expected=f"{DCP_METADATA_NAME} and __<rank>_<n>.distcp files only",
            found=f"files {names[:8]}",
            fix="write it again with --checkpoint-format dcp, or resume from the safe files",
        )
    return [(name, (directory / name).stat().st_size) for name in names]


def _cause(exc: BaseException) -> str:
    """One line for a refusal: a CheckpointException's text is every rank's traceback, whose
    last line says what failed (e.g. "RuntimeError: Missing key in checkpoint state_dict:
    optim.param_groups.0.decoupled_weight_decay", 2.15 reading a 2.4-2.6 Adam)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1].rstrip(".") if lines else type(exc).__name__)[:300]


def _flatten(value: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Tensors of a nested state dict under DCP's flattened keys (``a.b.0.c``)."""
    if isinstance(value, torch.Tensor):
        out[prefix] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}.{index}", out)


def _check_shapes(state: dict[str, Any], directory: Path) -> None:
    """Refuse a stored tensor whose shape differs from the one it would load into.

    torch 2.4.1's ``dcp.load`` does not check it (measured: a ``(8, 4)`` weight loads into
    a ``(4, 4)`` one without an error, reading whatever chunk overlaps); 2.5+ raise
    "Size mismatch between saved ... and current". Checked here on every version from
    DCP's own metadata reader, so the answer does not depend on the torch.
    """
    try:
        stored = dcp.FileSystemReader(os.fspath(directory)).read_metadata().state_dict_metadata
    # DCP unpickles .metadata into this torch's classes: a newer torch's fields do not fit
    # (measured: 2.15's TensorProperties carries strides, and 2.4-2.6 raise "ValueError: too
    # many values to unpack (expected 5)" from its __setstate__).
    except (ValueError, TypeError, AttributeError, EOFError, pickle.UnpicklingError) as exc:
        raise IncompatibleCheckpointError(
            "this torch cannot read the DCP checkpoint's .metadata",
            path=directory,
            expected=f".metadata in the layout torch {torch.__version__}'s DCP reads",
            found=f"{type(exc).__name__}: {_cause(exc)} (written by another torch version; "
            "`ckptcompat doctor DIR` says which)",
            fix="resume it with the torch that wrote it, or migrate it there to one safe file "
            "(`ckptcompat migrate DIR`) and resume from the safe files",
        ) from exc
    targets: dict[str, torch.Tensor] = {}
    _flatten(state, "", targets)
    for key, tensor in targets.items():
        size = getattr(stored.get(key), "size", None)
        if size is not None and tuple(size) != tuple(tensor.shape):
            raise AgentMismatchError(
                "the DCP checkpoint does not fit the agent and optimizer",
                path=directory,
                expected=f"{key} of shape {tuple(tensor.shape)}",
                found=f"{key} stored with shape {tuple(size)}",
                fix="resume with the trainer config the run was saved with",
            )


def load_dcp(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    directory: Path,
    expected: dict[str, Any] | None = None,
) -> None:
    """Fill ``module`` and ``optimizer`` from a DCP directory (a collective, any world size).

    Args:
        module: the agent (or its DDP wrapper), built with the saved class and config.
        optimizer: over ``module``'s parameters; may be fresh (no state yet), but its
            parameters' ``.grad`` must then be None (``get_state_dict``'s zero step).
        directory: a directory :func:`save_dcp` finished.
        expected: file names and sizes the index recorded (``{"files": [...],
            "size_bytes": int}``); checked before anything is read.

    Raises:
        CheckpointNotFoundError: no such directory.
        CorruptCheckpointError: files missing, foreign or of another total size.
        IncompatibleCheckpointError: this torch cannot read the ``.metadata`` (a newer
            torch's, e.g. 2.15's read by 2.4-2.6).
        AgentMismatchError: the stored keys/shapes do not fit ``module``/``optimizer``
            (torch's planner or ``load_state_dict`` refused them).
    """
    if not directory.is_dir():
        raise CheckpointNotFoundError(
            "the DCP checkpoint directory is missing",
            path=directory,
            expected="a directory written by save_dcp and listed in index.json",
            found="nothing",
            fix="resume from the safe files (--from safe) or restore the directory",
        )
    files = dcp_files(directory)
    if expected is not None:
        names = [n for n, _ in files]
        total = sum(size for _, size in files)
        if names != list(expected["files"]) or total != expected["size_bytes"]:
            raise CorruptCheckpointError(
                "the DCP directory is not what index.json recorded",
                path=directory,
                expected=f"files {list(expected['files'])} of {expected['size_bytes']} bytes",
                found=f"files {names} of {total} bytes",
                fix="restore the directory, or resume from the safe files (--from safe)",
            )
    model_state, optim_state = get_state_dict(module, optimizer)
    state = {"model": model_state, "optim": optim_state}
    _check_shapes(state, directory)
    try:
        with _single_process_quiet():
            dcp.load(state, storage_reader=dcp.FileSystemReader(os.fspath(directory)))
        set_state_dict(
            module,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
        )
    # dcp.load reports a rank's failure as a CheckpointException, a BaseException (all
    # cells), holding each rank's traceback; set_state_dict raises plain errors.
    except (dcp.CheckpointException, RuntimeError, KeyError, ValueError) as exc:
        raise AgentMismatchError(
            "the DCP checkpoint does not fit the agent and optimizer",
            path=directory,
            expected="the keys and shapes of the agent class and config that saved it",
            found=_cause(exc),
            fix="resume with the trainer config the run was saved with",
        ) from exc


def write_indexed(
    store: RunStore,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    agent_step: int,
) -> Path:
    """:meth:`SimpleCheckpointManager.save_dcp`'s flow (a collective; see there).

    Rank 0 unlists and clears the directory; every rank writes; rank 0 indexes it once
    DCP's ``.metadata`` and every rank's file exist. Returns the directory.
    """
    rank, world_size = process_rank()
    path = store.checkpoint_dir / dcp_dirname(store.run, epoch)
    if rank == 0:
        store.clear_dcp(epoch)
    barrier()
    save_dcp(module, optimizer, path)
    barrier()
    if rank == 0:
        files = dcp_files(path)
        entry = DcpEntry(
            epoch=epoch,
            agent_step=int(agent_step),
            dir=path.name,
            world_size=world_size,
            files=tuple(name for name, _ in files),
            size_bytes=sum(size for _, size in files),
        )
        store.index_dcp(entry)
    return path


def load_indexed(
    store: RunStore, module: nn.Module, optimizer: torch.optim.Optimizer, epoch: int
) -> DcpEntry:
    """:meth:`SimpleCheckpointManager.load_dcp`'s flow: the indexed entry, then :func:`load_dcp`.

    Raises:
        CheckpointNotFoundError: no DCP directory is indexed at ``epoch``.
    """
    index = store.index()
    entry = index.dcp_checkpoint(epoch)
    if entry is None:
        raise CheckpointNotFoundError(
            f"run {store.run!r} has no DCP checkpoint at epoch {epoch}",
            path=store.checkpoint_dir,
            expected="an epoch listed in index.json dcp_checkpoints",
            found=f"DCP epochs {[e.epoch for e in index.dcp_checkpoints]}",
            fix="train with --checkpoint-format dcp, or resume from the safe files",
        )
    expected = {"files": entry.files, "size_bytes": entry.size_bytes}
    load_dcp(module, optimizer, store.dcp_path(entry), expected)
    return entry
