"""Metta G3/G4 goldens: ``python -m ckptcompat.harness.generations_golden OUT_DIR CELL``.

Run inside CELL (``nox -s "golden(<cell>)"`` runs it after the other goldens). Writes
``OUT_DIR/metta/<cell>/`` (normally ``fixtures/golden/metta/<cell>/``), for each agent of
:data:`AGENTS` (a tiny architecture of ours, on the architecture allowlist)::

    g3/<agent>_v1.mpt        G3: weights.safetensors + modelarchitecture.txt (zip)
    g4/<agent>_v1/           G4 bundle directory: policy_spec.json, trainer_state.pt,
                             weights.safetensors
    g4/<agent>_v1.zip        the same bundle zipped
    MANIFEST.json

How the files are laid out: :mod:`.metta_format` (Metta's writers, cited there). The agent
is built with seed :data:`SEED`, its observation normaliser fed a seeded batch, and one
Adam step taken on a seeded loss over the probe batch (so weights, buffers and the trainer
state's moments are all non-trivial). The MANIFEST holds the producer's versions and
numerics fingerprint, the sha256 and size of every file, per agent the architecture string,
the probe batch and the agent's greedy outputs on it (the originals a migrated file must
reproduce), and the tolerances. Before writing, the producer migrates its own files in a
temp dir and requires bitwise-equal outputs.

Where they live: :mod:`.layout`. Append-only:
over an existing directory the files are regenerated in a temp dir and compared by content
-- the bytes of each zip member (deflate output depends on the zlib build) and of each
bundle file, and the manifest less its provenance -- and never rewritten.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import platform
import random
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ckptcompat
from ckptcompat import numerics
from ckptcompat.agents.probe import params_digest, probe_batch
from ckptcompat.agents.registry import build_agent
from ckptcompat.harness import versions
from ckptcompat.harness.generations_golden import metta_format
from ckptcompat.harness.generations_golden.check import migrated_outputs
from ckptcompat.harness.generations_golden.layout import EPOCH, file_paths, metta_golden_dir
from ckptcompat.harness.golden.generate import (
    SOURCE_DATE_EPOCH,
    check_cell,
    check_numerics,
    write_or_verify,
)
from ckptcompat.harness.golden.read import MANIFEST_NAME, GoldenError, pip_freeze
from ckptcompat.harness.golden.verify import probe_outputs, single_thread

__all__ = [
    "AGENTS",
    "SCHEMA",
    "SEED",
    "TOLERANCES",
    "MettaAgent",
    "generate",
    "main",
    "produce",
]

SCHEMA = 1
SEED = 0
#: The agent step recorded in the trainer state (one tiny rollout of 4 envs x 32 steps).
_AGENT_STEP = 128
#: Probe outputs compared across torch versions or CPUs (docs/design.md sec. 7); greedy
#: actions always exactly.
TOLERANCES: dict[str, float] = {"rtol": 1e-4, "atol": 1e-6}
_PROBE = {"steps": 4, "batch": 3, "seed": 0}
_BOX4 = {"type": "Box", "low": -1.0, "high": 1.0, "shape": [4], "dtype": "float32"}
_DISCRETE3 = {"type": "Discrete", "n": 3}


@dataclass(frozen=True)
class MettaAgent:
    """An agent the Metta goldens cover.

    Attributes:
        name: file stem (``<name>_v1``) and record agent, e.g. ``"recurrent"``.
        class_path: the agent class; also the architecture string's called name, so it must
            be on :data:`ckptcompat.generations.architecture.ALLOWED_ARCHITECTURES`.
        kwargs: constructor arguments besides the spaces (JSON primitives).
    """

    name: str
    class_path: str
    kwargs: dict[str, Any] = field(default_factory=dict)


#: Tiny on purpose: each file a few kB. Observation Box(-1, 1, (4,)) float32, Discrete(3)
#: actions (finite bounds: ``repr(inf)`` is not a literal, in Metta's strings or ours).
AGENTS: tuple[MettaAgent, ...] = (
    MettaAgent("mlp", "ckptcompat.agents.mlp.MLPAgent", {"hidden_sizes": [8]}),
    MettaAgent(
        "recurrent",
        "ckptcompat.agents.recurrent.RecurrentAgent",
        {"hidden_size": 8, "encoder_size": 8},
    ),
)


# --------------------------------------------------------------------------- producing
def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _trained(spec: MettaAgent) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The agent after a seeded normaliser update and one Adam step; its optimizer state;
    and its probe section (batch + greedy outputs)."""
    config = {"observation_space": _BOX4, "action_space": _DISCRETE3, **spec.kwargs}
    _seed(SEED)
    agent = build_agent(spec.class_path, config)
    generator = torch.Generator().manual_seed(SEED)
    agent.update_obs_normalizer(torch.rand((32, 4), generator=generator) * 2 - 1)  # type: ignore[operator]
    obs, done = probe_batch(copy.deepcopy(agent), **_PROBE)
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    with single_thread():
        out = agent(obs, agent.initial_state(obs.shape[1]), done)  # type: ignore[operator]
        loss = out.values.pow(2).mean() - 0.01 * out.entropy.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe = {
        **_PROBE,
        "obs": obs.tolist(),
        "obs_dtype": str(obs.dtype).removeprefix("torch."),
        "done": done.tolist(),
        **probe_outputs(agent, obs, done),
    }
    return agent, optimizer.state_dict(), probe


