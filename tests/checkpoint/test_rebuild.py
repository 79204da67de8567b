"""Rebuilding an agent on the meta device and adopting its loaded tensors (rebuild.py).

Every test runs in every cell: meta tensors, ``load_state_dict(assign=True)`` and what a
constructor may do under ``torch.device("meta")`` are torch-version behaviour (2.4-2.15).
The agents below are module-level so the registry can import them by ``class_path``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from ckptcompat import torch_compat
from ckptcompat.agents import MockAgent, RecurrentAgent
from ckptcompat.agents.base import Agent, AgentOutput, AgentState
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.rebuild import plan_rebuild
from ckptcompat.errors import AgentMismatchError


class _Small(Agent):
    """A two-layer agent; subclasses add the feature under test."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.width = width
        self.body = nn.Linear(width, width)
        self.head = nn.Linear(width, 2)

    @property
    def config(self) -> dict[str, Any]:
        return {"width": self.width}

    def initial_state(self, batch_size: int) -> AgentState:
        return ()

    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        logits = self.head(torch.tanh(self.body(obs)))
        actions = logits.argmax(-1) if action is None else action
        zeros = torch.zeros(actions.shape)
        return AgentOutput(actions, zeros, zeros, logits[..., 0], ())


class NonPersistentAgent(_Small):
    """A non-persistent buffer: not in the state_dict, so only the constructor sets it."""

    def __init__(self, width: int = 3) -> None:
        super().__init__(width)
        self.register_buffer("scale", torch.full((width,), 2.5), persistent=False)


class TiedAgent(_Small):
    """The head's weight is the body's (weight tying): one Parameter under two names."""

    def __init__(self, width: int = 3) -> None:
        super().__init__(width)
        self.head = nn.Linear(width, width)
        self.head.weight = self.body.weight


class ValueReadingAgent(_Small):
    """A constructor that reads a tensor value, which meta tensors do not have."""

    def __init__(self, width: int = 3) -> None:
        super().__init__(width)
        self.initial_norm = float(self.body.weight.detach().norm())


class PlainTensorAgent(_Small):
    """A tensor attribute that is neither parameter nor buffer (meta on a meta build)."""

    def __init__(self, width: int = 3) -> None:
        super().__init__(width)
        self.offsets = torch.arange(width, dtype=torch.float32)


class ParameterViewAgent(_Small):
    """Keeps a view of a parameter: adopting new tensors would leave it on the old ones."""

    def __init__(self, width: int = 3) -> None:
        super().__init__(width)
        self.first_row = self.body.weight[0]


class FrozenAgent(_Small):
    """A frozen body: requires_grad=False must survive the load."""

    def __init__(self, width: int = 3) -> None:
        super().__init__(width)
        self.body.requires_grad_(False)


