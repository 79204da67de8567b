"""Golden checkpoints: ``python -m ckptcompat.harness.golden OUT_DIR CELL``, run inside CELL.

Writes ``OUT_DIR/gen<N>/CELL/`` for every generation N of ``read.GENERATIONS`` (normally
``fixtures/golden/gen2/<cell>/`` and ``gen3/<cell>/``, via ``nox -s "golden(t24)"``), each
with its agents (:data:`GENERATION_AGENTS`: generation 2 the mock and the RecurrentAgent,
generation 3 the SplitLSTMAgent), produced in the reproducible-numerics mode
(:mod:`ckptcompat.numerics`; the CLI re-executes itself in it when started without). A
generation already on disk is verified byte for byte, never rewritten; generation 1
(``fixtures/golden/<cell>/``, made before the mode existed) is left alone. A team's agents
(``--config``) go to generation 2 of its own directory. For each agent -- a run directory
named after it::

    <agent>/checkpoints/<agent>_v1.pt          safe format v1 agent (SimpleCheckpointManager)
    <agent>/checkpoints/<agent>_v1.trainer.pt  trainer state: Adam after one update, RNG streams
    <agent>/checkpoints/index.json             the manager's index
    <agent>/model_0001.pt                      G1: a whole pickled PolicyRecord holding the agent
    <agent>/<agent>__e1__s128__t0__sc<SC>.pt   G2: a whole pickled agent
    <agent>/state_dict_v1.pt                   a bare state_dict
    <agent>/rollout_v1.pt                      a rollout batch of epoch 1 (tensors and primitives)
    <agent>/post_update_v1.pt                  the parameters after one PPO update on it

and one ``MANIFEST.json``: sha256 and size of every file, the producer's torch / numpy /
python / ckptcompat versions, ``uv pip freeze`` and numerics fingerprint, per agent the
probe batch with its greedy outputs, greedy returns on fixed seeds, and the tolerances
consumers compare with. How the files are produced: :mod:`ckptcompat.harness.golden.produce`;
how they are checked: :mod:`ckptcompat.harness.golden.read` and
:mod:`ckptcompat.harness.golden.verify`.

Deterministic bytes (docs/design.md section 8): the reproducible-numerics mode, fixed seeds,
``created_at`` from ``SOURCE_DATE_EPOCH`` (fixed here), every torch file written to a file
object (so its zip folder is ``archive/``, not the file's name), no wall-clock times.
Goldens are append-only: :func:`generate` writes into a new or empty directory, or verifies
that an existing one holds exactly these bytes; it never replaces a different file."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ckptcompat
from ckptcompat import numerics
from ckptcompat.checkpoint.atomic import LOCK_NAME, write_bytes_atomic
from ckptcompat.errors import AgentMismatchError
from ckptcompat.harness import team, versions
from ckptcompat.harness.golden.produce import (
    AGENTS,
    ENV_ID,
    EPOCH,
    EVAL_SEEDS,
    GENERATION_AGENTS,
    GOLDEN_PPO,
    SEED,
    UPDATE_SEED,
    GoldenAgent,
    produce_agent,
)
from ckptcompat.harness.golden.read import (
    CONFIRMED_CODE_NAME,
    GENERATION,
    GENERATIONS,
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    GoldenError,
    comparable_manifest,
    confirmed_code_digests,
    generation_dir,
    pip_freeze,
    producer_code_digest,
    read_golden,
)
from ckptcompat.harness.team import TeamConfigError

__all__ = [
    "AGENTS",
    "ENV_ID",
    "EPOCH",
    "EVAL_SEEDS",
    "GENERATION_AGENTS",
    "GOLDEN_PPO",
    "SEED",
    "SIZE_BUDGET_BYTES",
    "SOURCE_DATE_EPOCH",
    "TOLERANCES",
    "UPDATE_SEED",
    "GoldenAgent",
    "check_cell",
    "check_numerics",
    "confirm_code",
    "generate",
    "main",
    "write_or_verify",
]

#: 2025-01-01T00:00:00Z: the ``created_at`` of every safe-format file (seconds).
SOURCE_DATE_EPOCH = "1735689600"
#: Tensor tolerances (docs/design.md section 7) and the relative tolerance on greedy returns
#: across versions (same cell: exact).
TOLERANCES: dict[str, float] = {"rtol": 1e-4, "atol": 1e-6, "eval_return_rel": 0.01}
#: Upper bound on one cell's golden directory, MANIFEST included (bytes).
SIZE_BUDGET_BYTES = 1_000_000


def _produce(
    stage: Path, cell_id: str, specs: tuple[GoldenAgent, ...], generation: int
) -> dict[str, bytes]:
    """Every file of one cell's generation, MANIFEST.json included, as ``{path: bytes}``."""
    agents = {spec.name: produce_agent(spec, stage) for spec in specs}
    kinds = {rel: (name, kind) for name, a in agents.items() for kind, rel in a["files"].items()}
    files: dict[str, bytes] = {}
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        if path.name == LOCK_NAME:  # the writer lock holds a pid and a host name
            continue
        files[path.relative_to(stage).as_posix()] = path.read_bytes()
    manifest = {
        "schema_version": MANIFEST_SCHEMA,
        "generated_by": f"python -m ckptcompat.harness.golden OUT_DIR {cell_id}",
        "generation": generation,
        "cell": cell_id,
        "source_date_epoch": int(SOURCE_DATE_EPOCH),
        "producer": {
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "ckptcompat": ckptcompat.__version__,
            "code_digest": producer_code_digest(),
            "pip_freeze": pip_freeze(),
            "numerics": numerics.fingerprint(),
        },
        "tolerances": TOLERANCES,
        "agents": agents,
        "files": [
            {
                "path": rel,
                "agent": kinds.get(rel, (rel.split("/")[0], None))[0],
                "kind": kinds.get(rel, (None, "index"))[1],
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_bytes": len(data),
            }
            for rel, data in files.items()
        ],
    }
    files[MANIFEST_NAME] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


