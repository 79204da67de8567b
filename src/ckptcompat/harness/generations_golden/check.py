"""Checking the Metta G3/G4 goldens in a consumer cell: doctor, migrate, probe, records.

For every producer's file (``fixtures/golden/metta/<producer>/``, :mod:`.produce`),
:func:`check_file` takes the path a user of this torch would take:

1. the bytes: every file's sha256 and size against the MANIFEST;
2. ``ckptcompat doctor``: :func:`~ckptcompat.doctor.generations.explain_generation` must
   name the generation (``g3``/``g4``) and container, the architecture (the agent's
   ``class_path``, on the allowlist), and predict for this torch's minor that a plain
   ``torch.load`` fails and ``ckptcompat migrate`` reads it;
3. ``ckptcompat migrate``: :func:`~ckptcompat.generations.migrate.migrate_generation` into a
   scratch data dir (generation and ``loader="safe"`` checked), the written file loaded
   with ``weights_only=True`` and no allowlist (:func:`ckptcompat.torch_compat.load`);
4. the migrated agent's greedy outputs on the MANIFEST's probe batch against the
   producer's originals: actions identical; logprobs, entropy and values bit for bit when
   this process may compare with the producer bitwise (same torch and a comparable
   numerics fingerprint, :func:`ckptcompat.numerics.compare`), else within the MANIFEST's
   ``rtol``/``atol`` -- a verdict that does not depend on the machine.

:func:`naive_load` is what a plain ``torch.load(FILE)`` does here (the doctor's other
prediction). :func:`run` checks every golden in the evaluate phase of the matrix and writes
one record per check: scenario ``metta``, artifact the kind (``g3_mpt``, ``g4_dir``,
``g4_zip``; ``_numpy1`` for a numpy-1 producer, since ``t24`` and ``t24np1`` share a torch),
loader ``safe`` (steps 1-4) or ``naive``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ckptcompat import numerics, torch_compat
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.migrate import MigrationReport
from ckptcompat.doctor.generations import explain_generation
from ckptcompat.errors import CheckpointError
from ckptcompat.generations.migrate import migrate_generation
from ckptcompat.harness.fixtures.manifest import sha256_file
from ckptcompat.harness.generations_golden.layout import KINDS, metta_golden_dirs
from ckptcompat.harness.golden.read import GOLDEN_ROOT, MANIFEST_NAME, GoldenError
from ckptcompat.harness.golden.verify import probe_outputs
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.records import Outcome, Record

__all__ = [
    "SCENARIO",
    "CheckResult",
    "MettaGolden",
    "check_file",
    "file_problems",
    "migrated_outputs",
    "naive_load",
    "read_metta_golden",
    "run",
]

SCENARIO = "metta"
_OUTPUT_KEYS = ("actions", "logprobs", "entropy", "values")
_GENERATION = {"g3_mpt": ("g3", "zip"), "g4_dir": ("g4", "dir"), "g4_zip": ("g4", "zip")}


@dataclass(frozen=True)
class MettaGolden:
    """One producer's Metta golden directory and its parsed MANIFEST."""

    root: Path
    manifest: dict[str, Any]

    @property
    def cell(self) -> str:
        """The producing cell id, e.g. ``"t24np1"``."""
        return str(self.manifest["cell"])

    @property
    def producer(self) -> dict[str, Any]:
        """``{torch, numpy, python, ckptcompat, pip_freeze, numerics}`` of the producer."""
        return dict(self.manifest["producer"])

    @property
    def agents(self) -> tuple[str, ...]:
        """Agent names, e.g. ``("mlp", "recurrent")``."""
        return tuple(sorted(self.manifest["agents"]))

    def agent(self, name: str) -> dict[str, Any]:
        """Agent ``name``'s section: class_path, config, architecture, files, probe."""
        return dict(self.manifest["agents"][name])

    def path(self, name: str, kind: str) -> Path:
        """Absolute path of agent ``name``'s file ``kind`` (one of :data:`KINDS`)."""
        return self.root / self.manifest["agents"][name]["files"][kind]

    def artifact(self, kind: str) -> str:
        """The record artifact: ``kind``, suffixed ``_numpy1`` for a numpy-1 producer."""
        return kind if int(str(self.producer["numpy"]).split(".")[0]) >= 2 else f"{kind}_numpy1"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome (``pass``/``fail``/``error``), why, and what it measured."""

    outcome: str
    detail: str
    outputs: dict[str, Any]


def read_metta_golden(directory: str | Path) -> MettaGolden:
    """Parse ``directory/MANIFEST.json``.

    Raises:
        GoldenError: no manifest, not JSON, or another schema version.
    """
    root = Path(directory)
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GoldenError(
            f"no Metta golden at {root}: {MANIFEST_NAME} is missing; produce it inside its "
            f'cell with `nox -s "golden({root.name})"`'
        ) from None
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{root / MANIFEST_NAME} is not JSON ({exc}); restore it") from None
    if manifest.get("schema_version") != 1:
        raise GoldenError(f"{root / MANIFEST_NAME}: schema_version must be 1")
    return MettaGolden(root, manifest)


def file_problems(golden: MettaGolden, name: str, kind: str) -> list[str]:
    """How agent ``name``'s file ``kind`` differs from the MANIFEST (every member of a
    bundle directory); empty when every listed byte is there."""
    rel = golden.agent(name)["files"][kind]
    entries = [
        e for e in golden.manifest["files"] if e["path"] == rel or e["path"].startswith(f"{rel}/")
    ]
    if not entries:
        return [f"{rel}: not listed in the manifest"]
    problems = []
    for entry in entries:
        path = golden.root / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["size_bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: bytes differ from the manifest")
    return problems


def migrated_outputs(
    path: Path, scratch: Path, probe: dict[str, Any] | None = None
) -> tuple[dict[str, Any], MigrationReport]:
    """Migrate ``path`` into ``scratch/data``, load the result weights-only, probe it.

    Args:
        path: a G3/G4 file.
        scratch: an empty directory (the data dir is made in it).
        probe: the MANIFEST's probe section (``obs``, ``obs_dtype``, ``done``); None: the
            agent's own :func:`~ckptcompat.agents.probe.probe_batch` with the producer's
            settings.

    Returns:
        The migrated agent's greedy outputs (lists, :func:`probe_outputs`) and the report.

    Raises:
        CheckpointError and subclasses: migrate refused the file, or the written file does
            not load with ``weights_only=True``.
    """
    report = migrate_generation(path, scratch / "data")
    written = Path(report.destination.removeprefix("file://"))
    torch_compat.load(written, map_location="cpu")  # weights_only=True, no allowlist
    agent = SimpleCheckpointManager.load_from_uri(report.destination)
    if probe is None:
        from ckptcompat.agents.probe import probe_batch

        obs, done = probe_batch(agent, steps=4, batch=3, seed=0)
    else:
        obs = torch.tensor(probe["obs"], dtype=getattr(torch, probe["obs_dtype"]))
        done = torch.tensor(probe["done"], dtype=torch.float32)
    return probe_outputs(agent, obs, done), report


def _doctor_problems(path: Path, kind: str, class_path: str) -> list[str]:
    explanation = explain_generation(path)
    source = explanation.source
    problems = []
    if (source.generation, source.container) != _GENERATION[kind]:
        problems.append(f"doctor: {source.generation}/{source.container}, not {_GENERATION[kind]}")
    if source.call is None or source.call.name != class_path or not explanation.allowlisted:
        problems.append(f"doctor: architecture {source.call and source.call.name} not {class_path}")
    minor = ".".join(str(torch.__version__).split(".")[:2])
    prediction = next((r for r in explanation.readers if r.torch == minor), None)
    if prediction is None:
        problems.append(f"doctor: no prediction for torch {minor}")
    elif not (prediction.plain.startswith("fails") and prediction.migrate.startswith("reads")):
        problems.append(
            f"doctor on {minor}: plain {prediction.plain!r}, migrate {prediction.migrate!r}"
        )
    return problems


def _output_problems(
    golden: MettaGolden, want: dict[str, Any], got: dict[str, Any]
) -> tuple[list[str], str]:
    comparison = numerics.compare(golden.producer.get("numerics"), numerics.fingerprint())
    same_torch = str(golden.producer["torch"]).split("+")[0] == str(torch.__version__).split("+")[0]
    bitwise = comparison.bitwise and same_torch
    problems = []
    if got["actions"] != want["actions"]:
        problems.append(f"greedy actions {got['actions']} != expected {want['actions']}")
    tol = golden.manifest["tolerances"]
    for key in ("logprobs", "entropy", "values"):
        actual, expected = torch.tensor(got[key]), torch.tensor(want[key])
        if bitwise and not torch.equal(actual, expected):
            problems.append(f"{key}: not bitwise equal (same torch and numerics)")
        elif not torch.allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"]):
            worst = float((actual - expected).abs().max())
            problems.append(
                f"{key}: max |diff| {worst:.3g} beyond rtol {tol['rtol']}, atol {tol['atol']}"
            )
    how = "bitwise" if bitwise else (
        f"tolerance rtol {tol['rtol']} atol {tol['atol']} ("
        + ("another torch" if not same_torch else comparison.reason) + ")"
    )  # fmt: skip
    return problems, how


def check_file(golden: MettaGolden, name: str, kind: str) -> CheckResult:
    """Bytes, doctor, migrate, weights-only reload and probe outputs of one file.

    Returns ``fail`` for a difference or a typed refusal (the detail names it), ``error``
    for anything else; never raises for the file's sake.
    """
    section = golden.agent(name)
    path = golden.path(name, kind)
    scratch = Path(tempfile.mkdtemp(prefix="ckptcompat-metta-check-"))
    try:
        problems = file_problems(golden, name, kind)
        if problems:
            return CheckResult("fail", "; ".join(problems), {})
        problems = _doctor_problems(path, kind, section["class_path"])
        got, report = migrated_outputs(path, scratch, section["probe"])
        if (report.generation, report.loader) != (_GENERATION[kind][0], "safe"):
            problems.append(f"migrate: generation {report.generation}, loader {report.loader}")
        want = {k: section["probe"][k] for k in _OUTPUT_KEYS}
        output_problems, how = _output_problems(golden, want, got)
        problems += output_problems
        outputs = {"compared": how, "actions": got["actions"]}
        if problems:
            return CheckResult("fail", "; ".join(problems), outputs)
        return CheckResult(
            "pass", f"doctor explains it; migrated, weights-only, outputs {how}", outputs
        )
    except CheckpointError as exc:
        return CheckResult("fail", f"{type(exc).__name__}: {str(exc)[:400]}", {})
    except Exception as exc:  # recorded as the outcome
        return CheckResult("error", f"{type(exc).__name__}: {str(exc)[:400]}", {})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def naive_load(golden: MettaGolden, name: str, kind: str) -> CheckResult:
    """A plain ``torch.load(FILE)`` here: ``pass`` if it returned, ``fail`` on a typed
    refusal (the doctor predicts one on every torch), ``error`` otherwise. No pickle of
    these files can run code: they hold none (a zip without ``data.pkl``, a directory)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 2.4/2.5 warn about the weights_only default
            obj = torch_compat.naive_load(golden.path(name, kind), map_location="cpu")
        return CheckResult("pass", f"{type(obj).__module__}.{type(obj).__qualname__}", {})
    except CheckpointError as exc:
        return CheckResult("fail", f"{type(exc).__name__}: {str(exc)[:300]}", {})
    except Exception as exc:  # recorded as the outcome
        return CheckResult("error", f"{type(exc).__name__}: {str(exc)[:300]}", {})


