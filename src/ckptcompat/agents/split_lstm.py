"""SplitLSTMAgent: an LSTM actor-critic with separate actor and critic LSTMs, the default agent.

Layout of sb3-contrib's ``RecurrentPPO`` ``MlpLstmPolicy`` (``shared_lstm=False``,
``enable_critic_lstm=True``): the actor and the critic each run their own encoder and their
own ``nn.LSTM``, followed by an MLP head (64 x 64 tanh by default) and a linear output. Why
not :class:`~ckptcompat.agents.recurrent.RecurrentAgent`'s one trunk for both: on CartPole-v1
with sb3's PPO settings its return stayed near 40 after 20k env steps where RecurrentPPO
reached ~220, and separating the critic's trunk closed that gap (experiment table in
BENCHMARKS.md, section 4): through a shared trunk the value loss's gradients, much larger than
the policy's early on, reshape the features the policy reads.

The update runs each LSTM once per segment between episode starts rather than once per step
(:func:`~ckptcompat.agents.lstm_segments.run_lstm`), about twice as fast; RecurrentAgent keeps
the per-step loop, which its committed goldens replay bit for bit.

Observation encoders, normalisation buffers and config validation are RecurrentAgent's. The
state is ``(h_actor, c_actor, h_critic, c_critic)``, each ``(num_layers, B, hidden_size)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ckptcompat.agents.base import Agent, AgentOutput, AgentState, check_sequence_shapes
from ckptcompat.agents.heads import categorical
from ckptcompat.agents.layers import tanh_mlp
from ckptcompat.agents.lstm_segments import run_lstm
from ckptcompat.agents.obs_norm import normalize, register_buffers, update_moments

# One encoder builder and one config validation for both LSTM agents.
from ckptcompat.agents.recurrent import RecurrentAgentConfig, _build_encoder
from ckptcompat.errors import AgentMismatchError

__all__ = ["SplitLSTMAgent", "SplitLSTMAgentConfig"]


@dataclass
class SplitLSTMAgentConfig(RecurrentAgentConfig):
    """:class:`RecurrentAgentConfig` plus the heads' widths.

    Attributes:
        head_sizes: tanh hidden layers between each LSTM and its output layer (sb3's
            ``net_arch`` ``pi=[64, 64], vf=[64, 64]``); ``()`` for a linear output.

    Raises:
        AgentMismatchError: as :class:`RecurrentAgentConfig`, or a non-positive head width.
    """

    head_sizes: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = tuple(self.head_sizes)
        # bool is an int subclass; True as a width is a bug, not a 1.
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise AgentMismatchError(
                "SplitLSTMAgent head_sizes must be positive ints",
                expected="e.g. [64, 64], or [] for linear heads",
                found=repr(self.head_sizes),
                fix="fix the SplitLSTMAgent arguments",
            )
        self.head_sizes = sizes

    def to_json(self) -> dict[str, Any]:
        """The config as JSON primitives; ``SplitLSTMAgent(**cfg.to_json())`` rebuilds it."""
        return {**super().to_json(), "head_sizes": list(self.head_sizes)}


def _lstm(cfg: SplitLSTMAgentConfig) -> nn.LSTM:
    """CleanRL's LSTM init: orthogonal weights (gain 1), zero biases."""
    lstm = nn.LSTM(cfg.encoder_size, cfg.hidden_size, cfg.num_layers)
    for name, param in lstm.named_parameters():
        if "bias" in name:
            nn.init.constant_(param, 0.0)
        else:
            nn.init.orthogonal_(param, 1.0)
    return lstm


