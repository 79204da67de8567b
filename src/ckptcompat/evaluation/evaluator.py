"""Greedy evaluation of a policy, recorded in the stats DB under its one key.

See docs/design.md sections 6 and 7.

:class:`PolicyEvaluator` runs ``episodes`` episodes of one env -- episode ``i`` reset with
seed ``seed + i`` -- with greedy (argmax) actions, the recurrent state carried from step
to step and started fresh (``initial_state(1)``) at every episode, and writes each episode
to a :class:`~ckptcompat.evaluation.stats_db.SimulationStatsDB` file.

What it evaluates, and where ``(policy_key, policy_version)`` comes from:

* a checkpoint URI (``file://``, a path, a run directory, ``DIR/<run>:latest``,
  ``mock://KEY[:vN]``): resolved once to a concrete file, keyed by
  :func:`ckptcompat.checkpoint.uri.key_and_version` of that file and loaded from it, so a
  ``:latest`` cannot move between keying and loading; the resolved ``file://`` URI is
  stored with the key;
* a PolicyRecord-like object (``.policy`` and ``.key_and_version()``): its own key, and
  its ``.uri`` resolved;
* an agent (``nn.Module``) in memory: it has no key, so ``policy_key`` and
  ``policy_version`` are required (:class:`~ckptcompat.errors.InputError` otherwise;
  :mod:`.policy_source` settles keys).

Episodes run one env at a time, each from a fresh seeded reset, so an episode's return
depends only on the agent and its seed: the same agent, ``seed`` and ``episodes`` give
identical returns, and ``seed=s + 1`` reproduces episode 1 of an evaluation with
``seed=s``. No episode draws from torch's generator (greedy actions), and global torch
settings (threads, seeds) are left alone.

Per episode, for agent 0: metrics ``reward`` (the return, the sum of rewards) and
``episode_length`` (steps); attributes ``terminated``, ``truncated`` and ``wall_time_s``
(seconds); the seed in ``episodes.seed``. The agent is loaded and checked against the env
before the DB file is opened, so a refused policy leaves no DB behind.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ckptcompat.errors import AgentMismatchError
from ckptcompat.evaluation.policy_source import (
    PolicySource,
    check_agent_fits_env,
    explicit_key,
    load_policy,
)
from ckptcompat.evaluation.stats_db import SimulationStatsDB
from ckptcompat.evaluation.stats_values import PolicyKey
from ckptcompat.rl.envs import make_env
from ckptcompat.rl.greedy import StepResult, greedy_episodes

__all__ = [
    "EpisodeOutcome",
    "EvaluationResult",
    "PolicyEvaluator",
    "evaluate_policy",
    "run_episode",
]

#: The agent's id in every recorded episode (single-agent envs).
AGENT_ID = 0


@dataclasses.dataclass(frozen=True)
class EpisodeOutcome:
    """One finished episode.

    Attributes:
        seed: the seed its env was reset with.
        episode_return: sum of its rewards (float).
        length: env steps taken.
        terminated, truncated: how it ended (``truncated`` also when ``max_episode_steps``
            cut it short).
        wall_time_s: seconds it took, reset included.
        cpu_time_s: CPU seconds of the evaluating thread over the same span
            (``time.thread_time``): unlike ``wall_time_s``, it does not grow when other
            processes share the cores, so speed ratios between cells compare work, not load.
    """

    seed: int
    episode_return: float
    length: int
    terminated: bool
    truncated: bool
    wall_time_s: float
    cpu_time_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What :meth:`PolicyEvaluator.evaluate` ran and recorded.

    Attributes:
        policy_key, policy_version: the key the episodes were recorded under.
        policy_uri: the resolved URI (``file://...`` or ``mock://...``), None for an
            in-memory agent.
        env_id: the evaluated env.
        simulation_id: the simulation row of this evaluation in the DB.
        db_path: the stats DB file written.
        seeds: the env seed of each episode, ``seed + i``.
        episode_returns: return of each episode, in seed order.
        episode_lengths: steps of each episode, in seed order.
        episode_ids: the DB id of each episode, in seed order.
        wall_time_s: seconds for the whole evaluation, loading included.
        episodes_time_s: seconds spent in the episodes alone (the sum of their
            ``wall_time_s``): the speed of evaluation without loading.
        episodes_cpu_s: the episodes' CPU seconds (the sum of their ``cpu_time_s``).
        mean_return: mean of ``episode_returns`` (derived).
    """

    policy_key: str
    policy_version: int
    policy_uri: str | None
    env_id: str
    simulation_id: str
    db_path: Path
    seeds: list[int]
    episode_returns: list[float]
    episode_lengths: list[int]
    episode_ids: list[str]
    wall_time_s: float
    episodes_time_s: float = 0.0
    episodes_cpu_s: float = 0.0
    mean_return: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        returns = self.episode_returns
        object.__setattr__(self, "mean_return", math.fsum(returns) / len(returns))

    def to_json(self) -> dict[str, Any]:
        """The result as JSON primitives (``db_path`` as a string)."""
        return {**dataclasses.asdict(self), "db_path": str(self.db_path)}


