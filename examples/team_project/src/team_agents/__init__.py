"""team_agents: a team's own agent, tested by ckptcompat through ``[tool.ckptcompat]``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from ckptcompat.agents.base import Agent, AgentOutput, AgentState
from ckptcompat.agents.spaces import as_space, space_to_config

__all__ = ["MLPAgent"]


class MLPAgent(Agent):
    """Stateless MLP actor-critic over a flat Box observation and Discrete actions.

    ``self.activation`` is a class object (not JSON) kept on the module; ``config`` holds
    only primitives (the spaces as configs, ``hidden``), so the agent rebuilds from them.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any] | dict[str, Any] | None = None,
        action_space: gym.Space[Any] | dict[str, Any] | None = None,
        hidden: int = 16,
    ) -> None:
        super().__init__()
        obs = as_space(
            observation_space or gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        )
        act = as_space(action_space or gym.spaces.Discrete(2))
        self.observation_space, self.action_space, self.hidden = obs, act, int(hidden)
        self.activation = nn.Tanh  # a non-JSON attribute: never part of config
        self.obs_dim = int(np.prod(obs.shape))
        self.body = nn.Sequential(nn.Linear(self.obs_dim, self.hidden), self.activation())
        self.actor = nn.Linear(self.hidden, int(act.n))
        self.critic = nn.Linear(self.hidden, 1)

    @property
    def config(self) -> dict[str, Any]:
        """JSON primitives only: the spaces' configs and ``hidden``."""
        return {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
            "hidden": self.hidden,
        }

    def initial_state(self, batch_size: int) -> AgentState:
        """``()``: no recurrent state."""
        return ()

    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        """Act on ``obs`` ``(T, B, *obs_shape)``; see ckptcompat.agents.base.Agent."""
        steps, batch = obs.shape[:2]
        h = self.body(obs.reshape(steps, batch, -1).to(torch.float32))
        dist = Categorical(logits=self.actor(h))
        if action is None:
            action = dist.probs.argmax(-1) if deterministic else dist.sample()
        return AgentOutput(
            actions=action,
            logprobs=dist.log_prob(action),
            entropy=dist.entropy(),
            values=self.critic(h).squeeze(-1),
            state=(),
        )
