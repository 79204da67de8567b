"""The on-disk layout of a run (docs/design.md section 4), spelled here and nowhere else.

::

    data_dir/<run>/                      the run directory (run_dir)
        checkpoints/                     CHECKPOINTS_DIR (checkpoints_dir)
            <run>_v<epoch>.pt            agent, safe format v1 (agent_filename)
            <run>_v<epoch>.trainer.pt    trainer state (trainer_filename)
            <run>_v<epoch>.dcp/          a torch.distributed.checkpoint directory (dcp_dirname)
                .metadata                DCP_METADATA_NAME: DCP's pickled Metadata
                __<rank>_<n>.distcp      each rank's data file (DCP_DATA_RE)
            index.json                   INDEX_NAME: the committed checkpoints
            .lock                        LOCK_NAME: the writer lock (flock)
            .<name>.tmp-<pid>            temp file of an atomic write (temp_path)

File names carry no zero padding. Legacy names, read for migration only: G1
``model_<NNNN>.pt`` (in ``checkpoints/`` or directly in the run directory), G2
``<run>:v<E>.pt`` and ``<run>__e<E>__s<S>__t<T>__sc<SC>.pt``; :func:`parse_filename`
classifies every name. Standard library only (the doctor reads names without torch).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ckptcompat.errors import InvalidArgumentError

__all__ = [
    "AGENT_FILE_RE",
    "CHECKPOINTS_DIR",
    "DCP_DATA_RE",
    "DCP_DIR_RE",
    "DCP_METADATA_NAME",
    "INDEX_FORMAT",
    "INDEX_NAME",
    "LOCK_NAME",
    "RUN_NAME_RE",
    "TRAINER_FILE_RE",
    "CheckpointName",
    "NameKind",
    "agent_filename",
    "checkpoints_dir",
    "dcp_dirname",
    "is_dcp_dir",
    "is_temp_name",
    "parse_filename",
    "run_dir",
    "run_dir_of",
    "temp_path",
    "trainer_filename",
    "validate_run_name",
]

#: The directory inside a run directory that holds its checkpoints.
CHECKPOINTS_DIR = "checkpoints"
#: The run's index of complete checkpoints, inside ``checkpoints/``.
INDEX_NAME = "index.json"
#: The ``format`` field of that index (:mod:`ckptcompat.checkpoint.index`).
INDEX_FORMAT = "ckptcompat.index"
#: The writer lock's file name inside ``checkpoints/``.
LOCK_NAME = ".lock"

#: Run names this package writes: safe in paths, URIs, file names and SQL keys.
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Grammar of a safe-format agent checkpoint's file name.
AGENT_FILE_RE = re.compile(r"^(?P<run>[^/:]+)_v(?P<epoch>\d+)\.pt$")
#: Grammar of a trainer-state file name.
TRAINER_FILE_RE = re.compile(r"^(?P<run>[^/:]+)_v(?P<epoch>\d+)\.trainer\.pt$")
#: Grammar of a DCP checkpoint directory's name (written by a distributed run).
DCP_DIR_RE = re.compile(r"^(?P<run>[^/:]+)_v(?P<epoch>\d+)\.dcp$")
#: The file torch.distributed.checkpoint writes last, naming every tensor and its storage.
DCP_METADATA_NAME = ".metadata"
#: DCP's data files, one or more per rank (FileSystemWriter's ``__<rank>_<n>.distcp``).
DCP_DATA_RE = re.compile(r"^__(?P<rank>\d+)_(?P<n>\d+)\.distcp$")
_G1_RE = re.compile(r"^model_(?P<epoch>\d+)\.pt$")
_G2_COLON_RE = re.compile(r"^(?P<run>[^/:]+):v(?P<epoch>\d+)\.pt$")
_G2_DUNDER_RE = re.compile(
    r"^(?P<run>(?:(?!__)[^/:])+)__e(?P<epoch>\d+)__s(?P<s>\d+)__t(?P<t>\d+)__sc(?P<sc>-?\d+)\.pt$"
)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")

NameKind = Literal["agent", "trainer", "g1", "g2_colon", "g2_dunder"]


def validate_run_name(run: Any) -> str:
    """Return ``run`` if it matches :data:`RUN_NAME_RE`.

    Raises:
        InvalidArgumentError: otherwise (empty, ``/``, ``:``, spaces, a leading ``.`` ...);
            a CheckpointError and a ValueError.
    """
    if type(run) is not str or not RUN_NAME_RE.match(run):
        raise InvalidArgumentError(
            f"invalid run name {run!r}",
            expected="letters, digits, '.', '_' or '-', not starting with '.', '_' or '-'",
            found=repr(run),
            fix="rename the run, e.g. 'cartpole-ppo_seed1'",
        )
    return run


# --------------------------------------------------------------------------- directories
def run_dir(data_dir: str | os.PathLike[str], run: str) -> Path:
    """``data_dir/<run>``: the run directory."""
    return Path(data_dir) / run


def checkpoints_dir(data_dir: str | os.PathLike[str], run: str) -> Path:
    """``data_dir/<run>/checkpoints``: where the run's checkpoints, index and lock live."""
    return run_dir(data_dir, run) / CHECKPOINTS_DIR


