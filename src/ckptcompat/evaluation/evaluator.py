"""Greedy evaluation of a policy, recorded in the stats DB under its one key (DESIGN 6, 7).

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
  ``policy_version`` are required (:class:`StatsDBError` otherwise).

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
import functools
import itertools
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ckptcompat.agents.spaces import as_space
from ckptcompat.checkpoint import uri as uri_mod
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import AgentMismatchError, CheckpointError
from ckptcompat.evaluation.stats_db import PolicyKey, SimulationStatsDB, StatsDBError
from ckptcompat.evaluation.stats_values import HasKeyAndVersion
from ckptcompat.rl.envs import make_env

__all__ = [
    "EpisodeOutcome",
    "EvaluationResult",
    "PolicyEvaluator",
    "PolicyRecordLike",
    "check_agent_fits_env",
    "evaluate_policy",
    "run_episode",
]

#: The agent's id in every recorded episode (single-agent envs).
AGENT_ID = 0


class PolicyRecordLike(Protocol):
    """What the evaluator uses of a (deprecated) PolicyRecord or MockPolicyRecord."""

    @property
    def policy(self) -> nn.Module: ...

    def key_and_version(self) -> tuple[str, int]: ...


PolicySource = str | os.PathLike[str] | nn.Module | PolicyRecordLike
"""A checkpoint URI, an in-memory agent (with an explicit key), or a PolicyRecord."""


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
    """

    seed: int
    episode_return: float
    length: int
    terminated: bool
    truncated: bool
    wall_time_s: float


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
    mean_return: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        returns = self.episode_returns
        object.__setattr__(self, "mean_return", math.fsum(returns) / len(returns))

    def to_json(self) -> dict[str, Any]:
        """The result as JSON primitives (``db_path`` as a string)."""
        return {**dataclasses.asdict(self), "db_path": str(self.db_path)}


# --------------------------------------------------------------------------- policies


def _resolved_uri(uri: str) -> str:
    try:
        return uri_mod.resolve(uri).uri
    except CheckpointError:
        # A record may carry a URI we cannot serve (wandb://) yet name its policy itself;
        # the URI is informational in the DB, so it is kept as given.
        return uri


def _load_policy(
    policy: PolicySource, explicit: PolicyKey | None, device: str | torch.device
) -> tuple[nn.Module, PolicyKey]:
    """The agent to evaluate and its validated key (with the resolved URI).

    The key is settled (and an explicit one checked against it) before anything loads.
    """
    load: Callable[[], object]
    if isinstance(policy, str | os.PathLike):
        concrete = uri_mod.resolve(policy).uri
        key = PolicyKey(*uri_mod.key_and_version(concrete), concrete)
        load = functools.partial(SimpleCheckpointManager.load_from_uri, concrete, device)
    elif isinstance(policy, nn.Module):
        if explicit is None:
            raise StatsDBError(
                "an in-memory agent has no policy key",
                expected="policy_key=<run name> and policy_version=<epoch>",
                found=f"a {type(policy).__name__} without them",
                fix="pass policy_key and policy_version, or evaluate its checkpoint URI",
            )
        return policy, explicit
    elif isinstance(policy, HasKeyAndVersion):
        uri = getattr(policy, "uri", None)
        key = PolicyKey.of(policy, _resolved_uri(uri) if isinstance(uri, str) else None)
        load = functools.partial(getattr, policy, "policy")
    else:
        raise TypeError(
            "cannot evaluate a "
            f"{type(policy).__name__}; expected a checkpoint URI, an nn.Module agent with "
            "policy_key/policy_version, or a PolicyRecord"
        )
    if explicit is not None and explicit != key:
        raise StatsDBError(
            "the explicit policy key disagrees with the checkpoint's",
            expected=f"{key.label} (from the key scheme)",
            found=explicit.label,
            fix="omit policy_key/policy_version for URIs and records",
        )
    agent = load()
    if not isinstance(agent, nn.Module):
        raise AgentMismatchError(
            "the policy is not an agent",
            expected="an nn.Module implementing the agent interface",
            found=type(agent).__name__,
        )
    return agent, key


def _agent_space(agent: nn.Module, name: str) -> gym.Space[Any] | None:
    space = getattr(agent, name, None)
    if space is None:
        config = getattr(agent, "config", None)
        if isinstance(config, Mapping) and name in config:
            space = as_space(config[name])
    return space if isinstance(space, gym.Space) else None


