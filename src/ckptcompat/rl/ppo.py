"""PPO for :class:`~ckptcompat.agents.base.Agent`: rollout storage, GAE and the update.

Follows CleanRL's ``ppo.py`` (flat minibatches) and ``ppo_atari_lstm.py`` (minibatches of whole
env sequences). Shapes: ``T = num_steps`` time steps, ``B = num_envs`` sub-envs.

* :class:`RolloutStorage` holds one rollout, allocated with its shapes visible.
* :func:`compute_gae` turns rewards, values and done flags into advantages and returns.
* :func:`ppo_update` runs ``update_epochs`` passes of minibatch SGD on one :class:`RolloutBatch`:
  clipped surrogate, (clipped) value loss, entropy bonus, global grad-norm clipping.

Minibatches. A *recurrent* agent (``initial_state`` non-empty) is trained on minibatches of
whole envs: each minibatch is ``(T, B // num_minibatches)``, re-run from the recurrent state the
rollout started with and reset by the same done masks, so the state at every step is the one
the rollout saw (up to the parameter change). A *stateless* agent gets CleanRL's flat
minibatches: ``T * B`` samples shuffled together, passed as ``(1, minibatch_size)``.

Determinism: the only randomness is the permutation drawn from the ``generator`` argument;
with ``torch.set_num_threads(1)`` the same inputs and generator state give bitwise the same
parameters and optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

if TYPE_CHECKING:
    from ckptcompat.agents.base import Agent, AgentState

__all__ = ["PPOConfig", "RolloutBatch", "RolloutStorage", "compute_gae", "ppo_update"]


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are tuned for the default agent on CartPole-v1.

    Starting point: CleanRL's CartPole settings (4 envs x 128 steps, 4 minibatches,
    4 update epochs, lr 2.5e-4, gamma 0.99, lambda 0.95, clipped value loss, ent 0.01).
    With our shared-trunk LSTM agent those learned slowly: value targets of up to ~100 move
    the critic by at most ``clip_coef`` per epoch under value clipping, so the explained
    variance stayed near 0 for 30k+ steps. The defaults below (close to rl-baselines3-zoo's
    CartPole PPO) reach the solved return in a few tens of thousands of env steps
    (``benchmarks/ppo_cartpole.py``): 8 envs x 32 steps, one whole-batch minibatch,
    20 update epochs, lr 1e-3 annealed over 400 epochs, gamma 0.98, lambda 0.8, no value
    clipping, no entropy bonus.

    Attributes:
        num_envs: ``B``, parallel sub-envs.
        num_steps: ``T``, steps per sub-env per rollout (one rollout per epoch).
        num_minibatches: minibatches per update pass.
        update_epochs: passes over the rollout per update (not trainer epochs).
        learning_rate: Adam step size at epoch 0.
        anneal_lr_epochs: if set, the learning rate decays linearly to 0 at this trainer
            epoch (see :meth:`learning_rate_at`); None keeps it constant. It is a fixed
            horizon, not the ``--epochs`` target, so a run stopped and resumed follows the
            same schedule. Default 400 epochs = 102,400 env steps.
        adam_eps: Adam epsilon (CleanRL: 1e-5).
        gamma: discount factor.
        gae_lambda: GAE lambda.
        clip_coef: PPO ratio clip range ``[1 - c, 1 + c]``; also the value clip range.
        clip_vloss: clip the value loss around the rollout's values, as in the PPO paper code.
        norm_adv: normalise advantages per minibatch (mean 0, std 1).
        ent_coef: entropy bonus coefficient.
        vf_coef: value loss coefficient.
        max_grad_norm: global L2 norm the gradients are clipped to.
        target_kl: if set, stop the update's remaining passes once the approximate KL of a pass
            exceeds it.

    Derived (properties): ``batch_size = T * B`` samples per rollout (default 256);
    ``minibatch_size = batch_size // num_minibatches`` samples per minibatch;
    ``envs_per_minibatch = B // num_minibatches`` (recurrent agents: whole env sequences
    per minibatch).
    """

    num_envs: int = 8
    num_steps: int = 32
    num_minibatches: int = 1
    update_epochs: int = 20
    learning_rate: float = 1e-3
    anneal_lr_epochs: int | None = 400
    adam_eps: float = 1e-5
    gamma: float = 0.98
    gae_lambda: float = 0.8
    clip_coef: float = 0.2
    clip_vloss: bool = False
    norm_adv: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None

    def __post_init__(self) -> None:
        if self.num_envs % self.num_minibatches != 0:
            raise ValueError(
                f"num_envs ({self.num_envs}) must be a multiple of num_minibatches "
                f"({self.num_minibatches}): recurrent minibatches are whole env sequences"
            )

    @property
    def batch_size(self) -> int:
        """Samples per rollout: ``num_steps * num_envs``."""
        return self.num_steps * self.num_envs

    @property
    def minibatch_size(self) -> int:
        """Samples per minibatch: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def envs_per_minibatch(self) -> int:
        """Env sequences per minibatch (recurrent agents): ``num_envs // num_minibatches``."""
        return self.num_envs // self.num_minibatches

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate for the update of trainer epoch ``epoch`` (0-based).

        CleanRL's linear annealing, ``lr * (1 - epoch / anneal_lr_epochs)``, floored at 0;
        constant when ``anneal_lr_epochs`` is None.
        """
        if self.anneal_lr_epochs is None:
            return self.learning_rate
        return self.learning_rate * max(0.0, 1.0 - epoch / self.anneal_lr_epochs)


class RolloutBatch(NamedTuple):
    """One rollout, ready for :func:`ppo_update`. ``T`` steps by ``B`` envs.

    Attributes:
        obs: ``(T, B, *obs_shape)``, the env's dtype (float32 vectors, uint8 images).
        actions: ``(T, B)`` int64.
        logprobs: ``(T, B)`` float32, log-probability of ``actions`` when they were sampled.
        values: ``(T, B)`` float32, critic estimates during the rollout.
        rewards: ``(T, B)`` float32, reward received after ``actions[t]``.
        dones: ``(T, B)`` float32, 1.0 where an episode ended before step ``t`` (so
            ``obs[t]`` starts a new episode and the recurrent state is zeroed first).
        advantages: ``(T, B)`` float32, GAE advantages.
        returns: ``(T, B)`` float32, ``advantages + values`` (value targets).
        initial_state: the agent's recurrent state before step 0 (each tensor with the
            batch on dimension 1); ``()`` for stateless agents.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    initial_state: AgentState


