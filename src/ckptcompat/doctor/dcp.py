"""The doctor on a ``torch.distributed.checkpoint`` directory: what it holds, where it loads.

Reads ``.metadata`` only through :func:`ckptcompat.scan.dcp_metadata.read_dcp_metadata`
(the opcode walk, the inert unpickler, then a data-only pass: nothing the file names is
imported or run) and lists the data files on disk; no torch import. The prediction per
torch version applies the rules below, each measured in this project's cells (a DCP
directory of a recurrent agent plus Adam, written through ``get_state_dict``/``dcp.save``
and read back through ``get_state_dict``/``dcp.load``/``set_state_dict``):

* a global outside what DCP writes: every torch would run it (DCP reads ``.metadata``
  with a plain ``pickle.load``), so ``unsafe`` everywhere;
* ``TensorProperties`` pickled with 6 fields (``strides``, written by 2.15.0): 2.4.1, 2.5.1
  and 2.6.0 unpack exactly 5 in ``__setstate__`` and fail ("too many values to unpack
  (expected 5)") before reading any tensor;
* Adam's param groups without ``decoupled_weight_decay`` (written by 2.4-2.6): 2.15.0's
  ``get_state_dict`` asks for that key and ``dcp.load`` fails ("Missing key in checkpoint
  state_dict: optim.param_groups.0.decoupled_weight_decay"); the model alone loads;
* a data file named in the metadata but missing on disk: fails everywhere.

Written-by estimate: ``Metadata.version`` set -> torch >= 2.10 (2.9 has the field, unset);
``StorageMeta.modules`` -> >= 2.7; neither -> 2.4-2.6 (a <= 2.3 writer's nested keys also
break 2.4.0, pytorch#133923, fixed by 2.5's fallback, PR #134158).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ckptcompat.checkpoint.layout import DCP_METADATA_NAME
from ckptcompat.errors import CheckpointNotFoundError, LimitExceededError
from ckptcompat.scan.dcp_metadata import DcpMetadata, read_dcp_metadata
from ckptcompat.scan.limits import MAX_PICKLE_BYTES

__all__ = [
    "READERS",
    "DcpExplanation",
    "DcpPrediction",
    "explain_dcp",
    "render_dcp",
    "to_json",
]

#: The torch versions predicted: the default cells.
READERS = ("2.4", "2.5", "2.6", "2.15")
_FIVE_FIELD_READERS = frozenset({"2.4", "2.5", "2.6"})
_DECOUPLED_READERS = frozenset({"2.15"})

Outcome = Literal["loads", "model only", "fails", "unsafe"]


@dataclass(frozen=True)
class DcpPrediction:
    """Whether torch ``torch`` (``"2.6"``) loads the directory, and why (not)."""

    torch: str
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class DcpExplanation:
    """What the doctor says about one DCP directory.

    Attributes:
        directory: the directory. metadata: what ``.metadata`` says (read inertly).
        files_on_disk: data file name -> size in bytes. missing: data files the metadata
            names that are not on disk. written_by: the estimate of the writing torch.
        predictions: one per :data:`READERS`.
    """

    directory: Path
    metadata: DcpMetadata
    files_on_disk: dict[str, int]
    missing: tuple[str, ...]
    written_by: str
    predictions: tuple[DcpPrediction, ...]


def _written_by(meta: DcpMetadata) -> str:
    if meta.error is not None:  # garbage read as "2.4-2.6" (new-user trial, 2026-12-06)
        return "unknown: .metadata is unreadable, so nothing in it dates the writer"
    if meta.version is not None:
        return f"torch >= 2.10 (DCP format version {meta.version})"
    if meta.has_modules:
        return "torch 2.7-2.9 (StorageMeta.modules, no format version)"
    return "torch 2.4-2.6 (no StorageMeta.modules, no format version)"


def _predict(reader: str, meta: DcpMetadata, missing: tuple[str, ...]) -> DcpPrediction:
    if meta.unexpected:
        why = "names globals DCP never writes, which its plain pickle.load would run"
        return DcpPrediction(reader, "unsafe", f"{why}: {list(meta.unexpected)}")
    if meta.error is not None:
        return DcpPrediction(reader, "fails", f".metadata unreadable: {meta.error}")
    if missing:
        return DcpPrediction(reader, "fails", f"data files missing: {list(missing)}")
    if meta.properties_fields > 5 and reader in _FIVE_FIELD_READERS:
        why = "TensorProperties pickled with strides (6 fields); this torch unpacks 5"
        return DcpPrediction(reader, "fails", f"{why}: 'too many values to unpack'")
    groups = {k.rsplit(".", 1)[0] for k in meta.byte_keys if k.endswith(".amsgrad")}
    lacking = [g for g in groups if f"{g}.decoupled_weight_decay" not in meta.byte_keys]
    if lacking and reader in _DECOUPLED_READERS:
        why = f"Adam param groups lack decoupled_weight_decay ({sorted(lacking)[0]})"
        why += ", which this torch's optimizer asks for: the model loads, the optimizer not"
        return DcpPrediction(reader, "model only", why)
    return DcpPrediction(reader, "loads", "")


def explain_dcp(directory: str | Path) -> DcpExplanation:
    """Explain the DCP directory ``directory`` without running anything in it.

    Raises:
        CheckpointNotFoundError: no ``.metadata`` in ``directory``.
        LimitExceededError: ``.metadata`` is larger than
            :data:`~ckptcompat.scan.limits.MAX_PICKLE_BYTES` (it would be read whole).
    """
    directory = Path(directory)
    metadata_path = directory / DCP_METADATA_NAME
    if not metadata_path.is_file():
        raise CheckpointNotFoundError(
            "not a torch.distributed.checkpoint directory",
            path=directory,
            expected=f"a directory holding {DCP_METADATA_NAME} and __<rank>_<n>.distcp files",
            found="no .metadata",
            fix="pass the DCP directory itself (e.g. RUN/checkpoints/RUN_v4.dcp)",
        )
    size = metadata_path.stat().st_size
    if size > MAX_PICKLE_BYTES:  # read whole into memory below: bound it first
        raise LimitExceededError(
            f"{DCP_METADATA_NAME} is larger than one pickle record may be",
            limit="max_pickle_bytes",
            path=metadata_path,
            expected=f"at most {MAX_PICKLE_BYTES} bytes (scan limits)",
            found=f"{size} bytes",
            fix="a DCP .metadata holds only the plan; this one is damaged or hostile",
        )
    meta = read_dcp_metadata(metadata_path.read_bytes())
    on_disk = {
        p.name: p.stat().st_size
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != DCP_METADATA_NAME
    }
    missing = tuple(name for name in meta.files if name not in on_disk)
    return DcpExplanation(
        directory=directory,
        metadata=meta,
        files_on_disk=on_disk,
        missing=missing,
        written_by=_written_by(meta),
        predictions=tuple(_predict(r, meta, missing) for r in READERS),
    )


def render_dcp(explanation: DcpExplanation, *, max_keys: int = 12) -> str:
    """The explanation as text for a terminal: facts, keys, one line per torch version."""
    meta = explanation.metadata
    lines = [f"DCP directory {explanation.directory}", f"  written by: {explanation.written_by}"]
    lines.append(
        f"  {len(meta.tensors)} tensors, {len(meta.byte_keys)} pickled values, "
        f"{meta.planner_keys} planner entries"
    )
    for name, size in explanation.files_on_disk.items():
        lines.append(f"  file {name}: {size} bytes, {meta.files.get(name, 0)} items")
    for name in explanation.missing:
        lines.append(f"  file {name}: MISSING")
    for tensor in meta.tensors[:max_keys]:
        lines.append(f"    {tensor.key}: {tensor.dtype} {list(tensor.shape)}")
    if len(meta.tensors) > max_keys:
        lines.append(f"    ... {len(meta.tensors) - max_keys} more")
    for p in explanation.predictions:
        lines.append(f"  torch {p.torch}: {p.outcome}" + (f" -- {p.reason}" if p.reason else ""))
    return "\n".join(lines)


def to_json(explanation: DcpExplanation) -> dict[str, Any]:
    """The explanation as JSON primitives (``doctor --json``)."""
    document = asdict(explanation)
    document["directory"] = str(explanation.directory)
    document["kind"] = "dcp_directory"
    return document
