"""The per-version reports of one file: every torch minor, per numpy major of the loader.

:func:`version_rows` runs :func:`ckptcompat.doctor.predict.predict` for each torch profile
(and :func:`~ckptcompat.doctor.packages.with_consumer` on its verdicts) from the few
facts those read, gathered in :class:`PredictionInputs`. Files alike in them get the
same rows, so the rows are cached per process on those inputs: a store of one agent's
checkpoints (``ckptcompat doctor DIR``) differs in tensor bytes and metadata values, not
in globals, opcodes or findings, and its 1,000 files cost one set of 12 predictions
instead of 1,000 (each set ~0.15 ms). The key holds exactly what the predictions read:
on a miss they run on a :class:`~ckptcompat.scan.scan_result.ScanResult` and a
:class:`~ckptcompat.doctor.pickle_walk.PickleFacts` rebuilt from the key alone, so a
fact the key lacked would show as a wrong verdict on every file, not on a cache hit
(``tests/test_doctor_reports.py`` compares them with the uncached predictions over the
fixture corpora). Standard library only.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from ckptcompat.doctor.numpy_consumer import NumpyFacts
from ckptcompat.doctor.packages import Consumer, with_consumer
from ckptcompat.doctor.pickle_walk import PickleFacts
from ckptcompat.doctor.predict import numpy_major_matters, predict
from ckptcompat.doctor.rules import Basis, Profile
from ckptcompat.doctor.verdict import Verdict
from ckptcompat.scan.pickle_scan import Finding
from ckptcompat.scan.scan_result import ScanResult
from ckptcompat.scan.sniff import FileKind, Sniff

__all__ = ["NumpyRow", "PredictionInputs", "VersionReport", "prediction_inputs", "version_rows"]

_CACHE_SIZE = 256  # distinct kinds of file in one process (each entry ~10 kB)


@dataclass(frozen=True)
class VersionReport:
    """Predictions for one torch minor.

    Attributes:
        torch: the minor, e.g. ``"2.6"``.
        release: the release the facts describe, e.g. ``"2.6.0"``.
        basis: ``"snapshot"`` (probed in that cell) or ``"rules"`` (torch_versions.md).
        plain: ``torch.load(FILE)`` with ``weights_only`` omitted.
        weights_only: ``torch.load(FILE, weights_only=True)``.
        advisories: security fixes this release lacks, ``"<id>: <meaning>"``.
    """

    torch: str
    release: str
    basis: Basis
    plain: Verdict
    weights_only: Verdict
    advisories: tuple[str, ...]


@dataclass(frozen=True)
class NumpyRow:
    """Every torch minor's predictions for one numpy major on the loading side.

    Attributes:
        numpy_major: 1 (numpy 1.26) or 2.
        versions: one report per torch minor, 2.4 first.
    """

    numpy_major: int
    versions: tuple[VersionReport, ...]


@dataclass(frozen=True)
class PredictionInputs:
    """What the per-version predictions read of one file, and nothing else.

    Attributes:
        kind: the container kind (:attr:`ScanResult.kind`).
        findings, opcodes, protocol, globals, setitem_targets, append_targets: as in
            :class:`~ckptcompat.scan.scan_result.ScanResult`.
        complete, numpy_dtypes: as in :class:`~ckptcompat.doctor.pickle_walk.PickleFacts`.
        global_pos, opcode_pos: ``PickleFacts.global_pos`` / ``opcode_pos`` with each offset
            replaced by its rank among all of them (0 first): the predictions only compare
            offsets (which refused global or opcode torch meets first), so files whose
            globals sit at other offsets in the same order share their rows.
        numpy: the file's numpy.random facts.
        consumer: what the loading environment lacks.
        sb3: a stable-baselines3 zip (its rows say "not a torch.save file").
    """

    kind: FileKind
    findings: tuple[Finding, ...]
    opcodes: frozenset[str]
    protocol: int | None
    globals: tuple[str, ...]
    setitem_targets: tuple[str, ...]
    append_targets: tuple[str, ...]
    complete: bool
    numpy_dtypes: tuple[str, ...]
    global_pos: tuple[tuple[str, int], ...]
    opcode_pos: tuple[tuple[str, int], ...]
    numpy: NumpyFacts
    consumer: Consumer
    sb3: bool

    def result(self) -> ScanResult:
        """A scan result holding these inputs and defaults elsewhere."""
        return ScanResult(
            Sniff(self.kind, 0, b""),
            protocol=self.protocol,
            opcodes=self.opcodes,
            globals=self.globals,
            setitem_targets=self.setitem_targets,
            append_targets=self.append_targets,
            findings=self.findings,
        )

    def facts(self) -> PickleFacts:
        """Pickle facts holding these inputs and defaults elsewhere."""
        return PickleFacts(
            complete=self.complete,
            numpy_dtypes=self.numpy_dtypes,
            global_pos=dict(self.global_pos),
            opcode_pos=dict(self.opcode_pos),
        )


def _ranked(*positions: Mapping[str, int]) -> list[tuple[tuple[str, int], ...]]:
    """Each mapping with its offsets replaced by their dense rank among all the offsets."""
    rank = {v: i for i, v in enumerate(sorted({v for p in positions for v in p.values()}))}
    return [tuple((k, rank[v]) for k, v in p.items()) for p in positions]


def prediction_inputs(
    result: ScanResult, facts: PickleFacts, numpy: NumpyFacts, consumer: Consumer, *, sb3: bool
) -> PredictionInputs:
    """The :class:`PredictionInputs` of one file from its scan and facts."""
    global_pos, opcode_pos = _ranked(facts.global_pos, facts.opcode_pos)
    return PredictionInputs(
        kind=result.kind,
        findings=result.findings,
        opcodes=result.opcodes,
        protocol=result.protocol,
        globals=result.globals,
        setitem_targets=result.setitem_targets,
        append_targets=result.append_targets,
        complete=facts.complete,
        numpy_dtypes=facts.numpy_dtypes,
        global_pos=global_pos,
        opcode_pos=opcode_pos,
        numpy=numpy,
        consumer=consumer,
        sb3=sb3,
    )


_SB3_WHY = (
    "not a torch.save file: a stable-baselines3 zip (JSON 'data' and .pth members); "
    "torch.load(FILE) fails on every torch, its policy.pth member loads with weights_only"
)


def _sb3_verdict(verdict: Verdict) -> Verdict:
    """A stable-baselines3 zip's row: not a torch.save file (the scan, which knows only
    torch's containers, calls its missing ``data.pkl`` corrupt; issue 16 trial)."""
    return dataclasses.replace(verdict, why=_SB3_WHY, blockers=(_SB3_WHY,))


