"""Checkpoint URIs and the one key scheme (docs/design.md section 6).

File and directory names are :mod:`ckptcompat.checkpoint.layout`'s.

URIs understood by :func:`parse_uri`: ``file://PATH`` (the rest taken verbatim, not
percent-decoded), a bare path, a run directory (``data_dir/<run>`` or its
``checkpoints/``: its latest checkpoint), ``DIR/<run>:latest``, ``DIR/<run>:vN`` (epoch N
of that run, as ``ckptcompat run --uri`` takes it), and ``mock://KEY`` or
``mock://KEY:vN``. ``wandb://``, ``s3://``, ``gs://`` and ``http(s)://`` are refused with a
:class:`~ckptcompat.errors.CheckpointError` naming what is supported.

``policy_key`` / ``policy_version`` come only from :func:`key_and_version`. Epoch 0 is a
version everywhere; nothing here tests an epoch for truthiness.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ckptcompat.checkpoint.index import CheckpointEntry, read_index
from ckptcompat.checkpoint.layout import (
    CHECKPOINTS_DIR,
    INDEX_NAME,
    agent_filename,
    parse_filename,
    run_dir_of,
)
from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidArgumentError,
)

__all__ = [
    "SUPPORTED_URIS",
    "CheckpointURI",
    "ResolvedCheckpoint",
    "check_name_agrees",
    "file_uri",
    "key_and_version",
    "parse_uri",
    "resolve",
]

_MOCK_RE = re.compile(r"^mock://(?P<key>[^:/]+)(?::v(?P<version>\d+))?$")
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_LATEST = ":latest"
_RUN_VERSION_RE = re.compile(r"^(?P<run>[^/:]+):v(?P<epoch>\d+)$")

#: What :func:`parse_uri` accepts, for error messages.
SUPPORTED_URIS = (
    "file://PATH, a bare PATH, a run directory, DIR/<run>:latest, DIR/<run>:vN, mock://KEY[:vN]"
)


def file_uri(path: str | os.PathLike[str]) -> str:
    """``file://`` + the absolute path, not percent-encoded (what :func:`parse_uri` reads)."""
    return f"file://{Path(path).absolute()}"


# --------------------------------------------------------------------------- URIs
@dataclass(frozen=True)
class CheckpointURI:
    """A parsed URI.

    Attributes:
        uri: the text given.
        kind: ``"file"`` (``path`` is the file), ``"latest"`` (``path`` is a
            ``checkpoints/`` directory of run ``run``) or ``"mock"``.
        path: see ``kind``; None for mocks.
        run: the run (latest), or the mock key.
        version: the mock's ``:vN``, else None.
    """

    uri: str
    kind: Literal["file", "latest", "mock"]
    path: Path | None = None
    run: str | None = None
    version: int | None = None


def _unsupported(uri: str, found: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        "unsupported checkpoint URI",
        path=None,
        expected=SUPPORTED_URIS,
        found=found,
        fix="download the checkpoint (wandb://, s3://, gs://, http(s):// are not served "
        "by ckptcompat) and pass its local path",
    )


def _checkpoints_dir_of(directory: Path, uri: str) -> tuple[Path, str]:
    """(checkpoints dir, run) for a run directory or a ``checkpoints/`` directory."""
    if (directory / CHECKPOINTS_DIR).is_dir():
        return directory / CHECKPOINTS_DIR, directory.resolve().name
    if directory.resolve().name == CHECKPOINTS_DIR:
        return directory, directory.resolve().parent.name
    raise CheckpointNotFoundError(
        "this directory is not a run directory",
        path=directory,
        expected="data_dir/<run>/ containing checkpoints/, or that checkpoints/ directory",
        found="no checkpoints/ inside",
        fix=f"pass a checkpoint file or a run directory (URI {uri!r})",
    )


def _latest_dir(parent: Path, run: str, uri: str) -> Path:
    """The ``checkpoints/`` directory that ``<parent>/<run>:latest`` refers to."""
    here = parent.resolve()
    candidates = [parent / run / CHECKPOINTS_DIR]
    if here.name == run:
        candidates.append(parent / CHECKPOINTS_DIR)
    if here.name == CHECKPOINTS_DIR and here.parent.name == run:
        candidates.append(parent)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise CheckpointNotFoundError(
        f"no checkpoints of run {run!r} here",
        path=parent,
        expected="DIR/<run>:latest with DIR the data_dir, the run directory or its checkpoints/",
        found="none of " + ", ".join(str(c) for c in candidates),
        fix=f"check the run name and directory in {uri!r}",
    )


