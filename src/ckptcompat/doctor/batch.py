"""``ckptcompat doctor PATH...``: one summary line per checkpoint under several paths.

A team's store is a tree of runs, not one file. Each path is a checkpoint file, a
torch.distributed.checkpoint directory (a folder holding ``.metadata``) or a Metta G4
bundle directory (holding ``policy_spec.json``), each examined as one checkpoint, or a
directory searched recursively for all of them. ``.mpt`` and ``.zip`` files that are G3/G4
checkpoints get the generation's explanation (:mod:`ckptcompat.doctor.generations`);
safetensors files and ``*.safetensors.index.json`` shard indexes get
:mod:`ckptcompat.doctor.safetensors`'s summary (each shard its own line too). Every
other regular file found is diagnosed (:func:`ckptcompat.doctor.diagnose`), so a stray
``index.json`` or a web page saved as ``.pt`` gets its one-line answer too; the checkpoint
manager's own ``index.json`` (format ``ckptcompat.index``) is named as that. Symbolic
links inside directories are not followed (a link loop or a link to ``/dev/zero`` must not
hang the walk), and FIFOs, sockets and devices are skipped: opening them can block.

Output, in path order (sorted within each directory):

* text: ``PATH: <verdict line>`` (:func:`ckptcompat.doctor.summary.verdict_line`), or
  ``PATH: error: <Type>: <message>`` for a file that could not be read or a directory
  with nothing under it to examine;
* ``--json``: one JSON object per line, the single-file document with its ``file``, or
  ``{schema_version, file, error: {type, message}}``.

A closing count goes to stderr. Exit 0 when every file was read (whatever the verdicts),
2 when any could not be (docs/design.md section 8, exit codes). Standard library only,
like the rest of the doctor: nothing here imports torch or numpy.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptcompat.checkpoint.layout import INDEX_FORMAT, INDEX_NAME, LOCK_NAME, is_dcp_dir
from ckptcompat.errors import CheckpointError, CheckpointNotFoundError

__all__ = ["BatchLine", "checkpoint_paths", "examine", "run"]


def _is_bundle_dir(path: Path) -> bool:
    """A Metta G4 checkpoint bundle directory (issue 22): one checkpoint, not a tree."""
    from ckptcompat.generations.detect import SPEC_NAME

    return path.is_dir() and (path / SPEC_NAME).is_file()


def _is_generation(path: Path) -> bool:
    """A G3 ``.mpt`` or G4 bundle (a directory or a ``.zip``). Only those names are opened
    as zips here: a torch ``.pt`` is a zip too, and reading every file's zip directory
    twice would double the cost of a store of ordinary checkpoints."""
    if not (_is_bundle_dir(path) or path.suffix in (".mpt", ".zip")):
        return False
    from ckptcompat.generations.detect import generation_of

    return generation_of(path) is not None


def _is_safetensors_file(path: Path, size_bytes: int) -> bool:
    """A safetensors file or shard index (a regular file), by name or first bytes (issue 22)."""
    from ckptcompat.doctor.safetensors import is_safetensors_file

    return is_safetensors_file(path, size_bytes)


def _walk(root: Path) -> Iterator[Path]:
    """Regular files and DCP directories under ``root``, sorted, links not followed."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        yield root  # examine() reports why it cannot be read
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            yield path
            continue
        if stat.S_ISDIR(mode):
            if is_dcp_dir(path) or _is_bundle_dir(path):
                yield path
            else:
                yield from _walk(path)
        elif stat.S_ISREG(mode) and entry.name != LOCK_NAME:
            yield path  # not the manager's writer lock: an empty file, never a checkpoint


def checkpoint_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every checkpoint named by ``paths``, in order: files and DCP directories as given,
    other directories searched recursively (sorted by name; symlinks inside them, FIFOs,
    sockets and devices skipped). A path that does not exist, and a directory with nothing
    to examine under it, is yielded as it is, so that :func:`examine` reports it (a
    mistyped or empty store must not vanish from the output)."""
    for given in paths:
        path = Path(given)
        if path.is_dir() and not (is_dcp_dir(path) or _is_bundle_dir(path)):
            found = False
            for inner in _walk(path):
                found = True
                yield inner
            if not found:
                yield path
        else:
            yield path


@dataclass(frozen=True)
class BatchLine:
    """The doctor's answer for one path.

    Attributes:
        path: the file or DCP directory.
        summary: the one-line verdict; None when the path could not be read.
        document: the ``--json`` document (the single-file JSON, or the error JSON); None
            unless :func:`examine` was asked for it (building it is a third of the time).
        error: the typed error when the path could not be read, else None.
    """

    path: Path
    summary: str | None
    document: dict[str, Any] | None
    error: CheckpointError | None


def _dcp_summary(explanation: Any) -> str:
    by_outcome: dict[str, list[str]] = {}
    for prediction in explanation.predictions:
        by_outcome.setdefault(prediction.outcome, []).append(prediction.torch)
    spans = [
        f"{outcome} on {v[0] if len(v) == 1 else f'{v[0]}-{v[-1]}'}"
        for outcome, v in by_outcome.items()
    ]
    return f"DCP directory written by {explanation.written_by}; " + "; ".join(spans)


_MAX_INDEX_BYTES = 64 << 20
"""A manager's index past this size is not read as one (it lists ~200 bytes a checkpoint)."""


