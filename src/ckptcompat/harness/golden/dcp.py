"""DCP goldens: ``python -m ckptcompat.harness.golden.dcp OUT_DIR CELL``, run inside CELL.

Writes ``OUT_DIR/dcp/CELL/`` (normally ``fixtures/golden/dcp/<cell>/``; ``nox -s
"golden(<cell>)"`` runs it after the generation-2 goldens for each default cell): two
tiny runs of :data:`AGENT` trained for :data:`EPOCHS` epoch with ``--checkpoint-format dcp``,
one by a single process and one by two ranks under ``torchrun`` (gloo)::

    ws1/checkpoints/ws1_v1.dcp/{.metadata,__0_0.distcp}       DCP, world size 1
    ws1/checkpoints/ws1_v1.pt, ws1_v1.trainer.pt, index.json   the same run's safe files
    ws2/checkpoints/ws2_v1.dcp/{.metadata,__0_0.distcp,__1_0.distcp}   DCP, world size 2
    ws2/checkpoints/ws2_v1.pt, ws2_v1.trainer.pt, index.json   rank 0's safe files
    MANIFEST.json

The matrix's DCP phase (:mod:`ckptcompat.harness.run.dcp_phase`) resumes each of them in
every consumer cell on 1 and 2 ranks. They live beside the generation-2 directories, not in
them, because those are complete, append-only sets whose MANIFEST lists every file.

Why these goldens are compared by meaning, not by bytes. In the reproducible-numerics mode
two productions give identical tensor bytes (every ``.distcp`` file is byte-identical), but
three things differ from run to run (measured on 2.6.0): DCP's ``.metadata`` pickles a
``StorageMeta`` with a random ``save_id`` (uuid4) and the directory's path; the trainer
writes its measured ``total_time_s`` (wall time) into the safe file's metadata, the
trainer state's ``extra`` and ``index.json``; and the index's xxh3 digests follow from
those bytes. So the MANIFEST records, besides each file's sha256 and size (which keep the
committed files append-only), a *semantic digest* per file (:func:`semantic_digest`):
tensors by dtype, shape and bytes, every other value as JSON, with the wall times and the
machine's CPU fields set aside, and ``.metadata`` by what the doctor's inert reader sees
(keys, dtypes, shapes, files, format facts). A regeneration must give the same semantic
digests; :func:`generate_dcp` verifies an existing directory that way and never rewrites it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ckptcompat
from ckptcompat import numerics, torch_compat
from ckptcompat.checkpoint.atomic import LOCK_NAME
from ckptcompat.checkpoint.layout import DCP_METADATA_NAME
from ckptcompat.harness import versions
from ckptcompat.harness.golden.generate import (
    SOURCE_DATE_EPOCH,
    check_cell,
    check_numerics,
    write_or_verify,
)
from ckptcompat.harness.golden.read import (
    GOLDEN_ROOT,
    MANIFEST_NAME,
    GoldenError,
    pip_freeze,
    producer_code_digest,
)
from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer_config import TrainerConfig
from ckptcompat.scan.dcp_metadata import read_dcp_metadata

__all__ = [
    "AGENT",
    "DCP_DIRNAME",
    "EPOCHS",
    "RUNS",
    "dcp_golden_dir",
    "dcp_golden_dirs",
    "generate_dcp",
    "main",
    "produce_dcp",
    "semantic_digest",
    "trainer_config",
]

#: The agent of the DCP goldens (the matrix records call it ``mock``).
AGENT = ("mock", "ckptcompat.agents.mock.MockAgent")
#: Epochs trained: one checkpoint, version 1.
EPOCHS = 1
#: Run name -> world size of the run that wrote it.
RUNS: dict[str, int] = {"ws1": 1, "ws2": 2}
#: The folder under the golden root holding one directory per producer cell.
DCP_DIRNAME = "dcp"
#: Values that are wall-clock measurements: set aside by :func:`semantic_digest`.
_WALL_TIME_KEYS = frozenset({"total_time_s"})
#: Fields of a numerics fingerprint naming the producing machine, not the kernel path.
_MACHINE_KEYS = frozenset({"cpu_vendor", "cpu_model", "cpu_flags", "glibc_tunables"})
_SCHEMA = 1
#: Seconds one golden run may take before it counts as hung.
_RUN_TIMEOUT_S = 600


def trainer_config() -> TrainerConfig:
    """The DCP goldens' trainer config: the matrix's tiny budget (4 envs x 32 steps)."""
    return TrainerConfig(
        agent_class_path=AGENT[1],
        checkpoint_every=1,
        ppo=PPOConfig(num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2),
    )


def dcp_golden_dir(root: str | os.PathLike[str], cell: str) -> Path:
    """``root/dcp/<cell>``: where ``cell``'s DCP goldens live under a golden root."""
    return Path(root) / DCP_DIRNAME / cell