def _epoch_file(parent: Path, run: str, epoch: int, uri: str) -> Path:
    """The file that ``<parent>/<run>:v<epoch>`` refers to: ``<run>_v<epoch>.pt`` of the run."""
    folder = _latest_dir(parent, run, uri)
    path = folder / agent_filename(run, epoch)
    if path.is_file():
        return path
    names = [parse_filename(p.name) for p in folder.glob("*.pt")]
    epochs = sorted(n.epoch for n in names if n is not None and n.kind == "agent" and n.run == run)
    raise CheckpointNotFoundError(
        f"run {run!r} has no checkpoint at epoch {epoch}",
        path=folder,
        expected=f"{path.name} (URI {uri!r})",
        found=f"epochs {', '.join(map(str, epochs))}" if epochs else "no checkpoints",
        fix=f"pick one of those epochs, or use {run}:latest",
    )


def parse_uri(uri: str | os.PathLike[str]) -> CheckpointURI:
    """Classify ``uri`` (looks at the file system only to tell directories from files).

    Raises:
        InvalidArgumentError: an empty URI or an unsupported scheme (a ValueError too).
        CheckpointNotFoundError: a directory that is not a run directory; a ``:latest``
            whose run has no ``checkpoints/`` directory; a ``:vN`` with no such epoch.
    """
    text = os.fspath(uri)
    if not text:
        raise _unsupported(text, "an empty string")
    scheme = _SCHEME_RE.match(text)
    if scheme is not None:
        name = scheme.group("scheme").lower()
        if name == "mock":
            mock = _MOCK_RE.match(text)
            if mock is None:
                raise _unsupported(text, f"a malformed mock URI {text!r}")
            version = mock.group("version")
            return CheckpointURI(
                text,
                "mock",
                run=mock.group("key"),
                version=None if version is None else int(version),
            )
        if name != "file":
            raise _unsupported(text, f"the {name}:// scheme in {text!r}")
        text = text[len("file://") :]
        if not text:
            raise _unsupported(os.fspath(uri), "file:// without a path")
    path = Path(text)
    versioned = _RUN_VERSION_RE.match(path.name)
    if versioned is not None and not path.exists():
        run, epoch = versioned["run"], int(versioned["epoch"])
        return CheckpointURI(os.fspath(uri), "file", _epoch_file(path.parent, run, epoch, text))
    if path.name.endswith(_LATEST) and len(path.name) > len(_LATEST):
        run = path.name[: -len(_LATEST)]
        return CheckpointURI(os.fspath(uri), "latest", _latest_dir(path.parent, run, text), run)
    if path.is_dir():
        directory, run = _checkpoints_dir_of(path, os.fspath(uri))
        return CheckpointURI(os.fspath(uri), "latest", directory, run)
    return CheckpointURI(os.fspath(uri), "file", path)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A URI resolved to one concrete checkpoint.

    Attributes:
        uri: ``file://...`` of the concrete file, or the mock URI.
        path: the file; None for mocks.
        entry: the index entry describing the file (size, digest), when it has one.
        parsed: the parsed original URI.
    """

    uri: str
    path: Path | None
    entry: CheckpointEntry | None
    parsed: CheckpointURI


def _indexed_entry(path: Path) -> CheckpointEntry | None:
    """The index entry of a safe-format file sitting in a run's ``checkpoints/``."""
    name = parse_filename(path.name)
    if name is None or name.kind != "agent" or not (path.parent / INDEX_NAME).is_file():
        return None
    index = read_index(path.parent, None)
    entry = index.checkpoint(name.epoch)
    return (
        entry if index.run == name.run and entry is not None and entry.file == path.name else None
    )


def resolve(uri: str | os.PathLike[str]) -> ResolvedCheckpoint:
    """Resolve ``uri`` to one checkpoint file; ``:latest`` and directories via index.json.

    Raises:
        CheckpointError, CheckpointNotFoundError: see :func:`parse_uri`; a run whose index
            lists no checkpoint.
        CorruptCheckpointError: a malformed index.json.
    """
    parsed = parse_uri(uri)
    if parsed.kind == "mock":
        return ResolvedCheckpoint(parsed.uri, None, None, parsed)
    assert parsed.path is not None
    if parsed.kind == "file":
        return ResolvedCheckpoint(
            file_uri(parsed.path), parsed.path, _indexed_entry(parsed.path), parsed
        )
    run = parsed.run or ""
    entry = read_index(parsed.path, run).latest_checkpoint()
    if entry is not None and entry.file != agent_filename(run, entry.epoch):
        raise CorruptCheckpointError(
            "index.json names a file outside the key scheme",
            path=parsed.path / INDEX_NAME,
            expected=agent_filename(run, entry.epoch),
            found=entry.file,
            fix="restore index.json from a backup",
        )
    if entry is None:
        raise CheckpointNotFoundError(
            f"run {run!r} has no indexed checkpoint",
            path=parsed.path,
            expected="index.json listing at least one checkpoint",
            found="no index.json, or an empty one",
            fix="save a checkpoint first, or load a file by its path",
        )
    path = parsed.path / entry.file
    return ResolvedCheckpoint(file_uri(path), path, entry, parsed)