def version_rows(
    inputs: PredictionInputs, profiles: tuple[Profile, ...], majors: tuple[int, ...]
) -> tuple[NumpyRow, ...]:
    """One :class:`NumpyRow` per numpy major in ``majors``, each with one report per
    profile (cached per process on the arguments; see the module docstring).

    Args:
        inputs: the file's :func:`prediction_inputs`.
        profiles: the torch profiles (:func:`ckptcompat.doctor.rules.profiles`).
        majors: numpy majors of the loading side, e.g. ``(1, 2)``.
    """
    return _version_rows(inputs, profiles, majors)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _version_rows(
    inputs: PredictionInputs, profiles: tuple[Profile, ...], majors: tuple[int, ...]
) -> tuple[NumpyRow, ...]:
    result, facts, numpy, consumer = inputs.result(), inputs.facts(), inputs.numpy, inputs.consumer
    rows: list[NumpyRow] = []
    for major in majors:
        if rows and not numpy_major_matters(result, numpy):
            rows.append(NumpyRow(major, rows[0].versions))  # the same predictions
            continue
        reports = []
        for profile in profiles:
            plain, wo = predict(result, facts, profile, numpy_major=major, numpy=numpy)
            wo = with_consumer(wo, consumer, full_unpickler=False)
            full = not profile.weights_only_default  # plain on <= 2.5: every global imported
            plain = with_consumer(plain, consumer, full_unpickler=full)
            if inputs.sb3:
                plain, wo = _sb3_verdict(plain), _sb3_verdict(wo)
            advisories = tuple(f"{a}: {meaning}" for a, meaning in profile.advisories)
            reports.append(
                VersionReport(profile.minor, profile.release, profile.basis, plain, wo, advisories)
            )
        rows.append(NumpyRow(major, tuple(reports)))
    return tuple(rows)
