"""The agent a bare state_dict belongs to, read from safe-format checkpoints next to it.

``ckptcompat migrate`` rebuilds a bare state_dict's agent from ``--class-path`` and
``--config``. A safe-format agent checkpoint stores both as plain data (``agent.class_path``
and ``agent.config``, spaces included), so when one sits next to the state_dict (the same
folder, or its ``checkpoints/``) and holds the same state_dict keys, the doctor prints the
exact arguments. A sibling is read only when its static scan finds nothing but torch's
default globals, and then only walked symbolically (:func:`~ckptcompat.doctor.pickle_walk.
root_object`): never unpickled. Standard library only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckptcompat.checkpoint.key_prefixes import wrapper_prefix
from ckptcompat.doctor.pickle_walk import mapping_keys, root_object
from ckptcompat.scan import scan

if TYPE_CHECKING:
    from ckptcompat.scan.scan_result import ScanResult

__all__ = ["AgentHint", "find_agent"]

_MAX_SIBLINGS = 64  # files scanned per lookup
_AGENT_FORMAT = "ckptcompat.agent"
_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class AgentHint:
    """The agent of a bare state_dict, as ``migrate --class-path/--config`` take it.

    Attributes:
        class_path: ``package.module.ClassName``.
        config: the agent's JSON config (spaces included).
        source: the safe-format checkpoint both were read from.
    """

    class_path: str
    config: dict[str, Any]
    source: str

    @property
    def config_json(self) -> str:
        """``config`` as the JSON text ``--config`` takes."""
        return json.dumps(self.config, sort_keys=True)


def _is_json(value: object) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _siblings(path: Path) -> list[Path]:
    folder = path.parent
    found = []
    for where in (folder, folder / "checkpoints"):
        if where.is_dir():
            found += sorted(
                p
                for p in where.glob("*.pt")
                if p.name != path.name and not p.name.endswith(".trainer.pt") and p.is_file()
            )
    return found[:_MAX_SIBLINGS]


def _agent_of(path: Path) -> tuple[AgentHint, tuple[str, ...]] | None:
    """(agent, state_dict keys) of a safe-format agent checkpoint with a clean scan."""
    try:
        result = scan.scan(path)
        if result.kind != "zip" or result.findings or result.nondefault_globals:
            return None
        if result.facts is None or result.facts.root.format != _AGENT_FORMAT:
            return None
        root = root_object(os.fspath(path), result)
    except OSError:
        return None
    agent = root.get("agent") if isinstance(root, dict) else None
    if not isinstance(agent, dict):
        return None
    class_path, config = agent.get("class_path"), agent.get("config")
    keys = mapping_keys(root.get("state_dict")) if isinstance(root, dict) else None
    if not isinstance(class_path, str) or not isinstance(config, dict) or keys is None:
        return None
    if not _is_json(config):
        return None
    return AgentHint(class_path, config, os.fspath(path)), keys


def find_agent(path: str | os.PathLike[str], result: ScanResult) -> tuple[AgentHint | None, str]:
    """The agent of the bare state_dict at ``path``, from its siblings, and a note saying how.

    Returns ``(hint, note)``; ``hint`` is None when no sibling, or more than one distinct
    agent, holds the same state_dict keys. Never raises for unreadable siblings.
    """
    here = Path(path)
    candidates = [found for p in _siblings(here) if (found := _agent_of(p)) is not None]
    generic = (
        "--class-path and --config are the agent's class and JSON config, e.g. agent.class_path "
        "and agent.config of a safe-format checkpoint of that agent"
    )
    if not candidates:
        return None, generic
    keys = mapping_keys(root_object(os.fspath(here), result))
    if keys is None:
        return None, generic
    # A DDP / torch.compile state_dict's keys carry the wrapper's prefix, which migrate
    # strips: compare without it (the hint missed the agent next to such a file, new-user
    # trial 2026-12-06).
    prefix, _ = wrapper_prefix(list(keys))
    bare = {k[len(prefix) :] for k in keys}
    matches: dict[tuple[str, str], AgentHint] = {}
    for hint, their_keys in candidates:
        if set(their_keys) in (set(keys), bare):
            matches.setdefault((hint.class_path, hint.config_json), hint)
    if len(matches) == 1:
        (hint,) = matches.values()
        return hint, (
            f"--class-path and --config from {hint.source} (a safe-format checkpoint next to "
            "it with the same state_dict keys)"
        )
    if matches:
        files = ", ".join(h.source for h in matches.values())
        return None, (
            f"{len(matches)} different agents next to it have these state_dict keys ({files}): "
            "pass the class path and config of the one that trained it"
        )
    return None, generic + " (none next to it has these state_dict keys)"
