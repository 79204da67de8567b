"""Cross-version scenarios: train under X, resume under Y, evaluate under Z.

See docs/design.md sections 7 and 8.

For every agent of :data:`AGENTS` and every ``X, Y, Z`` among the cells (the four default
cells unless told otherwise; ``X == Y == Z`` included) a *chain* trains run
``<agent>-<X>-<Y>`` for :attr:`Budget.train_epochs` epochs under X, resumes it to
:attr:`Budget.resume_epochs` under Y, and evaluates the result under Z into Z's stats-DB
shard. Each consumer Y gets its own run (same seed, so the X-side runs are bitwise equal,
which the train step checks), because a run's name is its ``policy_key`` and two runs that
diverged after resuming under different Ys must not share one.

The work runs in three *phases* -- every train, then every resume, then every evaluation --
and each phase starts **one** process per cell (:mod:`ckptcompat.harness.run.phases`) that runs
all of that cell's steps of that phase in-process: ``import torch`` costs seconds, the steps
milliseconds. The evaluate process also runs the golden checks, so a matrix run starts three
torch processes per cell. Phases hand over through the work directory only, one folder per
phase and cell, named like the CI artifact that carries it between jobs::

    <work>/train-<X>/<run>/...            runs trained under X (data_dir of the manager)
    <work>/train-<X>/<run>.json           what the train step saw (params digest, epoch)
    <work>/resume-<Y>/<run>/...           copies of X's runs, resumed under Y
    <work>/resume-<Y>/<run>.json          what the resume step saw (+ greedy returns under Y)
    <work>/resume-<Y>/reference.duckdb    stats DB of those reference evaluations
    <work>/evaluate-<Z>/stats.duckdb      Z's shard: every chain evaluated under Z

The cells' processes are driven by :mod:`ckptcompat.harness.run.driver`; this module, the
plan, imports neither torch nor numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ckptcompat.harness import versions

__all__ = [
    "AGENTS",
    "BUDGET",
    "DEFAULT_CELLS",
    "PHASES",
    "Budget",
    "Chain",
    "Layout",
    "chains",
    "steps",
]

PHASES: tuple[str, ...] = ("train", "resume", "evaluate")
#: Agent label (record ``agent``, run-name prefix) -> class path.
AGENTS: dict[str, str] = {
    "mock": "ckptcompat.agents.mock.MockAgent",
    # The default agent (issue 21); RecurrentAgent stays covered by the goldens.
    "split_lstm": "ckptcompat.agents.split_lstm.SplitLSTMAgent",
}
DEFAULT_CELLS: tuple[str, ...] = tuple(c.id for c in versions.DEFAULT)


@dataclass(frozen=True)
class Budget:
    """The tiny training and evaluation budget of every chain.

    Attributes:
        train_epochs: epochs trained under X (checkpoint after each).
        resume_epochs: target total epochs after resuming under Y.
        episodes: greedy evaluation episodes under Y (reference) and under Z.
        seed: the run seed; eval_seed: the first evaluation episode's env seed.
        env_id: the env of every chain.
        ppo: PPOConfig fields: 4 envs x 32 steps = 128 samples, 2 minibatches, 2 passes.
    """

    train_epochs: int = 2
    resume_epochs: int = 4
    episodes: int = 3
    seed: int = 0
    eval_seed: int = 1000
    env_id: str = "CartPole-v1"
    ppo: Mapping[str, int] = field(
        default_factory=lambda: {
            "num_envs": 4,
            "num_steps": 32,
            "num_minibatches": 2,
            "update_epochs": 2,
        }
    )


BUDGET = Budget()


@dataclass(frozen=True)
class Chain:
    """One agent's path through the cells: trained under ``producer``, resumed under
    ``consumer``, evaluated under ``evaluator`` (None: not an evaluation step)."""

    agent: str
    producer: str
    consumer: str
    evaluator: str | None = None

    @property
    def run(self) -> str:
        """The run name, hence the ``policy_key``: ``<agent>-<producer>-<consumer>``."""
        return f"{self.agent}-{self.producer}-{self.consumer}"


@dataclass(frozen=True)
class Layout:
    """Where the phases read and write under one work directory (see the module docstring)."""

    root: Path

    def phase_dir(self, phase: str, cell: str) -> Path:
        """Everything ``phase`` writes under ``cell``: ``<work>/<phase>-<cell>``."""
        return self.root / f"{phase}-{cell}"

    def train_dir(self, cell: str) -> Path:
        """data_dir of the runs trained under ``cell``."""
        return self.phase_dir("train", cell)

    def resume_dir(self, cell: str) -> Path:
        """data_dir of the runs resumed under ``cell``."""
        return self.phase_dir("resume", cell)

    def reference_shard(self, cell: str) -> Path:
        """Stats DB of the reference evaluations done right after resuming under ``cell``."""
        return self.resume_dir(cell) / "reference.duckdb"

    def shard(self, cell: str) -> Path:
        """Stats-DB shard of every evaluation run under ``cell``."""
        return self.phase_dir("evaluate", cell) / "stats.duckdb"

    def sidecar(self, data_dir: Path, run: str) -> Path:
        """The JSON a step leaves next to a run for the next phase."""
        return data_dir / f"{run}.json"


def chains(cells: Sequence[str], agents: Sequence[str] = tuple(AGENTS)) -> list[Chain]:
    """Every evaluation chain: agent x producer x consumer x evaluator, in that order."""
    return [Chain(agent, x, y, z) for agent in agents for x in cells for y in cells for z in cells]


def steps(
    phase: str, cell: str, cells: Sequence[str], agents: Sequence[str] = tuple(AGENTS)
) -> list[Chain]:
    """The chains whose ``phase`` step runs under ``cell``.

    ``train``: runs ``<agent>-<cell>-<Y>`` for every Y; ``resume``: ``<agent>-<X>-<cell>``
    for every X; ``evaluate``: every chain with ``evaluator == cell``.

    Raises:
        ValueError: unknown phase, or ``cell`` not among ``cells``.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
    if cell not in cells:
        raise ValueError(f"cell {cell!r} is not among the matrix cells {', '.join(cells)}")
    if phase == "train":
        return [Chain(a, cell, y) for a in agents for y in cells]
    if phase == "resume":
        return [Chain(a, x, cell) for a in agents for x in cells]
    return [c for c in chains(cells, agents) if c.evaluator == cell]
