"""MockAgent: no-argument construction, the Agent interface, and the safe round trip."""

from __future__ import annotations

import io
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import AgentOutput, MockAgent, build_agent, validate_config
from ckptcompat.errors import AgentMismatchError

T, B = 5, 3


def _assert_outputs_equal(a: AgentOutput, b: AgentOutput) -> None:
    for name in ("actions", "logprobs", "entropy", "values"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.state == b.state == ()


@pytest.fixture
def obs() -> torch.Tensor:
    return torch.randn(T, B, 4, generator=torch.Generator().manual_seed(123))


def test_no_argument_construction_is_cartpole_like() -> None:
    agent = MockAgent()
    assert agent.obs_shape == (4,)
    assert agent.num_actions == 2
    assert sum(p.numel() for p in agent.parameters()) > 0  # unlike Metta's empty mock
    assert agent.initial_state(B) == ()


def test_output_shapes_and_dtypes(obs: torch.Tensor) -> None:
    out = MockAgent()(obs, (), torch.zeros(T, B))
    for name, dtype in [
        ("actions", torch.int64),
        ("logprobs", torch.float32),
        ("entropy", torch.float32),
        ("values", torch.float32),
    ]:
        tensor = getattr(out, name)
        assert tensor.shape == (T, B), name
        assert tensor.dtype == dtype, name
    assert out.state == ()


def test_image_observations_are_flattened() -> None:
    space = gym.spaces.Box(0, 10, shape=(7, 7, 3), dtype=np.uint8)
    agent = MockAgent(space, gym.spaces.Discrete(7))
    obs = torch.randint(0, 10, (T, B, 7, 7, 3), dtype=torch.uint8)
    out = agent(obs, (), torch.zeros(T, B))
    assert out.actions.shape == (T, B)
    assert int(out.actions.max()) < 7


def test_construction_is_deterministic_under_seed() -> None:
    torch.manual_seed(0)
    a = MockAgent()
    torch.manual_seed(0)
    b = MockAgent()
    for key, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[key]), key


def test_deterministic_is_argmax_and_given_actions_reproduce_logprobs(obs: torch.Tensor) -> None:
    agent = MockAgent()
    done = torch.zeros(T, B)
    greedy = agent(obs, (), done, deterministic=True)
    assert torch.equal(greedy.actions, agent.actor(obs).argmax(-1))
    sampled = agent(obs, (), done)
    evaluated = agent(obs, (), done, action=sampled.actions)
    _assert_outputs_equal(sampled, evaluated)


def test_rebuild_from_config_is_bitwise_identical(obs: torch.Tensor) -> None:
    """Guards: a checkpoint reloaded from class_path + JSON config acting differently."""
    agent = MockAgent()
    config = json.loads(json.dumps(agent.config, allow_nan=False))
    assert config == agent.config
    validate_config(config)
    clone = build_agent(agent.class_path, config)
    clone.load_state_dict(agent.state_dict(), strict=True)
    done = torch.zeros(T, B)
    torch.manual_seed(7)
    expected = agent(obs, (), done)
    torch.manual_seed(7)
    _assert_outputs_equal(clone(obs, (), done), expected)


def test_state_dict_loads_weights_only_without_allowlist() -> None:
    """Guards: the safe checkpoint needing an allowlist (torch 2.6 weights_only default)."""
    agent = MockAgent()
    state = agent.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    buffer = io.BytesIO()
    torch_compat.save(state, buffer)
    buffer.seek(0)
    loaded = torch_compat.load(buffer)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_wrong_observation_shape_is_agent_mismatch() -> None:
    with pytest.raises(AgentMismatchError, match=r"\(4,\)"):
        MockAgent()(torch.zeros(T, B, 5), (), torch.zeros(T, B))


def test_non_discrete_action_space_is_refused() -> None:
    with pytest.raises(AgentMismatchError, match="Discrete"):
        MockAgent(action_space=gym.spaces.Box(-1, 1, (2,)))
