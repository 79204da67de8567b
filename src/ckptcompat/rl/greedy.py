"""Greedy (argmax) episodes: the one evaluation loop.

:func:`greedy_episodes` steps ``B`` envs together with deterministic actions until each has
finished its first episode. Its callers differ only in the envs they hand it:

* :func:`ckptcompat.rl.trainer.evaluate_greedy` (the goldens' greedy returns): one vector
  env with a sub-env per seed (:class:`VectorEnvSteps`);
* :func:`ckptcompat.evaluation.evaluator.run_episode`: one env, ``B = 1``, its actions
  checked against the action space.

Per step the agent gets ``obs`` ``(1, B, *obs_shape)`` in the env's dtype on the agent's
device, the state of the previous step (``initial_state(B)`` at first) and ``done``
``(1, B)``: 1 for a sub-env whose episode ended at the previous step (a vector env has
already reset it, so its state must start over). Rewards of a sub-env after its first
episode are ignored. Nothing draws from torch's generator; the caller chooses the grad
mode (``inference_mode`` or ``no_grad``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from gymnasium.vector import VectorEnv
    from torch import nn

    from ckptcompat.agents.base import Agent

__all__ = [
    "GreedyEnvs",
    "GreedyEpisodes",
    "StepResult",
    "VectorEnvSteps",
    "device_of",
    "evaluate_greedy",
    "greedy_episodes",
]

#: ``(obs (B, *obs_shape), reward (B,), terminated (B,), truncated (B,))``, numpy arrays.
StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class GreedyEnvs(Protocol):
    """``B`` envs stepped together, already reset."""

    def step(self, actions: torch.Tensor) -> StepResult:
        """Step every env with ``actions`` ``(1, B)`` (the agent's output)."""
        ...


class VectorEnvSteps:
    """A gymnasium vector env (same-step autoreset) as :class:`GreedyEnvs`."""

    def __init__(self, envs: VectorEnv[Any, Any, Any]) -> None:
        self.envs = envs

    def step(self, actions: torch.Tensor) -> StepResult:
        """``envs.step`` with the actions as a ``(B,)`` numpy array."""
        obs, reward, terminated, truncated, _ = self.envs.step(actions[0].numpy())
        return obs, reward, terminated, truncated


@dataclass(frozen=True)
class GreedyEpisodes:
    """The first episode of each env, in env order.

    Attributes:
        returns: sum of each episode's rewards. lengths: its env steps.
        terminated, truncated: how it ended (``truncated`` also when cut short by
            ``max_episode_steps``).
    """

    returns: list[float]
    lengths: list[int]
    terminated: list[bool]
    truncated: list[bool]


def device_of(agent: nn.Module) -> torch.device:
    """The device of the agent's first parameter or buffer; CPU when it has none."""
    first = next(itertools.chain(agent.parameters(), agent.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def greedy_episodes(
    agent: nn.Module,
    envs: GreedyEnvs,
    obs: np.ndarray,
    *,
    done_dtype: torch.dtype = torch.float32,
    max_episode_steps: int | None = None,
) -> GreedyEpisodes:
    """Run ``envs`` greedily from their reset observations ``obs`` ``(B, *obs_shape)``.

    Args:
        done_dtype: dtype of the ``done`` flags given to the agent.
        max_episode_steps: cut an episode after this many steps (``truncated``); None
            relies on the envs' own time limits.

    Raises:
        Whatever the agent or ``envs.step`` raises.
    """
    device = device_of(agent)
    batch = len(obs)
    state = agent.initial_state(batch)
    done = torch.zeros(batch, dtype=done_dtype, device=device)
    totals = np.zeros(batch)
    lengths = np.zeros(batch, dtype=np.int64)
    ended_terminated = np.zeros(batch, dtype=bool)
    ended_truncated = np.zeros(batch, dtype=bool)
    running = np.ones(batch, dtype=bool)
    while running.any():
        out = agent(torch.as_tensor(obs).to(device)[None], state, done[None], deterministic=True)
        state = out.state
        obs, reward, terminated, truncated = envs.step(out.actions)
        totals += np.where(running, reward, 0.0)
        lengths += running
        if max_episode_steps is not None:
            truncated = truncated | (running & ~terminated & (lengths >= max_episode_steps))
        ended = np.logical_or(terminated, truncated)
        ended_terminated |= running & terminated
        ended_truncated |= running & truncated
        running &= ~ended
        done = torch.as_tensor(ended, dtype=done_dtype).to(device)
    return GreedyEpisodes(
        returns=[float(r) for r in totals],
        lengths=[int(n) for n in lengths],
        terminated=[bool(t) for t in ended_terminated],
        truncated=[bool(t) for t in ended_truncated],
    )


@torch.inference_mode()
def evaluate_greedy(agent: Agent, env_id: str, seeds: list[int]) -> list[float]:
    """Return of one greedy (argmax) episode per seed, in ``seeds`` order.

    (Imported by :mod:`ckptcompat.rl.trainer` too, where it lived first.) Runs all seeds at
    once, one sub-env each (sub-env ``i`` reset with ``seeds[i]``, recurrent
    state zeroed), until every sub-env has finished its first episode
    (:func:`~ckptcompat.rl.greedy.greedy_episodes`). Draws nothing from torch's generator.
    """
    from ckptcompat.rl.envs import make_vector_env  # gymnasium: only for this function

    envs = make_vector_env(env_id, len(seeds), 0)
    obs, _ = envs.reset(seed=list(seeds))
    was_training = agent.training
    agent.eval()
    try:
        episodes = greedy_episodes(agent, VectorEnvSteps(envs), obs)
    finally:
        agent.train(was_training)
        envs.close()
    return episodes.returns