class RolloutStorage:
    """Buffers for one rollout of ``num_steps`` steps in ``num_envs`` envs (CleanRL layout).

    The trainer writes row ``t`` after each env step, then calls :meth:`finish`.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.obs = torch.zeros((num_steps, num_envs, *obs_shape), dtype=obs_dtype)
        self.actions = torch.zeros((num_steps, num_envs), dtype=torch.int64)
        self.logprobs = torch.zeros((num_steps, num_envs))
        self.rewards = torch.zeros((num_steps, num_envs))
        self.dones = torch.zeros((num_steps, num_envs))
        self.values = torch.zeros((num_steps, num_envs))

    def finish(
        self,
        initial_state: AgentState,
        next_value: torch.Tensor,
        next_done: torch.Tensor,
        config: PPOConfig,
    ) -> RolloutBatch:
        """Compute GAE and return the rollout as a :class:`RolloutBatch` (tensors are clones).

        Args:
            initial_state: recurrent state before step 0.
            next_value: ``(B,)`` critic estimate of the observation after the last step.
            next_done: ``(B,)`` 1.0 where the last step ended an episode.
            config: provides ``gamma`` and ``gae_lambda``.
        """
        advantages, returns = compute_gae(
            self.rewards,
            self.values,
            self.dones,
            next_value,
            next_done,
            gamma=config.gamma,
            gae_lambda=config.gae_lambda,
        )
        return RolloutBatch(
            obs=self.obs.clone(),
            actions=self.actions.clone(),
            logprobs=self.logprobs.clone(),
            values=self.values.clone(),
            rewards=self.rewards.clone(),
            dones=self.dones.clone(),
            advantages=advantages,
            returns=returns,
            initial_state=tuple(s.clone() for s in initial_state),
        )


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    *,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), CleanRL's recursion.

    ``delta[t] = r[t] + gamma * V[t+1] * (1 - d[t+1]) - V[t]`` and
    ``A[t] = delta[t] + gamma * lambda * (1 - d[t+1]) * A[t+1]``, where ``d[t+1]`` says the
    episode ended with step ``t`` (for the last step: ``next_done``, ``V[T] = next_value``).

    Args:
        rewards, values, dones: ``(T, B)`` float32; ``dones`` as in :class:`RolloutBatch`.
        next_value, next_done: ``(B,)`` float32.

    Returns:
        ``(advantages, returns)``, each ``(T, B)`` float32; ``returns = advantages + values``.
    """
    # The elementwise terms are computed for all t at once (the same ops in the same order
    # as the per-step recursion, so bitwise the same); only the recursion itself loops.
    next_nonterminal = 1.0 - torch.cat([dones[1:], next_done[None]])
    next_values = torch.cat([values[1:], next_value[None]])
    deltas = rewards + gamma * next_values * next_nonterminal - values
    decay = gamma * gae_lambda * next_nonterminal
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        last_gae = deltas[t] + decay[t] * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def _minibatches(
    batch: RolloutBatch, config: PPOConfig, generator: torch.Generator
) -> list[tuple[torch.Tensor, ...]]:
    """Split ``batch`` into minibatches shaped ``(T', B', ...)`` plus their initial state.

    Each item is ``(obs, actions, logprobs, values, dones, advantages, returns, *state)``.
    """
    t, b = batch.actions.shape
    fields = (
        batch.obs,
        batch.actions,
        batch.logprobs,
        batch.values,
        batch.dones,
        batch.advantages,
        batch.returns,
    )
    out = []
    if batch.initial_state:
        env_order = torch.randperm(b, generator=generator)
        for start in range(0, b, config.envs_per_minibatch):
            idx = env_order[start : start + config.envs_per_minibatch]
            out.append((*(f[:, idx] for f in fields), *(s[:, idx] for s in batch.initial_state)))
    else:
        # Stateless: every sample is independent, so shuffle all T * B of them (CleanRL ppo.py)
        # and present a minibatch as one time step of minibatch_size envs.
        order = torch.randperm(t * b, generator=generator)
        flat = [f.reshape(t * b, *f.shape[2:]) for f in fields]
        for start in range(0, t * b, config.minibatch_size):
            idx = order[start : start + config.minibatch_size]
            out.append(tuple(f[idx].unsqueeze(0) for f in flat))
    return out


