"""``class_path`` <-> agent class, and rebuilding an agent from its saved config.

A checkpoint names its agent by ``class_path`` (``"package.module.QualName"``) and stores
the constructor config as JSON primitives. Loading imports the class, rebuilds it with
``cls.from_config(saved_config)`` -- the whole saved config, never the code's current
defaults, so a changed default cannot silently reshape saved weights -- and only then
loads the state_dict. Any importable ``nn.Module`` class providing ``forward``,
``initial_state``, ``config`` and ``from_config`` works, whether or not it inherits from
:class:`~ckptcompat.agents.base.Agent` (a team's own agents, duck typed).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
from typing import Any

from torch import nn

from ckptcompat.errors import AgentMismatchError
from ckptcompat.json_config import validate_config

__all__ = [
    "REQUIRED_MEMBERS",
    "build_agent",
    "class_path_of",
    "resolve_agent_class",
    "validate_config",
]

#: Class attributes an agent class must provide (``config`` may be a property).
REQUIRED_MEMBERS: tuple[str, ...] = ("forward", "initial_state", "config", "from_config")


def class_path_of(obj_or_cls: object) -> str:
    """``"package.module.QualName"`` of a class, or of an instance's class.

    Raises:
        AgentMismatchError: the class is defined inside a function (``<locals>`` in its
            qualified name), so no import could find it again when loading.
    """
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    path = f"{cls.__module__}.{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise AgentMismatchError(
            "the agent class is defined inside a function and cannot be imported when loading",
            expected="a class defined at module level",
            found=path,
            fix="move the class to the top level of an importable module",
        )
    return path


def _import_longest_prefix(class_path: str) -> tuple[Any, list[str]]:
    """Import the longest importable module prefix; return it and the remaining names."""
    parts = class_path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            return importlib.import_module(module_name), parts[cut:]
        except ModuleNotFoundError as exc:
            # Only "this prefix does not exist" means try a shorter one; a module that
            # exists but fails to import one of *its* dependencies is a real failure.
            missing = exc.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue
            raise _import_failed(class_path, module_name, exc) from exc
        except Exception as exc:
            raise _import_failed(class_path, module_name, exc) from exc
    raise AgentMismatchError(
        f"no module of agent class_path {class_path!r} can be imported",
        expected="'package.module.ClassName' of an installed package",
        found=f"no importable prefix of {class_path!r}",
        fix="install the package that defines the agent, or fix the class_path",
    )


def _import_failed(class_path: str, module_name: str, exc: BaseException) -> AgentMismatchError:
    return AgentMismatchError(
        f"importing module {module_name!r} for agent {class_path!r} failed",
        expected="a module that imports cleanly",
        found=f"{type(exc).__name__}: {exc}",
        fix="install the module's dependencies or fix the import error shown",
    )


def resolve_agent_class(class_path: str) -> type[nn.Module]:
    """Import the agent class named by ``class_path``.

    The longest importable module prefix is imported, then attributes are followed for
    the rest (so nested classes work: ``"pkg.mod.Outer.Inner"``).

    Raises:
        AgentMismatchError: empty/malformed path, no importable module, an import error
            inside the module, a missing attribute (with close names suggested), or an
            object that is not a concrete ``nn.Module`` class providing
            :data:`REQUIRED_MEMBERS`.
    """
    if not isinstance(class_path, str) or "." not in class_path.strip("."):
        raise AgentMismatchError(
            "malformed agent class_path",
            expected="'package.module.ClassName'",
            found=repr(class_path),
            fix="save the agent's class_path with ckptcompat.agents.class_path_of",
        )
    obj, rest = _import_longest_prefix(class_path)
    for name in rest:
        if not hasattr(obj, name):
            owner = getattr(obj, "__name__", repr(obj))
            close = difflib.get_close_matches(name, [n for n in dir(obj) if not n.startswith("_")])
            hint = f" (close names: {', '.join(repr(c) for c in close)})" if close else ""
            raise AgentMismatchError(
                f"agent class {class_path!r} not found: {owner!r} has no attribute {name!r}",
                expected=f"{name!r} defined in {owner!r}",
                found=f"no such attribute{hint}",
                fix="fix the class_path, or install the version of the code that defines it",
            )
        obj = getattr(obj, name)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise AgentMismatchError(
            f"{class_path!r} is not an agent class",
            expected="a torch.nn.Module subclass",
            found=f"{type(obj).__name__} {obj!r}",
            fix="point class_path at the agent class itself",
        )
    if inspect.isabstract(obj):
        raise AgentMismatchError(
            f"{class_path!r} is an abstract class",
            expected="a concrete agent class",
            found=f"abstract methods {sorted(obj.__abstractmethods__)}",
            fix="point class_path at a concrete subclass",
        )
    missing = [m for m in REQUIRED_MEMBERS if not hasattr(obj, m)]
    if missing:
        raise AgentMismatchError(
            f"{class_path!r} does not implement the agent protocol",
            expected=f"class members {', '.join(REQUIRED_MEMBERS)}",
            found=f"missing {', '.join(missing)}",
            fix="subclass ckptcompat.agents.Agent or add the missing members",
        )
    return obj


def build_agent(class_path: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained agent: ``resolve_agent_class(class_path).from_config(config)``.

    ``config`` is passed whole (deep-copied, so the caller's dict is not mutated); nothing
    is filled in from the code's current defaults.

    Raises:
        AgentMismatchError: bad ``class_path`` (see :func:`resolve_agent_class`), a config
            that is not JSON primitives, or a constructor rejecting the config
            (``TypeError``/``ValueError``/``KeyError``, e.g. an unknown or missing key).
    """
    validate_config(config)
    cls = resolve_agent_class(class_path)
    try:
        agent = cls.from_config(copy.deepcopy(config))  # type: ignore[attr-defined]
    except AgentMismatchError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise AgentMismatchError(
            f"{class_path} rejected the saved config",
            expected=f"a config {class_path}.from_config accepts",
            found=f"keys {sorted(config)} ({type(exc).__name__}: {exc})",
            fix="load with the code version that saved the checkpoint, or migrate the config",
        ) from exc
    if not isinstance(agent, nn.Module):
        raise AgentMismatchError(
            f"{class_path}.from_config did not return a module",
            expected="a torch.nn.Module",
            found=type(agent).__qualname__,
            fix="make from_config return an instance of the agent class",
        )
    return agent
