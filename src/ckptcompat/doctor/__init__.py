"""``ckptcompat doctor FILE [--json]``: why FILE loads or fails on each torch 2.4 ... 2.15.

:func:`diagnose` scans the file statically (:mod:`ckptcompat.scan.scan` plus
:mod:`ckptcompat.doctor.pickle_walk`) and predicts, per torch minor, a plain ``torch.load(FILE)``
and ``torch.load(FILE, weights_only=True)`` (:mod:`ckptcompat.doctor.predict`) from that
version's probed snapshot or, where none is committed, the rules table
(:mod:`ckptcompat.doctor.rules`). It also names the checkpoint generation and the
``ckptcompat migrate`` command to run.

Nothing the file names is imported or called, and this module imports neither torch nor
numpy (a test checks ``sys.modules``): the doctor runs on machines without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from ckptcompat.doctor.data_check import DataCheck, not_checked, verify_data
from ckptcompat.doctor.families import Family, recognise
from ckptcompat.doctor.location import DeviceCheck, check_devices, visible_cuda_devices
from ckptcompat.doctor.migration import Generation, Migration, generation, migration
from ckptcompat.doctor.numpy_consumer import NUMPY_MAJORS, numpy_facts
from ckptcompat.doctor.packages import Consumer, check_here, check_python
from ckptcompat.doctor.pickle_walk import pickle_facts, root_object, tensor_mapping_root
from ckptcompat.doctor.prefixes import KeyPrefix, find_prefix, state_dict_keys
from ckptcompat.doctor.render import render_text
from ckptcompat.doctor.reports import (
    NumpyRow,
    VersionReport,
    prediction_inputs,
    version_rows,
)
from ckptcompat.doctor.rules import Profile, minor_of, profiles
from ckptcompat.doctor.safety import code_risks
from ckptcompat.doctor.summary import verdict_line
from ckptcompat.doctor.verdict import Verdict, numpy_dtype_class
from ckptcompat.errors import CheckpointError, CheckpointNotFoundError
from ckptcompat.scan import scan
from ckptcompat.scan.pickle_scan import Finding
from ckptcompat.scan.scan_result import StorageInfo, StorageTable

__all__ = [
    "JSON_SCHEMA_VERSION",
    "Diagnosis",
    "Generation",
    "Migration",
    "NumpyRow",
    "VersionReport",
    "diagnose",
    "error_json",
    "main",
    "render_text",
    "to_json",
    "verdict_line",
    "write_escaped",
]

JSON_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Diagnosis:
    """Everything :func:`diagnose` found and predicts for one file.

    Attributes:
        path: the file.
        size_bytes: its size in bytes.
        kind: container kind (``zip``, ``legacy_pickle``, ``git_lfs_pointer`` ...).
        generation: ``safe_v1``, ``g1``, ``g2``, ``state_dict`` or ``other``.
        generation_detail: one phrase on what the top-level object is.
        protocol: pickle protocol of the object pickle, if any.
        globals: every global the pickle names, in stream order.
        nondefault_globals: those outside every torch's weights-only defaults.
        tensor_dtypes: storage dtypes, e.g. ``("float32",)``.
        storages: number of storages.
        storage_bytes: bytes the storages claim.
        numpy_dtypes: codes given to ``numpy.dtype`` (``"f4"``), in order.
        writer_hint: what wrote the file, as far as its records tell.
        findings: the scan's findings.
        risks: why loading the file could run code from it
            (:func:`ckptcompat.doctor.safety.code_risks`); empty when the scan found none.
        installed: torch and numpy versions installed here (None when absent), read from
            package metadata without importing them.
        numpy_major: the numpy major ``versions`` assumes for the loading side (the
            installed numpy's, or the one asked for).
        migration: the ``ckptcompat migrate`` suggestion.
        versions: one report per torch minor, 2.4 first.
        data: what is known of the bytes the scan does not read (the zip CRC-32s,
            checked only when asked: ``--verify-data``).
        devices: the storages' location tags and whether this machine can restore them
            without ``map_location`` (:mod:`ckptcompat.doctor.location`); the
            per-version predictions assume it can.
        key_prefix: a wrapper prefix every state_dict key carries (DDP's ``module.``,
            torch.compile's ``_orig_mod.``), which ``load_state_dict(strict=True)`` into
            the bare agent refuses; None when there is none or no state_dict was found.
        consumer: the packages the globals need and which the loading environment lacks
            (:mod:`ckptcompat.doctor.packages`); the plain-load predictions account for it.
        numpy_rows: the predictions per numpy major of the loading side
            (:mod:`ckptcompat.doctor.numpy_consumer`): both majors by default, the one
            asked for otherwise; the row of ``numpy_major`` equals ``versions``.
        family: the library that wrote the file (stable-baselines3, Lightning, Hugging
            Face), recognised from its structure (:mod:`ckptcompat.doctor.families`): what
            it is, which part blocks a weights-only load, that library's fix; None when
            none is recognised.
    """

    path: str
    size_bytes: int
    kind: str
    generation: Generation
    generation_detail: str
    protocol: int | None
    globals: tuple[str, ...]
    nondefault_globals: tuple[str, ...]
    tensor_dtypes: tuple[str, ...]
    storages: int
    storage_bytes: int
    numpy_dtypes: tuple[str, ...]
    writer_hint: str | None
    findings: tuple[Finding, ...]
    risks: tuple[str, ...]
    installed: dict[str, str | None]
    numpy_major: int
    migration: Migration
    versions: tuple[VersionReport, ...]
    data: DataCheck = field(default_factory=DataCheck)
    devices: DeviceCheck = field(default_factory=lambda: check_devices((), 0))
    key_prefix: KeyPrefix | None = None
    consumer: Consumer = field(default_factory=lambda: Consumer("not checked"))
    numpy_rows: tuple[NumpyRow, ...] = ()
    family: Family | None = None

    def for_torch(self, torch_version: str, numpy_major: int | None = None) -> VersionReport:
        """The report for the minor of ``torch_version`` (``"2.6.0+cu124"`` -> 2.6).

        Args:
            torch_version: the consumer's torch.
            numpy_major: the consumer's numpy major (default: :attr:`numpy_major`).

        Raises:
            KeyError: a minor outside 2.4 ... 2.15, or a numpy major not predicted.
        """
        minor = minor_of(torch_version)
        versions = self.versions
        if numpy_major is not None and numpy_major != self.numpy_major:
            rows = [r for r in self.numpy_rows if r.numpy_major == numpy_major]
            if not rows:
                raise KeyError(f"the doctor has no prediction for numpy {numpy_major}")
            versions = rows[0].versions
        for report in versions:
            if report.torch == minor:
                return report
        raise KeyError(f"the doctor has no prediction for torch {torch_version}")


@functools.cache
def _installed(name: str) -> str | None:
    # Cached per process: each look-up scans every distribution on sys.path (~1 ms).
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _cuda_devices_here(visible: str | None) -> int:
    # Cached per process and CUDA_VISIBLE_DEVICES value: listing /dev costs ~50 us a file
    # (doctor DIR), and NVIDIA's device nodes appear when the driver loads, not mid-run.
    return visible_cuda_devices()


#: Keys of a plain-dict root whose values a reader of the root looks at: Lightning's
#: ``state_dict`` (:mod:`.families`) and the ``python`` RNG state of transformers'
#: ``rng_state.pth``. A tensor mapping holding one is rebuilt by the walk, values included.
_VALUE_KEYS = frozenset({"state_dict", "python"})


def _root(name: str, kind: str, result: Any, complete: bool) -> Any:
    """The top-level object, rebuilt inertly, of state_dicts and other plain objects (for
    the key prefix and the library families); None otherwise.

    A tensor mapping whose string keys the scan's pass recorded is rebuilt from them
    (:func:`~ckptcompat.doctor.pickle_walk.tensor_mapping_root`): its readers look at keys
    only, unless a plain dict holds a key of :data:`_VALUE_KEYS`. Anything else walks the
    object pickle once more (:func:`~ckptcompat.doctor.pickle_walk.root_object`)."""
    if kind not in ("state_dict", "other") or not complete:
        return None
    if result.kind not in ("zip", "legacy_pickle"):
        return None
    shape = None if result.facts is None else result.facts.root
    if shape is not None and not (shape.kind == "dict" and _VALUE_KEYS & set(shape.keys or ())):
        rebuilt = tensor_mapping_root(shape)
        if rebuilt is not None:
            return rebuilt
    return root_object(name, result)


def _locations(storages: Sequence[StorageInfo]) -> Iterable[str | None]:
    """Each storage's location tag: the column itself of a :class:`StorageTable` (a
    4096-tensor file's rows are never built for a count)."""
    if isinstance(storages, StorageTable):
        return storages.column("location")
    return (s.location for s in storages)


def _key_prefix(root: Any) -> KeyPrefix | None:
    """The wrapper prefix of a state_dict's keys (DDP, torch.compile), if any."""
    found = None if root is None else state_dict_keys(root)
    return None if found is None else find_prefix(*found)


def _data_findings(data: DataCheck) -> tuple[Finding, ...]:
    """``--verify-data``'s problems as findings: ``crc_mismatch`` for records torch reads
    without an error (the load returns other tensor values than were saved: a note on
    every verdict, not a refusal) and ``damaged_record`` for the rest (the file is corrupt)."""
    silent = tuple(p for p in data.problems if p in data.silent)
    damaged = tuple(p for p in data.problems if p not in data.silent)
    found = []
    if silent:
        found.append(
            Finding(
                "crc_mismatch",
                "records differ from their zip CRC-32, or torch's zip reader reads nothing of "
                "them; torch checks no CRC-32 and loads other tensor values without an error",
                silent,
            )
        )
    if damaged:
        found.append(Finding("damaged_record", "records torch's zip reader cannot read", damaged))
    return tuple(found)


def diagnose(
    path: str | os.PathLike[str],
    *,
    snapshot_dir: str | os.PathLike[str] | None = None,
    numpy_major: int | None = None,
    read_data: bool = False,
    cuda_devices: int | None = None,
    python: str | None = None,
) -> Diagnosis:
    """Diagnose ``path`` for every torch minor 2.4 ... 2.15 without loading it.

    Args:
        path: the checkpoint file.
        snapshot_dir: folder of probed snapshots (default: the checkout's
            ``fixtures/torch_allowlists``); a missing folder means rules everywhere.
        numpy_major: numpy major of the loading side (1 or 2): predict for it alone.
            Default: both majors (:attr:`Diagnosis.numpy_rows`), ``versions`` for the
            installed numpy's (read from metadata), else 2.
        read_data: also read every record and check the zip's CRC-32s and local headers
            (a CRC-32 mismatch is a ``crc_mismatch`` finding: torch loads wrong tensors
            without an error, noted on every verdict; a record torch cannot read is a
            ``damaged_record``: the file is corrupt); without it the storage bytes are
            never read, and ``data`` says so.
        cuda_devices: CUDA devices on the loading side, for the storages' location tags;
            default the devices visible here (:func:`~ckptcompat.doctor.location.
            visible_cuda_devices`, read without torch, once per process and
            ``CUDA_VISIBLE_DEVICES`` value).
        python: the interpreter of the environment that will load the file; default the
            doctor's own. Its importable packages decide whether a plain load on torch
            <= 2.5 finds every module the pickle names (:mod:`ckptcompat.doctor.packages`).

    Raises:
        CheckpointNotFoundError: no file (or a directory) at ``path``.
        CheckpointError: the file cannot be read.
        InputError: ``python`` is not a runnable interpreter.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointNotFoundError(
            "no checkpoint file here",
            path=name,
            expected="a checkpoint file (`ckptcompat doctor` also takes a DCP directory or "
            "a directory of checkpoints)",
            found="a directory"
            if os.path.isdir(name)
            else "not a regular file (a FIFO, socket or device)"
            if os.path.exists(name)
            else "nothing",
            fix="check the path",
        )
    installed = {"torch": _installed("torch"), "numpy": _installed("numpy")}
    majors: tuple[int, ...] = NUMPY_MAJORS if numpy_major is None else (numpy_major,)
    if numpy_major is None:
        numpy_major = int(installed["numpy"].split(".")[0]) if installed["numpy"] else 2
        numpy_major = min(max(numpy_major, 1), 2)
    try:
        result = scan.scan(name)
        data = verify_data(name, result.kind) if read_data else not_checked(result.kind)
        if data.problems:
            result = dataclasses.replace(result, findings=(*result.findings, *_data_findings(data)))
        facts = pickle_facts(name, result)
        kind, detail = generation(result, facts)
        risks = code_risks(name, result)
        root = _root(name, kind, result, facts.complete)
        key_prefix = _key_prefix(root)
        numpy = numpy_facts(name, result)
        family = recognise(name, result.kind, root, result.globals, records=result.records)
        if family is not None:
            risks = (*risks, *family.risks)
        migrate = migration(name, kind, result, numpy_major, risks, family)
    except OSError as exc:
        raise CheckpointError("cannot read the file", path=name, found=str(exc)) from exc
    all_profiles: tuple[Profile, ...] = (
        profiles() if snapshot_dir is None else profiles(snapshot_dir)
    )
    consumer = check_python(python, result.globals) if python else check_here(result.globals)
    inputs = prediction_inputs(
        result,
        facts,
        numpy,
        consumer,
        sb3=family is not None and family.library == "stable-baselines3",
    )
    rows = version_rows(inputs, all_profiles, majors)
    reports = list(next(r.versions for r in rows if r.numpy_major == numpy_major))
    return Diagnosis(
        path=name,
        size_bytes=result.sniff.size_bytes,
        kind=result.kind,
        generation=kind,
        generation_detail=detail,
        protocol=result.protocol,
        globals=result.globals,
        nondefault_globals=result.nondefault_globals,
        tensor_dtypes=tuple(sorted(result.dtypes)),
        storages=len(result.storages),
        storage_bytes=result.storage_bytes,
        numpy_dtypes=facts.numpy_dtypes,
        writer_hint=result.writer_hint,
        findings=result.findings,
        risks=risks,
        installed=installed,
        numpy_major=numpy_major,
        migration=migrate,
        versions=tuple(reports),
        data=data,
        key_prefix=key_prefix,
        devices=check_devices(
            _locations(result.storages),
            _cuda_devices_here(os.environ.get("CUDA_VISIBLE_DEVICES"))
            if cuda_devices is None
            else cuda_devices,
        ),
        consumer=consumer,
        numpy_rows=tuple(rows),
        family=family,
    )


def _version_json(v: VersionReport) -> dict[str, Any]:
    return {
        "torch": v.torch,
        "release": v.release,
        "basis": v.basis,
        "plain": {**_verdict_json(v.plain), "basis": v.basis},
        "weights_only": {**_verdict_json(v.weights_only), "basis": v.basis},
        "advisories": list(v.advisories),
    }


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    out = asdict(verdict)
    out["allowlist"] = [{**asdict(e), "alias": e.alias} for e in verdict.allowlist]
    for key in ("refused_globals", "blockers", "notes"):
        out[key] = list(out[key])
    return out


def to_json(diag: Diagnosis) -> dict[str, Any]:
    """The diagnosis as JSON-ready data (``schema_version`` 1; every version 2.4 ... 2.15).

    Keys: ``schema_version, file, summary`` (the one-line verdict of
    :func:`verdict_line`), ``size_bytes, kind, generation, generation_detail, protocol,
    globals, nondefault_globals, tensor_dtypes, storages, storage_bytes, numpy_dtypes``
    (each ``{code, class}``), ``writer_hint, findings, risks`` (why loading could run
    code; empty when none), ``installed, numpy_major, migration`` (``{command,
    needs_trust, note, agent_from}``), ``data`` (``{verified, problems, note}``: the zip
    CRC-32 check of ``--verify-data``), ``versions``; each version ``{torch, release,
    basis, plain, weights_only, advisories}``; each verdict ``{outcome, basis, why,
    refused_globals, first_error, allowlist: [{name, target, reason, dangerous, curated,
    alias, python}], blockers, notes}`` (``basis``: ``"snapshot"`` or ``"rules"``, as for
    its version); ``numpy``: one ``{numpy_major, versions}`` row per numpy major of the
    loading side predicted (both by default), ``versions`` being the row of
    ``numpy_major``.
    """
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "file": diag.path,
        "summary": verdict_line(diag),
        "size_bytes": diag.size_bytes,
        "kind": diag.kind,
        "generation": diag.generation,
        "generation_detail": diag.generation_detail,
        "protocol": diag.protocol,
        "globals": list(diag.globals),
        "nondefault_globals": list(diag.nondefault_globals),
        "tensor_dtypes": list(diag.tensor_dtypes),
        "storages": diag.storages,
        "storage_bytes": diag.storage_bytes,
        "numpy_dtypes": [{"code": c, "class": numpy_dtype_class(c)} for c in diag.numpy_dtypes],
        "writer_hint": diag.writer_hint,
        "findings": [
            {"code": f.code, "message": f.message, "names": list(f.names)} for f in diag.findings
        ],
        "risks": list(diag.risks),
        "installed": dict(diag.installed),
        "numpy_major": diag.numpy_major,
        "migration": asdict(diag.migration),
        "key_prefix": None if diag.key_prefix is None else asdict(diag.key_prefix),
        "devices": {
            "locations": dict(diag.devices.locations),
            "cuda_devices_here": diag.devices.cuda_devices,
            "problem": diag.devices.problem,
            "certain": diag.devices.certain,
            "fix": diag.devices.fix,
        },
        "family": None if diag.family is None else asdict(diag.family),
        "packages": list(diag.consumer.packages),
        "consumer": {
            "label": diag.consumer.label,
            "missing": list(diag.consumer.missing),
            "main_globals": list(diag.consumer.main_globals),
        },
        "data": {
            "verified": diag.data.verified,
            "problems": list(diag.data.problems),
            "note": diag.data.note,
        },
        "versions": [_version_json(v) for v in diag.versions],
        "numpy": [
            {"numpy_major": row.numpy_major, "versions": [_version_json(v) for v in row.versions]}
            for row in diag.numpy_rows
        ],
    }


def error_json(path: str, exc: CheckpointError) -> dict[str, Any]:
    """The ``--json`` document for a file the doctor could not read:
    ``{schema_version, file, error: {type, message}}``."""
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "file": path,
        "error": {"type": type(exc).__name__, "message": str(exc)},
    }


def main(argv: list[str] | None = None) -> int:
    """``ckptcompat doctor FILE [--json] [--verify-data]``: print the diagnosis.

    Text output escapes what the terminal's encoding cannot print; JSON is ASCII.
    Returns 0 whatever the verdicts, 2 when FILE is missing or unreadable: the message on
    stderr and, with ``--json``, ``{schema_version, file, error: {type, message}}`` on
    stdout.
    """
    parser = argparse.ArgumentParser(
        prog="ckptcompat doctor",
        description="Predict how each torch 2.4-2.15 loads FILE, without loading it.",
    )
    parser.add_argument("file", metavar="FILE", help="the checkpoint to examine")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--verify-data",
        action="store_true",
        help="also read every record and check the zip's CRC-32s (reads the whole file)",
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter of the venv that will load FILE (default: this one)",
    )
    parser.add_argument(
        "--numpy",
        type=int,
        choices=(1, 2),
        help="numpy major of the loading side: predict for it alone (default: both 1 and 2)",
    )
    args = parser.parse_args(argv)
    try:
        diag = diagnose(
            args.file, read_data=args.verify_data, python=args.python, numpy_major=args.numpy
        )
    except CheckpointError as exc:
        write_escaped(f"ckptcompat doctor: {type(exc).__name__}: {exc}\n", sys.stderr)
        if args.json:
            print(json.dumps(error_json(args.file, exc), indent=1))
        return 2
    if args.json:
        print(json.dumps(to_json(diag), indent=1))  # ensure_ascii: always printable
    else:
        write_escaped(render_text(diag), sys.stdout)
    return 0


def write_escaped(text: str, stream: Any) -> None:
    """Write ``text`` escaping what ``stream``'s encoding cannot hold (a global named
    with a lone surrogate, any non-ASCII name on an ASCII terminal): ``\\udc80``."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    stream.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


if __name__ == "__main__":
    raise SystemExit(main())