def ppo_update(
    agent: Agent,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    config: PPOConfig,
    generator: torch.Generator,
    reduce_kl: Callable[[float], float] | None = None,
) -> dict[str, float]:
    """Run ``config.update_epochs`` passes of clipped-PPO minibatch SGD on ``batch``.

    The learning rate is whatever ``optimizer``'s param groups hold (the trainer sets it per
    epoch). ``agent`` is left in train mode.

    Args:
        agent: the policy, or its DDP wrapper (which all-reduces the gradients in
            ``backward``); re-run on each minibatch with ``action=`` the rollout's actions.
        optimizer: steps ``agent``'s parameters.
        batch: one rollout with advantages and returns.
        config: loss coefficients, minibatch count, passes, grad clipping.
        generator: CPU generator for the minibatch permutations (the only randomness).
        reduce_kl: under DDP, the mean over the ranks of a pass's approximate KL, so
            that every rank stops at the same pass with ``target_kl`` (a rank that stopped
            alone would leave the others waiting in the gradient all-reduce); None for
            one process.

    Returns:
        Means over all minibatches run: ``policy_loss``, ``value_loss``, ``entropy``,
        ``approx_kl`` (the ``(r - 1) - log r`` estimator), ``clipfrac`` (fraction of samples
        whose ratio was clipped), and, over the whole batch, ``explained_variance`` of the
        rollout values w.r.t. the returns (0.0 when the returns are constant, where it is
        undefined, so every stat stays finite); ``minibatches`` counts the steps taken.
    """
    agent.train()
    sums = dict.fromkeys(("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"), 0.0)
    steps = 0
    for _ in range(config.update_epochs):
        pass_kl = []
        for mb in _minibatches(batch, config, generator):
            obs, actions, old_logprobs, old_values, dones, advantages, returns = mb[:7]
            out = agent(obs, tuple(mb[7:]), dones, action=actions)
            log_ratio = out.logprobs - old_logprobs
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clipfrac = ((ratio - 1.0).abs() > config.clip_coef).float().mean()

            if config.norm_adv:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            pg_loss = torch.max(
                -advantages * ratio,
                -advantages * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef),
            ).mean()

            v_loss_unclipped = (out.values - returns) ** 2
            if config.clip_vloss:
                v_clipped = old_values + (out.values - old_values).clamp(
                    -config.clip_coef, config.clip_coef
                )
                v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - returns) ** 2).mean()
            else:
                v_loss = 0.5 * v_loss_unclipped.mean()

            entropy = out.entropy.mean()
            loss = pg_loss - config.ent_coef * entropy + config.vf_coef * v_loss

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()

            for key, value in (
                ("policy_loss", pg_loss),
                ("value_loss", v_loss),
                ("entropy", entropy),
                ("approx_kl", approx_kl),
                ("clipfrac", clipfrac),
            ):
                sums[key] += float(value.detach())
            pass_kl.append(float(approx_kl))
            steps += 1
        if config.target_kl is not None:
            mean_kl = sum(pass_kl) / len(pass_kl)
            if reduce_kl is not None:
                mean_kl = reduce_kl(mean_kl)
            if mean_kl > config.target_kl:
                break

    stats = {key: total / steps for key, total in sums.items()}
    returns_var = batch.returns.var()
    stats["explained_variance"] = (
        0.0
        if float(returns_var) == 0.0
        else float(1.0 - (batch.returns - batch.values).var() / returns_var)
    )
    stats["minibatches"] = float(steps)
    return stats
