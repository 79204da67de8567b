"""Gymnasium spaces <-> JSON-primitive configs, so an agent's config holds no pickled objects.

A checkpoint stores the observation and action spaces inside the agent config
(docs/design.md section 4), and that config must survive ``json.dumps`` and
``torch.load(weights_only=True)``. A pickled ``gymnasium.spaces.Box`` drags in numpy
arrays, dtypes and possibly an ``np.random.Generator``; these configs hold none of that.

Supported spaces and their configs:

* ``Box``: ``{"type": "Box", "shape": [4], "dtype": "float32", "low": L, "high": H}``.
  ``L``/``H`` is a scalar when every element of the bound is equal, otherwise a nested list
  of ``shape``. Infinite bounds are written as the strings ``"inf"`` and ``"-inf"``
  because JSON has no infinity (``json.dumps`` would emit the non-standard ``Infinity``).
* ``Discrete``: ``{"type": "Discrete", "n": 2, "start": 0, "dtype": "int64"}``.

Anything else raises :class:`~ckptcompat.errors.AgentMismatchError`.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from ckptcompat.errors import AgentMismatchError

__all__ = ["SUPPORTED_SPACES", "as_space", "space_from_config", "space_to_config"]

#: Names of the ``gymnasium.spaces`` classes this module converts.
SUPPORTED_SPACES: tuple[str, ...] = ("Box", "Discrete")

_FIX = "describe the space as a Box or a Discrete, or wrap the env so it exposes one"
_INF = {"inf": math.inf, "-inf": -math.inf}

#: A bound in a Box config: a number, "inf"/"-inf", or nested lists of those.
Bound = float | int | bool | str | list[Any]


def _encode_scalar(value: float | int | bool) -> float | int | bool | str:
    if isinstance(value, float):
        if math.isnan(value):
            raise AgentMismatchError(
                "a Box bound is NaN",
                expected="finite or infinite bounds",
                found="nan",
                fix="give the space real bounds",
            )
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def _encode_bound(bound: np.ndarray) -> Bound:
    values = bound.tolist()  # numpy scalars -> Python int/float/bool, arrays -> nested lists
    flat = bound.reshape(-1)
    if flat.size > 0 and bool(np.all(flat == flat[0])):
        return _encode_scalar(flat[0].item())
    return _map_nested(values, _encode_scalar)


def _decode_scalar(value: Any) -> float | int | bool:
    if isinstance(value, str):
        if value not in _INF:
            raise AgentMismatchError(
                "a Box bound string is not an infinity",
                expected='a number, "inf" or "-inf"',
                found=repr(value),
                fix="fix the saved config",
            )
        return _INF[value]
    return value  # type: ignore[no-any-return]


def _decode_bound(value: Bound, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    array = np.asarray(_map_nested(value, _decode_scalar), dtype=dtype)
    # A scalar stands for a uniform bound; gymnasium wants the full shape.
    return np.full(shape, array, dtype=dtype) if array.ndim == 0 else array


def _map_nested(values: Any, fn: Any) -> Any:
    if isinstance(values, list):
        return [_map_nested(v, fn) for v in values]
    return fn(values)


def space_to_config(space: gym.Space[Any]) -> dict[str, Any]:
    """Describe ``space`` with JSON primitives only (see the module docstring for the format).

    Raises:
        AgentMismatchError: ``space`` is not a ``Box`` or ``Discrete``, or a bound is NaN.
    """
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": [int(d) for d in space.shape],
            "dtype": np.dtype(space.dtype).name,
            "low": _encode_bound(space.low),
            "high": _encode_bound(space.high),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {
            "type": "Discrete",
            "n": int(space.n),
            "start": int(space.start),
            "dtype": np.dtype(space.dtype).name,
        }
    raise AgentMismatchError(
        f"cannot describe a {type(space).__module__}.{type(space).__qualname__} as a config",
        expected=f"one of gymnasium.spaces {', '.join(SUPPORTED_SPACES)}",
        found=repr(space),
        fix=_FIX,
    )


def _field(cfg: dict[str, Any], key: str) -> Any:
    if key not in cfg:
        raise AgentMismatchError(
            f"a {cfg.get('type')} space config has no {key!r}",
            expected=f"a {key!r} key",
            found=f"keys {sorted(cfg)}",
            fix="rebuild the config with ckptcompat.agents.spaces.space_to_config",
        )
    return cfg[key]


def space_from_config(cfg: dict[str, Any]) -> gym.Space[Any]:
    """Rebuild the gymnasium space described by :func:`space_to_config`.

    Raises:
        AgentMismatchError: ``cfg`` is not a dict, names an unsupported ``type``, misses a
            key, or gymnasium refuses the values.
    """
    if not isinstance(cfg, dict):
        raise AgentMismatchError(
            "a space config is not a dict",
            expected='a dict such as {"type": "Discrete", "n": 2, "start": 0}',
            found=f"{type(cfg).__name__} {cfg!r}",
            fix="save the space with ckptcompat.agents.spaces.space_to_config",
        )
    kind = cfg.get("type")
    try:
        if kind == "Box":
            dtype = np.dtype(_field(cfg, "dtype"))
            shape = tuple(int(d) for d in _field(cfg, "shape"))
            low = _decode_bound(_field(cfg, "low"), shape, dtype)
            high = _decode_bound(_field(cfg, "high"), shape, dtype)
            return gym.spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
        if kind == "Discrete":
            dtype = np.dtype(cfg.get("dtype", "int64"))
            return gym.spaces.Discrete(
                int(_field(cfg, "n")), start=int(cfg.get("start", 0)), dtype=dtype
            )
    except (TypeError, ValueError, AssertionError) as exc:
        raise AgentMismatchError(
            f"gymnasium refused the {kind} space config",
            expected="values gymnasium accepts",
            found=f"{cfg!r} ({type(exc).__name__}: {exc})",
            fix="fix the saved config",
        ) from exc
    raise AgentMismatchError(
        "unsupported space type in config",
        expected=f"'type' in {list(SUPPORTED_SPACES)}",
        found=repr(kind),
        fix=_FIX,
    )


def as_space(space_or_config: gym.Space[Any] | dict[str, Any]) -> gym.Space[Any]:
    """Return a gymnasium space given either a space or its config (agent constructors).

    Raises:
        AgentMismatchError: as :func:`space_from_config` and :func:`space_to_config`.
    """
    if isinstance(space_or_config, gym.Space):
        space_to_config(space_or_config)  # refuse unsupported spaces at construction time
        return space_or_config
    return space_from_config(space_or_config)
