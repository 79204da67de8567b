"""MLPAgent: a feed-forward actor-critic, CleanRL ``ppo.py``'s agent and sb3's ``MlpPolicy``.

Separate actor and critic MLPs (``tanh`` hidden layers, 64 x 64 by default) over the flattened,
optionally normalised observation; orthogonal init with gain sqrt(2) for hidden layers, 0.01
for the actor head (near-uniform initial policy) and 1 for the critic head. A Discrete action
space.

Stateless: :meth:`MLPAgent.initial_state` is ``()`` and ``done`` is ignored, so PPO trains it on
flat shuffled minibatches (:mod:`ckptcompat.rl.ppo`) and the trainer, evaluator and probe drive
it through the same :class:`~ckptcompat.agents.base.Agent` interface as the recurrent agent.
Its checkpoint is :attr:`MLPAgent.config` (JSON primitives) plus a ``state_dict`` of tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch

from ckptcompat.agents.base import Agent, AgentOutput, AgentState, check_obs_shape
from ckptcompat.agents.heads import categorical
from ckptcompat.agents.layers import tanh_mlp
from ckptcompat.agents.obs_norm import normalize, register_buffers, update_moments
from ckptcompat.agents.spaces import as_space, space_to_config
from ckptcompat.errors import AgentMismatchError

__all__ = ["MLPAgent", "MLPAgentConfig"]


def _mismatch(problem: str, expected: str, found: object) -> AgentMismatchError:
    return AgentMismatchError(
        problem, expected=expected, found=repr(found), fix="fix the MLPAgent arguments"
    )


@dataclass
class MLPAgentConfig:
    """Everything that shapes an :class:`MLPAgent`; the spaces as gymnasium objects.

    ``__post_init__`` accepts the spaces as space configs and ``hidden_sizes`` as a list
    (what JSON gives back), and validates.

    Raises:
        AgentMismatchError: a non-Box observation space, a non-Discrete action space, an
            empty ``hidden_sizes`` or a non-positive size, a non-finite ``obs_norm_clip``.
    """

    observation_space: gym.spaces.Box
    action_space: gym.spaces.Discrete
    #: Widths of the hidden layers, the same for the actor and the critic MLP.
    hidden_sizes: tuple[int, ...] = (64, 64)
    #: Normalise observations with the running mean/var buffers (see ``obs_norm``).
    normalize_obs: bool = True
    #: Normalised observations are clipped to ``[-obs_norm_clip, obs_norm_clip]``.
    obs_norm_clip: float = 10.0

    def __post_init__(self) -> None:
        obs = self.observation_space = as_space(self.observation_space)  # type: ignore[assignment]
        act = self.action_space = as_space(self.action_space)  # type: ignore[assignment]
        if not isinstance(obs, gym.spaces.Box):
            raise _mismatch("MLPAgent needs a Box observation space", "a Box", obs)
        if not isinstance(act, gym.spaces.Discrete):
            raise _mismatch("MLPAgent needs a Discrete action space", "a Discrete", act)
        sizes = tuple(self.hidden_sizes)
        # bool is an int subclass; True as a width is a bug, not a 1.
        if not sizes or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise _mismatch(
                "MLPAgent hidden_sizes must be positive ints", "e.g. [64, 64]", self.hidden_sizes
            )
        self.hidden_sizes = sizes
        clip = self.obs_norm_clip
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not 0 < clip < math.inf:
            raise _mismatch("obs_norm_clip must be a finite positive number", "a float > 0", clip)
        self.obs_norm_clip = float(clip)
        self.normalize_obs = bool(self.normalize_obs)

    def to_json(self) -> dict[str, Any]:
        """The config as JSON primitives; ``MLPAgent(**cfg.to_json())`` rebuilds it."""
        return {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
            "hidden_sizes": list(self.hidden_sizes),
            "normalize_obs": self.normalize_obs,
            "obs_norm_clip": self.obs_norm_clip,
        }


class MLPAgent(Agent):
    """Feed-forward actor-critic over a Box observation space and a Discrete action space.

    Args:
        observation_space, action_space: gymnasium spaces or their configs.
        Other arguments: see :class:`MLPAgentConfig`.

    Buffers (in ``state_dict``): ``obs_mean``, ``obs_var`` float64 ``obs_shape`` and
    ``obs_count`` float64 scalar, updated only by :meth:`update_obs_normalizer`.

    Raises:
        AgentMismatchError: see :class:`MLPAgentConfig`.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any] | dict[str, Any],
        action_space: gym.Space[Any] | dict[str, Any],
        hidden_sizes: tuple[int, ...] | list[int] = (64, 64),
        normalize_obs: bool = True,
        obs_norm_clip: float = 10.0,
    ) -> None:
        super().__init__()
        self.cfg = MLPAgentConfig(
            observation_space=observation_space,  # type: ignore[arg-type]
            action_space=action_space,  # type: ignore[arg-type]
            hidden_sizes=tuple(hidden_sizes),
            normalize_obs=normalize_obs,
            obs_norm_clip=obs_norm_clip,
        )
        self.observation_space = self.cfg.observation_space
        self.action_space = self.cfg.action_space
        self.obs_shape: tuple[int, ...] = tuple(int(d) for d in self.observation_space.shape)
        obs_size = math.prod(self.obs_shape)
        self.actor = tanh_mlp(obs_size, self.cfg.hidden_sizes, int(self.action_space.n), 0.01)
        self.critic = tanh_mlp(obs_size, self.cfg.hidden_sizes, 1, 1.0)
        register_buffers(self, self.obs_shape)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (spaces via ``spaces.space_to_config``)."""
        return self.cfg.to_json()

    def initial_state(self, batch_size: int) -> AgentState:
        """``()``: the agent has no recurrent state."""
        return ()

    def update_obs_normalizer(self, obs: torch.Tensor) -> None:
        """Fold a batch ``(..., *obs_shape)`` (any dtype) into the running mean/var."""
        batch = obs.reshape(-1, *self.obs_shape)
        update_moments(self.obs_mean, self.obs_var, self.obs_count, batch)

    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        """Act on ``obs`` ``(T, B, *obs_shape)`` (any dtype; cast to float32).

        ``state`` (``()``) and ``done`` ``(T, B)`` are accepted for the interface and ignored:
        every step is independent. Sampling uses torch's global generator;
        ``deterministic=True`` takes the argmax; a given ``action`` ``(T, B)`` int64 is
        evaluated instead of sampled.

        Returns:
            :class:`AgentOutput` with ``(T, B)`` tensors and ``state=()``.

        Raises:
            AgentMismatchError: ``obs`` does not end with ``obs_shape``.
        """
        check_obs_shape(obs, self.obs_shape)
        if self.cfg.normalize_obs:
            x = normalize(obs, self.obs_mean, self.obs_var, self.cfg.obs_norm_clip)
        else:
            x = obs.to(torch.float32)
        if len(self.obs_shape) != 1:
            x = x.flatten(start_dim=2)
        action, logprob, entropy = categorical(self.actor(x), action, deterministic)
        return AgentOutput(
            actions=action,
            logprobs=logprob,
            entropy=entropy,
            values=self.critic(x).squeeze(-1),
            state=(),
        )
