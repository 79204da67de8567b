"""Reading a golden: the consumer side of ``fixtures/golden/<cell>/`` and where it came from.

A golden directory (written by ``python -m ckptcompat.harness.golden`` inside one torch
cell) holds, per agent, the files of :data:`KINDS` and one ``MANIFEST.json`` describing
them (sha256, size, producer versions, probe batch and expected outputs, expected greedy
returns, tolerances). This module finds and parses them, checks their bytes against the
manifest, and compares the producer's environment and numerics with this process's; the
checks of the files themselves are :mod:`ckptcompat.harness.golden.verify`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ckptcompat
from ckptcompat import locator, numerics
from ckptcompat.harness.fixtures.manifest import sha256_file

__all__ = [
    "CONFIRMED_CODE_NAME",
    "GENERATION",
    "GENERATIONS",
    "GOLDEN_ROOT",
    "KINDS",
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "Golden",
    "GoldenError",
    "comparable_manifest",
    "confirmed_code_digests",
    "environment_differences",
    "file_problems",
    "generation_dir",
    "golden_dirs",
    "numerics_comparison",
    "pip_freeze",
    "producer_code_digest",
    "read_golden",
]

#: The committed goldens of a source checkout: one directory per producing cell.
GOLDEN_ROOT: Path = locator.GOLDEN_ROOT
MANIFEST_NAME = "MANIFEST.json"
#: Schema of the manifests this code writes; 1 (generation 1, no numerics fingerprint) is read.
MANIFEST_SCHEMA = 2
_READABLE_SCHEMAS = (1, MANIFEST_SCHEMA)
#: The golden generation of our first agents (mock, recurrent), and the default of
#: :func:`generation_dir`. Generation 1 (``<root>/<cell>/``) was produced outside the
#: reproducible-numerics mode, so its bytes only reproduce on the CPU that made them;
#: generation 2 (``<root>/gen2/<cell>/``) is produced in the mode (:mod:`ckptcompat.numerics`)
#: and records its fingerprint. Goldens are append-only: every generation stays, and every
#: consumer checks all of them.
GENERATION = 2
#: Every generation this code writes, each in the reproducible-numerics mode with its own
#: agents (``golden.produce.GENERATION_AGENTS``). A generation's MANIFEST lists its agents,
#: so an agent added later cannot join a committed generation without rewriting its
#: MANIFEST: it gets the next one. Generation 3 (``<root>/gen3/<cell>/``) holds the
#: SplitLSTMAgent.
GENERATIONS: tuple[int, ...] = (2, 3)
#: Artifact kinds stored per agent, as the manifest's ``agents.<name>.files`` keys.
KINDS: tuple[str, ...] = (
    "safe_v1",
    "trainer_state",
    "g1",
    "g2",
    "state_dict",
    "rollout",
    "post_update",
)


class GoldenError(Exception):
    """A golden directory is missing, malformed, or would be changed by a write."""


@dataclass(frozen=True)
class Golden:
    """One producer's golden directory and its parsed manifest.

    Attributes:
        root: ``fixtures/golden/<cell>``.
        manifest: the parsed ``MANIFEST.json``.
    """

    root: Path
    manifest: dict[str, Any]

    @property
    def cell(self) -> str:
        """The producing cell id, e.g. ``"t24np1"``."""
        return str(self.manifest["cell"])

    @property
    def producer(self) -> dict[str, Any]:
        """``{torch, numpy, python, ckptcompat, pip_freeze}`` of the producing process."""
        return dict(self.manifest["producer"])

    @property
    def generation(self) -> int:
        """1 for goldens written before the reproducible-numerics mode, else the manifest's."""
        return int(self.manifest.get("generation", 1))

    @property
    def numerics(self) -> dict[str, Any] | None:
        """The producer's numerics fingerprint (:func:`numerics.fingerprint`); None in gen 1."""
        recorded = self.producer.get("numerics")
        return dict(recorded) if recorded else None

    @property
    def label(self) -> str:
        """``t26`` for generation 1, ``gen2-t26`` for later ones (test ids, messages)."""
        return self.cell if self.generation == 1 else f"gen{self.generation}-{self.cell}"

    @property
    def numpy_major(self) -> int:
        """Major version of the producer's numpy (1 pickles ``numpy.core``, 2 ``numpy._core``)."""
        return int(str(self.producer["numpy"]).split(".")[0])

    @property
    def agents(self) -> tuple[str, ...]:
        """Agent (run) names, e.g. ``("mock", "recurrent")``."""
        return tuple(sorted(self.manifest["agents"]))

    @property
    def tolerances(self) -> dict[str, float]:
        """``rtol``/``atol`` for tensors and ``eval_return_rel`` for greedy returns."""
        return {k: float(v) for k, v in self.manifest["tolerances"].items()}

    def agent(self, name: str) -> dict[str, Any]:
        """The manifest section of agent ``name`` (class_path, config, probe, evaluation...)."""
        return dict(self.manifest["agents"][name])

    def path(self, name: str, kind: str) -> Path:
        """Absolute path of agent ``name``'s artifact ``kind`` (one of :data:`KINDS`)."""
        return self.root / self.manifest["agents"][name]["files"][kind]


