"""Tests of ckptcompat.rl.envs: the env registry, seeding and same-step autoreset."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from ckptcompat.errors import UnsupportedEnvError
from ckptcompat.rl.envs import ENV_SPECS, make_env, make_vector_env, reset_all


def test_registry_names_both_envs() -> None:
    """Guards against a supported env silently dropping out of the registry."""
    assert set(ENV_SPECS) == {"CartPole-v1", "MiniGrid-Empty-5x5-v0"}
    assert ENV_SPECS["CartPole-v1"].solved_return == 475.0


def test_unknown_env_id_lists_the_supported_ones() -> None:
    """Guards against a bare gymnasium error (or a silent fallback) for a typo'd env id."""
    with pytest.raises(UnsupportedEnvError, match=r"CartPole-v1.*MiniGrid-Empty-5x5-v0"):
        make_vector_env("CartPole-v0", 2, 0)


@pytest.mark.parametrize(
    ("env_id", "shape", "dtype", "actions"),
    [
        ("CartPole-v1", (4,), np.float32, 2),
        ("MiniGrid-Empty-5x5-v0", (7, 7, 3), np.uint8, 7),
    ],
)
def test_vector_env_shapes(env_id: str, shape: tuple[int, ...], dtype: type, actions: int) -> None:
    """Guards against MiniGrid's dict observation leaking through (ImgObsWrapper missing)."""
    envs = make_vector_env(env_id, 3, seed=0)
    obs = reset_all(envs, 0)
    assert obs.shape == (3, *shape)
    assert obs.dtype == dtype
    assert envs.single_action_space == gymnasium.spaces.Discrete(actions)
    envs.close()


@pytest.mark.parametrize("env_id", sorted(ENV_SPECS))
def test_reset_all_seeds_subenv_i_with_seed_plus_i(env_id: str) -> None:
    """Guards against every sub-env getting the same seed (identical, correlated episodes)."""
    envs = make_vector_env(env_id, 3, seed=0)
    obs = reset_all(envs, 10)
    for i in range(3):
        single, _ = make_env(env_id).reset(seed=10 + i)
        np.testing.assert_array_equal(obs[i], single)
    envs.close()


def _run(env_id: str, seed: int, steps: int) -> list[np.ndarray]:
    envs = make_vector_env(env_id, 2, seed)
    reset_all(envs, seed)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = envs.step(rng.integers(0, 2, size=2))
        out += [obs, reward, terminated, truncated]
    envs.close()
    return out


def test_same_seed_same_trajectory() -> None:
    """Guards against unseeded randomness in the envs (resume could never be bitwise)."""
    a, b = _run("CartPole-v1", 5, 60), _run("CartPole-v1", 5, 60)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_done_step_returns_first_obs_of_next_episode() -> None:
    """Guards against gymnasium 1.x's default next-step autoreset.

    With next-step autoreset the step after a done ignores the action and returns the reset
    observation, which would put a fake transition into every rollout; the trainer's done
    masks assume same-step autoreset: the observation returned with ``done`` is the first
    observation of the next episode, and the terminal one is in ``info["final_obs"]``.
    """
    envs = make_vector_env("CartPole-v1", 1, seed=0)
    reset_all(envs, 7)
    single = make_env("CartPole-v1")
    single.reset(seed=7)
    for steps in range(1, 501):  # noqa: B007 -- read after the loop
        obs, _, terminated, truncated, info = envs.step(np.array([0]))
        s_obs, _, s_term, s_trunc, _ = single.step(0)
        if terminated[0] or truncated[0]:
            assert s_term or s_trunc
            np.testing.assert_array_equal(info["final_obs"][0], s_obs)
            next_first, _ = single.reset()
            np.testing.assert_array_equal(obs[0], next_first)
            break
        np.testing.assert_array_equal(obs[0], s_obs)
    else:
        pytest.fail("always pushing left should end a CartPole episode within 500 steps")
    assert steps <= 50
    envs.close()
