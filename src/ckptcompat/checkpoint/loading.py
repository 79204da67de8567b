"""Loading side of the manager: verify a file against its index entry, rebuild the agent.

``verify=`` compares a file with its index entry before loading: ``"full"`` hashes the
whole file, ``"size"`` compares the size only, ``"none"`` skips both. The default is
``"full"``: torch does not check the zip's CRC-32s when loading (checked on 2.4 and 2.15),
so a flipped bit inside a tensor loads silently as a wrong weight, and only the digest
catches it; xxh3 hashes at several GB/s, a small fraction of the load itself. The digest
detects corruption (truncation, bit rot, a bad copy), not tampering: anyone who can
write the file can rewrite index.json too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ckptcompat import torch_compat
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint.atomic import hash_file
from ckptcompat.checkpoint.format import validate_agent_payload
from ckptcompat.checkpoint.index import CheckpointEntry, TrainerEntry
from ckptcompat.checkpoint.uri import check_name_agrees
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
)

__all__ = [
    "DEFAULT_VERIFY",
    "VERIFY_MODES",
    "Device",
    "VerifyMode",
    "check_verify",
    "load_agent_file",
    "rebuild_agent",
    "restore_state_dict",
    "verify_file",
]

VerifyMode = Literal["full", "size", "none"]
#: See the module docstring for why the default hashes the whole file.
DEFAULT_VERIFY: VerifyMode = "full"
VERIFY_MODES: tuple[str, ...] = ("full", "size", "none")
Device = str | torch.device


def check_verify(verify: str) -> None:
    """Raise ValueError unless ``verify`` is one of :data:`VERIFY_MODES`."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")


def verify_file(path: Path, entry: CheckpointEntry | TrainerEntry, verify: str) -> None:
    """Compare ``path`` with its index entry (see the module docstring).

    Raises:
        ValueError: ``verify`` is not one of ``"full"``, ``"size"``, ``"none"``.
        CheckpointNotFoundError: the indexed file is gone.
        CorruptCheckpointError: its size or digest differs from the entry.
    """
    check_verify(verify)
    if verify == "none":
        return
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointNotFoundError(
            "index.json lists this checkpoint but the file is gone",
            path=path,
            expected=f"a file of {entry.size_bytes} bytes",
            found="no file",
            fix="restore the file, or load another epoch",
        ) from None
    if size != entry.size_bytes:
        raise CorruptCheckpointError(
            "the checkpoint's size differs from index.json",
            path=path,
            expected=f"{entry.size_bytes} bytes",
            found=f"{size} bytes (truncated or replaced)",
            fix="restore the file from a copy, or load another epoch",
        )
    if verify == "full":
        try:
            _, digest = hash_file(path)
        except OSError as exc:
            raise CheckpointError(
                "the checkpoint file cannot be read",
                path=path,
                expected="a readable file",
                found=f"{type(exc).__name__}: {exc.strerror or exc}",
                fix="fix the file's permissions, or load another epoch",
            ) from exc
        if digest != entry.digest:
            raise CorruptCheckpointError(
                "the checkpoint's digest differs from index.json",
                path=path,
                expected=entry.digest,
                found=f"{digest} (the bytes changed after saving)",
                fix="restore the file from a copy, or load another epoch",
            )


def rebuild_agent(payload: dict[str, Any], path: Path | None, device: Device = "cpu") -> nn.Module:
    """Build the saved class from its saved config, then ``load_state_dict(strict=True)``.

    Args:
        payload: a payload that passed ``validate_agent_payload``.
        path: the file, for messages.
        device: where the returned agent lives.

    Raises:
        AgentMismatchError: unknown class_path, a config the class rejects, missing or
            unexpected keys, other shapes or dtypes.
    """
    spec = payload["agent"]
    agent = build_agent(spec["class_path"], spec["config"])
    saved = payload["state_dict"]
    expected = agent.state_dict()
    wrong_dtype = [
        f"{name}: saved {value.dtype}, built {expected[name].dtype}"
        for name, value in saved.items()
        if isinstance(value, torch.Tensor)
        and isinstance(expected.get(name), torch.Tensor)
        and value.dtype != expected[name].dtype
    ]
    if wrong_dtype:
        # load_state_dict would cast silently (copy_); a dtype change means another agent.
        raise AgentMismatchError(
            f"saved tensors of {spec['class_path']} have other dtypes than the rebuilt agent",
            path=path,
            found="; ".join(wrong_dtype[:5]),
            fix="load with the code version that saved the checkpoint",
        )
    try:
        agent.load_state_dict(saved, strict=True)
    except RuntimeError as exc:
        raise AgentMismatchError(
            f"the saved state_dict does not fit {spec['class_path']} rebuilt from its config",
            path=path,
            expected="the same keys and shapes",
            found=" ".join(str(exc).split())[:600],
            fix="load with the code version that saved the checkpoint, or migrate it",
        ) from exc
    return agent.to(device)


def load_agent_file(
    path: Path,
    device: Device = "cpu",
    verify: VerifyMode = DEFAULT_VERIFY,
    entry: CheckpointEntry | None = None,
) -> nn.Module:
    """Load a safe-format agent file: verify (when ``entry`` is given), load, rebuild.

    Raises:
        CheckpointNotFoundError, CorruptCheckpointError, IncompatibleCheckpointError,
        UnsafeCheckpointError, AgentMismatchError: see ``SimpleCheckpointManager.load_agent``.
        CheckpointError: the file name disagrees with the payload's run or epoch.
    """
    check_verify(verify)
    if entry is not None:
        verify_file(path, entry, verify)
    payload = validate_agent_payload(torch_compat.load(path, map_location="cpu"), path)
    meta = payload["metadata"]
    check_name_agrees(path, meta["run"], meta["epoch"])
    return rebuild_agent(payload, path, device)


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
