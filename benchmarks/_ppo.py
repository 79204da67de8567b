"""Section 4: PPO env-steps/s on CartPole-v1, ours vs stable-baselines3 / sb3-contrib.

Same hyperparameters on both sides: ``n_steps`` per env, one minibatch per rollout
(batch = n_steps * n_envs), 4 update epochs, constant learning rate, CleanRL-style clipping,
no value clipping, no entropy bonus, one torch thread. Throughput is env steps over the
wall time of the learning call (model construction excluded on both sides); the return is
the mean of the last 20 training episodes.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer import Trainer, TrainerConfig

__all__ = ["HYPER", "run_ours", "run_sb3"]

HYPER = {
    "n_steps": 128,
    "n_epochs": 4,
    "learning_rate": 1e-3,
    "gamma": 0.98,
    "gae_lambda": 0.8,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}
LAST = 20


def _tail_mean(returns: list[float]) -> float:
    return float(np.mean(returns[-LAST:])) if returns else float("nan")


def run_ours(num_envs: int, env_steps: int, seed: int) -> dict[str, float]:
    """Our trainer with its default agent (RecurrentAgent, LSTM over a 64-wide MLP encoder)."""
    ppo = PPOConfig(
        num_envs=num_envs,
        num_steps=HYPER["n_steps"],
        num_minibatches=1,
        update_epochs=HYPER["n_epochs"],
        learning_rate=HYPER["learning_rate"],
        anneal_lr_epochs=None,
        gamma=HYPER["gamma"],
        gae_lambda=HYPER["gae_lambda"],
        clip_coef=HYPER["clip_range"],
        ent_coef=HYPER["ent_coef"],
        vf_coef=HYPER["vf_coef"],
        max_grad_norm=HYPER["max_grad_norm"],
    )
    epochs = max(1, env_steps // ppo.batch_size)
    config = TrainerConfig(seed=seed, checkpoint_every=10_000, ppo=ppo)
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


def run_sb3(kind: str, num_envs: int, env_steps: int, seed: int) -> dict[str, float]:
    """stable-baselines3 PPO (MlpPolicy) or sb3-contrib RecurrentPPO (MlpLstmPolicy, 64 units)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=num_envs, seed=seed)
    common = {
        "n_steps": HYPER["n_steps"],
        "batch_size": HYPER["n_steps"] * num_envs,
        "n_epochs": HYPER["n_epochs"],
        "learning_rate": HYPER["learning_rate"],
        "gamma": HYPER["gamma"],
        "gae_lambda": HYPER["gae_lambda"],
        "clip_range": HYPER["clip_range"],
        "ent_coef": HYPER["ent_coef"],
        "vf_coef": HYPER["vf_coef"],
        "max_grad_norm": HYPER["max_grad_norm"],
        "seed": seed,
        "device": "cpu",
        "verbose": 0,
    }
    if kind == "ppo":
        model = PPO("MlpPolicy", env, **common)
    else:
        from sb3_contrib import RecurrentPPO

        model = RecurrentPPO("MlpLstmPolicy", env, policy_kwargs={"lstm_hidden_size": 64}, **common)
    rollout = HYPER["n_steps"] * num_envs
    total = max(1, env_steps // rollout) * rollout
    started = time.perf_counter()
    model.learn(total_timesteps=total)
    elapsed = time.perf_counter() - started
    returns = [float(info["r"]) for info in model.ep_info_buffer]
    env.close()
    return {
        "env_steps_per_s": model.num_timesteps / elapsed,
        "return": _tail_mean(returns),
        "env_steps": model.num_timesteps,
    }
