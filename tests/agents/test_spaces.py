"""Gymnasium space <-> JSON config conversion (ckptcompat.agents.spaces)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from ckptcompat.agents.spaces import as_space, space_from_config, space_to_config
from ckptcompat.errors import AgentMismatchError

# Pure numpy/gymnasium: nothing here touches torch, so one cell suffices.
pytestmark = pytest.mark.one_cell


def _roundtrip(space: gym.Space) -> gym.Space:
    cfg = space_to_config(space)
    return space_from_config(json.loads(json.dumps(cfg, allow_nan=False)))


def _assert_same_box(a: gym.spaces.Box, b: gym.spaces.Box) -> None:
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)


def test_unbounded_box_uses_inf_strings() -> None:
    """Guards: inf bounds written as JSON ``Infinity`` (invalid JSON) or dropped on reload."""
    space = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
    cfg = space_to_config(space)
    assert cfg == {"type": "Box", "shape": [4], "dtype": "float32", "low": "-inf", "high": "inf"}
    _assert_same_box(_roundtrip(space), space)


def test_image_box_compresses_uniform_bounds() -> None:
    space = gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8)
    cfg = space_to_config(space)
    assert (cfg["low"], cfg["high"], cfg["dtype"]) == (0, 255, "uint8")
    assert type(cfg["low"]) is int
    _assert_same_box(_roundtrip(space), space)


def test_non_uniform_box_bounds_round_trip_exactly() -> None:
    """Guards: float32 bounds drifting through float64 JSON, and mixed inf/finite bounds."""
    low = np.array([[-1.5, 0.1], [-np.inf, 2.0]], dtype=np.float32)
    high = np.array([[1.5, 0.7], [np.inf, 3.0]], dtype=np.float32)
    space = gym.spaces.Box(low, high, dtype=np.float32)
    cfg = space_to_config(space)
    assert cfg["low"][1][0] == "-inf"
    assert cfg["high"][1][0] == "inf"
    _assert_same_box(_roundtrip(space), space)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(5), gym.spaces.Discrete(3, start=-1)])
def test_discrete_round_trip(space: gym.spaces.Discrete) -> None:
    cfg = space_to_config(space)
    assert cfg["n"] == int(space.n)
    assert cfg["start"] == int(space.start)
    assert type(cfg["n"]) is int  # not numpy.int64, which JSON and weights_only refuse
    assert _roundtrip(space) == space


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.MultiDiscrete([3, 4]),
        gym.spaces.Dict({"grid": gym.spaces.Box(0, 1, (2,))}),
    ],
)
def test_unsupported_space_names_what_is_supported(space: gym.Space) -> None:
    with pytest.raises(AgentMismatchError, match="Box, Discrete"):
        space_to_config(space)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"type": "MultiBinary", "n": 3}, "unsupported space type"),
        ({"type": "Discrete"}, "no 'n'"),
        ({"type": "Box", "shape": [2], "dtype": "float32", "low": "nan", "high": 1}, "infinity"),
        ({"type": "Box", "shape": [2], "dtype": "float32", "low": [0, 0, 0], "high": 1}, "refused"),
        (["Discrete", 2], "not a dict"),
    ],
)
def test_bad_space_config_raises_agent_mismatch(cfg: object, match: str) -> None:
    with pytest.raises(AgentMismatchError, match=match):
        space_from_config(cfg)  # type: ignore[arg-type]


def test_as_space_accepts_space_or_config() -> None:
    space = gym.spaces.Discrete(4)
    assert as_space(space) is space
    assert as_space(space_to_config(space)) == space
    with pytest.raises(AgentMismatchError):
        as_space(gym.spaces.MultiBinary(3))
