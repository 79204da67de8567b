"""The agent interface every checkpointable agent implements (docs/design.md section 7).

Shapes: ``T`` time steps, ``B`` environments (batch). ``obs`` is ``(T, B, *obs_shape)``,
``done`` is ``(T, B)`` bool/float (1 where the episode ended *before* this step, so the
recurrent state is zeroed before consuming ``obs[t]``), actions are ``(T, B)`` int64.

An agent is rebuilt from ``class_path`` + ``config`` (JSON primitives only, including the
observation and action spaces) and then ``load_state_dict(strict=True)``: never from a
pickle of the object, never from the code's current defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import torch
from torch import nn

from ckptcompat.errors import AgentMismatchError

__all__ = ["Agent", "AgentOutput", "AgentState", "check_obs_shape"]

#: Recurrent state: a tuple of tensors, each with the batch on dimension 1
#: (e.g. LSTM ``(h, c)``, each ``(num_layers, B, hidden)``); ``()`` for stateless agents.
AgentState = tuple[torch.Tensor, ...]


class AgentOutput(NamedTuple):
    """What :meth:`Agent.forward` returns.

    Attributes:
        actions: ``(T, B)`` int64; sampled, greedy (``deterministic=True``) or the given ones.
        logprobs: ``(T, B)`` float32 log-probability of ``actions``.
        entropy: ``(T, B)`` float32 entropy of the action distribution.
        values: ``(T, B)`` float32 critic estimates.
        state: the recurrent state after the last step (same structure as the input).
    """

    actions: torch.Tensor
    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    state: AgentState


def check_sequence_shapes(
    obs: torch.Tensor, done: torch.Tensor, obs_shape: tuple[int, ...]
) -> tuple[int, int]:
    """Check a recurrent agent's forward input and return ``(T, B)``.

    Args:
        obs: ``(T, B, *obs_shape)``.
        done: ``(T, B)``.

    Raises:
        AgentMismatchError: either shape does not fit.
    """
    steps, batch = obs.shape[:2]
    if tuple(obs.shape[2:]) != obs_shape or tuple(done.shape) != (steps, batch):
        raise AgentMismatchError(
            "observation/done shapes do not match the agent",
            expected=f"obs (T, B, *{obs_shape}) and done (T, B)",
            found=f"obs {tuple(obs.shape)}, done {tuple(done.shape)}",
            fix="build the agent from the environment's observation space",
        )
    return steps, batch


def check_obs_shape(obs: torch.Tensor, obs_shape: tuple[int, ...]) -> None:
    """Check that ``obs`` is ``(T, B, *obs_shape)`` (the feed-forward agents' forward input).

    Raises:
        AgentMismatchError: ``obs`` does not end with ``obs_shape``.
    """
    if tuple(obs.shape[2:]) != obs_shape:
        raise AgentMismatchError(
            "observation shape does not match the agent",
            expected=f"(T, B, *{obs_shape})",
            found=str(tuple(obs.shape)),
            fix="build the agent from the environment's observation space",
        )


class Agent(nn.Module, ABC):
    """Base class of checkpointable actor-critic agents.

    Subclasses define ``forward``, ``initial_state`` and ``config``, and are constructible
    as ``cls.from_config(config)``. ``class_path`` (``"package.module.ClassName"``) plus
    ``config`` rebuild an identical, untrained module. The registry also accepts classes
    that do not inherit from this one but provide the same members (duck typing).
    """

    @abstractmethod
    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        """Run ``T`` steps for ``B`` environments; see the module docstring for shapes."""

    @abstractmethod
    def initial_state(self, batch_size: int) -> AgentState:
        """Zero recurrent state for ``batch_size`` environments, on the agent's device."""

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor config as JSON primitives (dict/list/str/int/float/bool/None)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Agent:
        """Build an untrained agent from :attr:`config` (default: ``cls(**config)``)."""
        return cls(**config)

    @property
    def class_path(self) -> str:
        """``"package.module.ClassName"`` -- how the registry finds this class again."""
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}"

    def initialize_to_environment(self, device: str | torch.device = "cpu") -> Agent:
        """Place the agent on ``device``. Idempotent; not needed after loading."""
        return self.to(device)