def _record(
    golden: MettaGolden, name: str, kind: str, loader: str, result: CheckResult, duration_s: float
) -> Record:
    here = str(torch.__version__)
    return results.make_record(
        scenario=SCENARIO,
        artifact=golden.artifact(kind),
        agent=name,
        loader=loader,
        outcome=result.outcome,
        producer_torch=str(golden.producer["torch"]),
        consumer_torch=here,
        producer_numpy=str(golden.producer["numpy"]),
        consumer_numpy=np.__version__,
        detail=result.detail[:2000],
        duration_s=max(0.0, duration_s),
        outputs=result.outputs or None,
    )


def run(records_file: Path, root: Path = GOLDEN_ROOT) -> list[Record]:
    """Check every Metta golden under ``root`` here; append one record per check.

    Per producer, agent and kind: a ``safe`` record (:func:`check_file`) and a ``naive``
    one (:func:`naive_load`). A producer directory that cannot be read prints why and
    writes nothing (its missing records fail the gate).
    """
    written = []
    for directory in metta_golden_dirs(root):
        try:
            golden = read_metta_golden(directory)
        except GoldenError as exc:
            print(f"metta golden: {exc}", flush=True)
            continue
        for name in golden.agents:
            for kind in KINDS:
                for loader, check in (("safe", check_file), ("naive", naive_load)):
                    started = time.perf_counter()
                    result = check(golden, name, kind)
                    record = _record(
                        golden, name, kind, loader, result, time.perf_counter() - started
                    )
                    results.append_record(records_file, record)
                    written.append(record)
                    if record.outcome == Outcome.PASS or loader == "naive":
                        continue
                    print(
                        f"{record.outcome.value:<5} {record.cell_key}\n      {record.detail[:300]}"
                    )
    print(f"metta golden: {len(written)} checks", flush=True)
    return written
