"""RecurrentAgent: shapes, recurrence and done-masking, and the safe checkpoint round trip."""

from __future__ import annotations

import io
import json
import pickle
import pickletools

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import AgentOutput, RecurrentAgent, build_agent, validate_config
from ckptcompat.errors import AgentMismatchError, UnsafeCheckpointError

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
    assert len(a.state) == len(b.state)
    for x, y in zip(a.state, b.state, strict=True):
        assert torch.equal(x, y)


@pytest.fixture(params=sorted(SPACES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def agent(kind: str) -> RecurrentAgent:
    torch.manual_seed(0)
    agent = RecurrentAgent(*SPACES[kind], hidden_size=16, num_layers=2, encoder_size=24)
    agent.update_obs_normalizer(_obs(kind, seed=99))  # non-default buffers for round trips
    return agent


def test_output_shapes_and_dtypes(agent: RecurrentAgent, kind: str) -> None:
    out = agent(_obs(kind), agent.initial_state(B), torch.zeros(T, B))
    for name, dtype in [
        ("actions", torch.int64),
        ("logprobs", torch.float32),
        ("entropy", torch.float32),
        ("values", torch.float32),
    ]:
        assert getattr(out, name).shape == (T, B), name
        assert getattr(out, name).dtype == dtype, name
    assert [tuple(s.shape) for s in out.state] == [(2, B, 16), (2, B, 16)]
    assert int(out.actions.max()) < int(agent.action_space.n)


def test_encoder_follows_observation_space(agent: RecurrentAgent, kind: str) -> None:
    convs = [m for m in agent.encoder if isinstance(m, torch.nn.Conv2d)]
    assert bool(convs) == (kind == "image")


def test_construction_is_deterministic_under_seed(kind: str) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        states.append(RecurrentAgent(*SPACES[kind]).state_dict())
    for key, tensor in states[0].items():
        assert torch.equal(tensor, states[1][key]), key


def test_state_carries_across_calls(agent: RecurrentAgent, kind: str) -> None:
    """Guards: a rollout split in chunks acting unlike the same rollout in one call."""
    obs, done = _obs(kind), torch.zeros(T, B)
    whole = agent(obs, (), done, deterministic=True)
    first = agent(obs[:3], (), done[:3], deterministic=True)
    second = agent(obs[3:], first.state, done[3:], deterministic=True)
    torch.testing.assert_close(torch.cat([first.values, second.values]), whole.values)
    for x, y in zip(second.state, whole.state, strict=True):
        torch.testing.assert_close(x, y)
    # The state matters: starting the second chunk from zeros gives other values.
    fresh = agent(obs[3:], (), done[3:], deterministic=True)
    assert not torch.allclose(fresh.values, second.values)


def test_done_zeroes_state_before_the_step(agent: RecurrentAgent, kind: str) -> None:
    """Guards: episode boundaries leaking memory (done applied after the step, or not at all)."""
    obs = _obs(kind, steps=1)
    warm = agent(_obs(kind, seed=5), (), torch.zeros(T, B)).state
    done = torch.tensor([[True, False, True]])
    out = agent(obs, warm, done, deterministic=True)
    reset = agent(obs, (), torch.zeros(1, B), deterministic=True)
    carried = agent(obs, warm, torch.zeros(1, B), deterministic=True)
    for env in range(B):
        expected = reset if done[0, env] else carried
        assert torch.equal(out.values[:, env], expected.values[:, env]), env
        for x, y in zip(out.state, expected.state, strict=True):
            assert torch.equal(x[:, env], y[:, env]), env
    assert not torch.equal(reset.values, carried.values)


def test_float_done_equals_bool_done(agent: RecurrentAgent, kind: str) -> None:
    obs = _obs(kind)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[2, 1] = True
    a = agent(obs, (), done, deterministic=True)
    b = agent(obs, (), done.float(), deterministic=True)
    _assert_outputs_equal(a, b)


def test_deterministic_takes_the_argmax(agent: RecurrentAgent, kind: str) -> None:
    obs, done = _obs(kind), torch.zeros(T, B)
    greedy = agent(obs, (), done, deterministic=True)
    n = int(agent.action_space.n)
    every = torch.stack(
        [agent(obs, (), done, action=torch.full((T, B), a)).logprobs for a in range(n)], dim=-1
    )
    assert torch.equal(greedy.actions, every.argmax(dim=-1))
    assert torch.equal(greedy.logprobs, every.max(dim=-1).values)


def test_given_actions_reproduce_sampled_logprobs(agent: RecurrentAgent, kind: str) -> None:
    """Guards: PPO's ratio != 1 on the first update because evaluation differs from acting."""
    obs, done = _obs(kind), torch.zeros(T, B)
    done[3, 0] = 1
    torch.manual_seed(11)
    sampled = agent(obs, (), done)
    evaluated = agent(obs, (), done, action=sampled.actions)
    _assert_outputs_equal(sampled, evaluated)


def test_rebuild_from_config_is_bitwise_identical(agent: RecurrentAgent, kind: str) -> None:
    """Guards: a checkpoint reloaded from class_path + JSON config acting differently."""
    config = json.loads(json.dumps(agent.config, allow_nan=False))
    assert config == agent.config
    validate_config(config)
    for clone in (RecurrentAgent.from_config(config), build_agent(agent.class_path, config)):
        assert clone.config == agent.config
        clone.load_state_dict(agent.state_dict(), strict=True)
        obs, done = _obs(kind), torch.zeros(T, B)
        done[2] = 1
        state = agent(_obs(kind, seed=4), (), torch.zeros(T, B)).state
        torch.manual_seed(21)
        expected = agent(obs, state, done)
        torch.manual_seed(21)
        _assert_outputs_equal(clone(obs, state, done), expected)


def test_state_dict_is_tensors_and_loads_weights_only(agent: RecurrentAgent) -> None:
    """Guards: the safe checkpoint needing an allowlist (torch 2.6 weights_only default)."""
    state = agent.state_dict()
    assert {"obs_mean", "obs_var", "obs_count"} <= state.keys()
    assert state["obs_count"].dtype == torch.float64
    assert all(type(v) is torch.Tensor for v in state.values())
    buffer = io.BytesIO()
    torch_compat.save(state, buffer)
    buffer.seek(0)
    loaded = torch_compat.load(buffer)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def _pickle_globals(obj: object) -> set[str]:
    # Protocol 2 writes GLOBAL "module name" opcodes, as torch.save does.
    return {
        str(arg).replace(" ", ".")
        for op, arg, _ in pickletools.genops(pickle.dumps(obj, protocol=2))
        if op.name == "GLOBAL"
    }


def test_whole_object_pickle_drags_in_globals(agent: RecurrentAgent) -> None:
    """Guards: the rich Python state a real agent keeps (dataclass config, gymnasium spaces,
    numpy) silently disappearing, which would make the harness's legacy pickles unrealistic."""
    names = _pickle_globals(agent)
    assert "ckptcompat.agents.recurrent.RecurrentAgent" in names
    assert "ckptcompat.agents.recurrent.RecurrentAgentConfig" in names
    assert any(n.startswith("gymnasium.spaces") for n in names)
    assert any(n.startswith("numpy") for n in names)
    assert len(names) >= 10


def test_whole_object_torch_save_is_refused_weights_only(agent: RecurrentAgent) -> None:
    """Guards: whole-module pickle refused by the 2.6 weights_only default -- it must fail
    loudly with the offending globals named, on every torch version."""
    buffer = io.BytesIO()
    torch_compat.save(agent, buffer)
    buffer.seek(0)
    with pytest.raises(UnsafeCheckpointError) as info:
        torch_compat.load(buffer)
    assert info.value.globals


def test_update_obs_normalizer_tracks_batch_moments(kind: str) -> None:
    agent = RecurrentAgent(*SPACES[kind])
    obs = _obs(kind, steps=32)
    agent.update_obs_normalizer(obs[:16])
    agent.update_obs_normalizer(obs[16:])
    flat = obs.reshape(-1, *agent.obs_shape).double()
    torch.testing.assert_close(agent.obs_mean, flat.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(agent.obs_var, flat.var(0, correction=0), rtol=1e-4, atol=1e-4)
    assert float(agent.obs_count) == pytest.approx(32 * B, abs=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"action_space": gym.spaces.MultiDiscrete([2, 2])}, "Box, Discrete"),
        ({"action_space": gym.spaces.Box(-1, 1, (2,), np.float32)}, "Discrete action space"),
        ({"observation_space": gym.spaces.Box(0, 1, (2, 2, 3), np.uint8)}, "too small"),
        ({"hidden_size": 0}, "positive int"),
        ({"num_layers": True}, "positive int"),
        ({"feature_names": ["x"]}, "feature_names"),
        ({"obs_norm_clip": float("inf")}, "obs_norm_clip"),
    ],
)
def test_bad_arguments_are_agent_mismatch(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = dict(
        zip(("observation_space", "action_space"), SPACES["vector"], strict=True)
    )
    args.update(kwargs)
    with pytest.raises(AgentMismatchError, match=match):
        RecurrentAgent(**args)  # type: ignore[arg-type]


def test_wrong_observation_shape_is_agent_mismatch(agent: RecurrentAgent) -> None:
    with pytest.raises(AgentMismatchError, match="shapes do not match"):
        agent(torch.zeros(T, B, 5), (), torch.zeros(T, B))


def test_feature_names_map_last_axis(agent: RecurrentAgent, kind: str) -> None:
    width = agent.obs_shape[-1]
    assert agent.feature_names == {name: i for i, name in enumerate(agent.config["feature_names"])}
    assert len(agent.feature_names) == width