def _agent_files(spec: MettaAgent) -> tuple[dict[str, bytes], dict[str, Any]]:
    """One agent's files (relative path -> bytes) and its manifest section."""
    agent, optimizer_state, probe = _trained(spec)
    architecture = metta_format.architecture_spec(spec.class_path, agent.config)  # type: ignore[arg-type]
    weights = metta_format.safetensors_bytes(agent.state_dict())
    trainer = metta_format.trainer_state_bytes(optimizer_state, EPOCH, _AGENT_STEP)
    members = metta_format.bundle_members(weights, architecture, trainer)
    paths = file_paths(spec.name)
    files = {
        paths["g3_mpt"]: metta_format.mpt_bytes(weights, architecture),
        **{f"{paths['g4_dir']}/{name}": data for name, data in members.items()},
        paths["g4_zip"]: metta_format.zip_bytes(members, file_mode=0o100644),
    }
    section = {
        "class_path": spec.class_path,
        "config": agent.config,  # type: ignore[dict-item]
        "architecture": architecture,
        "epoch": EPOCH,
        "agent_step": _AGENT_STEP,
        "params_digest": params_digest(agent),
        "files": paths,
        "probe": probe,
    }
    return files, section


def _self_check(stage: Path, agents: dict[str, Any]) -> None:
    """Migrate every file just written and require bitwise-equal probe outputs.

    Raises:
        GoldenError: a file does not migrate, or its outputs differ from the agent's.
    """
    for name, section in agents.items():
        for kind, rel in section["files"].items():
            scratch = Path(tempfile.mkdtemp(dir=stage.parent))
            got, _ = migrated_outputs(stage / rel, scratch, section["probe"])
            want = {k: section["probe"][k] for k in ("actions", "logprobs", "entropy", "values")}
            if got != want:
                raise GoldenError(f"{name} {kind}: the migrated agent's outputs differ")


