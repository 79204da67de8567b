"""RecurrentAgent: a CleanRL-style LSTM actor-critic, our realistic checkpointed agent.

Encoder from the observation space (MLP for vector ``Box`` obs, a small CNN for image
``Box`` obs ``(H, W, C)`` such as MiniGrid's 7x7x3 uint8), an ``nn.LSTM`` core, a Discrete
actor head and a critic head, with running observation-normalisation buffers.

Like real agents it keeps rich Python state on the module -- the config dataclass, the
gymnasium spaces, a feature-name map -- so a whole-object pickle of it names many globals
(numpy, gymnasium, this module) and is refused by ``torch.load(weights_only=True)``. Its
checkpoint does not need any of that: :attr:`RecurrentAgent.config` is JSON primitives and
``state_dict()`` holds only tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from ckptcompat.agents.base import Agent, AgentOutput, AgentState, check_sequence_shapes
from ckptcompat.agents.heads import categorical
from ckptcompat.agents.layers import layer_init
from ckptcompat.agents.obs_norm import normalize, register_buffers, update_moments
from ckptcompat.agents.spaces import as_space, space_to_config
from ckptcompat.errors import AgentMismatchError

__all__ = ["RecurrentAgent", "RecurrentAgentConfig"]

_SpaceArg = gym.Space[Any] | dict[str, Any]


def _mismatch(problem: str, expected: str, found: object) -> AgentMismatchError:
    return AgentMismatchError(
        problem, expected=expected, found=repr(found), fix="fix the RecurrentAgent arguments"
    )


def _positive_int(name: str, value: object) -> int:
    # bool is an int subclass; True as a layer count is a bug, not a 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _mismatch(f"RecurrentAgent {name} must be a positive int", "an int >= 1", value)
    return value


@dataclass
class RecurrentAgentConfig:
    """Everything that shapes a :class:`RecurrentAgent`; the spaces as gymnasium objects.

    ``__post_init__`` accepts the spaces as space configs and sequences as lists (what
    JSON gives back), validates, and fills ``feature_names`` when empty.

    Raises:
        AgentMismatchError: a non-Box observation space, a non-Discrete action space, an
            image too small for the CNN, non-positive sizes, or ``feature_names`` whose
            length differs from the last observation axis.
    """

    observation_space: gym.spaces.Box
    action_space: gym.spaces.Discrete
    #: LSTM hidden (and cell) size.
    hidden_size: int = 64
    #: Stacked LSTM layers; the state is ``(h, c)``, each ``(num_layers, B, hidden_size)``.
    num_layers: int = 1
    #: Width of the encoder output (the MLP's hidden layers, the CNN's final linear layer).
    encoder_size: int = 64
    #: Conv channels for image observations; kernel 2, stride 1 (each conv trims 1 pixel).
    cnn_channels: tuple[int, ...] = (16, 32)
    #: Normalise observations with the running mean/var buffers before encoding.
    normalize_obs: bool = True
    #: Normalised observations are clipped to ``[-obs_norm_clip, obs_norm_clip]``.
    obs_norm_clip: float = 10.0
    #: Names of the entries of the last observation axis (features for vectors, channels
    #: for images). Derived (``obs_0``..., ``channel_0``...) when empty.
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        obs = self.observation_space = as_space(self.observation_space)  # type: ignore[assignment]
        act = self.action_space = as_space(self.action_space)  # type: ignore[assignment]
        if not isinstance(self.observation_space, gym.spaces.Box):
            raise _mismatch("RecurrentAgent needs a Box observation space", "a Box", obs)
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise _mismatch("RecurrentAgent needs a Discrete action space", "a Discrete", act)
        for name in ("hidden_size", "num_layers", "encoder_size"):
            _positive_int(name, getattr(self, name))
        self.cnn_channels = tuple(_positive_int("cnn_channels", c) for c in self.cnn_channels)
        clip = self.obs_norm_clip
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not 0 < clip < math.inf:
            raise _mismatch("obs_norm_clip must be a finite positive number", "a float > 0", clip)
        self.obs_norm_clip = float(clip)
        self.normalize_obs = bool(self.normalize_obs)
        shape = self.observation_space.shape
        if self.is_image and (not self.cnn_channels or min(shape[:2]) <= len(self.cnn_channels)):
            raise _mismatch(
                "image observation too small for the CNN (each conv trims 1 pixel)",
                f"H and W > len(cnn_channels) = {len(self.cnn_channels)}, cnn_channels non-empty",
                shape,
            )
        width = shape[-1] if shape else 1
        prefix = "channel" if self.is_image else "obs"
        derived = tuple(f"{prefix}_{i}" for i in range(width))
        self.feature_names = tuple(self.feature_names) or derived
        if len(self.feature_names) != width or len(set(self.feature_names)) != width:
            raise _mismatch(
                "feature_names must name each entry of the last observation axis once",
                f"{width} distinct names",
                self.feature_names,
            )

    @property
    def is_image(self) -> bool:
        """3-D observations are images, channels last ``(H, W, C)``; they get the CNN."""
        return len(self.observation_space.shape) == 3

    def to_json(self) -> dict[str, Any]:
        """The config as JSON primitives; ``RecurrentAgent(**cfg.to_json())`` rebuilds it."""
        return {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "encoder_size": self.encoder_size,
            "cnn_channels": list(self.cnn_channels),
            "normalize_obs": self.normalize_obs,
            "obs_norm_clip": self.obs_norm_clip,
            "feature_names": list(self.feature_names),
        }


class ChannelsFirst(nn.Module):
    """``(N, H, W, C)`` -> ``(N, C, H, W)``: gymnasium images are channels-last, Conv2d is not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


