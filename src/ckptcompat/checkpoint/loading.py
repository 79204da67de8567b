"""Loading side of the manager: verify a file against its index entry, rebuild the agent.

``verify=`` compares a file with its index entry: ``"full"`` the digest of the whole
file, ``"size"`` the size only, ``"none"`` neither. The default is ``"full"``: torch does
not check the zip's CRC-32s when loading (checked on 2.4 and 2.15), so a flipped bit
inside a tensor loads silently as a wrong weight, and only the digest catches it. The
digest detects corruption (truncation, bit rot, a bad copy), not tampering: anyone who
can write the file can rewrite index.json too.

``"full"`` does not hash in a pass of its own: the load reads through a
:class:`~ckptcompat.checkpoint.digest_reader.DigestingReader`, which hashes the bytes as
torch reads them into the tensors (about 3 ms per 100 MB; a separate pass cost 7 ms and
a second read of the file). So the weights-only unpickler runs before the digest is
known, exactly as with ``"size"`` (and after the static prescan torch_compat runs on
torch < 2.10); a digest that differs then discards the payload, and wins over any error
the load raised on the changed bytes. Loads never memory-map: an mmap'd agent would
keep a deleted checkpoint's disk space, see an in-place ``cp`` over its file and die of
SIGBUS if the file were truncated under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch import nn

from ckptcompat import torch_compat
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.digest_reader import DigestingReader
from ckptcompat.checkpoint.format import validate_agent_payload
from ckptcompat.checkpoint.index import CheckpointEntry, TrainerEntry
from ckptcompat.checkpoint.rebuild import Device, rebuild_agent
from ckptcompat.checkpoint.uri import check_name_agrees
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidArgumentError,
)

__all__ = [
    "DEFAULT_VERIFY",
    "VERIFY_MODES",
    "Device",
    "VerifyMode",
    "check_verify",
    "load_agent_file",
    "load_legacy_agent",
    "load_verified",
]

VerifyMode = Literal["full", "size", "none"]
#: See the module docstring for why the default hashes the whole file.
DEFAULT_VERIFY: VerifyMode = "full"
VERIFY_MODES: tuple[str, ...] = ("full", "size", "none")


def check_verify(verify: str) -> None:
    """Raise InvalidArgumentError (a ValueError) unless ``verify`` is in :data:`VERIFY_MODES`."""
    if verify not in VERIFY_MODES:
        raise InvalidArgumentError(
            f"verify must be one of {VERIFY_MODES}, not {verify!r}",
            fix="pass verify='full' (size and xxh3 digest), 'size' or 'none'",
        )


def _check_size(path: Path, entry: CheckpointEntry | TrainerEntry) -> None:
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


def _unreadable(path: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(
        "the checkpoint file cannot be read",
        path=path,
        expected="a readable file",
        found=f"{type(exc).__name__}: {exc.strerror or exc}",
        fix="fix the file's permissions, or load another epoch",
    )


def _check_digest(
    reader: DigestingReader, path: Path, entry: CheckpointEntry | TrainerEntry
) -> None:
    try:
        _, digest = reader.finish()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if digest != entry.digest:
        raise CorruptCheckpointError(
            "the checkpoint's digest differs from index.json",
            path=path,
            expected=entry.digest,
            found=f"{digest} (the bytes changed after saving)",
            fix="restore the file from a copy, or load another epoch",
        )


def load_verified(path: Path, entry: CheckpointEntry | TrainerEntry | None, verify: str) -> Any:
    """``torch_compat.load`` of ``path`` (to CPU), compared with its index entry first.

    With ``entry`` None (a file outside a managed run) nothing is compared with an index,
    and the load checks the zip's CRC-32s as torch reads the bytes instead
    (``torch_compat.load``); ``"size"`` and ``"none"`` opt out of checking the bytes. With
    ``"full"`` the digest is of the bytes the load read (see the module docstring); a
    digest that differs wins over any error the load raised on those bytes.

    Raises:
        InvalidArgumentError: (a ValueError) ``verify`` is not one of ``"full"``,
            ``"size"``, ``"none"``.
        CheckpointNotFoundError: the indexed file is gone.
        CorruptCheckpointError: its size or digest differs from the entry; and whatever
            ``torch_compat.load`` raises.
    """
    check_verify(verify)
    if entry is None:  # no digest to compare: the zip's CRC-32s, as torch reads the bytes
        return torch_compat.load(path, map_location="cpu")
    if verify == "none":  # the caller opted out of checking the bytes
        return torch_compat.load(path, map_location="cpu", check_crc=False)
    _check_size(path, entry)
    if verify == "size":
        return torch_compat.load(path, map_location="cpu", check_crc=False)
    try:
        reader = DigestingReader(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    with reader:
        try:
            # The digest covers every byte: the zip CRC-32s would be checked twice.
            payload = torch_compat.load(reader, map_location="cpu", check_crc=False)
        except CheckpointError as exc:
            _check_digest(reader, path, entry)  # a changed file explains the failure
            _name_path(exc, path)
            raise
        _check_digest(reader, path, entry)
    return payload


def _name_path(exc: CheckpointError, path: Path) -> None:
    """Make ``exc`` name ``path``: errors raised on a file object may not know it."""
    if exc.path is None:
        exc.path = str(path)
        exc.args = (f"{path}: {exc.args[0]}", *exc.args[1:]) if exc.args else exc.args


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
        InvalidArgumentError: ``device`` is not available here (``cuda`` on a CPU machine).
    """
    torch_compat.check_device(device)  # before reading: the rebuild would fail only at the end
    payload = validate_agent_payload(load_verified(path, entry, verify), path)
    meta = payload["metadata"]
    check_name_agrees(path, meta["run"], meta["epoch"])
    return rebuild_agent(payload, path, device)


def load_legacy_agent(path: Path, device: Device = "cpu") -> nn.Module:
    """Load the agent of a legacy file (G1 record, G2 whole agent) with the legacy reader.

    ``weights_only=True`` plus the curated allowlist (never ``weights_only=False``); a
    safe-format file that merely carries a legacy name is loaded as one.

    Raises:
        UnsafeCheckpointError: globals outside the allowlist (``.globals`` lists them).
        AgentMismatchError: the file holds weights (a state_dict) but no agent.
        CorruptCheckpointError, CheckpointNotFoundError, IncompatibleCheckpointError:
            as :func:`ckptcompat.checkpoint.legacy.read_checkpoint`.
    """
    torch_compat.check_device(device)
    ckpt = legacy.read_checkpoint(path, map_location="cpu")
    if ckpt.generation == "safe_v1":
        return load_agent_file(path, device, "none")
    if ckpt.agent is None:
        raise AgentMismatchError(
            "this file holds weights but no agent to load them into",
            path=path,
            expected="an agent checkpoint",
            found=f"a {ckpt.generation}",
            fix="migrate it with `ckptcompat migrate FILE DST --class-path ... --config ...`",
        )
    return ckpt.agent.to(device)
