"""MLPAgent: the Agent interface without state, and the safe checkpoint round trip."""

from __future__ import annotations

import io
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import AgentOutput, MLPAgent, build_agent, validate_config
from ckptcompat.agents.probe import params_digest, probe_batch, run_probe
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import AgentMismatchError

T, B = 6, 3

SPACES = {
    "vector": (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)),
    "image": (gym.spaces.Box(0, 10, (7, 7, 3), np.uint8), gym.spaces.Discrete(7)),
}


def _obs(kind: str, steps: int = T, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "image":
        return torch.randint(0, 11, (steps, B, 7, 7, 3), generator=gen, dtype=torch.uint8)
    return torch.randn(steps, B, 4, generator=gen)


def _assert_outputs_equal(a: AgentOutput, b: AgentOutput) -> None:
    for name in ("actions", "logprobs", "entropy", "values"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.state == b.state == ()


@pytest.fixture(params=sorted(SPACES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def agent(kind: str) -> MLPAgent:
    torch.manual_seed(0)
    agent = MLPAgent(*SPACES[kind], hidden_sizes=[32, 16])
    agent.update_obs_normalizer(_obs(kind, seed=99))  # non-default buffers for round trips
    return agent


def test_output_shapes_and_dtypes(agent: MLPAgent, kind: str) -> None:
    out = agent(_obs(kind), agent.initial_state(B), torch.zeros(T, B))
    for name, dtype in [
        ("actions", torch.int64),
        ("logprobs", torch.float32),
        ("entropy", torch.float32),
        ("values", torch.float32),
    ]:
        assert getattr(out, name).shape == (T, B), name
        assert getattr(out, name).dtype == dtype, name
    assert out.state == () == agent.initial_state(B)
    assert int(out.actions.max()) < int(agent.action_space.n)


def test_layers_follow_config(agent: MLPAgent) -> None:
    widths = [m.out_features for m in agent.actor if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, int(agent.action_space.n)]
    widths = [m.out_features for m in agent.critic if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, 1]


def test_steps_are_independent_and_done_is_ignored(agent: MLPAgent, kind: str) -> None:
    """Guards: a stateless agent whose output depends on the call's chunking or on done."""
    obs = _obs(kind)
    whole = agent(obs, (), torch.zeros(T, B), deterministic=True)
    done = torch.ones(T, B)
    parts = [agent(obs[t : t + 1], (), done[t : t + 1], deterministic=True) for t in range(T)]
    for name in ("actions", "values", "logprobs"):
        torch.testing.assert_close(
            torch.cat([getattr(p, name) for p in parts]), getattr(whole, name)
        )


def test_given_actions_reproduce_sampled_logprobs(agent: MLPAgent, kind: str) -> None:
    """Guards: PPO's ratio != 1 on the first update because evaluation differs from acting."""
    obs, done = _obs(kind), torch.zeros(T, B)
    torch.manual_seed(11)
    sampled = agent(obs, (), done)
    evaluated = agent(obs, (), done, action=sampled.actions)
    _assert_outputs_equal(sampled, evaluated)


def test_normalisation_is_applied_and_optional(kind: str) -> None:
    torch.manual_seed(0)
    plain = MLPAgent(*SPACES[kind], normalize_obs=False)
    torch.manual_seed(0)
    normed = MLPAgent(*SPACES[kind])
    obs, done = _obs(kind), torch.zeros(T, B)
    # Identity transform until the first update of the running moments.
    torch.testing.assert_close(normed(obs, (), done).values, plain(obs, (), done).values)
    normed.update_obs_normalizer(obs * 3 + 1)
    plain.update_obs_normalizer(obs * 3 + 1)
    assert not torch.allclose(normed(obs, (), done).values, plain(obs, (), done).values)


def test_rebuild_from_config_is_bitwise_identical(agent: MLPAgent, kind: str) -> None:
    """Guards: a checkpoint reloaded from class_path + JSON config acting differently."""
    config = json.loads(json.dumps(agent.config, allow_nan=False))
    assert config == agent.config
    validate_config(config)
    for clone in (MLPAgent.from_config(config), build_agent(agent.class_path, config)):
        assert clone.config == agent.config
        clone.load_state_dict(agent.state_dict(), strict=True)
        obs, done = _obs(kind), torch.zeros(T, B)
        torch.manual_seed(21)
        expected = agent(obs, (), done)
        torch.manual_seed(21)
        _assert_outputs_equal(clone(obs, (), done), expected)


def test_manager_round_trip_is_bitwise(agent: MLPAgent, kind: str, tmp_path: object) -> None:
    """Guards: the new agent needing an allowlist or losing its normaliser buffers in the
    safe format (SimpleCheckpointManager, weights_only=True on every cell)."""
    manager = SimpleCheckpointManager("mlp", tmp_path)  # type: ignore[arg-type]
    with manager:
        manager.save_agent(agent, 3, metadata={"agent_step": 0, "total_time_s": 0.0})
    loaded = SimpleCheckpointManager("mlp", tmp_path).load_agent(3)  # type: ignore[arg-type]
    assert type(loaded) is MLPAgent
    assert params_digest(loaded) == params_digest(agent)
    obs, done = probe_batch(agent)
    _assert_outputs_equal(run_probe(loaded, obs, done), run_probe(agent, obs, done))


def test_state_dict_is_tensors_and_loads_weights_only(agent: MLPAgent) -> None:
    state = agent.state_dict()
    assert {"obs_mean", "obs_var", "obs_count"} <= state.keys()
    assert all(type(v) is torch.Tensor for v in state.values())
    buffer = io.BytesIO()
    torch_compat.save(state, buffer)
    buffer.seek(0)
    loaded = torch_compat.load(buffer)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"action_space": gym.spaces.Box(-1, 1, (2,), np.float32)}, "Discrete action space"),
        ({"observation_space": gym.spaces.Discrete(3)}, "Box observation space"),
        ({"hidden_sizes": []}, "positive ints"),
        ({"hidden_sizes": [64, 0]}, "positive ints"),
        ({"hidden_sizes": [True]}, "positive ints"),
        ({"obs_norm_clip": float("inf")}, "obs_norm_clip"),
    ],
)
def test_bad_arguments_are_agent_mismatch(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = dict(
        zip(("observation_space", "action_space"), SPACES["vector"], strict=True)
    )
    args.update(kwargs)
    with pytest.raises(AgentMismatchError, match=match):
        MLPAgent(**args)  # type: ignore[arg-type]


def test_wrong_observation_shape_is_agent_mismatch(agent: MLPAgent) -> None:
    with pytest.raises(AgentMismatchError, match="shape does not match"):
        agent(torch.zeros(T, B, 5), (), torch.zeros(T, B))