def _build_encoder(cfg: RecurrentAgentConfig) -> nn.Sequential:
    """Map ``(N, *obs_shape)`` float32 to ``(N, encoder_size)``."""
    shape = cfg.observation_space.shape
    size = cfg.encoder_size
    if not cfg.is_image:
        return nn.Sequential(
            nn.Flatten(start_dim=1),
            layer_init(nn.Linear(math.prod(shape), size)),
            nn.Tanh(),
            layer_init(nn.Linear(size, size)),
            nn.Tanh(),
        )
    height, width, channels = shape
    layers: list[nn.Module] = [ChannelsFirst()]
    for out_channels in cfg.cnn_channels:
        layers += [layer_init(nn.Conv2d(channels, out_channels, kernel_size=2)), nn.ReLU()]
        channels, height, width = out_channels, height - 1, width - 1
    layers += [
        nn.Flatten(start_dim=1),
        layer_init(nn.Linear(channels * height * width, size)),
        nn.ReLU(),
    ]
    return nn.Sequential(*layers)


class RecurrentAgent(Agent):
    """LSTM actor-critic over a Box observation space and a Discrete action space.

    Args:
        observation_space, action_space: gymnasium spaces or their configs.
        Other arguments: see :class:`RecurrentAgentConfig`.

    Buffers (in ``state_dict``): ``obs_mean``, ``obs_var`` float64 ``obs_shape`` and
    ``obs_count`` float64 scalar, updated only by :meth:`update_obs_normalizer`.

    Raises:
        AgentMismatchError: see :class:`RecurrentAgentConfig`.
    """

    def __init__(
        self,
        observation_space: _SpaceArg,
        action_space: _SpaceArg,
        hidden_size: int = 64,
        num_layers: int = 1,
        encoder_size: int = 64,
        cnn_channels: tuple[int, ...] | list[int] = (16, 32),
        normalize_obs: bool = True,
        obs_norm_clip: float = 10.0,
        feature_names: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        self.cfg = RecurrentAgentConfig(
            observation_space=observation_space,  # type: ignore[arg-type]
            action_space=action_space,  # type: ignore[arg-type]
            hidden_size=hidden_size,
            num_layers=num_layers,
            encoder_size=encoder_size,
            cnn_channels=tuple(cnn_channels),
            normalize_obs=normalize_obs,
            obs_norm_clip=obs_norm_clip,
            feature_names=tuple(feature_names),
        )
        self.observation_space = self.cfg.observation_space
        self.action_space = self.cfg.action_space
        self.obs_shape: tuple[int, ...] = tuple(int(d) for d in self.observation_space.shape)
        self.feature_names: dict[str, int] = {n: i for i, n in enumerate(self.cfg.feature_names)}

        self.encoder = _build_encoder(self.cfg)
        self.lstm = nn.LSTM(encoder_size, hidden_size, num_layers)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)
        # Small actor gain: near-uniform initial policy; unit critic gain (CleanRL).
        self.actor = layer_init(nn.Linear(hidden_size, int(self.action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

        # Start like gymnasium's RunningMeanStd: identity transform, tiny prior count.
        register_buffers(self, self.obs_shape)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (spaces via ``spaces.space_to_config``)."""
        return self.cfg.to_json()

    def initial_state(self, batch_size: int) -> AgentState:
        """``(h, c)``: zeros, each ``(num_layers, batch_size, hidden_size)`` float32."""
        shape = (self.cfg.num_layers, batch_size, self.cfg.hidden_size)
        device = self.actor.weight.device
        return (torch.zeros(shape, device=device), torch.zeros(shape, device=device))

    def update_obs_normalizer(self, obs: torch.Tensor) -> None:
        """Fold a batch ``(..., *obs_shape)`` (any dtype) into the running mean/var.

        Parallel-variance (Chan et al.) update in float64, as gymnasium's RunningMeanStd.
        """
        batch = obs.reshape(-1, *self.obs_shape)
        update_moments(self.obs_mean, self.obs_var, self.obs_count, batch)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.normalize_obs:
            return x.to(torch.float32)
        return normalize(x, self.obs_mean, self.obs_var, self.cfg.obs_norm_clip)

    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        """Run ``T`` steps for ``B`` environments.

        Args:
            obs: ``(T, B, *obs_shape)``, any dtype (uint8 images are cast to float32).
            state: ``(h, c)`` from :meth:`initial_state` or a previous call; ``()`` means
                the initial state.
            done: ``(T, B)`` bool or float. ``done[t] = 1`` zeroes that environment's
                state *before* ``obs[t]`` is consumed (its episode started at ``t``); the
                core is therefore stepped one ``t`` at a time, ``state * (1 - done[t])``.
            action: ``(T, B)`` int64 to evaluate instead of sampling.
            deterministic: take the argmax action instead of sampling (global generator).

        Returns:
            :class:`AgentOutput`: ``(T, B)`` actions int64, logprobs/entropy/values float32,
            and the state after step ``T - 1``.

        Raises:
            AgentMismatchError: ``obs``/``done``/``state`` shapes do not fit the agent.
        """
        steps, batch = check_sequence_shapes(obs, done, self.obs_shape)
        if len(state) == 0:
            state = self.initial_state(batch)
        if len(state) != 2:
            raise _mismatch("RecurrentAgent state must be (h, c) or ()", "2 tensors", len(state))
        h, c = state
        x = self._normalize(obs.reshape(steps * batch, *self.obs_shape))
        features = self.encoder(x).reshape(steps, batch, -1)
        keep = 1.0 - done.to(features.dtype)
        # Masking only the steps where some env starts an episode is bitwise the same as
        # masking every step (x * 1.0 == x, and so are the gradients) and saves the update
        # two multiplications and their backward per step.
        starts = done.any(dim=1).tolist()
        outputs = []
        for t in range(steps):
            if starts[t]:
                mask = keep[t].view(1, batch, 1)
                h, c = h * mask, c * mask
            out, (h, c) = self.lstm(features[t : t + 1], (h, c))
            outputs.append(out)
        hidden = torch.cat(outputs)  # (T, B, hidden_size)
        action, logprob, entropy = categorical(self.actor(hidden), action, deterministic)
        return AgentOutput(
            actions=action,
            logprobs=logprob,
            entropy=entropy,
            values=self.critic(hidden).squeeze(-1),
            state=(h, c),
        )