def generation_dir(root: str | os.PathLike[str], cell: str, generation: int = GENERATION) -> Path:
    """Where generation ``generation`` of ``cell``'s goldens lives under ``root``.

    Generation 1: ``root/<cell>``; generation N >= 2: ``root/gen<N>/<cell>``.
    """
    root = Path(root)
    return root / cell if generation == 1 else root / f"gen{generation}" / cell


def golden_dirs(root: str | os.PathLike[str] = GOLDEN_ROOT) -> list[Path]:
    """Every golden directory (one holding a MANIFEST.json) under ``root``, every generation.

    Sorted by generation, then cell id: ``root/<cell>`` (generation 1) first, then
    ``root/gen2/<cell>`` ... A missing ``root`` has none.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(1, p) for p in root.iterdir() if (p / MANIFEST_NAME).is_file()]
    for gen in root.glob("gen*"):
        number = gen.name.removeprefix("gen")
        if gen.is_dir() and number.isdigit():
            found += [(int(number), p) for p in gen.iterdir() if (p / MANIFEST_NAME).is_file()]
    return [p for _, p in sorted(found, key=lambda item: (item[0], item[1].name))]


def read_golden(directory: str | os.PathLike[str]) -> Golden:
    """Parse ``directory/MANIFEST.json``.

    Raises:
        GoldenError: no manifest, not JSON, or another schema version.
    """
    root = Path(directory)
    path = root / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GoldenError(
            f"no golden at {root}: {MANIFEST_NAME} is missing; produce it inside its cell "
            f'with `nox -s "golden({root.name})"`'
        ) from None
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{path} is not JSON ({exc}); restore it from git") from None
    if manifest.get("schema_version") not in _READABLE_SCHEMAS:
        raise GoldenError(
            f"{path} has schema_version {manifest.get('schema_version')!r}; this ckptcompat "
            f"reads {', '.join(map(str, _READABLE_SCHEMAS))}"
        )
    return Golden(root, manifest)


def file_problems(golden: Golden) -> list[str]:
    """Every way the files on disk differ from the manifest (empty when they agree).

    Checks each listed file's size and sha256, and that the directory holds no file the
    manifest does not list (a stray ``.lock`` or a hand-added file).
    """
    problems = []
    listed = {entry["path"]: entry for entry in golden.manifest["files"]}
    for rel, entry in listed.items():
        path = golden.root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in the manifest but missing")
            continue
        size = path.stat().st_size
        if size != entry["size_bytes"]:
            problems.append(f"{rel}: {size} bytes, manifest says {entry['size_bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    on_disk = {p.relative_to(golden.root).as_posix() for p in golden.root.rglob("*") if p.is_file()}
    for rel in sorted(on_disk - set(listed) - {MANIFEST_NAME}):
        problems.append(f"{rel}: on disk but not in the manifest")
    return problems


# --------------------------------------------------------------------------- environment
def pip_freeze(python: str = sys.executable) -> list[str]:
    """``uv pip freeze`` of ``python``'s environment, with this checkout's path removed.

    The editable install of ckptcompat is listed as ``-e file:///<checkout>``; it becomes
    ``ckptcompat==<version>`` so the manifest does not depend on where the repo lives.

    Raises:
        GoldenError: ``uv`` is not on PATH or fails.
    """
    uv = shutil.which("uv")
    if uv is None:
        raise GoldenError("`uv` is not on PATH; install it (`python -m pip install uv`)")
    proc = subprocess.run(
        [uv, "pip", "freeze", "--python", python],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise GoldenError(f"`uv pip freeze` failed ({proc.returncode}): {proc.stderr.strip()}")
    own = f"ckptcompat=={ckptcompat.__version__}"
    lines = [
        own if line.startswith("-e ") or line.split("==")[0].lower() == "ckptcompat" else line
        for line in (raw.strip() for raw in proc.stdout.splitlines())
        if line
    ]
    return sorted(lines)


#: Sources whose code decides a golden's bytes: the agents, training, the policy stubs
#: (G1 pickles a PolicyRecord), the checkpoint writers and their helpers, torch_compat (the
#: writer's torch calls and the numerics flags), numerics, and the generator. Readers (scan,
#: doctor, migrate's callers, harness verdicts) are left out: changing them cannot change
#: what a producer writes. Whole folders, so a module added to one is covered.
_PRODUCER_SOURCES = (
    "agents/*.py",
    "rl/*.py",
    "policy/*.py",
    "checkpoint/*.py",
    "torch_compat.py",
    "numerics.py",
    "harness/golden/*.py",
)
#: Per generation folder (``gen<N>/``): producer code digests confirmed to regenerate that
#: generation's files byte for byte (``{cell: [digest, ...]}``), appended by
#: ``python -m ckptcompat.harness.golden OUT_DIR CELL --confirm-code``.
CONFIRMED_CODE_NAME = "code_digests.json"
#: Manifest fields that describe the producing machine or code, not the files' bytes.
_PROVENANCE = ("pip_freeze", "code_digest")
_MACHINE = ("cpu_vendor", "cpu_model", "cpu_flags", "glibc_tunables")


def producer_code_digest() -> str:
    """sha256 over the source files that shape golden bytes (:data:`_PRODUCER_SOURCES`).

    Recorded in each MANIFEST so that regeneration is compared byte for byte only with
    goldens written by the same code: goldens are append-only, so after a change to PPO
    or an agent the old goldens stay, and only new code's determinism is checked.
    """
    root = Path(ckptcompat.__file__).resolve().parent
    h = hashlib.sha256()
    for pattern in _PRODUCER_SOURCES:
        for path in sorted(root.glob(pattern)):
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def environment_differences(golden: Golden) -> list[str]:
    """How this process differs from the golden's producer in what the bytes record.

    Compares ``CKPTCOMPAT_CELL`` (when set) with the producing cell, and the torch, numpy,
    python and ckptcompat versions exactly (they are written into the files). Empty: this
    is the producing environment, where regeneration must give the same bytes. The
    ``uv pip freeze`` is not compared: it is informational, and a test-tool bump does not
    change a checkpoint.
    """
    producer = golden.producer
    own = {
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "ckptcompat": ckptcompat.__version__,
    }
    diffs = [
        f"{name}: producer {producer[name]}, here {own[name]}"
        for name in own
        if str(producer[name]) != own[name]
    ]
    if producer_code_digest() not in {producer.get("code_digest"), *confirmed_code_digests(golden)}:
        diffs.append(
            "producer code: these goldens were written by other agent/training code, and this "
            "code is not confirmed to reproduce them (`python -m ckptcompat.harness.golden "
            f"OUT_DIR {golden.cell} --confirm-code` inside the cell)"
        )
    comparison = numerics_comparison(golden)
    if not comparison.bitwise:
        diffs.append(f"numerics: {comparison.reason}")
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell is not None and cell != golden.cell:
        diffs.insert(0, f"cell: producer {golden.cell}, here {cell}")
    return diffs


def confirmed_code_digests(golden: Golden) -> list[str]:
    """Producer code digests confirmed to regenerate ``golden`` byte for byte (gen >= 2).

    Read from ``<generation folder>/code_digests.json``; empty when there is none.

    Raises:
        GoldenError: the file is there but not a JSON object of lists of strings.
    """
    path = golden.root.parent / CONFIRMED_CODE_NAME
    if golden.generation < 2 or not path.is_file():
        return []
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        digests = table.get(golden.cell, [])
    except (json.JSONDecodeError, AttributeError) as exc:
        raise GoldenError(f"{path} is not a JSON object ({exc}); restore it from git") from None
    if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
        raise GoldenError(f"{path}: {golden.cell} must list digest strings; restore it from git")
    return digests


def comparable_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` less what describes the producing machine and code rather than the bytes:
    ``uv pip freeze``, the code digest and the CPU named in the numerics fingerprint (the
    kernel path stays). Two regenerations of one golden must agree on the rest."""
    out = json.loads(json.dumps(manifest))
    producer = out.get("producer", {})
    for key in _PROVENANCE:
        producer.pop(key, None)
    for key in _MACHINE:
        producer.get("numerics", {}).pop(key, None)
    return out


def numerics_comparison(golden: Golden) -> numerics.Comparison:
    """Whether this process may compare its results with the golden's producer bit for bit.

    Compares the producer's recorded numerics fingerprint with this process's
    (:func:`numerics.compare`); generation 1 recorded none, so it is never bitwise.
    """
    return numerics.compare(golden.numerics, numerics.fingerprint())