def _describe(obs: gym.Space[Any] | None, act: gym.Space[Any] | None) -> str:
    obs_text = "unknown" if obs is None else str(tuple(obs.shape or ()))
    return f"observation shape {obs_text}, action space {act!r}"


def check_agent_fits_env(agent: nn.Module, env: gym.Env[Any, Any], env_id: str) -> None:
    """Refuse an agent whose spaces do not fit ``env``.

    Compares the observation shape (dtype and bounds may differ: agents cast and
    normalise) and the action space (a ``Discrete`` must have the same ``n`` and
    ``start``). Spaces come from the agent's ``observation_space``/``action_space``
    attributes or its ``config``; a space the agent does not expose is not checked here
    (actions are still checked at every step).

    Raises:
        AgentMismatchError: with the env's spaces as expected and the agent's as found.
    """
    obs, act = _agent_space(agent, "observation_space"), _agent_space(agent, "action_space")
    env_obs, env_act = env.observation_space, env.action_space
    obs_ok = obs is None or tuple(obs.shape or ()) == tuple(env_obs.shape or ())
    if isinstance(act, gym.spaces.Discrete) and isinstance(env_act, gym.spaces.Discrete):
        act_ok = (int(act.n), int(act.start)) == (int(env_act.n), int(env_act.start))
    else:
        act_ok = act is None or act == env_act
    if not (obs_ok and act_ok):
        raise AgentMismatchError(
            f"the agent does not fit {env_id}",
            expected=f"{_describe(env_obs, env_act)} (the env's)",
            found=f"{_describe(obs, act)} (the agent's)",
            fix="evaluate on the env the agent was built for, or build it from this env's spaces",
        )


# --------------------------------------------------------------------------- episodes


def _device_of(agent: nn.Module) -> torch.device:
    first = next(itertools.chain(agent.parameters(), agent.buffers()), None)
    return torch.device("cpu") if first is None else first.device


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


@torch.no_grad()
def run_episode(
    agent: nn.Module,
    env: gym.Env[Any, Any],
    seed: int,
    *,
    max_episode_steps: int | None = None,
) -> EpisodeOutcome:
    """Run one greedy episode of ``env`` reset with ``seed``; the agent is not modified.

    Observations go to the agent as ``(1, 1, *obs_shape)`` tensors of the env's dtype on
    the agent's device, with ``done`` ``(1, 1)`` all False: the state starts at
    ``initial_state(1)`` and is carried from each step's output to the next step.

    Args:
        max_episode_steps: cut the episode after this many steps (``truncated``); None
            relies on the env's own time limit.

    Raises:
        AgentMismatchError: an action that is not a single element of the action space,
            or whatever the agent raises for observations it cannot take.
    """
    start = time.perf_counter()
    device = _device_of(agent)
    obs, _ = env.reset(seed=seed)
    state = agent.initial_state(1)
    done = torch.zeros((1, 1), dtype=torch.bool, device=device)
    total, steps, terminated, truncated = 0.0, 0, False, False
    while not (terminated or truncated):
        # A writable copy: torch warns on non-writable arrays (MiniGrid's image views).
        array = np.array(obs, copy=True)
        x = torch.from_numpy(array).to(device).reshape(1, 1, *array.shape)
        out = agent(x, state, done, deterministic=True)
        state = out.state
        obs, reward, terminated, truncated, _ = env.step(
            _greedy_action(out.actions, env.action_space)
        )
        total += float(reward)
        steps += 1
        if max_episode_steps is not None and steps >= max_episode_steps:
            truncated = truncated or not terminated
    return EpisodeOutcome(
        seed=seed,
        episode_return=total,
        length=steps,
        terminated=bool(terminated),
        truncated=bool(truncated),
        wall_time_s=time.perf_counter() - start,
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
            StatsDBError: an agent without an explicit key, an explicit key that is
                invalid or disagrees with the URI's/record's, a DB that cannot be written.
            CheckpointError and subclasses: the URI cannot be resolved or loaded.
            AgentMismatchError: the agent does not fit the env.
            UnsupportedEnvError: ``env_id`` is not supported (and no ``env_factory``).
            TypeError: ``policy`` is none of the accepted kinds.
            ValueError: a PolicyRecord that cannot load its policy (no store or URI).
        """
        start = time.perf_counter()
        explicit = (
            None
            if policy_key is None and policy_version is None
            else PolicyKey(policy_key, policy_version)  # type: ignore[arg-type]
        )
        agent, key = _load_policy(policy, explicit, self.device)
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