def check_name_agrees(path: str | os.PathLike[str], run: str, epoch: int) -> None:
    """Check a safe-format file's name against its payload's ``run`` and ``epoch``.

    Names that are not ``<run>_v<epoch>.pt`` are not checked (a file saved elsewhere).

    Raises:
        CheckpointError: the name says another run or epoch (a renamed file).
    """
    name = parse_filename(Path(path).name)
    if name is None or name.kind != "agent":
        return
    if (name.run, name.epoch) != (run, epoch):
        raise CheckpointError(
            "the file name disagrees with the checkpoint's metadata",
            path=path,
            expected=f"{agent_filename(run, epoch)} (run {run!r}, epoch {epoch} in the payload)",
            found=f"run {name.run!r}, epoch {name.epoch} in the file name",
            fix=f"rename the file back to {agent_filename(run, epoch)}",
        )


def key_and_version(uri: str | os.PathLike[str]) -> tuple[str, int]:
    """``(policy_key, policy_version)`` of a checkpoint: the run name and the epoch.

    * safe format: from the payload's metadata (read with ``mmap``, tensors untouched),
      which must agree with a ``<run>_v<epoch>.pt`` name (other names: the payload alone);
    * G1 ``model_NNNN.pt``: (the run directory's name, NNNN), unless it is a safe-format
      file (``PolicyStore.save`` to that name): then its payload's (run, epoch);
    * G2 ``<run>:v<E>.pt`` / ``<run>__e<E>__...pt``: (run, E), from the name alone;
    * a run directory or ``:latest``: resolved to its latest epoch first;
    * ``mock://KEY[:vN]``: (KEY, N), N = 0 when absent.

    Raises:
        CheckpointError: a trainer-state file; a renamed safe-format file.
        IncompatibleCheckpointError: a file in no grammar that is not a safe-format
            agent (never a guessed ``(stem, 0)``); plus whatever loading raises.
    """
    resolved = resolve(uri)
    parsed = resolved.parsed
    if parsed.kind == "mock":
        return parsed.run or "", 0 if parsed.version is None else parsed.version
    assert resolved.path is not None
    path = resolved.path
    name = parse_filename(path.name)
    if name is not None and name.kind == "trainer":
        raise CheckpointError(
            "a trainer state has no policy key and version",
            path=path,
            expected="an agent checkpoint <run>_v<epoch>.pt",
            found="a trainer state",
            fix="pass the agent checkpoint of the same epoch",
        )
    if name is None or name.kind == "agent":
        # Deferred: torch_compat imports torch, and this module must stay cheap to import.
        from ckptcompat import torch_compat
        from ckptcompat.checkpoint.format import validate_agent_payload

        # Any other name may still be a safe-format file (an exported copy): its payload
        # decides; a bare state_dict or legacy pickle fails with its own typed error.
        loaded = torch_compat.load(path, map_location="cpu", mmap=True)
        meta = validate_agent_payload(loaded, path)["metadata"]
        check_name_agrees(path, meta["run"], meta["epoch"])
        return meta["run"], meta["epoch"]
    if name.kind == "g1":
        saved = _safe_format_key(path)
        return saved if saved is not None else (run_dir_of(path.absolute()).name, name.epoch)
    return name.run or "", name.epoch


def _safe_format_key(path: Path) -> tuple[str, int] | None:
    """(run, epoch) of a safe-format agent saved under a G1 name, else None.

    ``PolicyStore.save(pr, ".../model_0005.pt")`` writes the safe format under the old
    name; its payload (``pr.run_name``, the record's epoch) is the key, not the directory.
    A real G1 pickle is refused by the weights-only load and keys by the name.
    """
    from ckptcompat import torch_compat
    from ckptcompat.checkpoint.format import AGENT_FORMAT, validate_agent_payload

    try:
        loaded = torch_compat.load(path, map_location="cpu", mmap=True)
    except CheckpointError:
        return None
    if not (isinstance(loaded, dict) and loaded.get("format") == AGENT_FORMAT):
        return None
    meta = validate_agent_payload(loaded, path)["metadata"]
    return meta["run"], meta["epoch"]
