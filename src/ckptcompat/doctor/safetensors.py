"""The doctor on plain safetensors files and sharded ``*.safetensors.index.json`` sets.

A ``.safetensors`` file (by name, or by its first bytes: a length prefix then ``{``) gets:
what it holds (tensors, dtypes, ``__metadata__``, ``save_model``'s shared-tensor aliases,
duplicate names), and per torch minor 2.4 ... 2.15 and per safetensors release
(:data:`ckptcompat.generations.safetensors_compat.RELEASES`) whether
``safetensors.torch.load_file`` and ``safetensors.torch.load(bytes)`` read it, and whether
ckptcompat's own reader does. A plain ``torch.load(PATH)`` fails on 2.4-2.6 (a safetensors
file is not a pickle or a torch zip; probed) and, from 2.13 (pytorch PR #170592; probed on
2.13.0 and 2.15.0, 2.7-2.12 not), hands a ``*.safetensors`` path to ``load_file``. An
index file, or a directory holding one, gets the completeness check of
:mod:`ckptcompat.generations.shards` and the same predictions over all shards. A hostile or
corrupt file raises the typed error of the header reader (the CLI exits 2 with it); nothing
here imports torch or safetensors.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

from ckptcompat import versions_facts
from ckptcompat.doctor.rules import MINORS
from ckptcompat.generations import safetensors_compat as compat
from ckptcompat.generations.safetensors_header import MAX_HEADER_BYTES, SafetensorsHeader
from ckptcompat.generations.safetensors_header import read_header as _read_header
from ckptcompat.generations.shards import INDEX_SUFFIX, ShardCheck, check_index, find_indexes

__all__ = [
    "SafetensorsExplanation",
    "explain",
    "is_safetensors",
    "is_safetensors_file",
    "readers_json",
    "render",
    "summary_line",
    "to_json",
]

#: torch minors probed to refuse a safetensors file in torch.load (issue 22).
_PROBED_REFUSING = ("2.4", "2.5", "2.6")


def _torch_load(minor: str, path: str) -> str:
    """A plain ``torch.load(PATH)`` on torch ``minor`` (``versions_facts``:
    ``torch_load_safetensors``)."""
    if versions_facts.holds("torch_load_safetensors", minor):
        if not path.endswith(".safetensors"):
            return "fails: not a torch.save file (torch hands only *.safetensors paths on)"
        return "reads via safetensors.torch.load_file when safetensors is installed"
    if minor in _PROBED_REFUSING:
        return "fails: UnpicklingError (not a torch.save file)"
    return "fails unless this release has pytorch PR #170592 (not probed; 2.13 has it)"


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """A ``.safetensors`` file, an index file, a directory holding an index, or a regular
    file whose first bytes look like safetensors (a length prefix within the file and the
    limit, then ``{``). Reads at most 16 bytes; never opens a FIFO or device."""
    name = os.fspath(path)
    if os.path.isdir(name):
        return bool(find_indexes(name))
    if not os.path.isfile(name):
        return False
    try:
        size = os.path.getsize(name)
    except OSError:
        return False
    return is_safetensors_file(name, size)


def is_safetensors_file(path: str | os.PathLike[str], size_bytes: int) -> bool:
    """:func:`is_safetensors` for ``path`` already known to be a regular file of
    ``size_bytes`` bytes (``doctor DIR`` stats each file once): by name, else by its first
    16 bytes."""
    name = os.fspath(path)
    if name.endswith((".safetensors", INDEX_SUFFIX)):
        return True
    size = size_bytes
    try:
        with open(name, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (length,) = struct.unpack_from("<Q", head)
    return 2 <= length <= min(MAX_HEADER_BYTES, size - 8) and head[8:].lstrip(b" ")[:1] == b"{"


@dataclass(frozen=True)
class Cell:
    """One torch minor: ckptcompat's reader and each safetensors release's two readers."""

    torch: str
    ckptcompat: str
    readings: tuple[compat.Reading, ...]
    torch_load: str = ""


@dataclass(frozen=True)
class SafetensorsExplanation:
    """What :func:`explain` found.

    Attributes:
        path: the file, index or directory explained.
        header: the file's header, or all shards' tensors for an index
            (:meth:`~ckptcompat.generations.shards.ShardCheck.combined`).
        shards: the index check, ``None`` for a single file.
        load_file_since: the first safetensors whose ``load_file`` knows every dtype.
        cells: one per torch minor, 2.4 first.
    """

    path: str
    header: SafetensorsHeader
    shards: ShardCheck | None
    load_file_since: str | None
    cells: tuple[Cell, ...]


def _cells(
    header: SafetensorsHeader, shards: ShardCheck | None, path: str = ""
) -> tuple[Cell, ...]:
    readings = compat.predict(header, MINORS)
    incomplete = shards is not None and not shards.complete
    out = []
    for minor in MINORS:
        own = compat.ckptcompat_reads(header, minor, MINORS)
        rows = tuple(r for r in readings if r.torch == minor)
        if incomplete:
            why = "fails: the sharded set is incomplete (see problems)"
            own = why
            rows = tuple(compat.Reading(r.torch, r.safetensors, why, why) for r in rows)
        plain = _torch_load(minor, path) if path else ""
        out.append(Cell(minor, own, rows, plain))
    return tuple(out)


def explain(path: str | os.PathLike[str]) -> SafetensorsExplanation:
    """Explain a safetensors file, an index file, or a directory holding one index.

    Raises:
        CheckpointNotFoundError: nothing readable at ``path``.
        CorruptCheckpointError, LimitExceededError, IncompatibleCheckpointError: the file's
            header (:func:`~ckptcompat.generations.safetensors_header.parse_header`) or the
            index (:func:`~ckptcompat.generations.shards.read_index`); several indexes in
            one directory.
        UnsafeCheckpointError: an index naming a shard outside its directory.
    """
    from ckptcompat.errors import CorruptCheckpointError

    name = os.fspath(path)
    index = name if name.endswith(INDEX_SUFFIX) else None
    if os.path.isdir(name):
        found = find_indexes(name)
        if len(found) != 1:
            raise CorruptCheckpointError(
                "not one sharded safetensors checkpoint",
                path=name,
                expected=f"exactly one *{INDEX_SUFFIX} in the directory",
                found=f"{len(found)}: {[os.path.basename(f) for f in found][:4]}",
                fix="pass the index file itself",
            )
        index = found[0]
    if index is not None:
        shards = check_index(index)
        header = shards.combined()
        return SafetensorsExplanation(
            index, header, shards, compat.load_file_since(header), _cells(header, shards, index)
        )
    header = _read_header(name, keep_last_duplicate=True)
    return SafetensorsExplanation(
        name, header, None, compat.load_file_since(header), _cells(header, None, name)
    )


def _spans(values: list[tuple[str, Any]]) -> list[tuple[str, str, Any]]:
    """Consecutive equal values -> ``(first key, last key, value)``."""
    out: list[tuple[str, str, Any]] = []
    for key, value in values:
        if out and out[-1][2] == value:
            out[-1] = (out[-1][0], key, value)
        else:
            out.append((key, key, value))
    return out


def _release_label(first: str, last: str) -> str:
    end = compat.release_span(last)
    start = compat.release_span(first).split("-")[0].rstrip("+")
    return end if first == last else f"{start}-{end.split('-')[-1]}"


def _torch_label(first: str, last: str) -> str:
    return first if first == last else f"{first}-{last}"


def render(exp: SafetensorsExplanation) -> str:
    """The text report: contents, findings, then readers per torch range and release."""
    h = exp.header
    lines = [f"ckptcompat doctor: {exp.path}"]
    if exp.shards is None:
        lines.append(
            f"  what         safetensors file: {len(h.tensors)} tensors, {h.data_bytes} data "
            f"bytes, a {h.header_bytes}-byte header"
        )
    else:
        s = exp.shards
        lines.append(
            f"  what         sharded safetensors index: {len(s.index.shards)} shards, "
            f"{len(s.index.weight_map)} tensors listed, {h.data_bytes} data bytes read"
        )
        state = "complete" if s.complete else "INCOMPLETE"
        lines.append(f"  shards       {state}; " + "; ".join(s.problems[:10] or ("no problems",)))
    lines.append(f"  dtypes       {', '.join(h.dtypes) or '(none)'}")
    if h.metadata:
        shown = ", ".join(f"{k}={v[:40]}" for k, v in list(h.metadata.items())[:6])
        lines.append(f"  metadata     {shown}")
    if h.aliases:
        pairs = ", ".join(f"{k} -> {v}" for k, v in list(h.aliases.items())[:6])
        lines.append(
            f"  shared       {pairs}: save_model dropped tensors that shared storage; "
            "load_file returns only the kept names (safetensors.torch.load_model restores them)"
        )
    if h.duplicates:
        lines.append(
            f"  duplicates   {', '.join(repr(d[:40]) for d in h.duplicates[:6])}: every "
            "safetensors release keeps the last silently; ckptcompat refuses them"
        )
    since = exp.load_file_since
    lines.append(
        "  safetensors  "
        + (f"load_file knows its dtypes from {since}" if since else "no release builds a dtype")
    )
    lines.append(
        "  readers      per torch range: torch.load(PATH); ckptcompat; "
        "safetensors load_file | load(bytes)"
    )
    cells = [(c.torch, (c.torch_load, c.ckptcompat, _rows(c))) for c in exp.cells]
    for first, last, (plain, own, rows) in _spans(cells):
        lines.append(f"    {_torch_label(first, last):<9} torch.load {plain}")
        lines.append(f"    {'':<9} ckptcompat {own}")
        for r_first, r_last, (lf, lb) in rows:
            lines.append(f"      safetensors {_release_label(r_first, r_last):<12} {lf} | {lb}")
    # Names come from the file: a JSON escape can spell a lone surrogate, which no stream
    # encodes; show it escaped rather than fail the print.
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace").decode("utf-8")


def _rows(cell: Cell) -> tuple[tuple[str, str, tuple[str, str]], ...]:
    return tuple(_spans([(r.safetensors, (r.load_file, r.load_bytes)) for r in cell.readings]))


def summary_line(exp: SafetensorsExplanation) -> str:
    """One line for ``doctor PATH...``: what it is and where it reads."""
    h = exp.header
    what = (
        f"safetensors file, {len(h.tensors)} tensors"
        if exp.shards is None
        else f"sharded safetensors ({len(exp.shards.index.shards)} shards, "
        + ("complete" if exp.shards.complete else "INCOMPLETE: " + exp.shards.problems[0])
        + ")"
    )
    own = _spans([(c.torch, c.ckptcompat.split(" (")[0]) for c in exp.cells])
    spans = [f"ckptcompat {v} on {_torch_label(a, b)}" for a, b, v in own]
    since = exp.load_file_since
    lf = f"load_file from safetensors {since}" if since else "no safetensors load_file"
    return "; ".join([f"{what}, dtypes {', '.join(h.dtypes) or '(none)'}", *spans, lf])


def to_json(exp: SafetensorsExplanation) -> dict[str, Any]:
    """JSON-ready: ``schema_version, file, kind (safetensors|safetensors_index), summary,
    header_bytes, data_bytes, tensors [{name, dtype, shape}], dtypes, metadata, aliases,
    duplicates, load_file_since, shards {complete, problems, files: [{name, tensors,
    data_bytes, error}]} | null, versions: [{torch, torch_load, ckptcompat, safetensors:
    [{release, releases, load_file, load}]}]`` (``torch_load``: a plain ``torch.load(PATH)``;
    ``null`` for a G3/G4's weights, which torch never opens alone)."""
    h = exp.header
    shards = None
    if exp.shards is not None:
        s = exp.shards
        shards = {
            "complete": s.complete,
            "problems": list(s.problems),
            "metadata": s.index.metadata,
            "files": [
                {
                    "name": name,
                    "tensors": len(s.headers[name].tensors) if name in s.headers else None,
                    "data_bytes": s.headers[name].data_bytes if name in s.headers else None,
                    "error": s.errors.get(name),
                }
                for name in s.index.shards
            ],
        }
    return {
        "schema_version": 1,
        "file": exp.path,
        "kind": "safetensors" if exp.shards is None else "safetensors_index",
        "summary": summary_line(exp),
        "header_bytes": h.header_bytes,
        "data_bytes": h.data_bytes,
        "tensors": [
            {"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)} for t in h.tensors
        ],
        "dtypes": list(h.dtypes),
        "metadata": h.metadata,
        "aliases": h.aliases,
        "duplicates": list(h.duplicates),
        "load_file_since": exp.load_file_since,
        "shards": shards,
        "versions": _versions(exp.cells),
    }


def _versions(cells: tuple[Cell, ...]) -> list[dict[str, Any]]:
    return [
        {
            "torch": c.torch,
            "torch_load": c.torch_load or None,
            "ckptcompat": c.ckptcompat,
            "safetensors": [
                {
                    "release": r.safetensors,
                    "releases": compat.release_span(r.safetensors),
                    "load_file": r.load_file,
                    "load": r.load_bytes,
                }
                for r in c.readings
            ],
        }
        for c in cells
    ]


def readers_json(header: SafetensorsHeader) -> list[dict[str, Any]]:
    """The ``versions`` list of :func:`to_json` for one header (a G3/G4's weights):
    ``[{torch, ckptcompat, safetensors: [{release, releases, load_file, load}]}]``."""
    return _versions(_cells(header, None))