class _CopyingLinear(nn.Linear):
    """Loads by copy_ whatever ``assign`` says (as some custom layers do)."""

    def _load_from_state_dict(
        self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        with torch.no_grad():
            for name, param in self._parameters.items():
                if param is not None and prefix + name in state_dict:
                    param.copy_(state_dict[prefix + name])


class CopyingLayerAgent(_Small):
    """A layer whose custom loading leaves meta tensors behind on the meta way."""

    def __init__(self, width: int = 3) -> None:
        super().__init__(width)
        self.body = _CopyingLinear(width, width)


def _round_trip(tmp_path: Path, agent: nn.Module, cache_size: int = 0) -> nn.Module:
    manager = SimpleCheckpointManager("run", tmp_path / "data", cache_size=cache_size)
    manager.save_agent(agent, 0)
    return manager.load_agent(0)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


def _no_meta(agent: nn.Module) -> None:
    for name, tensor in [*agent.named_parameters(), *agent.named_buffers()]:
        assert not tensor.is_meta, name


def _plan(agent: nn.Module) -> tuple[str, str]:
    saved = {k: v.clone() for k, v in agent.state_dict().items()}
    plan = plan_rebuild(f"{type(agent).__module__}.{type(agent).__qualname__}", agent.config, saved)
    return plan.way, plan.reason


def _storages(agent: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in agent.state_dict().values()}


def test_our_agents_take_the_meta_way() -> None:
    """Guards a silent fall back to allocate+init+copy (about half of a 100 MB load) for
    the agents we ship, e.g. when a constructor change stops working on meta tensors."""
    spaces = (gym.spaces.Box(0, 10, (7, 7, 3), np.uint8), gym.spaces.Discrete(7))
    for agent in (MockAgent(), RecurrentAgent(*spaces, hidden_size=8), _Small()):
        assert _plan(agent) == ("meta", ""), type(agent).__name__


def test_loading_leaves_no_meta_tensor_and_lstm_weights_follow(tmp_path: Path) -> None:
    """Guards an LSTM whose ``_flat_weights`` still point at the meta parameters after
    ``assign`` (its forward would fail or use stale weights)."""
    torch.manual_seed(0)
    agent = RecurrentAgent(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
    loaded = _round_trip(tmp_path, agent)
    _no_meta(loaded)
    lstm = loaded.lstm
    assert all(
        w is getattr(lstm, n)
        for w, n in zip(lstm._flat_weights, lstm._flat_weights_names, strict=True)
    )
    obs, done = torch.randn(3, 2, 4), torch.zeros(3, 2)
    torch.testing.assert_close(
        loaded(obs, (), done, deterministic=True).values,
        agent(obs, (), done, deterministic=True).values,
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("cache_size", [0, 3])
def test_loaded_tensors_are_shared_with_nothing(tmp_path: Path, cache_size: int) -> None:
    """Guards adopted tensors aliasing the cache or another load: training one returned
    agent must never change the cached copy, a later load, or another returned agent."""
    torch.manual_seed(0)
    original = _Small()
    manager = SimpleCheckpointManager("run", tmp_path / "data", cache_size=cache_size)
    manager.save_agent(original, 0)
    first, second = manager.load_agent(0), manager.load_agent(0)
    assert not _storages(first) & _storages(second)
    if cache_size:
        cached = manager._cache.agents()[0]
        assert not (_storages(first) | _storages(second)) & _storages(cached)
    with torch.no_grad():
        for param in first.parameters():
            param.add_(1.0)
    _assert_same_state(second, original)
    _assert_same_state(manager.load_agent(0), original)


def test_loaded_agent_trains_and_keeps_parameters(tmp_path: Path) -> None:
    """Guards adopted tensors that are not leaf nn.Parameters with requires_grad (an
    optimizer would skip them or fail), and a frozen layer unfrozen by the load."""
    torch.manual_seed(0)
    loaded = _round_trip(tmp_path, FrozenAgent())
    assert _plan(FrozenAgent())[0] == "meta"
    for name, param in loaded.named_parameters():
        assert isinstance(param, nn.Parameter) and param.is_leaf, name
        assert param.requires_grad == (not name.startswith("body.")), name
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in loaded.parameters() if p.requires_grad], lr=0.1)
    obs = torch.randn(4, 2, 3)
    for _ in range(3):
        optimizer.zero_grad()
        loaded(obs, (), torch.zeros(4, 2)).values.pow(2).mean().backward()
        optimizer.step()
    after = loaded.state_dict()
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert torch.equal(after["body.weight"], before["body.weight"])


def test_non_persistent_buffer_keeps_its_constructed_value(tmp_path: Path) -> None:
    """Guards a non-persistent buffer left on the meta device (no state_dict entry would
    replace it): such agents are built normally and loaded by copy, as before."""
    way, reason = _plan(NonPersistentAgent())
    assert way == "copy" and "scale" in reason
    loaded = _round_trip(tmp_path, NonPersistentAgent())
    _no_meta(loaded)
    assert torch.equal(loaded.scale, torch.full((3,), 2.5))


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    """Guards assign untying a shared parameter (two Parameters over one storage: an
    optimizer would update it twice); tied agents load by copy, as before."""
    assert _plan(TiedAgent())[0] == "copy"
    torch.manual_seed(0)
    agent = TiedAgent()
    loaded = _round_trip(tmp_path, agent)
    assert loaded.head.weight is loaded.body.weight
    _assert_same_state(loaded, agent)


def test_saved_tensors_sharing_storage_are_not_aliased(tmp_path: Path) -> None:
    """Guards a file whose tensors share one storage (possible in any torch.save file)
    making two independent parameters alias each other after an adopting load."""
    torch.manual_seed(0)
    agent = _Small()
    with torch.no_grad():
        agent.head.bias.copy_(agent.body.bias[:2])
    saved = dict(agent.state_dict())
    saved["head.bias"] = saved["body.bias"][:2]  # a view: the same storage
    plan = plan_rebuild("tests.checkpoint.test_rebuild._Small", {"width": 3}, saved)
    assert plan.way == "copy" and "head.bias" in plan.reason
    manager = SimpleCheckpointManager("run", tmp_path / "data", cache_size=0)
    manager.save_agent(agent, 0)
    path = manager.checkpoint_dir / "run_v0.pt"
    payload = torch_compat.load(path)
    payload["state_dict"] = saved
    torch_compat.save(payload, path)
    loaded = SimpleCheckpointManager.load_from_uri(path, verify="none")  # rewritten
    with torch.no_grad():
        loaded.body.bias.add_(1.0)
    assert torch.equal(loaded.head.bias, agent.head.bias)


@pytest.mark.parametrize(
    "cls", [ValueReadingAgent, PlainTensorAgent, ParameterViewAgent, CopyingLayerAgent]
)
def test_agents_the_meta_build_cannot_serve_still_load(
    tmp_path: Path, cls: type[nn.Module], caplog: pytest.LogCaptureFixture
) -> None:
    """Guards constructors that read tensor values, plain tensor attributes and custom
    ``_load_from_state_dict`` methods: each falls back to a normal build loaded by copy
    (logged with the reason) and gets the saved values, with no meta tensor left."""
    torch.manual_seed(0)
    agent = cls()
    with caplog.at_level(logging.DEBUG, logger="ckptcompat.checkpoint.rebuild"):
        loaded = _round_trip(tmp_path, agent)
    _no_meta(loaded)
    _assert_same_state(loaded, agent)
    assert any("the copy way" in r.getMessage() for r in caplog.records), caplog.text
    if cls is PlainTensorAgent:
        assert torch.equal(loaded.offsets, torch.arange(3, dtype=torch.float32))
    if cls is ParameterViewAgent:  # the view follows the loaded weights, not the initial ones
        assert torch.equal(loaded.first_row, agent.body.weight[0])
        with torch.no_grad():
            loaded.body.weight.add_(1.0)
        assert torch.equal(loaded.first_row, loaded.body.weight[0])


def test_mismatches_raise_the_same_errors_on_every_way(tmp_path: Path) -> None:
    """Guards the meta build hiding a config error or a shape mismatch (its exception is
    caught to fall back; the normal build must raise the typed error)."""
    manager = SimpleCheckpointManager("run", tmp_path / "data", cache_size=0)
    manager.save_agent(_Small(), 0)
    path = manager.checkpoint_dir / "run_v0.pt"
    payload = torch_compat.load(path)
    payload["agent"]["config"] = {"width": 3, "unknown": 1}
    torch_compat.save(payload, path)
    with pytest.raises(AgentMismatchError, match="rejected the saved config"):
        SimpleCheckpointManager.load_from_uri(path, verify="none")
    payload["agent"]["config"] = {"width": 4}
    torch_compat.save(payload, path)
    with pytest.raises(AgentMismatchError, match="does not fit"):
        SimpleCheckpointManager.load_from_uri(path, verify="none")
