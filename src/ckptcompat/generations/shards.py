"""Sharded safetensors checkpoints: ``*.safetensors.index.json`` and its shards, checked.

The index Hugging Face libraries write beside the shards (``model.safetensors.index.json``,
``diffusion_pytorch_model.safetensors.index.json``) is a JSON object
``{"metadata": {"total_size": <bytes>, ...}, "weight_map": {tensor_name: shard_file}}``;
each shard is a safetensors file in the same directory. This module reads the index
(bounded: :data:`MAX_INDEX_BYTES`, :data:`MAX_SHARDS`), reads every shard's header only
(:func:`~.safetensors_header.read_header`, duplicates kept last as safetensors does) and
reports what makes the set incomplete or ambiguous:

* a shard the index names that is missing, not a regular file, or unreadable;
* a tensor the index lists that is not in its shard's header (or is in another shard);
* a tensor in two shards' headers, or listed twice in the index with two shards;
* a tensor in a shard's header that the index does not list, and ``.safetensors`` files
  beside the index that it does not name;
* ``metadata.total_size`` unequal to the tensors' bytes (transformers writes the sum of
  the tensors' byte sizes).

A shard name that leaves the directory (absolute, ``..``, a backslash) is an
:class:`~ckptcompat.errors.UnsafeCheckpointError`: nothing outside is opened. Standard
library only.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    LimitExceededError,
    UnsafeCheckpointError,
)
from ckptcompat.generations.safetensors_header import SafetensorsHeader, read_header

__all__ = [
    "INDEX_SUFFIX",
    "MAX_INDEX_BYTES",
    "MAX_SHARDS",
    "ShardCheck",
    "ShardIndex",
    "check_index",
    "find_indexes",
    "read_index",
    "require_complete",
]

INDEX_SUFFIX = ".safetensors.index.json"
#: The largest index read, bytes (a 400-billion-parameter model's index is a few MB).
MAX_INDEX_BYTES = 64 * 2**20
#: The most shard files one index may name.
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class ShardIndex:
    """A read index.

    Attributes:
        path: the index file.
        metadata: its ``metadata`` object (``{}`` when absent).
        weight_map: tensor name -> shard file name (the last, for a name listed twice).
        listed_twice: ``(tensor, (shard, shard, ...))`` for names the JSON lists more than
            once with different shards.
    """

    path: str
    metadata: dict[str, Any]
    weight_map: dict[str, str]
    listed_twice: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def shards(self) -> tuple[str, ...]:
        """The shard file names, sorted."""
        return tuple(sorted(set(self.weight_map.values())))


def _corrupt(path: str, problem: str, found: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        problem,
        path=path,
        expected='{"metadata": {...}, "weight_map": {tensor_name: shard_file}}',
        found=found,
        fix="re-save the sharded checkpoint (save_pretrained writes the index and shards)",
    )


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _shard_name(name: str, index: str) -> str:
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or len(pure.parts) != 1:
        raise UnsafeCheckpointError(
            "the index names a shard outside its directory",
            path=index,
            expected="a file name beside the index, e.g. model-00001-of-00002.safetensors",
            found=repr(name[:120]),
            fix="nothing outside the directory was read; fix the weight_map",
        )
    return name


def read_index(path: str | os.PathLike[str]) -> ShardIndex:
    """Read and check a ``*.safetensors.index.json``.

    Raises:
        CheckpointNotFoundError: no regular file at ``path``.
        LimitExceededError: over :data:`MAX_INDEX_BYTES`, or over :data:`MAX_SHARDS` shards.
        CorruptCheckpointError: not JSON, not ``{"weight_map": {str: str}}``, a
            non-object ``metadata``.
        UnsafeCheckpointError: a shard name that leaves the directory.
    """
    name = os.fspath(path)
    if not _regular(name):
        raise CheckpointNotFoundError(
            "no index file here", path=name, found="not a regular file", fix="check the path"
        )
    size = os.path.getsize(name)
    if size > MAX_INDEX_BYTES:
        raise LimitExceededError(
            "the shard index is larger than this reader accepts",
            limit="max_index_bytes",
            path=name,
            expected=f"at most {MAX_INDEX_BYTES} bytes",
            found=f"{size} bytes",
        )
    with open(name, "rb") as f:
        raw = f.read(MAX_INDEX_BYTES + 1)
    repeats: dict[str, list[str]] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out and type(value) is str and type(out[key]) is str:
                repeats.setdefault(key, [out[key]]).append(value)
            out[key] = value
        return out

    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:
        raise _corrupt(name, "the shard index is not JSON", str(exc)[:160]) from exc
    weight_map = data.get("weight_map") if type(data) is dict else None
    metadata = data.get("metadata", {}) if type(data) is dict else None
    if type(weight_map) is not dict or type(metadata) not in (dict, type(None)):
        raise _corrupt(name, "the shard index is malformed", repr(data)[:160])
    bad = [k for k, v in weight_map.items() if type(v) is not str][:3]
    if bad:
        raise _corrupt(name, "the weight_map names a non-string shard", f"tensors {bad}")
    for shard in set(weight_map.values()):
        _shard_name(shard, name)
    if len(set(weight_map.values())) > MAX_SHARDS:
        raise LimitExceededError(
            "the shard index names more shards than this reader opens",
            limit="max_shards",
            path=name,
            expected=f"at most {MAX_SHARDS}",
            found=str(len(set(weight_map.values()))),
        )
    twice = tuple(
        (k, tuple(dict.fromkeys(v))) for k, v in sorted(repeats.items()) if len(set(v)) > 1
    )
    return ShardIndex(name, dict(metadata or {}), dict(weight_map), twice)


@dataclass(frozen=True)
class ShardCheck:
    """What :func:`check_index` found.

    Attributes:
        index: the read index.
        headers: shard name -> its checked header, for every shard read.
        errors: shard name -> ``"<ErrorType>: <message>"`` for a shard missing or refused.
        missing_tensors: ``(tensor, shard)``: listed in the index, not in that shard.
        in_two_shards: ``(tensor, shards)``: in several shards' headers, or listed twice.
        unlisted_tensors: ``(tensor, shard)``: in a shard's header, not in the index.
        unlisted_shards: ``.safetensors`` files beside the index that it does not name.
        total_size: ``(declared, actual)`` bytes when ``metadata.total_size`` differs from
            the sum of the read shards' tensor bytes; ``None`` when it agrees or is absent.
    """

    index: ShardIndex
    headers: dict[str, SafetensorsHeader]
    errors: dict[str, str]
    missing_tensors: tuple[tuple[str, str], ...] = ()
    in_two_shards: tuple[tuple[str, tuple[str, ...]], ...] = ()
    unlisted_tensors: tuple[tuple[str, str], ...] = ()
    unlisted_shards: tuple[str, ...] = ()
    total_size: tuple[int, int] | None = field(default=None)

    @property
    def problems(self) -> tuple[str, ...]:
        """One line per problem, shards first; empty for a complete, unambiguous set."""
        out = [f"shard {name}: {why}" for name, why in sorted(self.errors.items())]
        out += [f"tensor {t!r} listed in {s} is not in it" for t, s in self.missing_tensors]
        out += [f"tensor {t!r} is in several shards: {', '.join(s)}" for t, s in self.in_two_shards]
        out += [f"tensor {t!r} in {s} is not in the index" for t, s in self.unlisted_tensors]
        out += [f"{s} is beside the index but not named in it" for s in self.unlisted_shards]
        if self.total_size is not None:
            declared, actual = self.total_size
            out.append(f"metadata.total_size is {declared}, the shards' tensors hold {actual} B")
        return tuple(out)

    @property
    def complete(self) -> bool:
        """Every shard read, every tensor where the index says and nowhere else."""
        return not (self.errors or self.missing_tensors or self.in_two_shards)

    def combined(self) -> SafetensorsHeader:
        """One header of every read shard's tensors (for per-version predictions: the
        dtypes, empties and duplicate names of the whole set; offsets are per shard)."""
        tensors = tuple(t for h in self.headers.values() for t in h.tensors)
        dups = tuple(d for h in self.headers.values() for d in h.duplicates)
        size = sum(h.data_bytes for h in self.headers.values())
        return SafetensorsHeader(0, size, tensors, {}, dups)


def check_index(path: str | os.PathLike[str]) -> ShardCheck:
    """Read the index at ``path`` and every shard's header; report (see the module).

    Raises:
        CheckpointNotFoundError, LimitExceededError, CorruptCheckpointError,
        UnsafeCheckpointError: the index itself, as :func:`read_index`. A bad shard is
        reported in :attr:`ShardCheck.errors`, not raised.
    """
    index = read_index(path)
    directory = Path(index.path).parent
    headers: dict[str, SafetensorsHeader] = {}
    errors: dict[str, str] = {}
    for shard in index.shards:
        target = str(directory / shard)
        if not _regular(target):
            errors[shard] = "missing" if not os.path.lexists(target) else "not a regular file"
            continue
        try:
            headers[shard] = read_header(target, keep_last_duplicate=True)
        except (CheckpointError, OSError) as exc:
            errors[shard] = f"{type(exc).__name__}: {exc}"
    where: dict[str, list[str]] = {}
    for shard, header in headers.items():
        for entry in header.tensors:
            where.setdefault(entry.name, []).append(shard)
    missing = tuple(
        (t, s)
        for t, s in sorted(index.weight_map.items())
        if s in headers and s not in where.get(t, ())
    )
    twice = dict(index.listed_twice)
    twice.update({t: tuple(s) for t, s in where.items() if len(s) > 1})
    unlisted = tuple((t, s[0]) for t, s in sorted(where.items()) if t not in index.weight_map)
    named = set(index.shards)
    beside = sorted(
        p.name
        for p in directory.iterdir()
        if p.name.endswith(".safetensors") and p.name not in named
    )
    declared = index.metadata.get("total_size")
    actual = sum(h.data_bytes for h in headers.values())
    total = None
    if type(declared) is int and not errors and declared != actual:
        total = (declared, actual)
    return ShardCheck(
        index, headers, errors, missing, tuple(sorted(twice.items())), unlisted, tuple(beside),
        total,
    )  # fmt: skip


def require_complete(check: ShardCheck) -> None:
    """Raise unless :attr:`ShardCheck.complete`.

    Raises:
        CorruptCheckpointError: a shard missing or refused, a listed tensor absent from its
            shard, a tensor in two shards; the message lists the first problems.
    """
    if check.complete:
        return
    problems = check.problems
    raise CorruptCheckpointError(
        "the sharded checkpoint is incomplete or ambiguous",
        path=check.index.path,
        expected="every shard present and every tensor in exactly the shard the index names",
        found="; ".join(problems[:5])
        + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""),
        fix="re-download or re-save the missing shards; a partial copy cannot be repaired here",
    )


def find_indexes(directory: str | os.PathLike[str]) -> tuple[str, ...]:
    """The ``*.safetensors.index.json`` files directly in ``directory``, sorted."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    return tuple(
        os.path.join(directory, n) for n in names if n.endswith(INDEX_SUFFIX)
        and _regular(os.path.join(directory, n))
    )  # fmt: skip