def _manager_index_summary(path: Path, size_bytes: int) -> str | None:
    """The line for :class:`~ckptcompat.checkpoint.manager.SimpleCheckpointManager`'s own
    ``index.json`` (format ``ckptcompat.index``), or None for any other file of that name.

    The doctor diagnosed it as "a text file, not a torch.save file: check that this is the
    file torch.save wrote", which read as a warning about the tool's own file (a new user's
    trial, 2026-12-07). Only a JSON object whose ``format`` is the manager's is named so;
    anything else (not JSON, too large, unreadable) goes to the diagnosis as before.
    """
    if size_bytes > _MAX_INDEX_BYTES:
        return None
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read(_MAX_INDEX_BYTES + 1))
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8/JSON, too deep
        return None
    if type(document) is not dict or document.get("format") != INDEX_FORMAT:
        return None
    listed = document.get("checkpoints")
    count = f"{len(listed)} checkpoint(s)" if type(listed) is list else "checkpoints"
    return (
        f"the checkpoint manager's index of run {str(document.get('run'))!r} ({count}), "
        "not a checkpoint: nothing to load"
    )


def examine(
    path: Path,
    *,
    read_data: bool = False,
    as_json: bool = False,
    python: str | None = None,
    numpy_major: int | None = None,
) -> BatchLine:
    """Diagnose one file or DCP directory; a typed error becomes a line, never a raise.

    Raises nothing for unreadable input: :class:`~ckptcompat.errors.CheckpointError` (and
    its subclasses, which every entry point of the doctor raises for bad files) is
    returned in :attr:`BatchLine.error`.
    """
    from ckptcompat import doctor

    # One stat for the tests below (a store has thousands of files; each test stats again).
    try:
        status = os.stat(path)
    except (OSError, ValueError):  # missing, unreadable, or a NUL in the name
        status = None
    is_dir = status is not None and stat.S_ISDIR(status.st_mode)
    is_file = status is not None and stat.S_ISREG(status.st_mode)
    size = status.st_size if status is not None else 0
    try:
        if (is_dir or path.suffix in (".mpt", ".zip")) and _is_generation(path):  # G3 / G4
            from ckptcompat.doctor import generations

            explained = generations.explain_generation(path)
            document = generations.to_json(explained) if as_json else None
            return BatchLine(path, generations.summary_line(explained), document, None)
        if is_dir and is_dcp_dir(path):
            from ckptcompat.doctor.dcp import explain_dcp, to_json

            explanation = explain_dcp(path)
            summary = _dcp_summary(explanation)
            document = None
            if as_json:  # the single-file keys first, as every other line has them
                document = {"schema_version": doctor.JSON_SCHEMA_VERSION, "file": str(path),
                            "summary": summary, **to_json(explanation)}  # fmt: skip
            return BatchLine(path, summary, document, None)
        if is_file and _is_safetensors_file(path, size):  # plain or index (issue 22)
            from ckptcompat.doctor import safetensors

            st = safetensors.explain(path)
            document = safetensors.to_json(st) if as_json else None
            return BatchLine(path, safetensors.summary_line(st), document, None)
        if is_dir:  # a directory with nothing to examine (checkpoint_paths yields it then)
            raise CheckpointNotFoundError(
                "no checkpoint under this directory",
                path=path,
                expected="checkpoint files, DCP directories or G4 bundles somewhere under it",
                found="no regular file (symbolic links, FIFOs, sockets and devices are "
                "skipped, and the run lock is not a checkpoint)",
                fix="check the path",
            )
        if not is_file:
            raise CheckpointNotFoundError(
                "no checkpoint file here",
                path=path,
                expected="a checkpoint file, a DCP directory or a directory of them",
                found="nothing" if not path.exists() else "not a regular file",
                fix="check the path",
            )
        if path.name == INDEX_NAME:
            summary = _manager_index_summary(path, size)
            if summary is not None:
                document = None
                if as_json:
                    document = {"schema_version": doctor.JSON_SCHEMA_VERSION, "file": str(path),
                                "summary": summary, "size_bytes": size, "kind": INDEX_FORMAT,
                                "generation": "other"}  # fmt: skip
                return BatchLine(path, summary, document, None)
        diag = doctor.diagnose(path, read_data=read_data, python=python, numpy_major=numpy_major)
    except CheckpointError as exc:
        return BatchLine(path, None, doctor.error_json(str(path), exc), exc)
    document = doctor.to_json(diag) if as_json else None
    return BatchLine(path, doctor.verdict_line(diag), document, None)


def run(
    paths: Iterable[str | os.PathLike[str]],
    *,
    as_json: bool = False,
    read_data: bool = False,
    python: str | None = None,
    numpy_major: int | None = None,
    out: Any = None,
    err: Any = None,
) -> int:
    """Print one line per checkpoint under ``paths`` (module docstring) and return the
    exit code: 0 when every path was read, 2 when any could not be (or none was found).
    ``python``: the loading environment's interpreter (``doctor --python``);
    ``numpy_major``: its numpy major (``doctor --numpy``; default both)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    from ckptcompat.doctor import write_escaped

    read = failed = 0
    for path in checkpoint_paths(paths):
        line = examine(
            path, read_data=read_data, as_json=as_json, python=python, numpy_major=numpy_major
        )
        if line.error is None:
            read += 1
        else:
            failed += 1
        if as_json:
            out.write(json.dumps(line.document) + "\n")  # ensure_ascii: always printable
        elif line.error is None:
            write_escaped(f"{path}: {line.summary}\n", out)
        else:
            write_escaped(f"{path}: error: {type(line.error).__name__}: {line.error}\n", out)
    if read + failed == 0:
        write_escaped("ckptcompat doctor: no checkpoint found under the paths given\n", err)
    else:
        noun = "path" if read + failed == 1 else "paths"
        write_escaped(
            f"ckptcompat doctor: {read + failed} {noun}: {read} read, {failed} could not be read\n",
            err,
        )
    return 0 if failed == 0 and read > 0 else 2
