"""Section 4: PPO env-steps/s on CartPole-v1, ours vs stable-baselines3 / sb3-contrib.

The issue's reference settings on both sides: ``n_steps=128`` per env, minibatches of
``batch_size=256`` samples (one minibatch of 128 with 1 env), 4 update epochs, and sb3's
defaults otherwise (constant lr 3e-4, gamma 0.99, GAE lambda 0.95, clip 0.2, no value
clipping, no entropy bonus, vf 0.5, grad norm 0.5, advantages normalised per minibatch, Adam
eps 1e-5), one torch thread. Pairs: our MLPAgent vs sb3 PPO ``MlpPolicy`` (both 64 x 64
tanh, separate actor and critic); our default agent, SplitLSTMAgent (separate actor and
critic towers: 64-wide MLP encoder, 64-unit LSTM, 64 x 64 tanh head each) vs sb3-contrib
RecurrentPPO ``MlpLstmPolicy`` with 64 LSTM units (the same layout, with no encoder).
Throughput is env steps over the wall time of the learning call (model construction
excluded on both sides); the return is the mean of the last 20 training episodes.

Known differences besides the architectures: ours normalises observations (running
mean/var, updated after each update) and treats a time-limit truncation like a termination
(CleanRL); sb3 does not normalise by default and bootstraps truncations from the final
observation. Recurrent minibatches are whole env sequences on our side (``batch_size``
/ ``n_steps`` envs each), padded episode chunks on sb3-contrib's.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from typing import Any

import numpy as np
import torch

from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer import Trainer
from ckptcompat.rl.trainer_config import DEFAULT_AGENT, MLP_AGENT, TrainerConfig

__all__ = [
    "AGENTS",
    "ENV_STEPS",
    "HYPER",
    "LAST",
    "ours_ppo_config",
    "run_ours",
    "run_sb3",
    "sb3_kwargs",
]

HYPER = {
    "n_steps": 128,
    "batch_size": 256,
    "n_epochs": 4,
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}
#: Env steps per run: 160 rollouts with 1 env, 20 with 8; enough to compare returns (sb3 PPO
#: reaches about 80-250), and 5 interleaved runs of the four configurations at 1 and 8 envs
#: take about 11 minutes on an otherwise idle 2-core machine (about 2 minutes per seed, three
#: quarters of it in the two recurrent runs at 1 env); several times that under load.
ENV_STEPS = 20_480
#: run_ours agent name -> class path.
AGENTS = {"mlp": MLP_AGENT, "recurrent": DEFAULT_AGENT}
LAST = 20


def _tail_mean(returns: list[float]) -> float:
    return float(np.mean(returns[-LAST:])) if returns else float("nan")


def _batch_size(num_envs: int) -> int:
    """Minibatch size: ``batch_size``, or the whole rollout when that is smaller."""
    return min(HYPER["batch_size"], HYPER["n_steps"] * num_envs)


def ours_ppo_config(num_envs: int) -> PPOConfig:
    """Our PPOConfig for :data:`HYPER` with ``num_envs`` envs (constant learning rate)."""
    return PPOConfig(
        num_envs=num_envs,
        num_steps=HYPER["n_steps"],
        num_minibatches=HYPER["n_steps"] * num_envs // _batch_size(num_envs),
        update_epochs=HYPER["n_epochs"],
        learning_rate=HYPER["learning_rate"],
        anneal_lr_epochs=None,
        gamma=HYPER["gamma"],
        gae_lambda=HYPER["gae_lambda"],
        clip_coef=HYPER["clip_range"],
        clip_vloss=False,
        norm_adv=True,
        ent_coef=HYPER["ent_coef"],
        vf_coef=HYPER["vf_coef"],
        max_grad_norm=HYPER["max_grad_norm"],
    )


def run_ours(
    num_envs: int, env_steps: int, seed: int, agent: str = "recurrent"
) -> dict[str, float]:
    """Our trainer with ``agent`` (a key of :data:`AGENTS`) at its default sizes."""
    ppo = ours_ppo_config(num_envs)
    epochs = max(1, env_steps // ppo.batch_size)
    config = TrainerConfig(
        seed=seed, checkpoint_every=10_000, agent_class_path=AGENTS[agent], ppo=ppo
    )
    with tempfile.TemporaryDirectory() as data_dir:
        trainer = Trainer.start(config, "ppo", data_dir, progress=False)
        started = time.perf_counter()
        result = trainer.train(epochs)
        elapsed = time.perf_counter() - started
        trainer.envs.close()
    return {
        "env_steps_per_s": result.agent_step / elapsed,
        "return": _tail_mean(result.episode_returns),
        "env_steps": result.agent_step,
    }


def sb3_kwargs(num_envs: int, seed: int) -> dict[str, Any]:
    """sb3's PPO / RecurrentPPO keyword arguments for :data:`HYPER` (CPU, silent)."""
    keys = ("n_steps", "n_epochs", "learning_rate", "gamma", "gae_lambda", "clip_range")
    keys += ("ent_coef", "vf_coef", "max_grad_norm")
    return {
        **{k: HYPER[k] for k in keys},
        "batch_size": _batch_size(num_envs),
        "seed": seed,
        "device": "cpu",
        "verbose": 0,
    }


def run_sb3(kind: str, num_envs: int, env_steps: int, seed: int) -> dict[str, float]:
    """sb3 PPO (``kind="ppo"``, MlpPolicy) or sb3-contrib RecurrentPPO (64 LSTM units)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=num_envs, seed=seed)
    common = sb3_kwargs(num_envs, seed)
    if kind == "ppo":
        model = PPO("MlpPolicy", env, **common)
    else:
        from sb3_contrib import RecurrentPPO

        model = RecurrentPPO("MlpLstmPolicy", env, policy_kwargs={"lstm_hidden_size": 64}, **common)
    rollout = HYPER["n_steps"] * num_envs
    total = max(1, env_steps // rollout) * rollout
    started = time.perf_counter()
    with warnings.catch_warnings():
        # sb3 warns about running an MLP policy on CPU being faster than on GPU; we do.
        warnings.simplefilter("ignore", UserWarning)
        model.learn(total_timesteps=total)
    elapsed = time.perf_counter() - started
    returns = [float(info["r"]) for info in model.ep_info_buffer]
    env.close()
    return {
        "env_steps_per_s": model.num_timesteps / elapsed,
        "return": _tail_mean(returns),
        "env_steps": model.num_timesteps,
    }
