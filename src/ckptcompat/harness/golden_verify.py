"""Reading and checking golden checkpoints: the consumer side of ``fixtures/golden/<cell>/``.

A golden directory (written by :mod:`ckptcompat.harness.golden` inside one torch cell) holds,
per agent, the files of :data:`KINDS` and one ``MANIFEST.json`` describing them (sha256,
size, producer versions, probe batch and expected outputs, expected greedy returns,
tolerances). This module loads each file through the path a user of this cell would take
(safe format: :class:`SimpleCheckpointManager`, no allowlist; legacy: the allowlist reader),
and replays the stored PPO update (records of each check:
:mod:`ckptcompat.harness.golden_records`). The writer reuses :func:`replay_ppo_update`,
:func:`probe_outputs` and :func:`greedy_returns`, so producer and consumer run the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import ckptcompat
from ckptcompat import numerics
from ckptcompat.agents.probe import run_probe
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.harness.fixtures import locator
from ckptcompat.harness.fixtures.manifest import sha256_file
from ckptcompat.rl.ppo import PPOConfig, RolloutBatch, ppo_update
from ckptcompat.rl.trainer import evaluate_greedy

__all__ = [
    "GENERATION",
    "GOLDEN_ROOT",
    "KINDS",
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "Golden",
    "GoldenError",
    "compare_state_dicts",
    "environment_differences",
    "file_problems",
    "finite",
    "generation_dir",
    "golden_dirs",
    "greedy_returns",
    "load_legacy_agent",
    "load_safe_agent",
    "numerics_comparison",
    "pip_freeze",
    "probe_outputs",
    "probe_problems",
    "producer_code_digest",
    "read_golden",
    "replay_ppo_update",
    "sha256_file",
    "single_thread",
]

#: The committed goldens of a source checkout: one directory per producing cell.
GOLDEN_ROOT: Path = locator.GOLDEN_ROOT
MANIFEST_NAME = "MANIFEST.json"
#: Schema of the manifests this code writes; 1 (generation 1, no numerics fingerprint) is read.
MANIFEST_SCHEMA = 2
_READABLE_SCHEMAS = (1, MANIFEST_SCHEMA)
#: The golden generation this code writes. Generation 1 (``<root>/<cell>/``) was produced
#: outside the reproducible-numerics mode, so its bytes only reproduce on the CPU that made
#: them; generation 2 (``<root>/gen2/<cell>/``) is produced in the mode
#: (:mod:`ckptcompat.numerics`) and records its fingerprint. Goldens are append-only:
#: both stay, and every consumer checks both.
GENERATION = 2
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
#: (G1 pickles a PolicyRecord), the writers, and the generator. Readers (scan, allowlist,
#: doctor, migrate) are left out: changing them cannot change what a producer writes.
_PRODUCER_SOURCES = (
    "agents/*.py",
    "rl/*.py",
    "policy/*.py",
    "torch_compat.py",
    "harness/golden*.py",
    *(
        f"checkpoint/{m}.py"
        for m in (
            "atomic",
            "digest_reader",
            "format",
            "index",
            "legacy",
            "loading",
            "manager",
            "rebuild",
            "rng",
            "uri",
        )
    ),
)


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
    recorded = producer.get("code_digest")
    if recorded != producer_code_digest():
        diffs.append("producer code: these goldens were written by other agent/training code")
    comparison = numerics_comparison(golden)
    if not comparison.bitwise:
        diffs.append(f"numerics: {comparison.reason}")
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell is not None and cell != golden.cell:
        diffs.insert(0, f"cell: producer {golden.cell}, here {cell}")
    return diffs


def numerics_comparison(golden: Golden) -> numerics.Comparison:
    """Whether this process may compare its results with the golden's producer bit for bit.

    Compares the producer's recorded numerics fingerprint with this process's
    (:func:`numerics.compare`); generation 1 recorded none, so it is never bitwise.
    """
    return numerics.compare(golden.numerics, numerics.fingerprint())


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block (the producer's setting), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- loading
def load_safe_agent(data_dir: str | os.PathLike[str], run: str, epoch: int) -> nn.Module:
    """The agent of safe-format checkpoint ``run`` ``epoch`` under ``data_dir``, via the manager.

    No allowlist is involved (safe format v1); the digest is checked against index.json.

    Raises:
        CheckpointError and subclasses: see :meth:`SimpleCheckpointManager.load_agent`.
    """
    return SimpleCheckpointManager(run, data_dir, cache_size=0).load_agent(epoch)


def load_legacy_agent(golden: Golden, name: str, kind: str) -> nn.Module:
    """Agent ``name``'s G1, G2 or bare state_dict file, read by the allowlist reader.

    A state_dict holds no class, so the agent is rebuilt from the manifest's class_path
    and config and loaded strictly.

    Raises:
        UnsafeCheckpointError, IncompatibleCheckpointError (e.g. a numpy-1 pickle on torch
        < 2.6, which has no allowlist aliases): see :func:`legacy.read_checkpoint`.
        GoldenError: the file's generation is not ``kind``.
    """
    ckpt = legacy.read_checkpoint(golden.path(name, kind))
    if ckpt.generation != kind:
        raise GoldenError(f"{golden.path(name, kind)} read as {ckpt.generation}, not {kind}")
    if ckpt.agent is not None:
        return ckpt.agent
    info = golden.agent(name)
    agent = build_agent(info["class_path"], info["config"])
    agent.load_state_dict(ckpt.state_dict, strict=True)
    return agent


# --------------------------------------------------------------------------- probe, eval
def probe_outputs(agent: nn.Module, obs: torch.Tensor, done: torch.Tensor) -> dict[str, Any]:
    """Greedy outputs on the probe batch as lists: actions, logprobs, entropy, values ``(T, B)``."""
    with single_thread():
        out = run_probe(agent, obs, done)
    return {
        "actions": out.actions.tolist(),
        "logprobs": out.logprobs.tolist(),
        "entropy": out.entropy.tolist(),
        "values": out.values.tolist(),
    }


def probe_problems(golden: Golden, name: str, agent: nn.Module) -> list[str]:
    """How ``agent``'s greedy probe outputs differ from the manifest's (empty: within tolerance).

    Greedy actions must be identical; logprobs, entropy and values within ``rtol``/``atol``.
    """
    probe = golden.agent(name)["probe"]
    obs = torch.tensor(probe["obs"], dtype=getattr(torch, probe["obs_dtype"]))
    done = torch.tensor(probe["done"], dtype=torch.float32)
    got = probe_outputs(agent, obs, done)
    tol = golden.tolerances
    problems = []
    if got["actions"] != probe["actions"]:
        problems.append(f"greedy actions {got['actions']} != expected {probe['actions']}")
    for key in ("logprobs", "entropy", "values"):
        actual, expected = torch.tensor(got[key]), torch.tensor(probe[key])
        if not torch.allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"]):
            worst = float((actual - expected).abs().max())
            problems.append(
                f"{key}: max |diff| {worst:.3g} beyond rtol {tol['rtol']}, atol {tol['atol']}"
            )
    return problems


def greedy_returns(agent: nn.Module, env_id: str, seeds: list[int]) -> list[float]:
    """Return of one greedy episode per seed (:func:`evaluate_greedy`), on one thread."""
    with single_thread():
        return evaluate_greedy(agent, env_id, list(seeds))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PPO replay
def replay_ppo_update(
    data_dir: str | os.PathLike[str], run: str, rollout: Mapping[str, Any]
) -> tuple[nn.Module, dict[str, float]]:
    """One PPO update on a stored rollout, from the stored agent and trainer state.

    Loads agent ``run`` at ``rollout["epoch"]`` via the manager, builds Adam as the trainer
    does (``lr``, ``eps`` from the stored PPO config), restores its state from the trainer
    state (RNG streams untouched), sets the epoch's learning rate and runs
    :func:`ppo_update` with a fresh generator seeded ``rollout["update_seed"]``, on one thread.

    Args:
        data_dir: the directory holding the run directory.
        run: the run (agent) name.
        rollout: the loaded rollout payload (see :mod:`ckptcompat.harness.golden`).

    Returns:
        The updated agent and the update's loss statistics.
    """
    epoch = int(rollout["epoch"])
    ppo = PPOConfig(**rollout["ppo"])
    manager = SimpleCheckpointManager(run, data_dir, cache_size=0)
    agent = manager.load_agent(epoch)
    optimizer = torch.optim.Adam(agent.parameters(), lr=ppo.learning_rate, eps=ppo.adam_eps)
    manager.load_trainer_state(epoch, optimizer=optimizer, restore_rng=False)
    for group in optimizer.param_groups:
        group["lr"] = ppo.learning_rate_at(epoch)
    stored = rollout["batch"]
    batch = RolloutBatch(
        **{k: v for k, v in stored.items() if k != "initial_state"},
        initial_state=tuple(stored["initial_state"]),
    )
    generator = torch.Generator().manual_seed(int(rollout["update_seed"]))
    with single_thread():
        stats = ppo_update(agent, optimizer, batch, ppo, generator)  # type: ignore[arg-type]
    return agent, stats


def compare_state_dicts(
    actual: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    rtol: float,
    atol: float,
) -> list[str]:
    """Keys, dtypes and values (``allclose``) that differ; empty when within tolerance."""
    if set(actual) != set(expected):
        return [f"keys differ: {sorted(set(actual) ^ set(expected))}"]
    problems = []
    for key, want in expected.items():
        got = actual[key]
        if got.dtype != want.dtype or got.shape != want.shape:
            problems.append(
                f"{key}: {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}"
            )
        elif not torch.allclose(got, want, rtol=rtol, atol=atol):
            worst = float((got.double() - want.double()).abs().max())
            problems.append(f"{key}: max |diff| {worst:.3g}")
    return problems


def finite(stats: Mapping[str, float]) -> bool:
    """True when every value of a loss-statistics mapping is a finite number."""
    return all(math.isfinite(float(v)) for v in stats.values())
