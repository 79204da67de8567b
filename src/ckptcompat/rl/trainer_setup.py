"""What :class:`~ckptcompat.rl.trainer.Trainer` checks and builds before it trains.

A fresh run: the run must have no checkpoint yet, the agent's config is the trainer
config's ``agent_kwargs`` plus the env's spaces, and ``seed`` seeds the three global
generators once. A resumed run: the latest trainer state, which must carry the
``trainer_config`` the trainer saves in it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ckptcompat.agents.spaces import space_to_config
from ckptcompat.errors import CheckpointError, CheckpointNotFoundError
from ckptcompat.rl.envs import make_env

if TYPE_CHECKING:
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.checkpoint.trainer_state import TrainerState
    from ckptcompat.rl.trainer_config import TrainerConfig

__all__ = [
    "agent_config_for",
    "check_fresh",
    "env_space_configs",
    "latest_trainer_state",
    "seed_everything",
]


def seed_everything(seed: int) -> None:
    """Seed torch's CPU generator, numpy's global ``np.random`` and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def check_fresh(manager: SimpleCheckpointManager) -> None:
    """Refuse to start a run that already has checkpoints.

    Raises:
        CheckpointError: the run has indexed checkpoints (resume it, or pick a new name).
    """
    existing = manager.list_checkpoints()
    if existing:
        raise CheckpointError(
            f"run {manager.run!r} already has checkpoints",
            path=manager.checkpoint_dir,
            expected="a run name with no checkpoints, for a fresh run",
            found=f"checkpoints at epochs {[e.epoch for e in existing]}",
            fix="resume the run (Trainer.resume / `ckptcompat run resume`), or pick a new name",
        )


def env_space_configs(env_id: str) -> dict[str, Any]:
    """``{"observation_space", "action_space"}`` of ``env_id``, as space configs (JSON).

    Raises:
        UnsupportedEnvError: an env id outside :data:`ckptcompat.rl.envs.ENV_SPECS`.
    """
    env = make_env(env_id)
    try:
        return {
            "observation_space": space_to_config(env.observation_space),
            "action_space": space_to_config(env.action_space),
        }
    finally:
        env.close()


def agent_config_for(config: TrainerConfig) -> dict[str, Any]:
    """``config.agent_kwargs`` plus the env's ``observation_space`` and ``action_space``
    (the env's spaces win over kwargs of the same name).

    Raises:
        UnsupportedEnvError: an env id outside :data:`ckptcompat.rl.envs.ENV_SPECS`.
    """
    return {**config.agent_kwargs, **env_space_configs(config.env_id)}


def latest_trainer_state(manager: SimpleCheckpointManager) -> TrainerState:
    """The run's latest trainer state, read without restoring anything.

    Raises:
        CheckpointNotFoundError: the run has no trainer state.
        CheckpointError: the trainer state was not written by this trainer.
    """
    saved = manager.load_trainer_state(restore_rng=False)
    if saved is None:
        raise CheckpointNotFoundError(
            f"run {manager.run!r} has no trainer state to resume from",
            path=manager.checkpoint_dir,
            expected="a <run>_v<epoch>.trainer.pt listed in index.json",
            found="none",
            fix="start the run with `ckptcompat run train`, or check run and data_dir",
        )
    if "trainer_config" not in saved.extra:
        raise CheckpointError(
            f"the trainer state of run {manager.run!r} has no trainer_config",
            path=manager.checkpoint_dir,
            expected="extra['trainer_config'], as ckptcompat.rl.trainer saves it",
            found=f"extra keys {sorted(saved.extra)}",
            fix="resume runs with the trainer that wrote them",
        )
    return saved
