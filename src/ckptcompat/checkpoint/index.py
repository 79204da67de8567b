"""``checkpoints/index.json``: the run's record of complete checkpoints.

The index is the commit record of a run (docs/design.md section 4): a checkpoint exists for the
manager once, and only once, the index lists it. It is rewritten atomically *after* the
file it describes, so it never lists a missing or partial file; a file on disk that the
index does not list (a save interrupted between the rename and the index update) is
ignored, like a temp file. ``:latest`` resolves through it, and so do the manager's
ranking (:meth:`RunIndex.ranked`) and cleanup planning (:meth:`RunIndex.cleanup_plan`).
Standard library only.

Schema (``format_version`` 1)::

    {"format": "ckptcompat.index", "format_version": 1, "run": "<run>",
     "checkpoints":    [{"epoch", "agent_step", "score", "total_time_s", "created_at",
                         "file", "size_bytes", "digest"}, ...],   # ascending epoch
     "trainer_states": [{"epoch", "agent_step", "file", "size_bytes", "digest"}, ...],
     "dcp_checkpoints": [{"epoch", "agent_step", "dir", "world_size", "files",
                          "size_bytes"}, ...]}                  # only when a run wrote DCP

``dcp_checkpoints`` lists the ``torch.distributed.checkpoint`` directories of a distributed
run (``--checkpoint-format dcp``), each after every rank finished it; a run without DCP
writes no such key, so its index is byte for byte what it was before DCP existed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from ckptcompat.checkpoint.atomic import unusable_directory
from ckptcompat.checkpoint.layout import INDEX_FORMAT, INDEX_NAME
from ckptcompat.errors import CorruptCheckpointError, IncompatibleCheckpointError

__all__ = [
    "INDEX_FORMAT",
    "INDEX_VERSION",
    "RANK_METRICS",
    "CheckpointEntry",
    "CleanupPlan",
    "DcpEntry",
    "RunIndex",
    "TrainerEntry",
    "read_index",
]

INDEX_VERSION = 1
#: The checkpoint fields :meth:`RunIndex.ranked` ranks by.
RANK_METRICS = ("epoch", "agent_step", "score")


@dataclass(frozen=True)
class CheckpointEntry:
    """One complete agent checkpoint.

    Attributes:
        epoch: >= 0; agent_step: >= 0; score: float or None; total_time_s: seconds.
        created_at: ISO 8601 UTC. file: name inside ``checkpoints/``.
        size_bytes: file size in bytes. digest: ``"xxh3_128:<hex>"`` of the whole file.
    """

    epoch: int
    agent_step: int
    score: float | None
    total_time_s: float
    created_at: str
    file: str
    size_bytes: int
    digest: str


@dataclass(frozen=True)
class TrainerEntry:
    """One complete trainer state (same meanings as :class:`CheckpointEntry`)."""

    epoch: int
    agent_step: int
    file: str
    size_bytes: int
    digest: str


@dataclass(frozen=True)
class DcpEntry:
    """One complete DCP directory (all ranks' files and its ``.metadata``).

    Attributes:
        epoch, agent_step: as for :class:`CheckpointEntry`.
        dir: the directory's name inside ``checkpoints/`` (``<run>_v<epoch>.dcp``).
        world_size: how many ranks wrote it.
        files: the names of its files, sorted (``.metadata`` and ``__<rank>_<n>.distcp``).
        size_bytes: their total size in bytes (DCP's metadata locates every tensor; a
            digest of the whole directory would cost a second read of every rank's data).
    """

    epoch: int
    agent_step: int
    dir: str
    world_size: int
    files: tuple[str, ...]
    size_bytes: int


class CleanupPlan(NamedTuple):
    """What a cleanup deletes: agent checkpoints and trainer states, ascending by epoch."""

    checkpoints: list[CheckpointEntry]
    trainer_states: list[TrainerEntry]


@dataclass(frozen=True)
class RunIndex:
    """The parsed index; immutable, ``with_*``/``without`` return updated copies."""

    run: str
    checkpoints: tuple[CheckpointEntry, ...] = field(default=())
    trainer_states: tuple[TrainerEntry, ...] = field(default=())
    dcp_checkpoints: tuple[DcpEntry, ...] = field(default=())

    def dcp_checkpoint(self, epoch: int) -> DcpEntry | None:
        """The DCP entry of ``epoch``, or None when not indexed."""
        return next((e for e in self.dcp_checkpoints if e.epoch == epoch), None)

    def with_dcp_checkpoint(self, entry: DcpEntry) -> RunIndex:
        """A copy listing DCP ``entry`` (replacing any entry of the same epoch)."""
        kept = [e for e in self.dcp_checkpoints if e.epoch != entry.epoch]
        return replace(self, dcp_checkpoints=tuple(sorted([*kept, entry], key=_epoch)))

    def without_dcp(self, epochs: set[int] | frozenset[int]) -> RunIndex:
        """A copy without the DCP entries of ``epochs``."""
        return replace(
            self, dcp_checkpoints=tuple(e for e in self.dcp_checkpoints if e.epoch not in epochs)
        )

    def checkpoint(self, epoch: int) -> CheckpointEntry | None:
        """The entry of ``epoch`` (0 included), or None when not indexed."""
        return next((e for e in self.checkpoints if e.epoch == epoch), None)

    def trainer_state(self, epoch: int) -> TrainerEntry | None:
        """The trainer entry of ``epoch``, or None when not indexed."""
        return next((e for e in self.trainer_states if e.epoch == epoch), None)

    def latest_checkpoint(self) -> CheckpointEntry | None:
        """The highest-epoch checkpoint, or None when the run has none."""
        return self.checkpoints[-1] if self.checkpoints else None

    def latest_trainer_state(self) -> TrainerEntry | None:
        """The highest-epoch trainer state, or None when the run has none."""
        return self.trainer_states[-1] if self.trainer_states else None

    def ranked(self, metric: str) -> list[CheckpointEntry]:
        """Checkpoints with a ``metric`` value (one of :data:`RANK_METRICS`), best first.

        Descending by ``metric``; ties go to the later epoch; ``score=None`` is left out.
        """
        entries = [e for e in self.checkpoints if getattr(e, metric) is not None]
        entries.sort(key=lambda e: (getattr(e, metric), e.epoch), reverse=True)
        return entries

    def cleanup_plan(self, keep_last_n: int) -> CleanupPlan:
        """What keeping only the newest ``keep_last_n`` (>= 0) checkpoints deletes.

        Trainer states older than the oldest kept checkpoint go too (they cannot resume
        anything kept); ``keep_last_n=0`` deletes every checkpoint and trainer state.
        """
        kept = self.checkpoints[len(self.checkpoints) - keep_last_n :] if keep_last_n else ()
        gone = [e for e in self.checkpoints if e not in kept]
        if keep_last_n == 0:
            gone_trainer = list(self.trainer_states)
        elif kept:
            gone_trainer = [e for e in self.trainer_states if e.epoch < kept[0].epoch]
        else:
            gone_trainer = []
        return CleanupPlan(gone, gone_trainer)

    def with_checkpoint(self, entry: CheckpointEntry) -> RunIndex:
        """A copy listing ``entry`` (replacing any entry of the same epoch)."""
        kept = [e for e in self.checkpoints if e.epoch != entry.epoch]
        return replace(self, checkpoints=tuple(sorted([*kept, entry], key=_epoch)))

    def with_trainer_state(self, entry: TrainerEntry) -> RunIndex:
        """A copy listing trainer ``entry`` (replacing any entry of the same epoch)."""
        kept = [e for e in self.trainer_states if e.epoch != entry.epoch]
        return replace(self, trainer_states=tuple(sorted([*kept, entry], key=_epoch)))

    def without(
        self,
        *,
        checkpoints: set[int] | frozenset[int] = frozenset(),
        trainer_states: set[int] | frozenset[int] = frozenset(),
    ) -> RunIndex:
        """A copy without the given epochs of checkpoints and of trainer states."""
        return replace(
            self,
            checkpoints=tuple(e for e in self.checkpoints if e.epoch not in checkpoints),
            trainer_states=tuple(e for e in self.trainer_states if e.epoch not in trainer_states),
        )

    def to_json(self) -> bytes:
        """The index file's bytes (UTF-8 JSON, sorted keys, trailing newline)."""
        document = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "run": self.run,
            "checkpoints": [asdict(e) for e in self.checkpoints],
            "trainer_states": [asdict(e) for e in self.trainer_states],
        }
        if self.dcp_checkpoints:
            document["dcp_checkpoints"] = [
                {**asdict(e), "files": list(e.files)} for e in self.dcp_checkpoints
            ]
        return (json.dumps(document, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def _epoch(entry: CheckpointEntry | TrainerEntry | DcpEntry) -> int:
    return entry.epoch


_CHECKPOINT_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "agent_step": (int,),
    "score": (float, int, type(None)),
    "total_time_s": (float, int),
    "created_at": (str,),
    "file": (str,),
    "size_bytes": (int,),
    "digest": (str,),
}
_DCP_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "agent_step": (int,),
    "dir": (str,),
    "world_size": (int,),
    "files": (list,),
    "size_bytes": (int,),
}
_TRAINER_TYPES = {
    k: _CHECKPOINT_TYPES[k] for k in ("epoch", "agent_step", "file", "size_bytes", "digest")
}


def _corrupt(path: Path, found: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        "the run's index.json is malformed",
        path=path,
        expected=f"a {INDEX_FORMAT} document written by SimpleCheckpointManager",
        found=found,
        fix="restore index.json from a backup, or move it aside and load the checkpoint "
        "files by path (unverified: the index holds their sizes and digests)",
    )


def _entries(
    raw: Any, types: dict[str, tuple[type, ...]], path: Path, what: str
) -> list[dict[str, Any]]:
    if type(raw) is not list:
        raise _corrupt(path, f"{what} is a {type(raw).__qualname__}, not a list")
    out = []
    for item in raw:
        if type(item) is not dict or set(item) != set(types):
            raise _corrupt(path, f"a {what} entry {item!r:.120}")
        for key, allowed in types.items():
            if type(item[key]) not in allowed:
                raise _corrupt(path, f"{what} entry field {key}={item[key]!r}")
        if item["epoch"] < 0 or item["size_bytes"] < 0:
            raise _corrupt(path, f"a {what} entry with a negative epoch or size: {item!r:.120}")
        out.append(item)
    return out


def read_index(checkpoints_dir: str | os.PathLike[str], run: str | None) -> RunIndex:
    """Read ``<checkpoints_dir>/index.json``; an empty index when the file does not exist.

    Args:
        checkpoints_dir: the run's ``checkpoints/`` directory.
        run: the run the index must belong to; None accepts any (and names an empty
            index ``""``).

    Raises:
        CorruptCheckpointError: not JSON, or not the schema above, or written for
            another run than ``run``.
        InputError: ``checkpoints_dir`` runs through a file or cannot be read.
        IncompatibleCheckpointError: a newer index ``format_version``.
    """
    path = Path(checkpoints_dir) / INDEX_NAME
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return RunIndex(run="" if run is None else run)
    except (NotADirectoryError, PermissionError) as exc:
        # The run's folder is unusable (a path component is a file, or unreadable), which
        # says nothing about the index: an InputError naming the folder, not "malformed".
        raise unusable_directory(path.parent, exc) from exc
    except OSError as exc:  # a directory, or unreadable: never a raw OSError to callers
        raise _corrupt(path, f"an unreadable index ({type(exc).__name__}: {exc.strerror})") from exc
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"invalid JSON ({exc})") from exc
    if type(document) is not dict or document.get("format") != INDEX_FORMAT:
        raise _corrupt(path, f"{str(document)[:80]!r}")
    version = document.get("format_version")
    if type(version) is not int or version < 1:
        raise _corrupt(path, f"format_version={version!r}")
    if version > INDEX_VERSION:
        raise IncompatibleCheckpointError(
            f"index format_version {version} is newer than this ckptcompat supports "
            f"(<= {INDEX_VERSION})",
            path=path,
            fix="upgrade ckptcompat",
        )
    found_run = document.get("run")
    if type(found_run) is not str or (run is not None and found_run != run):
        raise _corrupt(path, f"run={found_run!r} where run={run!r} was expected")
    checkpoints = _entries(document.get("checkpoints"), _CHECKPOINT_TYPES, path, "checkpoints")
    trainers = _entries(document.get("trainer_states"), _TRAINER_TYPES, path, "trainer_states")
    dcps = _entries(document.get("dcp_checkpoints", []), _DCP_TYPES, path, "dcp_checkpoints")
    for item in dcps:
        if item["world_size"] < 1 or any(type(name) is not str for name in item["files"]):
            raise _corrupt(path, f"a dcp_checkpoints entry {item!r:.120}")
    return RunIndex(
        run=found_run,
        checkpoints=tuple(sorted((CheckpointEntry(**e) for e in checkpoints), key=_epoch)),
        trainer_states=tuple(sorted((TrainerEntry(**e) for e in trainers), key=_epoch)),
        dcp_checkpoints=tuple(
            sorted((DcpEntry(**{**e, "files": tuple(e["files"])}) for e in dcps), key=_epoch)
        ),
    )
