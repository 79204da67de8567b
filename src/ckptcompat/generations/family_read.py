"""What the readers of other libraries' files share: the result type, the inert rebuild
of a ``torch.save`` pickle, and the weights-only read of its tensors (issue 16).

:func:`read_pickled` scans a file (:func:`ckptcompat.scan.scan`, bounded, never unpickles)
and rebuilds its object pickle with inert placeholders
(:func:`ckptcompat.scan.inert_unpickler.inert_load`): plain data comes back as itself, so
hyperparameters and structure are read from it identically on every torch. The tensors come
from :func:`load_scanned` (:func:`~ckptcompat.generations.stand_ins.load_tensors`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from ckptcompat.errors import IncompatibleCheckpointError
from ckptcompat.generations.stand_ins import load_tensors
from ckptcompat.scan import scan
from ckptcompat.scan.archive_reader import ArchiveReader, BadZip
from ckptcompat.scan.inert_unpickler import inert_load
from ckptcompat.scan.limits import MAX_PICKLE_BYTES
from ckptcompat.scan.pickle_scan import scan_pickle
from ckptcompat.scan.scan_result import ScanResult

__all__ = [
    "MAX_JSON_BYTES",
    "FamilyRead",
    "Pickled",
    "count_or_none",
    "load_scanned",
    "read_pickled",
    "tensors_of",
]

#: The largest JSON part read (SB3's ``data``, Hugging Face's ``config.json``): a few kB
#: in practice.
MAX_JSON_BYTES = 16 << 20


@dataclass(frozen=True)
class FamilyRead:
    """What :func:`ckptcompat.generations.families.read_family` took from a file another
    library wrote.

    Attributes:
        family: ``"lightning"``, ``"sb3"`` or ``"hf_model"``.
        library: ``"Lightning"``, ``"stable-baselines3"``, ``"Hugging Face transformers"``.
        what: one phrase: what the file is (library version when it says).
        path: the file read.
        state_dict: the weights, name -> CPU tensor, as saved (no prefix stripped).
        hyperparameters: the JSON-primitive hyperparameters, by the file's own names.
        reported: pickled objects found and not run, ``"where: globals"`` each.
        left_behind: parts that are not weights or hyperparameters (trainer state).
        dropped: state_dict entries that are not tensors, ``"key: type"`` each.
        loader: ``"safe"``, ``"allowlist"`` (inert stand-ins) or ``"trusted"``.
        stand_ins: the globals read as inert stand-ins.
        epoch, agent_step: what the file says of training, None when it says nothing.
        run: a run name from the file's name (its folder for Hugging Face's fixed names).
    """

    family: str
    library: str
    what: str
    path: Path
    state_dict: dict[str, torch.Tensor]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    reported: tuple[str, ...] = ()
    left_behind: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    loader: str = "safe"
    stand_ins: tuple[str, ...] = ()
    epoch: int | None = None
    agent_step: int | None = None
    run: str | None = None


@dataclass(frozen=True)
class Pickled:
    """A ``torch.save`` zip: its scan and its object pickle rebuilt inertly.

    Attributes:
        path: the file.
        result: its static scan.
        root: the top-level object (plain data and inert placeholders); None when the
            pickle could not be rebuilt (truncated, malformed, past a limit).
    """

    path: Path
    result: ScanResult
    root: Any


def _data_pkl(reader: ArchiveReader, prefix: str | None) -> bytes | None:
    wanted = f"{prefix}/data.pkl" if prefix else "data.pkl"
    entry = next((e for e in reader.zip_entries() if e.name == wanted), None)
    if entry is None or entry.file_size > MAX_PICKLE_BYTES:
        return None
    return reader.read_entry(entry)


def read_pickled(path: Path, markers: tuple[bytes, ...] = ()) -> Pickled | None:
    """Scan ``path`` and rebuild its object pickle inertly; None when it is no ``torch.save``
    zip, goes past a scan limit, or (with ``markers``) its pickle holds none of them.

    Never raises for the file's content; OSError for the path itself propagates.
    """
    result = scan.scan(path)
    if result.kind != "zip" or "limit_exceeded" in result.codes():
        return None
    reader = ArchiveReader(path)
    try:
        data = _data_pkl(reader, result.prefix)
    except BadZip:
        data = None
    finally:
        reader.close()
    if data is None or (markers and not any(m in data for m in markers)):
        return None
    vetted = scan_pickle(data)  # the same bytes the inert pass reads: EXT, memo, depth
    if not vetted.completed or vetted.end is None:
        return Pickled(path, result, None)
    _rec, root, error = inert_load(data[vetted.start : vetted.end])
    return Pickled(path, result, None if error is not None else root)


def load_scanned(
    f: str | os.PathLike[str] | IO[bytes], result: ScanResult, trust: bool
) -> tuple[Any, str, tuple[str, ...]]:
    """:func:`~ckptcompat.generations.stand_ins.load_tensors` of ``f`` with what its scan
    ``result`` found (globals, SETITEM and APPEND targets)."""
    return load_tensors(
        f,
        result.globals,
        dict_like=result.setitem_targets,
        append_targets=result.append_targets,
        trust=trust,
    )


def tensors_of(obj: Any, where: str, path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The tensor entries of a loaded mapping, and the dropped ones (``"key: type"``).

    Raises:
        IncompatibleCheckpointError: ``obj`` is no mapping, or holds no tensor.
    """
    if not isinstance(obj, dict):  # OrderedDict too
        raise IncompatibleCheckpointError(
            f"the file's {where} is not a state_dict",
            path=path,
            expected="a mapping of parameter names to tensors",
            found=f"{type(obj).__module__}.{type(obj).__qualname__}",
            fix="run `ckptcompat doctor FILE` to see what it holds",
        )
    kept, dropped = {}, []
    for key, value in obj.items():
        if type(key) is str and isinstance(value, torch.Tensor):
            kept[key] = value
        else:
            dropped.append(f"{key!r}: {type(value).__qualname__}")
    if not kept:
        raise IncompatibleCheckpointError(
            f"the file's {where} holds no tensors",
            path=path,
            expected="a mapping of parameter names to tensors",
            found=f"{len(dropped)} entries, none a tensor",
            fix="run `ckptcompat doctor FILE` to see what it holds",
        )
    return kept, tuple(dropped)


def count_or_none(value: Any) -> int | None:
    """``value`` when it is an int >= 0 (an epoch, a step count), else None."""
    return value if type(value) is int and value >= 0 else None