def run_dir_of(path: str | os.PathLike[str]) -> Path:
    """The run directory of a checkpoint file, as given (not made absolute).

    ``<run>/checkpoints/<file>`` -> ``<run>``; a file directly in a directory (a G1
    ``<run>/model_<NNNN>.pt``) -> that directory.
    """
    parent = Path(path).parent
    return parent.parent if parent.name == CHECKPOINTS_DIR else parent


# --------------------------------------------------------------------------- file names
def agent_filename(run: str, epoch: int) -> str:
    """``<run>_v<epoch>.pt`` (no padding)."""
    return f"{run}_v{epoch}.pt"


def trainer_filename(run: str, epoch: int) -> str:
    """``<run>_v<epoch>.trainer.pt`` (no padding)."""
    return f"{run}_v{epoch}.trainer.pt"


def dcp_dirname(run: str, epoch: int) -> str:
    """``<run>_v<epoch>.dcp`` (no padding): the DCP directory of a distributed run's epoch."""
    return f"{run}_v{epoch}.dcp"


def temp_path(path: str | os.PathLike[str]) -> Path:
    """``<dir>/.<name>.tmp-<pid>``: the temp file an atomic write of ``path`` uses."""
    final = Path(path)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def is_dcp_dir(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding DCP's ``.metadata`` (a finished DCP checkpoint).

    The one spelling of the test: the doctor, ``migrate`` and ``migrate DIR`` each had
    their own. Reads no file (``stat`` only); a link to such a directory counts.
    """
    path = Path(path)
    return path.is_dir() and (path / DCP_METADATA_NAME).is_file()


def is_temp_name(name: str) -> bool:
    """True for a temp file name ``.<name>.tmp-<pid>`` (never a checkpoint)."""
    return _TEMP_RE.match(name) is not None


@dataclass(frozen=True)
class CheckpointName:
    """What a file name says. ``run`` is None for G1 (its run is the directory's name).

    Only #2366's ``<run>__e<E>__s<S>__t<T>__sc<SC>.pt`` names carry training facts:
    ``agent_step`` S, ``total_time_s`` T and ``score`` SC / 10000 (#2366 wrote
    ``int(score * 10000)``); other names leave them None.
    """

    kind: NameKind
    run: str | None
    epoch: int
    agent_step: int | None = None
    total_time_s: float | None = None
    score: float | None = None


def parse_filename(name: str) -> CheckpointName | None:
    """Classify a file name; None for temp files, ``index.json``, ``.lock`` and others."""
    if is_temp_name(name):
        return None
    for kind, pattern in (
        ("trainer", TRAINER_FILE_RE),
        ("agent", AGENT_FILE_RE),
        ("g1", _G1_RE),
        ("g2_colon", _G2_COLON_RE),
        ("g2_dunder", _G2_DUNDER_RE),
    ):
        match = pattern.match(name)
        if match is not None:
            run = match.groupdict().get("run")
            epoch = int(match.group("epoch"))
            if kind == "g2_dunder":
                return CheckpointName(
                    kind, run, epoch, int(match["s"]), float(match["t"]), int(match["sc"]) / 10000
                )
            return CheckpointName(kind, run, epoch)  # type: ignore[arg-type]
    return None