def dcp_golden_dirs(root: str | os.PathLike[str] = GOLDEN_ROOT) -> list[Path]:
    """Every DCP golden directory (holding a MANIFEST.json) under ``root``, by cell id."""
    base = Path(root) / DCP_DIRNAME
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / MANIFEST_NAME).is_file())


# --------------------------------------------------------------------------- producing
def _run_command(world_size: int, out: Path, run: str) -> list[str]:
    rank = ["-m", "ckptcompat.harness.golden.dcp_rank", str(out), run]
    if world_size == 1:
        return [sys.executable, *rank]
    launcher = ["-m", "torch.distributed.run", "--standalone"]
    return [sys.executable, *launcher, "--nproc-per-node", str(world_size), *rank]


def produce_dcp(stage: Path, after_run: Callable[[str], None] | None = None) -> None:
    """Train the runs of :data:`RUNS` into ``stage`` (one process, or torchrun for 2 ranks).

    The children run in the reproducible-numerics mode with ``SOURCE_DATE_EPOCH`` fixed.
    ``after_run(run)`` is called once each run's files are complete, before the next run
    starts (the verification stops there at the first run that means something else).

    Raises:
        GoldenError: a run failed (its output's tail is in the message) or hung, or
            ``after_run`` refused the run.
    """
    env = {**numerics.reproducible_env(), "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    env["OMP_NUM_THREADS"] = "1"
    for run, world_size in RUNS.items():
        command = _run_command(world_size, stage, run)
        try:
            proc = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=_RUN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GoldenError(f"DCP golden run {run} took over {_RUN_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise GoldenError(f"DCP golden run {run} exited {proc.returncode}:\n{tail}")
        if after_run is not None:
            after_run(run)


def _canonical(value: Any) -> Any:
    """``value`` as JSON primitives: tensors by dtype, shape and sha256 of their bytes; wall
    times and machine fields replaced by a marker (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        data = value.detach().contiguous().cpu()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        digest = hashlib.sha256(raw).hexdigest()
        return {"tensor": str(data.dtype), "shape": list(data.shape), "sha256": digest}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _WALL_TIME_KEYS or key in _MACHINE_KEYS:
                out[str(key)] = "<set aside>"
            else:
                out[str(key)] = _canonical(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def semantic_digest(path: Path) -> str:
    """sha256 of what one DCP golden file means (see the module docstring).

    ``.pt`` files: their weights-only load, canonicalised; ``index.json``: its JSON less
    wall times and digests; ``.metadata``: the inert reader's view; anything else (the
    ``.distcp`` data files): the sha256 of the bytes.

    Raises:
        CheckpointError: a ``.pt`` file does not load weights-only.
    """
    if path.suffix == ".pt":
        view = _canonical(torch_compat.load(path, map_location="cpu"))
    elif path.name == "index.json":
        index = json.loads(path.read_text(encoding="utf-8"))
        for key in ("checkpoints", "trainer_states"):
            for entry in index.get(key, []):
                entry.pop("digest", None)
        view = _canonical(index)
    elif path.name == DCP_METADATA_NAME:
        view = asdict(read_dcp_metadata(path.read_bytes()))
    else:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    text = json.dumps(view, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(stage: Path, cell: str, files: dict[str, bytes]) -> dict[str, Any]:
    runs = {}
    for run, world_size in RUNS.items():
        index = json.loads((stage / run / "checkpoints" / "index.json").read_text("utf-8"))
        entry = index["dcp_checkpoints"][-1]
        runs[run] = {
            "world_size": world_size,
            "epoch": entry["epoch"],
            "agent_step": entry["agent_step"],
            "dcp_dir": f"{run}/checkpoints/{entry['dir']}",
            "safe_v1": f"{run}/checkpoints/{index['checkpoints'][-1]['file']}",
        }
    return {
        "schema_version": _SCHEMA,
        "generated_by": f"python -m ckptcompat.harness.golden.dcp OUT_DIR {cell}",
        "cell": cell,
        "agent": {"name": AGENT[0], "class_path": AGENT[1]},
        "trainer_config": trainer_config().to_json(),
        "producer": {
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "ckptcompat": ckptcompat.__version__,
            "code_digest": producer_code_digest(),
            "pip_freeze": pip_freeze(),
            "numerics": numerics.fingerprint(),
        },
        "runs": runs,
        "files": [
            {
                "path": rel,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_bytes": len(data),
                "semantic_sha256": semantic_digest(stage / rel),
            }
            for rel, data in files.items()
        ],
    }


def _golden_files(root: Path) -> list[Path]:
    """The golden files under ``root``, sorted; the lock file (which holds a pid) left out."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_NAME]


def _produce(
    stage: Path, cell: str, after_run: Callable[[str], None] | None = None
) -> dict[str, bytes]:
    """Every file of ``cell``'s DCP goldens, MANIFEST.json included, by relative path."""
    produce_dcp(stage, after_run)
    files = {p.relative_to(stage).as_posix(): p.read_bytes() for p in _golden_files(stage)}
    manifest = _manifest(stage, cell, files)
    files[MANIFEST_NAME] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


def _semantics(manifest: dict[str, Any]) -> dict[str, str]:
    return {entry["path"]: entry["semantic_sha256"] for entry in manifest["files"]}


def _refuse_differing(target: Path, want: dict[str, str], got: dict[str, str], when: str) -> None:
    """Raise GoldenError naming the files whose semantic digests differ, if any."""
    differing = sorted(p for p in want.keys() | got.keys() if want.get(p) != got.get(p))
    if differing:
        raise GoldenError(
            f"this code does not regenerate {target}: {', '.join(differing)} mean "
            f"something else now ({when}); goldens are append-only: add a new producer "
            "cell or agent rather than new bytes for an old one"
        )


def _run_checker(stage: Path, target: Path, want: dict[str, str]) -> Callable[[str], None]:
    """``after_run`` for :func:`produce_dcp`: compares one finished run's files with the
    committed semantic digests of that run, so that a golden which means something else is
    refused before the next run (the 2-rank one costs a torchrun launch) is trained."""

    def check(run: str) -> None:
        got = {
            p.relative_to(stage).as_posix(): semantic_digest(p) for p in _golden_files(stage / run)
        }
        mine = {path: d for path, d in want.items() if path.startswith(f"{run}/")}
        later = list(RUNS)[list(RUNS).index(run) + 1 :]
        when = f"found after run {run}" + (f"; {', '.join(later)} not trained" if later else "")
        _refuse_differing(target, mine, got, when)

    return check


def generate_dcp(out_dir: str | os.PathLike[str], cell_id: str) -> tuple[Path, str]:
    """Produce ``cell_id``'s DCP goldens into ``out_dir/dcp/<cell>``, or verify them.

    A directory without a MANIFEST gets the files; one with a MANIFEST is regenerated in a
    temp dir and compared file by file by :func:`semantic_digest` (never rewritten): each
    run's files as soon as that run is trained, so a refusal costs no later run, and then
    every file again, the MANIFEST's own list included.

    Returns:
        ``(directory, one-line report)``.

    Raises:
        KeyError: unknown cell id.
        GoldenError: the cell is not a default one; this process is not the cell's venv or
            not in the reproducible-numerics mode; a run failed; the existing goldens
            mean something else than a regeneration (the differing files named).
    """
    cell = versions.by_id(cell_id)
    if not cell.is_default:
        raise GoldenError(f"DCP goldens are made in the default cells, not in {cell.id}")
    check_cell(cell)
    check_numerics()
    target = dcp_golden_dir(out_dir, cell.id)
    want = None
    if (target / MANIFEST_NAME).is_file():
        want = _semantics(json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory(prefix="ckptcompat-dcp-golden-") as tmp:
        stage = Path(tmp)
        check = None if want is None else _run_checker(stage, target, want)
        files = _produce(stage, cell.id, check)
    if want is not None:
        got = _semantics(json.loads(files[MANIFEST_NAME]))
        _refuse_differing(target, want, got, "every run trained")
        return target, f"verified {len(want)} files equivalent (semantic digests)"
    written = write_or_verify(target, files)
    return target, f"wrote {len(written)} files"


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m ckptcompat.harness.golden.dcp OUT_DIR CELL``; exit 1 on a GoldenError.

    Started outside the reproducible-numerics mode (and with no ``argv``), it re-executes
    itself in the mode.
    """
    if argv is None and not numerics.requested():
        os.execve(
            sys.executable,
            [sys.executable, "-m", "ckptcompat.harness.golden.dcp", *sys.argv[1:]],
            numerics.reproducible_env(),
        )
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.golden.dcp",
        description="Write (or verify) the DCP goldens of one default torch cell.",
    )
    parser.add_argument("out_dir", type=Path, help="e.g. fixtures/golden (writes dcp/CELL)")
    parser.add_argument("cell", help="cell id of this environment, e.g. t24")
    args = parser.parse_args(argv)
    try:
        target, report = generate_dcp(args.out_dir, args.cell)
    except GoldenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"dcp golden {args.cell}: {report} in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