# --------------------------------------------------------------------------- writing
@contextmanager
def _reproducible() -> Iterator[None]:
    """Fixed ``SOURCE_DATE_EPOCH`` and one torch thread for the block; both restored after."""
    before_env = os.environ.get("SOURCE_DATE_EPOCH")
    before_threads = torch.get_num_threads()
    os.environ["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before_threads)
        if before_env is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before_env


def check_numerics() -> None:
    """Refuse to produce goldens outside the reproducible-numerics mode (their bytes would
    reproduce only on this CPU).

    Raises:
        GoldenError: this process is not in the mode (the message says how to start it).
    """
    numerics.apply()
    fp = numerics.fingerprint()
    if not fp["reproducible"]:
        setting = " ".join(f"{k}={v}" for k, v in numerics.REPRODUCIBLE_ENV.items())
        raise GoldenError(
            "goldens are produced in the reproducible-numerics mode, and this process is not "
            f'in it ({numerics.describe(fp)}); run `nox -s "golden(<cell>)"` or '
            f"`python -m ckptcompat.harness.golden` (both set it), or set {setting} before "
            "starting Python. On a machine that is not x86-64 with MKL no such mode exists: "
            "produce goldens on one that is"
        )


def check_cell(cell: versions.Cell) -> None:
    """Refuse to produce ``cell``'s goldens in another cell's venv.

    Raises:
        GoldenError: this process's torch (and numpy major) is not ``cell``'s.
    """
    numpy_major = int(np.__version__.split(".")[0])
    here = versions.cell_for_torch(str(torch.__version__), numpy_major)
    if here is None or here.id != cell.id:
        raise GoldenError(
            f"goldens of cell {cell.id} need torch {cell.torch} with numpy "
            f"{cell.numpy or '2 (constraints.txt)'}; this process has torch {torch.__version__} "
            f'and numpy {np.__version__}. Run `nox -s "golden({cell.id})"`'
        )


def write_or_verify(target: Path, files: dict[str, bytes]) -> list[str]:
    """Write ``files`` under ``target`` unless that would change an existing file.

    An existing ``MANIFEST.json`` that differs only in what describes the producing
    environment rather than the bytes (:func:`comparable_manifest`: ``uv pip freeze``,
    the code digest, the CPU named) counts as the same, as for ``--confirm-code``, and is
    kept as committed: a clean clone's venv, synced to today's extras, verifies the
    committed goldens instead of refusing them (found by a new user's trial, 2026-12-07).

    Returns the relative paths written (empty: every file was already there, identical).

    Raises:
        GoldenError: an existing file differs, or ``target`` holds files not generated
            here; nothing is written then.
    """
    existing = (
        {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
        if target.is_dir()
        else set()
    )
    differing = [
        rel
        for rel in files
        if rel in existing and not _same(rel, (target / rel).read_bytes(), files[rel])
    ]
    unknown = sorted(existing - set(files))
    if differing or unknown:
        raise GoldenError(
            f"goldens are append-only: {target} already holds other bytes; "
            + (f"differing: {', '.join(differing)}; " if differing else "")
            + (f"not generated here: {', '.join(unknown)}; " if unknown else "")
            + "a committed golden never changes (a generator change needs a new torch cell "
            "or a new agent, not new bytes for an old one)"
        )
    written = []
    # MANIFEST last: a directory with a manifest is complete.
    for rel in sorted(files, key=lambda r: (r == MANIFEST_NAME, r)):
        if rel in existing:
            continue
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, files[rel])
        written.append(rel)
    return written


def _same(rel: str, committed: bytes, fresh: bytes) -> bool:
    """The same golden file: identical bytes, or manifests equal but for provenance."""
    if committed == fresh:
        return True
    if Path(rel).name != MANIFEST_NAME:
        return False
    try:
        return comparable_manifest(json.loads(committed)) == comparable_manifest(json.loads(fresh))
    except (ValueError, AttributeError, TypeError):  # not JSON, or not a JSON object
        return False


def generate(
    out_dir: str | os.PathLike[str],
    cell_id: str,
    agents: tuple[GoldenAgent, ...] = AGENTS,
    generation: int = GENERATION,
) -> tuple[Path, list[str]]:
    """Produce generation ``generation`` of ``cell_id``'s goldens, ``agents``, (run inside
    that cell) into ``out_dir/gen<generation>/<cell>`` (:func:`generation_dir`). Mutates
    process-global state while it runs (torch/numpy/python RNGs, oneDNN off and one thread
    from the reproducible mode); ``SOURCE_DATE_EPOCH`` is restored. Run it in its own
    process (the CLI does).

    Returns:
        ``(directory, relative paths written)``; nothing written means the directory already
        held exactly these bytes.

    Raises:
        KeyError: unknown cell id.
        GoldenError: this process's torch/numpy is not the cell's; it is not in the
            reproducible-numerics mode; ``uv`` is missing; the directory holds different
            bytes (append-only).
    """
    cell = versions.by_id(cell_id)
    check_cell(cell)
    check_numerics()
    target = generation_dir(out_dir, cell.id, generation)
    with _reproducible(), tempfile.TemporaryDirectory(prefix="ckptcompat-golden-") as tmp:
        files = _produce(Path(tmp), cell.id, agents, generation)
    return target, write_or_verify(target, files)


def confirm_code(
    out_dir: str | os.PathLike[str],
    cell_id: str,
    agents: tuple[GoldenAgent, ...] = AGENTS,
    generation: int = GENERATION,
) -> str:
    """Confirm that this producer code regenerates ``out_dir``'s generation ``generation``
    of ``cell_id`` (whose agents are ``agents``).

    Regenerates into a temp dir; when every file is byte-identical and the manifests agree
    (:func:`comparable_manifest`), appends :func:`producer_code_digest` to the generation's
    ``code_digests.json`` (append-only, atomic), so the regeneration tests keep comparing
    after a refactor that changed the code but not the bytes. Returns a one-line report.

    Raises:
        GoldenError: no committed golden there, or any byte differs (then the code changed
            what goldens hold: append a new generation instead).
    """
    committed = read_golden(generation_dir(out_dir, cell_id, generation))
    with tempfile.TemporaryDirectory(prefix="ckptcompat-confirm-") as tmp:
        fresh_root, _ = generate(tmp, cell_id, agents, generation)
        fresh = read_golden(fresh_root)
        differing = [
            rel
            for rel in sorted({e["path"] for e in committed.manifest["files"]})
            if not (fresh.root / rel).is_file()
            or (fresh.root / rel).read_bytes() != (committed.root / rel).read_bytes()
        ]
        if comparable_manifest(fresh.manifest) != comparable_manifest(committed.manifest):
            differing.append(MANIFEST_NAME)
    if differing:
        raise GoldenError(
            f"this code does not reproduce {committed.root}: {', '.join(differing)} differ; "
            "goldens are append-only, so a producer change that changes bytes needs a new "
            "generation (raise GENERATION), not a confirmation"
        )
    digest = producer_code_digest()
    path = committed.root.parent / CONFIRMED_CODE_NAME
    table = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    known = table.setdefault(cell_id, [])
    if digest in known or digest == committed.producer.get("code_digest"):
        return f"golden {cell_id}: code {digest[:12]} already confirmed for {committed.root}"
    known.append(digest)
    write_bytes_atomic(path, (json.dumps(table, indent=1, sort_keys=True) + "\n").encode())
    return f"golden {cell_id}: code {digest[:12]} reproduces {committed.root}; recorded in {path}"


def _per_generation(args: argparse.Namespace, plan: dict[int, Any]) -> int:
    """Run this CLI once per generation of ``plan``, each in a fresh process.

    A whole-object pickle (G1, G2) memoises equal strings that are one object, and which
    strings are one object depends on what ran before in the process: generation 3's LSTM
    parameter names pickled differently after generation 2 had been produced in the same
    process. One process per generation keeps each generation's bytes a function of its
    own code. Returns the worst exit status.
    """
    status = 0
    for generation in plan:
        command = [sys.executable, "-m", "ckptcompat.harness.golden", str(args.out_dir),
                   args.cell, "--generation", str(generation)]  # fmt: skip
        if args.config is not None:
            command += ["--config", str(args.config)]
        if args.confirm_code:
            command.append("--confirm-code")
        status = max(status, subprocess.run(command, check=False).returncode)
    return status


def _team_agents(config_path: Path, cell: str) -> tuple[GoldenAgent, ...]:
    """The golden agents of a team's config, for ``cell``.

    Raises:
        TeamConfigError: the config is invalid, or ``cell`` is not in its ``cells`` (the
            team's matrix would call such goldens "not in the baseline").
        AgentMismatchError: an agent's class_path does not import, or a config is not JSON.
    """
    config = team.load(config_path)
    if cell not in config.cells:
        raise TeamConfigError(
            f"{config.source}: cell {cell} is not in tool.ckptcompat.cells "
            f"{list(config.cells)}; add it there, or write goldens of those cells only"
        )
    return tuple(GoldenAgent(n, p, dict(kw)) for n, (p, kw) in config.resolved_agents().items())


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m ckptcompat.harness.golden OUT_DIR CELL``.

    Exit 1 on a GoldenError; 2 on a team config that is invalid (TeamConfigError) or names
    an agent that does not import or build (AgentMismatchError), nothing written.

    Started outside the reproducible-numerics mode (and with no ``argv`` of its own), it
    re-executes itself in the mode: the mode's variables must be set before torch starts.
    """
    if argv is None and not numerics.requested():
        os.execve(
            sys.executable,
            [sys.executable, "-m", "ckptcompat.harness.golden", *sys.argv[1:]],
            numerics.reproducible_env(),
        )
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.golden",
        description="Write (or verify) the golden checkpoints of one torch cell.",
    )
    parser.add_argument("out_dir", type=Path, help="e.g. fixtures/golden (writes gen2/CELL in it)")
    parser.add_argument("cell", help="cell id of this environment, e.g. t24")
    parser.add_argument(
        "--config", type=Path, help="a team's pyproject.toml: its agents (on CartPole-v1)"
    )
    parser.add_argument(
        "--confirm-code",
        action="store_true",
        help="regenerate OUT_DIR's committed goldens of CELL in a temp dir and, when every "
        "byte is the same, record this producer code's digest as reproducing them",
    )
    parser.add_argument("--generation", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = {g: GENERATION_AGENTS[g] for g in GENERATIONS}
    if args.config is not None:
        try:
            plan = {GENERATION: _team_agents(args.config, args.cell)}
        except (TeamConfigError, AgentMismatchError) as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    if args.generation is not None:
        if args.generation not in plan:
            parser.error(f"--generation {args.generation}: expected one of {sorted(plan)}")
        plan = {args.generation: plan[args.generation]}
    try:
        if args.confirm_code:
            present = {
                g: a
                for g, a in plan.items()
                if (generation_dir(args.out_dir, args.cell, g) / MANIFEST_NAME).is_file()
            }
            if not present:
                # read_golden names the missing manifest and how to produce it.
                read_golden(generation_dir(args.out_dir, args.cell, min(plan)))
            if len(present) > 1:
                return _per_generation(args, present)
            for generation, agents in present.items():
                print(confirm_code(args.out_dir, args.cell, agents, generation))
            return 0
        if len(plan) > 1:
            return _per_generation(args, plan)
        for generation, agents in plan.items():
            existing = generation_dir(args.out_dir, args.cell, generation)
            if (existing / MANIFEST_NAME).is_file() and producer_code_digest() not in {
                read_golden(existing).producer.get("code_digest"),
                *confirmed_code_digests(read_golden(existing)),
            }:
                # Its MANIFEST records the code that wrote it, so this code cannot verify it
                # byte for byte by writing; --confirm-code compares the files instead.
                print(f"golden {args.cell}: {existing} was written by other code; left alone "
                      "(check it with --confirm-code)")  # fmt: skip
                continue
            target, written = generate(args.out_dir, args.cell, agents, generation)
            total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
            state = f"wrote {len(written)} files" if written else "verified identical"
            print(f"golden {args.cell}: {state} in {target}; {total} bytes in total")
    except GoldenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AgentMismatchError as exc:  # a team's class_path that does not import or build
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0
