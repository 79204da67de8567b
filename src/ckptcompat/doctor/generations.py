"""The doctor on Metta's G3 (``.mpt``) and G4 (bundle) checkpoints: what it is, who reads it.

Reads the container through :func:`ckptcompat.generations.detect.open_generation` (bounded
reads, the safetensors header checked, the architecture string parsed as data; nothing is
imported or run) and predicts, per torch minor 2.4 ... 2.15:

* ``torch.load(FILE)``: fails on every version. torch's zip reader wants every record under
  one top-level folder, and an ``.mpt`` or zipped bundle keeps its members at the root
  ("file in archive is not in a subdirectory", issue 22); a bundle directory is not a file.
* ``ckptcompat migrate``: reads it where torch has the dtype of every tensor (the ``dtypes``
  rows of :mod:`ckptcompat.versions_facts`: ``float8_e8m0fnu`` from 2.7, ``float4_e2m1fn_x2``
  from 2.8; :func:`ckptcompat.generations.safetensors_compat.ckptcompat_reads`).

and names the first safetensors release whose ``load_file`` knows every dtype
(:data:`ckptcompat.generations.safetensors_header.DTYPES`, probed per release in issue 22;
the full per-release table for the weights is ``ckptcompat doctor`` on the extracted
``weights.safetensors``). A G4 directory's
``trainer_state.pt`` is a pickle: it gets the ordinary doctor's one-line verdict. No torch
import.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from ckptcompat.doctor.rules import MINORS
from ckptcompat.doctor.safetensors import readers_json
from ckptcompat.errors import CheckpointError
from ckptcompat.generations import safetensors_compat as compat
from ckptcompat.generations.architecture import ALLOWED_ARCHITECTURES
from ckptcompat.generations.detect import GenerationSource, open_generation
from ckptcompat.generations.safetensors_header import OLDEST_PROBED

__all__ = ["GenerationExplanation", "ReaderPrediction", "explain_generation", "render", "to_json"]

_WHAT = {
    ("g3", "zip"): "Metta G3 .mpt (Oct 2025): a zip of weights.safetensors + modelarchitecture.txt",
    ("g4", "dir"): "Metta G4 checkpoint bundle (Jan 2026), a directory: weights.safetensors + "
    "policy_spec.json",
    ("g4", "zip"): "Metta G4 checkpoint bundle (Jan 2026), zipped: weights.safetensors + "
    "policy_spec.json",
}
_PLAIN = {
    "zip": "fails: not a torch.save archive (members at the zip's root: 'file in archive is "
    "not in a subdirectory')",
    "dir": "fails: a directory, not a torch.save file",
}


#: The oldest safetensors release probed: "every release this project meets".
_ANY_SAFETENSORS = OLDEST_PROBED


@dataclass(frozen=True)
class ReaderPrediction:
    """One torch minor: a plain ``torch.load(FILE)`` and ``ckptcompat migrate``."""

    torch: str
    plain: str
    migrate: str


@dataclass(frozen=True)
class GenerationExplanation:
    """What :func:`explain_generation` found.

    Attributes:
        source: the opened file (:class:`~ckptcompat.generations.detect.GenerationSource`).
        what: one phrase naming the generation.
        names: every dotted name the architecture string calls (empty when refused).
        allowlisted: the top-level name is on the architecture allowlist.
        safetensors_min: the first safetensors release whose ``load_file`` reads every
            dtype (:func:`ckptcompat.generations.safetensors_compat.load_file_since`);
            ``None`` when no release builds one of them (``F6_*``).
        readers: one prediction per torch minor, 2.4 first.
        trainer_state: ``"trainer_state.pt: <the doctor's verdict line>"`` (directory
            bundle), ``"... inside the zip ..."`` for a zipped one, ``None`` without one.
        migrate_command: the command to run.
    """

    source: GenerationSource
    what: str
    names: tuple[str, ...]
    allowlisted: bool
    safetensors_min: str | None
    readers: tuple[ReaderPrediction, ...]
    trainer_state: str | None
    migrate_command: str


def _migrate_on(source: GenerationSource, minor: str) -> str:
    return compat.ckptcompat_reads(source.header, minor, MINORS)


def _trainer_state(source: GenerationSource) -> str | None:
    if source.trainer_state is None:
        return None
    if source.container == "zip":
        return (
            f"{source.trainer_state} inside the zip (a pickle): extract it and run "
            "`ckptcompat doctor` on it"
        )
    from ckptcompat.doctor import diagnose, verdict_line

    try:
        verdict = verdict_line(diagnose(os.path.join(source.path, source.trainer_state)))
    except CheckpointError as exc:  # the weights are still explained
        verdict = f"cannot be read: {type(exc).__name__}: {exc}"
    return f"{source.trainer_state}: {verdict}"


def explain_generation(path: str | os.PathLike[str]) -> GenerationExplanation:
    """Explain the G3/G4 checkpoint at ``path`` without running or unpickling anything.

    Raises:
        CheckpointNotFoundError, CorruptCheckpointError, LimitExceededError,
        IncompatibleCheckpointError, UnsafeCheckpointError: see
            :func:`ckptcompat.generations.detect.open_generation`.
    """
    source = open_generation(path)
    names = source.call.names() if source.call is not None else ()
    allowlisted = source.call is not None and source.call.name in ALLOWED_ARCHITECTURES
    readers = tuple(
        ReaderPrediction(m, _PLAIN[source.container], _migrate_on(source, m)) for m in MINORS
    )
    command = f"ckptcompat migrate {source.path} DATA_DIR"
    if not allowlisted:
        command += " --class-path package.module.AgentClass"
    if source.call is None:
        command += " --config JSON"
    return GenerationExplanation(
        source=source,
        what=_WHAT[(source.generation, source.container)],
        names=names,
        allowlisted=allowlisted,
        safetensors_min=compat.load_file_since(source.header),
        readers=readers,
        trainer_state=_trainer_state(source),
        migrate_command=command,
    )


def _ranges(readers: tuple[ReaderPrediction, ...]) -> list[tuple[str, ReaderPrediction]]:
    out: list[tuple[str, ReaderPrediction]] = []
    start = readers[0]
    for prev, cur in zip(readers, (*readers[1:], None), strict=True):
        if cur is None or (cur.plain, cur.migrate) != (prev.plain, prev.migrate):
            span = start.torch if start is prev else f"{start.torch}-{prev.torch}"
            out.append((span, prev))
            start = cur  # type: ignore[assignment]
    return out


def summary_line(exp: GenerationExplanation) -> str:
    """One line for ``doctor PATH...``: what it is, then per torch range a plain
    ``torch.load`` and ``ckptcompat migrate``, e.g. ``Metta G3 .mpt ...; torch.load fails,
    migrate reads on 2.4-2.15``."""
    spans = [
        f"torch.load {pred.plain.split(':')[0]}, migrate {pred.migrate.split(' (')[0]} on {span}"
        for span, pred in _ranges(exp.readers)
    ]
    return "; ".join([exp.what, *spans])


def render(exp: GenerationExplanation) -> str:
    """The text report: what it is, the architecture, the weights, readers per torch range."""
    src = exp.source
    header = src.header
    arch = src.architecture if len(src.architecture) <= 200 else src.architecture[:197] + "..."
    lines = [
        f"ckptcompat doctor: {src.path}",
        f"  what         {exp.what}",
        f"  architecture {arch}",
    ]
    if src.call is not None:
        flag = "on the allowlist" if exp.allowlisted else "not on the allowlist: --class-path"
        lines.append(f"  names        {', '.join(exp.names)} ({src.call.name} {flag})")
        lines.append(f"  arguments    {', '.join(src.call.kwargs) or '(none)'}")
    else:
        lines.append(f"  refused      {src.call_error}")
    if src.spec is not None:
        lines.append(
            f"  policy_spec  class_path={src.spec['class_path']} data_path={src.weights_name}"
        )
    lines.append(
        f"  weights      {src.weights_name}: {len(header.tensors)} tensors, "
        f"{header.data_bytes} data bytes, dtypes {', '.join(header.dtypes) or '(none)'}"
        + (f", __metadata__ keys {sorted(header.metadata)}" if header.metadata else "")
    )
    if exp.safetensors_min == _ANY_SAFETENSORS:
        lines.append("  safetensors  every safetensors release's load_file reads its dtypes")
    elif exp.safetensors_min is None:
        lines.append("  safetensors  no safetensors release's load_file builds all its dtypes")
    else:
        lines.append(
            f"  safetensors  load_file reads its dtypes from safetensors {exp.safetensors_min}"
        )
    if exp.trainer_state is not None:
        lines.append(f"  trainer      {exp.trainer_state}")
    lines.append("  torch        torch.load(FILE) | ckptcompat migrate")
    for span, pred in _ranges(exp.readers):
        lines.append(f"    {span:<10} {pred.plain.split(':')[0]} | {pred.migrate}")
    lines.append(f"  why plain    {_PLAIN[src.container]}")
    lines.append(f"  migrate      {exp.migrate_command}")
    return "\n".join(lines) + "\n"


def to_json(exp: GenerationExplanation) -> dict[str, Any]:
    """JSON-ready: ``schema_version, file, generation, container, what, architecture
    {string, name, names, allowlisted, arguments, refused}, policy_spec, weights {name,
    size_bytes, tensors: [{name, dtype, shape}], dtypes, metadata}, safetensors_min,
    weights_readers (per torch minor: ckptcompat, and per safetensors release load_file and
    load(bytes) of the weights, :func:`ckptcompat.doctor.safetensors.readers_json`),
    trainer_state, versions: [{torch, plain, migrate}], migrate_command``."""
    src = exp.source
    return {
        "schema_version": 1,
        "file": src.path,
        "generation": src.generation,
        "container": src.container,
        "what": exp.what,
        "architecture": {
            "string": src.architecture,
            "name": src.call.name if src.call is not None else None,
            "names": list(exp.names),
            "allowlisted": exp.allowlisted,
            "arguments": list(src.call.kwargs) if src.call is not None else [],
            "refused": src.call_error,
        },
        "policy_spec": src.spec,
        "weights": {
            "name": src.weights_name,
            "size_bytes": src.weights_size,
            "tensors": [
                {"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)}
                for t in src.header.tensors
            ],
            "dtypes": list(src.header.dtypes),
            "metadata": src.header.metadata,
        },
        "safetensors_min": exp.safetensors_min,
        "weights_readers": readers_json(src.header),
        "trainer_state": exp.trainer_state,
        "versions": [asdict(r) for r in exp.readers],
        "migrate_command": exp.migrate_command,
    }
