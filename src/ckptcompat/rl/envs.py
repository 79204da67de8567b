"""Gymnasium vector environments for training and evaluation, and how they are seeded.

Two environments are supported (:data:`ENV_SPECS`):

* ``CartPole-v1`` -- observations ``(4,)`` float32, 2 actions, episodes truncated at 500 steps.
* ``MiniGrid-Empty-5x5-v0`` (``minigrid`` package) -- wrapped in ``ImgObsWrapper`` so an
  observation is the agent's ``(7, 7, 3)`` uint8 partial view (object, colour, state ids),
  7 actions, episodes truncated at 100 steps. Importing ``minigrid`` registers its ids.

Vector env: :class:`gymnasium.vector.SyncVectorEnv` -- sub-envs step in this process, one
after the other, so a run is deterministic and starts no subprocess.

Autoreset: gymnasium 1.x defaults to *next-step* autoreset (the step after an episode ends
returns the reset observation and ignores the action), which would put a dummy transition
into every rollout. We use ``AutoresetMode.SAME_STEP`` instead: when sub-env ``i`` ends at a
step, that same ``step`` call resets it and returns the first observation of the new episode
(the terminal one is in ``info["final_obs"]``). Hence, for ``obs, r, term, trunc, info =
envs.step(a)``:

* ``done = term | trunc`` is ``(B,)`` bool and means "the episode ended with this step, so
  ``obs`` is the first observation of a new episode". That is exactly the ``done`` the agents
  take (docs/design.md section 7): the recurrent state is zeroed before consuming ``obs``.
* ``r`` is the reward of the last step of the old episode.

Truncation is treated like termination (no bootstrap from ``final_obs``), as CleanRL does.

Seeding: :func:`reset_all` resets sub-env ``i`` with ``seed + i``. After that every sub-env
draws from its own seeded ``np_random``; autoresets pass no seed, so the stream continues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from ckptcompat.errors import UnsupportedEnvError

__all__ = [
    "ENV_SPECS",
    "EnvSpec",
    "make_env",
    "make_vector_env",
    "reset_all",
]


def _make_cartpole() -> gymnasium.Env:
    return gymnasium.make("CartPole-v1")


def _make_minigrid_empty_5x5() -> gymnasium.Env:
    # Imported here: the package is only needed for this env, and importing it registers
    # the MiniGrid-* ids with gymnasium.
    import minigrid  # noqa: F401
    from minigrid.wrappers import ImgObsWrapper

    return ImgObsWrapper(gymnasium.make("MiniGrid-Empty-5x5-v0"))


@dataclass(frozen=True)
class EnvSpec:
    """One supported environment.

    Attributes:
        env_id: gymnasium id, e.g. ``"CartPole-v1"``.
        make: builds one (single, not vector) env with the observation wrapper applied.
        obs_kind: ``"vector"`` (1-D float) or ``"image"`` (``(H, W, C)`` uint8).
        solved_return: the return at which the env counts as solved (CartPole-v1: 475),
            ``None`` when gymnasium defines none.
    """

    env_id: str
    make: Callable[[], gymnasium.Env]
    obs_kind: str
    solved_return: float | None


#: Supported environments by id.
ENV_SPECS: dict[str, EnvSpec] = {
    "CartPole-v1": EnvSpec("CartPole-v1", _make_cartpole, "vector", 475.0),
    "MiniGrid-Empty-5x5-v0": EnvSpec(
        "MiniGrid-Empty-5x5-v0", _make_minigrid_empty_5x5, "image", None
    ),
}


def _spec(env_id: str) -> EnvSpec:
    try:
        return ENV_SPECS[env_id]
    except KeyError:
        raise UnsupportedEnvError(
            f"env id {env_id!r} is not supported; expected one of {sorted(ENV_SPECS)}"
        ) from None


def make_env(env_id: str) -> gymnasium.Env:
    """One (non-vector) env for ``env_id``, wrapped as in :data:`ENV_SPECS`. Not yet reset."""
    return _spec(env_id).make()


def make_vector_env(env_id: str, num_envs: int, seed: int) -> SyncVectorEnv:
    """``num_envs`` copies of ``env_id`` in a same-step-autoreset :class:`SyncVectorEnv`.

    The env is returned already reset with :func:`reset_all` ``(envs, seed)``; the first
    observations are lost, so callers that need them call :func:`reset_all` again.

    Args:
        env_id: a key of :data:`ENV_SPECS`.
        num_envs: number of sub-envs ``B`` (>= 1).
        seed: sub-env ``i`` is reset with ``seed + i``.
    """
    spec = _spec(env_id)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    envs = SyncVectorEnv(
        [spec.make for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    reset_all(envs, seed)
    return envs


def reset_all(envs: SyncVectorEnv, seed: int) -> np.ndarray:
    """Reset every sub-env, sub-env ``i`` with ``seed + i``; return ``(B, *obs_shape)`` obs.

    Seeding also re-seeds each sub-env's action space so that ``action_space.sample()``
    (used only by random baselines) is reproducible too.
    """
    seeds = [seed + i for i in range(envs.num_envs)]
    obs, _ = envs.reset(seed=seeds)
    for i, env in enumerate(envs.envs):
        env.action_space.seed(seeds[i])
    return obs
