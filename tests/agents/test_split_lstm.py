"""SplitLSTMAgent: separate actor and critic towers, state handling, config round trip."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import SplitLSTMAgent, build_agent, validate_config
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


@pytest.fixture(params=sorted(SPACES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def agent(kind: str) -> SplitLSTMAgent:
    torch.manual_seed(0)
    agent = SplitLSTMAgent(*SPACES[kind], hidden_size=16, num_layers=2, encoder_size=24)
    agent.update_obs_normalizer(_obs(kind, seed=99))
    with torch.no_grad():
        agent.actor[-1].weight.mul_(100.0)  # a policy sharp enough to see the state
    return agent


def test_output_shapes_and_state(agent: SplitLSTMAgent, kind: str) -> None:
    """Guards the interface: (T, B) outputs and a four-tensor state, (layers, B, hidden) each."""
    out = agent(_obs(kind), (), torch.zeros(T, B))
    assert out.actions.shape == out.logprobs.shape == out.values.shape == (T, B)
    assert out.actions.dtype == torch.int64 and out.values.dtype == torch.float32
    assert [tuple(s.shape) for s in out.state] == [(2, B, 16)] * 4


def test_actor_and_critic_do_not_share_parameters(agent: SplitLSTMAgent, kind: str) -> None:
    """Guards the fix of issue 21 silently reverting to a shared trunk: the value loss's
    gradient reaches no actor parameter and the policy's reaches no critic parameter."""
    out = agent(_obs(kind), (), torch.zeros(T, B), action=torch.zeros(T, B, dtype=torch.long))
    out.values.sum().backward(retain_graph=True)
    actor = [p for n, p in agent.named_parameters() if n.startswith("actor")]
    critic = [p for n, p in agent.named_parameters() if n.startswith("critic")]
    assert actor and critic and len(actor) + len(critic) == len(list(agent.parameters()))
    assert all(p.grad is None for p in actor)
    agent.zero_grad(set_to_none=True)
    out.logprobs.sum().backward()
    assert all(p.grad is None for p in critic)


def test_state_carries_and_done_resets(agent: SplitLSTMAgent, kind: str) -> None:
    """Guards lost recurrence or a missed reset: running T steps at once equals two calls
    carrying the state, and done at the second call's first step equals a fresh state."""
    obs, done = _obs(kind), torch.zeros(T, B)
    agent.eval()
    with torch.no_grad():
        whole = agent(obs, (), done, deterministic=True)
        first = agent(obs[:3], (), done[:3], deterministic=True)
        second = agent(obs[3:], first.state, done[3:], deterministic=True)
        assert torch.allclose(whole.values[3:], second.values, atol=1e-6)
        reset = torch.zeros(T - 3, B)
        reset[0] = 1.0
        after_reset = agent(obs[3:], first.state, reset, deterministic=True)
        fresh = agent(obs[3:], (), torch.zeros(T - 3, B), deterministic=True)
    assert torch.equal(after_reset.values, fresh.values)
    assert not torch.equal(second.values, fresh.values)


def test_rebuild_from_config_and_state_dict(agent: SplitLSTMAgent, kind: str) -> None:
    """Guards the safe round trip: the config is JSON primitives, the class is found by
    class_path, and the state_dict (tensors only) loads weights-only into the rebuilt agent."""
    validate_config(agent.config)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    state = torch_compat.load(buffer)
    rebuilt = build_agent(agent.class_path, agent.config)
    rebuilt.load_state_dict(state, strict=True)
    assert agent.class_path == "ckptcompat.agents.split_lstm.SplitLSTMAgent"
    assert agent.config["head_sizes"] == [64, 64]
    agent.eval()
    rebuilt.eval()
    with torch.no_grad():
        a = agent(_obs(kind), (), torch.zeros(T, B), deterministic=True)
        b = rebuilt(_obs(kind), (), torch.zeros(T, B), deterministic=True)
    assert torch.equal(a.values, b.values) and torch.equal(a.actions, b.actions)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_sizes": [0]}, "head_sizes"),
        ({"head_sizes": [True]}, "head_sizes"),
        ({"hidden_size": 0}, "hidden_size"),
    ],
)
def test_bad_arguments_are_agent_mismatch(kwargs: dict[str, object], match: str) -> None:
    """Guards bad sizes failing late or as bare errors: AgentMismatchError naming the field."""
    with pytest.raises(AgentMismatchError, match=match):
        SplitLSTMAgent(*SPACES["vector"], **kwargs)  # type: ignore[arg-type]


def test_linear_heads_and_wrong_state_length() -> None:
    """Guards ``head_sizes=[]`` (linear outputs, RecurrentAgent's heads) and a state of
    another agent passed in (two tensors): the former works, the latter is a typed error."""
    agent = SplitLSTMAgent(*SPACES["vector"], head_sizes=[])
    assert len(agent.actor) == 1 and len(agent.critic) == 1
    with pytest.raises(AgentMismatchError, match="4 tensors"):
        agent(_obs("vector"), agent.initial_state(B)[:2], torch.zeros(T, B))
