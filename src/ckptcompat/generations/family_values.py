"""Plain values out of an inertly rebuilt pickle graph: JSON primitives kept, objects named.

:func:`ckptcompat.scan.inert_unpickler.inert_load` rebuilds a pickle with plain data as
itself and an inert placeholder for every global and everything made from one
(:mod:`ckptcompat.scan.inert_placeholders`). Hyperparameters of another library's file are
read from that graph: a value made only of JSON primitives (str, int, float, bool, None,
lists, tuples as lists, dicts with str keys) is kept as is; any other value is reported by
the globals it was made from (``argparse.Namespace``, ``omegaconf.dictconfig.DictConfig``),
never built. Standard library only; depth and size bounded.
"""

from __future__ import annotations

from typing import Any

from ckptcompat.scan.inert_placeholders import GLOBAL_TYPES, Result
from ckptcompat.scan.torch_names import TENSOR_REBUILDS

__all__ = ["MAX_DEPTH", "describe_objects", "is_kept", "json_primitive", "origins"]

#: Deepest container nesting read in a value.
MAX_DEPTH = 64
_MAX_ITEMS = 100_000  # items visited in one value
_SCALARS = (str, int, float, bool, type(None))
_MISSING = object()


def json_primitive(value: Any) -> Any:
    """``value`` as JSON primitives (tuples become lists), or a private sentinel when any
    part of it is not one; :func:`is_kept` tells which."""
    budget = [_MAX_ITEMS]
    return _primitive(value, 0, budget)


def is_kept(converted: Any) -> bool:
    """True when :func:`json_primitive` returned a value (not the sentinel)."""
    return converted is not _MISSING


def _primitive(value: Any, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if depth > MAX_DEPTH or budget[0] < 0:
        return _MISSING
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind in (list, tuple):
        out = []
        for item in value:
            converted = _primitive(item, depth + 1, budget)
            if converted is _MISSING:
                return _MISSING
            out.append(converted)
        return out
    if kind is dict:
        result = {}
        for key, item in value.items():
            converted = _primitive(item, depth + 1, budget)
            if type(key) is not str or converted is _MISSING:
                return _MISSING
            result[key] = converted
        return result
    return _MISSING


def origins(value: Any) -> list[str]:
    """The globals ``value`` was made from, outermost first, without repeats: a
    placeholder's class or function; ``"a tensor"`` for tensors; ``"bytes"``/``"set"``
    and the like for plain values JSON lacks. Empty for JSON primitives."""
    out: dict[str, None] = {}
    todo: list[tuple[Any, int]] = [(value, 0)]
    visited = 0
    while todo and visited < _MAX_ITEMS and len(out) < 50:
        item, depth = todo.pop(0)
        visited += 1
        kind = type(item)
        if kind in GLOBAL_TYPES:
            out[item._name] = None
        elif isinstance(item, Result):
            origin = item._origin
            out["a tensor" if origin in TENSOR_REBUILDS else origin] = None
        elif depth < MAX_DEPTH and kind in (list, tuple):
            todo.extend((child, depth + 1) for child in item)
        elif depth < MAX_DEPTH and kind is dict:
            for key, child in item.items():
                if type(key) not in (str, int):
                    out[f"a {type(key).__name__} key"] = None
                todo.append((child, depth + 1))
        elif kind not in _SCALARS and depth < MAX_DEPTH:
            out[kind.__name__] = None
    return list(out)


def describe_objects(where: str, value: Any) -> str | None:
    """``"hyper_parameters['args']: argparse.Namespace"`` when ``value`` is not JSON
    primitives; None when it is."""
    if is_kept(json_primitive(value)):
        return None
    found = origins(value)
    return f"{where}: {', '.join(found[:5]) or 'not JSON'}" + (
        f" and {len(found) - 5} more" if len(found) > 5 else ""
    )