# --------------------------------------------------------------------------- episodes


def _greedy_action(actions: torch.Tensor, space: gym.Space[Any]) -> int:
    if actions.numel() != 1:
        raise AgentMismatchError(
            "the agent returned more than one action for one env step",
            expected="actions of shape (T, B) = (1, 1)",
            found=str(tuple(actions.shape)),
        )
    action = int(actions.reshape(-1)[0].item())
    if not space.contains(action):
        raise AgentMismatchError(
            "the agent chose an action outside the env's action space",
            expected=repr(space),
            found=str(action),
            fix="build the agent from this env's action space",
        )
    return action


def _as_batch(obs: Any) -> np.ndarray:
    # A writable copy: torch warns on non-writable arrays (MiniGrid's image views).
    return np.array(obs, copy=True)[None]


class _OneEnv:
    """One env as a batch of one for :func:`~ckptcompat.rl.greedy.greedy_episodes`."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env = env

    def step(self, actions: torch.Tensor) -> StepResult:
        action = _greedy_action(actions, self.env.action_space)
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return (
            _as_batch(obs),
            np.array([float(reward)]),
            np.array([terminated]),
            np.array([truncated]),
        )


@torch.no_grad()
def run_episode(
    agent: nn.Module,
    env: gym.Env[Any, Any],
    seed: int,
    *,
    max_episode_steps: int | None = None,
) -> EpisodeOutcome:
    """Run one greedy episode of ``env`` reset with ``seed``; the agent is not modified.

    The loop is :func:`~ckptcompat.rl.greedy.greedy_episodes` with ``B = 1``: observations
    go to the agent as ``(1, 1, *obs_shape)`` tensors of the env's dtype on the agent's
    device, with ``done`` ``(1, 1)`` all False: the state starts at ``initial_state(1)``
    and is carried from each step's output to the next step.

    Args:
        max_episode_steps: cut the episode after this many steps (``truncated``); None
            relies on the env's own time limit.

    Raises:
        AgentMismatchError: an action that is not a single element of the action space,
            or whatever the agent raises for observations it cannot take.
    """
    start, cpu_start = time.perf_counter(), time.thread_time()
    obs, _ = env.reset(seed=seed)
    episode = greedy_episodes(
        agent,
        _OneEnv(env),
        _as_batch(obs),
        done_dtype=torch.bool,
        max_episode_steps=max_episode_steps,
    )
    return EpisodeOutcome(
        seed=seed,
        episode_return=episode.returns[0],
        length=episode.lengths[0],
        terminated=episode.terminated[0],
        truncated=episode.truncated[0],
        wall_time_s=time.perf_counter() - start,
        cpu_time_s=time.thread_time() - cpu_start,
    )


# --------------------------------------------------------------------------- evaluator


def _positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, not {value!r}")
    return value


class PolicyEvaluator:
    """Evaluate policies on one env with fixed seeds and record them in a stats DB.

    Args:
        env_id: a supported env id (:data:`ckptcompat.rl.envs.ENV_SPECS`), or any name
            when ``env_factory`` builds the env.
        episodes: episodes per evaluation (>= 1).
        seed: episode ``i`` resets its env with ``seed + i`` (>= 0).
        sim_name: the simulation's name in the DB (``sim_name`` in filters); default
            ``"eval/<env_id>"``.
        device: where checkpoints are loaded (in-memory agents stay where they are).
        max_episode_steps: see :func:`run_episode`.
        env_factory: builds one env; default :func:`ckptcompat.rl.envs.make_env`.

    Raises:
        ValueError: ``episodes``, ``seed`` or ``max_episode_steps`` out of range.
    """

    def __init__(
        self,
        env_id: str,
        *,
        episodes: int = 10,
        seed: int = 0,
        sim_name: str | None = None,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = None,
        env_factory: Callable[[], gym.Env[Any, Any]] | None = None,
    ) -> None:
        self.env_id = env_id
        self.episodes = _positive_int("episodes", episodes, 1)
        self.seed = _positive_int("seed", seed, 0)
        self.sim_name = sim_name or f"eval/{env_id}"
        self.device = device
        self.max_episode_steps = (
            None
            if max_episode_steps is None
            else _positive_int("max_episode_steps", max_episode_steps, 1)
        )
        self._env_factory = env_factory or (lambda: make_env(env_id))

    def evaluate(
        self,
        policy: PolicySource,
        db_path: str | os.PathLike[str],
        *,
        policy_key: str | None = None,
        policy_version: int | None = None,
        simulation_id: str | None = None,
    ) -> EvaluationResult:
        """Evaluate ``policy`` and record every episode in the DB file ``db_path``.

        Args:
            policy: a checkpoint URI, a PolicyRecord-like object, or an agent.
            db_path: a SimulationStatsDB file (created if missing); this process must be
                its only writer.
            policy_key, policy_version: required for an in-memory agent; for a URI or
                record they may only repeat the key the scheme gives.
            simulation_id: default a fresh uuid4 hex.

        Returns:
            The :class:`EvaluationResult`.

        Raises:
            InputError: an agent without an explicit key, an explicit key that is invalid
                or disagrees with the URI's/record's.
            StatsDBError: a DB that cannot be written.
            CheckpointError and subclasses: the URI cannot be resolved or loaded.
            AgentMismatchError: the agent does not fit the env.
            UnsupportedEnvError: ``env_id`` is not supported (and no ``env_factory``).
            TypeError: ``policy`` is none of the accepted kinds.
            ValueError: a PolicyRecord that cannot load its policy (no store or URI).
        """
        start = time.perf_counter()
        explicit = explicit_key(policy_key, policy_version)
        agent, key = load_policy(policy, explicit, self.device)
        env = self._env_factory()
        was_training = agent.training
        try:
            check_agent_fits_env(agent, env, self.env_id)
            agent.eval()
            with SimulationStatsDB(db_path) as db:
                result = self._run(agent, env, key, db, simulation_id or uuid.uuid4().hex)
        finally:
            agent.train(was_training)
            env.close()
        return EvaluationResult(**result, wall_time_s=time.perf_counter() - start)

    def _run(
        self,
        agent: nn.Module,
        env: gym.Env[Any, Any],
        key: PolicyKey,
        db: SimulationStatsDB,
        simulation_id: str,
    ) -> dict[str, Any]:
        db.register_simulation(
            simulation_id,
            self.sim_name,
            self.env_id,
            policy_key=key.policy_key,
            policy_version=key.policy_version,
            policy_uri=key.policy_uri,
        )
        outcomes, episode_ids = [], []
        for i in range(self.episodes):
            outcome = run_episode(
                agent, env, self.seed + i, max_episode_steps=self.max_episode_steps
            )
            # Written as each episode ends: an interrupted evaluation keeps what finished,
            # and its simulation has no finished_at.
            episode_ids.append(
                db.record_policy_episode(
                    simulation_id,
                    key.policy_key,
                    key.policy_version,
                    key.policy_uri,
                    {
                        AGENT_ID: {
                            "reward": outcome.episode_return,
                            "episode_length": outcome.length,
                        }
                    },
                    step_count=outcome.length,
                    seed=outcome.seed,
                    attributes={
                        "terminated": outcome.terminated,
                        "truncated": outcome.truncated,
                        "wall_time_s": outcome.wall_time_s,
                    },
                )
            )
            outcomes.append(outcome)
        db.finish_simulation(simulation_id)
        return {
            "policy_key": key.policy_key,
            "policy_version": key.policy_version,
            "policy_uri": key.policy_uri,
            "env_id": self.env_id,
            "simulation_id": simulation_id,
            "db_path": Path(db.path),
            "seeds": [o.seed for o in outcomes],
            "episode_returns": [o.episode_return for o in outcomes],
            "episode_lengths": [o.length for o in outcomes],
            "episode_ids": episode_ids,
            "episodes_time_s": math.fsum(o.wall_time_s for o in outcomes),
            "episodes_cpu_s": math.fsum(o.cpu_time_s for o in outcomes),
        }


def evaluate_policy(
    policy: PolicySource,
    db_path: str | os.PathLike[str],
    *,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    policy_key: str | None = None,
    policy_version: int | None = None,
    sim_name: str | None = None,
    device: str | torch.device = "cpu",
) -> EvaluationResult:
    """One-call form of ``PolicyEvaluator(env_id, ...).evaluate(policy, db_path, ...)``.

    Raises:
        As :class:`PolicyEvaluator` and :meth:`PolicyEvaluator.evaluate`.
    """
    evaluator = PolicyEvaluator(
        env_id, episodes=episodes, seed=seed, sim_name=sim_name, device=device
    )
    return evaluator.evaluate(policy, db_path, policy_key=policy_key, policy_version=policy_version)
