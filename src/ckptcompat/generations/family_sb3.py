"""stable-baselines3's model archive, read without stable-baselines3 and without cloudpickle.

``BaseAlgorithm.save`` -> ``stable_baselines3/common/save_util.py: save_to_zip_file``
writes a plain zip (no ``data.pkl``: not a ``torch.save`` file) of ``data`` (JSON; every
value that is not JSON is ``{":type:", ":serialized:": base64(cloudpickle)}``, which
``PPO.load`` runs with ``cloudpickle.loads``), one ``torch.save`` member per state_dict
(``policy.pth``, ``policy.optimizer.pth``), ``pytorch_variables.pth``,
``_stable_baselines3_version`` and ``system_info.txt``. The weights are ``policy.pth``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import Any

from ckptcompat.errors import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    LimitExceededError,
)
from ckptcompat.generations.family_read import (
    MAX_JSON_BYTES,
    FamilyRead,
    count_or_none,
    load_scanned,
    tensors_of,
)
from ckptcompat.generations.family_values import MAX_DEPTH, is_kept, json_primitive
from ckptcompat.scan import scan
from ckptcompat.scan.archive_reader import ArchiveReader, BadZip, ZipEntry
from ckptcompat.scan.limits import MAX_COMPRESSION_RATIO, MAX_INFLATED_BYTES, limit_error
from ckptcompat.scan.pickle_scan import scan_pickle

__all__ = ["is_sb3", "read_sb3"]

_MAX_MEMBERS = 64  # an SB3 archive has about six
_SB3_MARKERS = ("_stable_baselines3_version", "policy.pth", "pytorch_variables.pth")


def is_sb3(path: Path) -> bool:
    """True for a zip with SB3's members (``data`` and a marker) and no ``data.pkl``
    (a ``torch.save`` zip); reads only the zip directory."""
    try:
        reader = ArchiveReader(path)
    except (BadZip, OSError, ValueError):
        return False
    try:
        names = [e.name for e in reader.zip_entries()]
    except BadZip:
        return False
    finally:
        reader.close()
    return (
        len(names) <= _MAX_MEMBERS
        and "data" in names
        and any(m in names for m in _SB3_MARKERS)
        and not any(n.endswith("data.pkl") for n in names)
    )


def _member(reader: ArchiveReader, entry: ZipEntry, path: Path) -> bytes:
    if entry.method == 8 and (
        entry.file_size > MAX_INFLATED_BYTES
        or entry.file_size > MAX_COMPRESSION_RATIO * max(entry.compress_size, 1)
    ):
        raise limit_error(
            "max_inflated_bytes",
            f"{entry.name} inflates to {entry.file_size} bytes from {entry.compress_size}",
            path=str(path),
        )
    try:
        return reader.read_entry(entry)
    except BadZip as exc:
        raise CorruptCheckpointError(
            "a member of the stable-baselines3 archive cannot be read",
            path=path,
            found=str(exc),
            fix="restore the file from its source",
        ) from exc


def _serialized(value: Any) -> bool:
    """True when ``value`` holds a ``:serialized:`` entry at any depth (iterative: the JSON
    may nest as deep as the parser allowed)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if ":serialized:" in item:
                return True
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def _cloudpickle_globals(entry: Any) -> str:
    blob = entry.get(":serialized:") if isinstance(entry, dict) else None
    try:
        raw = base64.b64decode(str(blob or ""), validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    names = list(scan_pickle(raw).globals[:4]) if raw else []
    kind = entry.get(":type:") if isinstance(entry, dict) else None
    return ", ".join(names) or str(kind or "unreadable")


def read_sb3(path: Path, trust: bool) -> FamilyRead:
    """The weights (``policy.pth``) and plain ``data`` entries of an SB3 archive; each
    ``:serialized:`` entry reported with the globals its cloudpickle names, never run.

    Raises:
        IncompatibleCheckpointError: no ``data`` or ``policy.pth`` member.
        CorruptCheckpointError, LimitExceededError: unreadable or oversized members, or
            ``data`` that is not a JSON object.
        UnsafeCheckpointError: ``policy.pth`` refused (see ``load_tensors``).
    """
    reader = ArchiveReader(path)
    try:
        entries = {e.name: e for e in reader.zip_entries()}
        missing = [n for n in ("data", "policy.pth") if n not in entries]
        if missing:
            raise IncompatibleCheckpointError(
                "the stable-baselines3 archive has no " + " and no ".join(missing),
                path=path,
                expected="the members BaseAlgorithm.save writes: data, policy.pth, ...",
                found=", ".join(sorted(entries)[:10]),
                fix="save the model again with model.save(PATH)",
            )
        if entries["data"].file_size > MAX_JSON_BYTES:
            raise LimitExceededError(
                f"the archive's 'data' member is over {MAX_JSON_BYTES} bytes",
                limit="max_json_bytes",
                path=path,
                found=f"{entries['data'].file_size} bytes",
                fix="do not load it: SB3's own 'data' is a few kB",
            )
        raw_data = _member(reader, entries["data"], path)
        policy = _member(reader, entries["policy.pth"], path)
        version = entries.get("_stable_baselines3_version")
        sb3_version = (
            _member(reader, version, path).decode("utf-8", "replace").strip()[:32]
            if version is not None and version.file_size < 64
            else "?"
        )
        left = tuple(n for n in entries if n.endswith(".pth") and n != "policy.pth")
    except BadZip as exc:
        raise CorruptCheckpointError(
            "the stable-baselines3 archive's zip directory cannot be read",
            path=path,
            found=str(exc),
            fix="restore the file from its source",
        ) from exc
    finally:
        reader.close()
    try:
        data = json.loads(raw_data)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(
            "the archive's 'data' member is not JSON",
            path=path,
            found=f"{type(exc).__name__}: {str(exc)[:200]}",
            fix="restore the file from its source",
        ) from exc
    if type(data) is not dict:
        raise CorruptCheckpointError(
            "the archive's 'data' member is not a JSON object",
            path=path,
            found=type(data).__name__,
            fix="restore the file from its source",
        )
    hparams = {}
    too_deep = []
    for key, value in data.items():
        converted = json_primitive(value)
        if _serialized(value):
            continue
        if is_kept(converted):
            hparams[key] = converted
        else:
            too_deep.append(f"data[{key!r}]: deeper than {MAX_DEPTH} levels or too large, not kept")
    reported = tuple(
        f"data[{k!r}]: cloudpickle of {_cloudpickle_globals(v)} (not run)"
        for k, v in data.items()
        if _serialized(v)
    ) + tuple(too_deep)
    member = io.BytesIO(policy)
    loaded, loader, stand_ins = load_scanned(member, scan.scan(member), trust)
    state_dict, dropped = tensors_of(loaded, "policy.pth", path)
    return FamilyRead(
        "sb3",
        "stable-baselines3",
        f"a stable-baselines3 model archive (BaseAlgorithm.save, sb3 {sb3_version})",
        path,
        state_dict,
        hparams,
        reported,
        left,
        dropped,
        loader,
        stand_ins,
        None,
        count_or_none(data.get("num_timesteps")),
        path.stem,
    )
