"""class_path <-> class resolution, config validation and rebuilding (agents.registry)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from ckptcompat.agents import (
    AgentOutput,
    MockAgent,
    RecurrentAgent,
    build_agent,
    class_path_of,
    resolve_agent_class,
    validate_config,
)
from ckptcompat.errors import AgentMismatchError


class TeamAgent(nn.Module):
    """A team's own agent: the protocol's members, without inheriting from Agent."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(width, 2)

    @property
    def config(self) -> dict[str, Any]:
        return {"width": self.width}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TeamAgent:
        return cls(**config)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return ()

    def forward(self, obs: torch.Tensor, state: Any, done: torch.Tensor) -> AgentOutput:
        raise NotImplementedError


class NoInitialState(nn.Module):
    """A module missing ``initial_state`` and ``config``."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoInitialState:
        return cls()


class ReturnsNotAModule(TeamAgent):
    """A broken ``from_config``."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return {"not": "a module"}


class Outer:
    """Holds a nested agent class: its class_path has a dotted qualname."""

    class Inner(TeamAgent):
        pass


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_class_path_round_trip_for_our_agents() -> None:
    assert class_path_of(MockAgent) == "ckptcompat.agents.mock.MockAgent"
    assert class_path_of(MockAgent()) == "ckptcompat.agents.mock.MockAgent"
    assert MockAgent().class_path == class_path_of(MockAgent)
    for cls in (MockAgent, RecurrentAgent):
        assert resolve_agent_class(class_path_of(cls)) is cls


def test_class_path_of_local_class_is_refused() -> None:
    """Guards: saving a checkpoint whose class_path no import can ever resolve."""

    class Local(TeamAgent):
        pass

    with pytest.raises(AgentMismatchError, match="inside a function"):
        class_path_of(Local)


def test_duck_typed_team_agent_is_built() -> None:
    agent = build_agent(_path(TeamAgent), {"width": 3})
    assert isinstance(agent, TeamAgent)
    assert agent.fc.in_features == 3


def test_nested_class_path_resolves() -> None:
    assert class_path_of(Outer.Inner).endswith(".Outer.Inner")
    assert resolve_agent_class(class_path_of(Outer.Inner)) is Outer.Inner


@pytest.mark.parametrize(
    ("class_path", "match"),
    [
        ("no_such_package_xyz.agents.Agent", "no module .* can be imported"),
        ("ckptcompat.agents.mock.MockAgnt", "no attribute 'MockAgnt'.*'MockAgent'"),
        ("ckptcompat.errors.CheckpointError", "not an agent class"),
        ("ckptcompat.agents.registry.build_agent", "not an agent class"),
        ("ckptcompat.agents.base.Agent", "abstract"),
        (_path(NoInitialState), "missing initial_state, config"),
        ("MockAgent", "malformed"),
        ("", "malformed"),
    ],
)
def test_resolve_errors_are_agent_mismatch(class_path: str, match: str) -> None:
    with pytest.raises(AgentMismatchError, match=match):
        resolve_agent_class(class_path)


def test_import_error_inside_agent_module_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards: a missing dependency of the agent's module misreported as "unknown class"."""
    (tmp_path / "team_agents_xyz.py").write_text(
        textwrap.dedent(
            """
            import not_installed_dependency_xyz
            class Agent: ...
            """
        )
    )
    (tmp_path / "team_agents_boom.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AgentMismatchError, match="not_installed_dependency_xyz"):
        resolve_agent_class("team_agents_xyz.Agent")
    with pytest.raises(AgentMismatchError, match="RuntimeError: boom at import"):
        resolve_agent_class("team_agents_boom.Agent")


def test_build_agent_uses_saved_config_not_current_defaults() -> None:
    """Guards: defaults changing under saved weights (the Metta manager rebuilt from code)."""
    saved = RecurrentAgent(
        gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2), hidden_size=16
    )
    config = saved.config
    before = copy.deepcopy(config)
    rebuilt = build_agent(saved.class_path, config)
    assert isinstance(rebuilt, RecurrentAgent)
    assert rebuilt.cfg.hidden_size == 16
    assert config == before  # not mutated
    rebuilt.load_state_dict(saved.state_dict(), strict=True)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"observation_space": {"type": "Discrete", "n": 2}, "bogus": 1}, "bogus"),
        ({}, "observation_space"),
    ],
)
def test_bad_config_for_constructor_is_agent_mismatch(config: dict[str, Any], match: str) -> None:
    """Guards: a constructor TypeError leaking out of the loader as a bare traceback."""
    with pytest.raises(AgentMismatchError, match=match):
        build_agent(class_path_of(RecurrentAgent), config)


def test_from_config_must_return_a_module() -> None:
    with pytest.raises(AgentMismatchError, match="did not return a module"):
        build_agent(_path(ReturnsNotAModule), {"width": 2})


@pytest.mark.parametrize(
    ("config", "field", "found"),
    [
        ({"encoder": {"act": nn.ReLU}}, "config['encoder']['act']", "builtins.type"),
        ({"layers": [1, 2, (3, 4)]}, "config['layers'][2]", "builtins.tuple"),
        ({"n": np.int64(3)}, "config['n']", "numpy.int64"),
        ({"w": torch.tensor(1.0)}, "config['w']", "torch.Tensor"),
        ({"clip": float("inf")}, "config['clip']", "inf"),
    ],
)
def test_validate_config_names_the_field_path(
    config: dict[str, Any], field: str, found: str
) -> None:
    """Guards: a config that pickles objects (refused by weights_only) with no hint where."""
    with pytest.raises(AgentMismatchError) as info:
        validate_config(config)
    message = str(info.value)
    assert field in message
    assert found in message


def test_validate_config_refuses_non_str_keys_and_non_dicts() -> None:
    with pytest.raises(AgentMismatchError, match=r"key 1 at config\['a'\]"):
        validate_config({"a": {1: "x"}})
    with pytest.raises(AgentMismatchError, match="not a dict"):
        validate_config([1, 2])


def test_build_agent_validates_config_before_constructing() -> None:
    with pytest.raises(AgentMismatchError, match=r"config\['width'\]"):
        build_agent(_path(TeamAgent), {"width": np.int64(3)})


def test_validate_config_accepts_json_primitives() -> None:
    validate_config({"a": [1, 2.5, "x", True, None, {"b": []}], "c": {}})
    validate_config(MockAgent().config)