def produce(cell_id: str, agents: tuple[MettaAgent, ...] = AGENTS) -> dict[str, bytes]:
    """Every file of ``cell_id``'s Metta goldens, MANIFEST.json included, by relative path.

    Reseeds torch, numpy and python; call in the reproducible-numerics mode with one thread.
    """
    files: dict[str, bytes] = {}
    sections: dict[str, Any] = {}
    for spec in agents:
        agent_files, sections[spec.name] = _agent_files(spec)
        files.update(agent_files)
    with tempfile.TemporaryDirectory(prefix="ckptcompat-metta-golden-") as tmp:
        stage = Path(tmp) / "stage"
        for rel, data in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_bytes(data)
        _self_check(stage, sections)
    manifest = {
        "schema_version": SCHEMA,
        "generated_by": f"python -m ckptcompat.harness.generations_golden OUT_DIR {cell_id}",
        "cell": cell_id,
        "formats": {
            "g3_mpt": "Metta save_policy_artifact (6ddad6cebc, 793e02d3fd): zip of "
            "weights.safetensors + modelarchitecture.txt",
            "g4_dir": "Metta write_checkpoint_bundle (7eb0994b9c, 47b0d081ad): "
            "weights.safetensors + policy_spec.json + trainer_state.pt",
            "g4_zip": "Metta write_policy_bundle_zip of the bundle directory",
        },
        "producer": {
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "ckptcompat": ckptcompat.__version__,
            "pip_freeze": pip_freeze(),
            "numerics": numerics.fingerprint(),
        },
        "tolerances": TOLERANCES,
        "agents": sections,
        "files": [
            {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
            for rel, data in sorted(files.items())
        ],
    }
    files[MANIFEST_NAME] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


# --------------------------------------------------------------------------- comparing
def _content(rel: str, data: bytes) -> Any:
    """What a file holds regardless of the zlib that deflated it: a zip's members' bytes."""
    if rel.endswith((".mpt", ".zip")):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [(i.filename, archive.read(i.filename)) for i in archive.infolist()]
    return data


def _comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    producer = out["producer"]
    producer.pop("pip_freeze", None)
    for key in ("cpu_vendor", "cpu_model", "cpu_flags", "glibc_tunables"):
        producer["numerics"].pop(key, None)
    for entry in out["files"]:
        if entry["path"].endswith((".mpt", ".zip")):
            entry.pop("sha256")
            entry.pop("size_bytes")
    return out


def _differences(target: Path, files: dict[str, bytes]) -> list[str]:
    on_disk = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    differing = sorted(on_disk ^ set(files))
    for rel in sorted(set(files) & on_disk):
        old = (target / rel).read_bytes()
        if rel == MANIFEST_NAME:
            if _comparable(json.loads(old)) != _comparable(json.loads(files[rel])):
                differing.append(rel)
        elif _content(rel, old) != _content(rel, files[rel]):
            differing.append(rel)
    return differing


def generate(
    out_dir: str | os.PathLike[str], cell_id: str, agents: tuple[MettaAgent, ...] = AGENTS
) -> tuple[Path, str]:
    """Produce ``cell_id``'s Metta goldens into ``out_dir/metta/<cell>``, or verify them.

    Returns:
        ``(directory, one-line report)``.

    Raises:
        KeyError: unknown cell id.
        GoldenError: this process is not the cell's venv or not in the reproducible-numerics
            mode; ``uv`` is missing; the self-check failed; an existing directory holds
            files that a regeneration does not reproduce (named; nothing is rewritten).
    """
    cell = versions.by_id(cell_id)
    check_cell(cell)
    check_numerics()
    target = metta_golden_dir(out_dir, cell.id)
    before = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH
    try:
        files = produce(cell.id, agents)
    finally:
        if before is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before
    if (target / MANIFEST_NAME).is_file():
        differing = _differences(target, files)
        if differing:
            raise GoldenError(
                f"this code does not regenerate {target}: {', '.join(differing)} differ; "
                "goldens are append-only: add an agent or a producer cell instead"
            )
        return target, f"verified {len(files)} files equivalent (zip members by content)"
    written = write_or_verify(target, files)
    return target, f"wrote {len(written)} files"


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m ckptcompat.harness.generations_golden OUT_DIR CELL``; exit 1 on a
    GoldenError. Started outside the reproducible-numerics mode (and with no ``argv``), it
    re-executes itself in the mode."""
    if argv is None and not numerics.requested():
        os.execve(
            sys.executable,
            [sys.executable, "-m", "ckptcompat.harness.generations_golden", *sys.argv[1:]],
            numerics.reproducible_env(),
        )
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.generations_golden",
        description="Write (or verify) the Metta G3 (.mpt) and G4 (bundle) goldens of one cell.",
    )
    parser.add_argument(
        "out_dir", type=Path, help="required; e.g. fixtures/golden (writes metta/CELL)"
    )
    parser.add_argument("cell", help="required; cell id of this environment, e.g. t24")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        target, report = generate(args.out_dir, args.cell)
    except GoldenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"metta golden {args.cell}: {report} in {target}; {total} bytes in total")
    return 0