class SplitLSTMAgent(Agent):
    """LSTM actor-critic with separate actor and critic towers (encoder, LSTM, MLP head).

    Args:
        observation_space, action_space: gymnasium spaces or their configs (Box, Discrete).
        Other arguments: see :class:`SplitLSTMAgentConfig`.

    Attributes:
        segments: run the LSTMs once per segment between episode starts (default); False
            runs them once per step, the reference :func:`run_lstm` is tested against. Not
            part of the config: both give the same results up to rounding.

    Buffers (in ``state_dict``): ``obs_mean``, ``obs_var`` float64 ``obs_shape`` and
    ``obs_count`` float64 scalar, updated only by :meth:`update_obs_normalizer`.

    Raises:
        AgentMismatchError: see :class:`SplitLSTMAgentConfig`.
    """

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        hidden_size: int = 64,
        num_layers: int = 1,
        encoder_size: int = 64,
        cnn_channels: tuple[int, ...] | list[int] = (16, 32),
        normalize_obs: bool = True,
        obs_norm_clip: float = 10.0,
        feature_names: tuple[str, ...] | list[str] = (),
        head_sizes: tuple[int, ...] | list[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.cfg = SplitLSTMAgentConfig(
            observation_space=observation_space,
            action_space=action_space,
            hidden_size=hidden_size,
            num_layers=num_layers,
            encoder_size=encoder_size,
            cnn_channels=tuple(cnn_channels),
            normalize_obs=normalize_obs,
            obs_norm_clip=obs_norm_clip,
            feature_names=tuple(feature_names),
            head_sizes=tuple(head_sizes),
        )
        self.observation_space = self.cfg.observation_space
        self.action_space = self.cfg.action_space
        self.obs_shape: tuple[int, ...] = tuple(int(d) for d in self.observation_space.shape)
        self.feature_names: dict[str, int] = {n: i for i, n in enumerate(self.cfg.feature_names)}
        self.segments = True

        cfg = self.cfg
        self.actor_encoder = _build_encoder(cfg)
        self.actor_lstm = _lstm(cfg)
        # Small actor gain: near-uniform initial policy; unit critic gain (CleanRL, sb3).
        self.actor = tanh_mlp(cfg.hidden_size, cfg.head_sizes, int(self.action_space.n), 0.01)
        self.critic_encoder = _build_encoder(cfg)
        self.critic_lstm = _lstm(cfg)
        self.critic = tanh_mlp(cfg.hidden_size, cfg.head_sizes, 1, 1.0)
        register_buffers(self, self.obs_shape)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (spaces via ``spaces.space_to_config``)."""
        return self.cfg.to_json()

    def initial_state(self, batch_size: int) -> AgentState:
        """``(h_actor, c_actor, h_critic, c_critic)``: zeros, each ``(num_layers, B, hidden)``."""
        shape = (self.cfg.num_layers, batch_size, self.cfg.hidden_size)
        device = self.obs_mean.device
        return tuple(torch.zeros(shape, device=device) for _ in range(4))

    def update_obs_normalizer(self, obs: torch.Tensor) -> None:
        """Fold a batch ``(..., *obs_shape)`` (any dtype) into the running mean/var
        (parallel-variance update in float64, as gymnasium's RunningMeanStd)."""
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
        """Run ``T`` steps for ``B`` environments.

        Args:
            obs: ``(T, B, *obs_shape)``, any dtype (uint8 images are cast to float32).
            state: from :meth:`initial_state` or a previous call; ``()`` means the initial
                state.
            done: ``(T, B)`` bool or float; ``done[t] = 1`` zeroes that environment's
                state (both LSTMs) before ``obs[t]`` is consumed.
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
        if len(state) != 4:
            raise AgentMismatchError(
                "SplitLSTMAgent state must be (h_actor, c_actor, h_critic, c_critic) or ()",
                expected="4 tensors",
                found=f"{len(state)} tensors",
                fix="pass the state this agent returned, or ()",
            )
        flat = obs.reshape(steps * batch, *self.obs_shape)
        if self.cfg.normalize_obs:
            x = normalize(flat, self.obs_mean, self.obs_var, self.cfg.obs_norm_clip)
        else:
            x = flat.to(torch.float32)
        actor_in = self.actor_encoder(x).reshape(steps, batch, -1)
        critic_in = self.critic_encoder(x).reshape(steps, batch, -1)
        actor_out, actor_state = run_lstm(
            self.actor_lstm, actor_in, (state[0], state[1]), done, self.segments
        )
        critic_out, critic_state = run_lstm(
            self.critic_lstm, critic_in, (state[2], state[3]), done, self.segments
        )
        action, logprob, entropy = categorical(self.actor(actor_out), action, deterministic)
        return AgentOutput(
            actions=action,
            logprobs=logprob,
            entropy=entropy,
            values=self.critic(critic_out).squeeze(-1),
            state=(*actor_state, *critic_state),
        )
