"""The check that an agent's config is JSON primitives (standard library only).

A checkpoint stores its agent's constructor config as JSON, and ``torch.load(weights_only=
True)`` must read it back unchanged; the registry checks every config before building an
agent (:func:`ckptcompat.agents.registry.build_agent`), and a team's config file is checked
with the same rules when it is read (:mod:`ckptcompat.harness.team`, which imports no
torch: this module lives outside :mod:`ckptcompat.agents`, whose package imports torch).
"""

from __future__ import annotations

import math
from typing import Any

from ckptcompat.errors import AgentMismatchError

__all__ = ["validate_config"]

_SCALARS = (str, int, float, bool, type(None))


def _describe_path(root: str, keys: list[str | int]) -> str:
    return root + "".join(f"[{k!r}]" if isinstance(k, str) else f"[{k}]" for k in keys)


def _walk(value: Any, root: str, keys: list[str | int]) -> None:
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise AgentMismatchError(
                    f"agent config key {key!r} at {_describe_path(root, keys)} is not a str",
                    expected="dict keys of type str (JSON object keys)",
                    found=f"a key of type {type(key).__module__}.{type(key).__qualname__}",
                    fix="use string keys in the agent's config property",
                )
            _walk(item, root, [*keys, key])
        return
    if kind is list:
        for index, item in enumerate(value):
            _walk(item, root, [*keys, index])
        return
    if kind in _SCALARS:
        if kind is float and not math.isfinite(value):
            raise AgentMismatchError(
                f"agent config field {_describe_path(root, keys)} is {value!r}",
                expected="a finite float (JSON has no inf/nan)",
                found=repr(value),
                fix='encode it as a string such as "inf", as ckptcompat.agents.spaces does',
            )
        return
    if kind is tuple:
        fix = "convert it to a list in the agent's config property"
    elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        fix = "convert it with int()/float()/bool() (e.g. value.item()) in the config property"
    else:
        fix = "convert it to dict/list/str/int/float/bool/None in the agent's config property"
    raise AgentMismatchError(
        f"agent config field {_describe_path(root, keys)} is not a JSON primitive",
        expected="dict (str keys), list, str, int, float, bool or None",
        found=f"{kind.__module__}.{kind.__qualname__}: {value!r:.80}",
        fix=fix,
    )


def validate_config(config: Any, *, name: str = "config") -> None:
    """Check that ``config`` is a dict of JSON primitives, recursively.

    Exact types are required (a ``str`` Enum, ``OrderedDict``, tuple or numpy scalar is
    refused) because the config must round-trip through ``json.dumps`` and through
    ``torch.load(weights_only=True)`` unchanged.

    Raises:
        AgentMismatchError: naming the offending field path, e.g. ``config["encoder"]["act"]``,
            and its type.
    """
    if type(config) is not dict:
        raise AgentMismatchError(
            f"agent {name} is not a dict",
            expected="a dict of JSON primitives",
            found=f"{type(config).__module__}.{type(config).__qualname__}",
            fix="return a plain dict from the agent's config property",
        )
    _walk(config, name, [])
