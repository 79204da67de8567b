"""MockAgent: the smallest real agent, for manager, trainer and harness tests.

Unlike the historical Metta ``MockAgent`` (zero parameters, a no-op ``__init__``), this one
has real parameters -- a linear actor and a linear critic over the flattened observation --
so a checkpoint round trip is tested on actual weights. It is stateless
(``initial_state`` returns ``()``), cheap and deterministic given ``torch.manual_seed``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ckptcompat.agents.base import Agent, AgentOutput, AgentState, check_obs_shape
from ckptcompat.agents.heads import categorical
from ckptcompat.agents.spaces import as_space, space_to_config
from ckptcompat.errors import AgentMismatchError

__all__ = ["MockAgent"]


def _default_observation_space() -> gym.spaces.Box:
    # CartPole-v1's shape and dtype; unbounded so any float observation fits.
    return gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)


class MockAgent(Agent):
    """Stateless linear actor-critic; ``MockAgent()`` needs no arguments.

    Args:
        observation_space: a ``gymnasium`` Box (any shape; observations are flattened) or
            its config from :func:`~ckptcompat.agents.spaces.space_to_config`.
            Default: CartPole-like ``Box(-inf, inf, (4,), float32)``.
        action_space: a ``Discrete`` space or its config. Default: ``Discrete(2)``.

    Raises:
        AgentMismatchError: an unsupported space, or an action space that is not Discrete.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any] | dict[str, Any] | None = None,
        action_space: gym.Space[Any] | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if observation_space is None:
            observation_space = _default_observation_space()
        if action_space is None:
            action_space = gym.spaces.Discrete(2)
        obs_space = as_space(observation_space)
        act_space = as_space(action_space)
        if not isinstance(obs_space, gym.spaces.Box):
            raise AgentMismatchError(
                "MockAgent needs a Box observation space",
                expected="gymnasium.spaces.Box",
                found=repr(obs_space),
                fix="pass a Box observation_space",
            )
        if not isinstance(act_space, gym.spaces.Discrete):
            raise AgentMismatchError(
                "MockAgent needs a Discrete action space",
                expected="gymnasium.spaces.Discrete",
                found=repr(act_space),
                fix="pass a Discrete action_space",
            )
        self.observation_space = obs_space
        self.action_space = act_space
        self.obs_shape: tuple[int, ...] = tuple(int(d) for d in obs_space.shape)
        self.num_actions = int(act_space.n)
        obs_dim = math.prod(self.obs_shape)
        self.actor = nn.Linear(obs_dim, self.num_actions)
        self.critic = nn.Linear(obs_dim, 1)

    @property
    def config(self) -> dict[str, Any]:
        """``{"observation_space": {...}, "action_space": {...}}`` as JSON primitives."""
        return {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
        }

    def initial_state(self, batch_size: int) -> AgentState:
        """``()``: the agent has no recurrent state."""
        return ()

    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        """Act on ``obs`` ``(T, B, *obs_shape)`` (any dtype; cast to float32).

        ``state`` and ``done`` ``(T, B)`` are accepted for the interface and ignored.
        Sampling uses torch's global generator; ``deterministic=True`` takes the argmax;
        a given ``action`` ``(T, B)`` int64 is evaluated instead of sampled.

        Returns:
            :class:`AgentOutput` with ``(T, B)`` tensors and ``state=()``.

        Raises:
            AgentMismatchError: ``obs`` does not end with ``obs_shape``.
        """
        check_obs_shape(obs, self.obs_shape)
        steps, batch = obs.shape[:2]
        x = obs.reshape(steps, batch, -1).to(torch.float32)
        action, logprob, entropy = categorical(self.actor(x), action, deterministic)
        return AgentOutput(
            actions=action,
            logprobs=logprob,
            entropy=entropy,
            values=self.critic(x).squeeze(-1),
            state=(),
        )
