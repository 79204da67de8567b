"""A team's own agents and checkpoints: the ``[tool.ckptcompat]`` table of its pyproject.

``--config PATH`` (a ``pyproject.toml`` with a ``[tool.ckptcompat]`` table, or any TOML file
holding the same keys at its top level) points ``nox -s matrix``, ``golden`` and ``gate`` at a
team's project instead of ours::

    [tool.ckptcompat]
    package = "."                       # path (relative to this file) or requirement
    env_id = "CartPole-v1"              # optional; a key of ckptcompat.rl.envs.ENV_SPECS
    checkpoints = "checkpoints"         # optional directory of existing checkpoint files
    cells = ["t24", "t26"]              # optional subset of the default cells
    golden = "ckptcompat/golden"        # optional; these two are the defaults
    baseline = "ckptcompat/baseline.json"
    reports = "reports"                 # optional; records, work dir and matrix report

    [[tool.ckptcompat.agents]]
    name = "mlp"                        # record/run label: [a-z0-9_]
    class_path = "team_agents.MLPAgent" # optional when an entry point names it
    config = {hidden = 32}              # constructor kwargs besides the spaces: JSON only

Agents may also be registered by the team's package through the entry-point group
``ckptcompat.agents`` (``name = "package.module:Class"``): an agent listed without
``class_path`` takes it from there, and with no ``agents`` list every registered agent runs
with an empty config. Entry points are read inside the cell (where the package is installed).

Everything relative is relative to the team root (the config file's folder): the team's goldens,
baseline and records live in the team's repository, never in ours. Loading imports no torch
(the gate's venv has none, and nox reads the config with its own interpreter); every agent
config is checked when the file is read, with the registry's rules
(:func:`ckptcompat.json_config.validate_config`).

``python -m ckptcompat.harness.team CONFIG`` prints the parsed config as JSON (the noxfile
reads it); exit 2 with the field named when it is invalid.
"""

from __future__ import annotations

import json
import re
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ckptcompat.errors import AgentMismatchError
from ckptcompat.harness import versions
from ckptcompat.json_config import validate_config

__all__ = [
    "ENTRY_POINT_GROUP",
    "TeamAgent",
    "TeamConfig",
    "TeamConfigError",
    "entry_point_agents",
    "load",
    "main",
]

ENTRY_POINT_GROUP = "ckptcompat.agents"
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_KEYS = {
    "package",
    "agents",
    "env_id",
    "checkpoints",
    "cells",
    "golden",
    "baseline",
    "reports",
}
_AGENT_KEYS = {"name", "class_path", "config"}


class TeamConfigError(ValueError):
    """The team config is missing or invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class TeamAgent:
    """One agent of the team: label, class path (None: from an entry point), kwargs."""

    name: str
    class_path: str | None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeamConfig:
    """A parsed team config; every path absolute."""

    source: Path
    root: Path
    package: str
    agents: tuple[TeamAgent, ...]
    env_id: str
    checkpoints: Path | None
    cells: tuple[str, ...]
    golden_dir: Path
    baseline: Path
    reports: Path

    @property
    def records(self) -> Path:
        """Where the matrix writes the team's records."""
        return self.reports / "records"

    @property
    def work(self) -> Path:
        """The team matrix's work directory."""
        return self.reports / "work"

    def resolved_agents(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """label -> (class_path, config), entry points applied, configs validated.

        Reads entry points: call it inside a cell, where the team's package is installed.

        Raises:
            TeamConfigError: an agent names no class and no entry point registers it.
            AgentMismatchError: a config is not JSON primitives (the field is named).
        """
        registered = entry_point_agents()
        agents = self.agents or tuple(TeamAgent(n, p) for n, p in sorted(registered.items()))
        if not agents:
            raise TeamConfigError(
                f"{self.source}: tool.ckptcompat.agents is empty and no package registers "
                f"entry points in group {ENTRY_POINT_GROUP!r}; list the agents to test"
            )
        out = {}
        for i, agent in enumerate(agents):
            class_path = agent.class_path or registered.get(agent.name)
            if class_path is None:
                raise TeamConfigError(
                    f"{self.source}: tool.ckptcompat.agents[{i}] ({agent.name!r}) has no "
                    f"class_path and no entry point of group {ENTRY_POINT_GROUP!r} is named "
                    f'{agent.name!r}; add class_path = "package.module.Class"'
                )
            validate_config(agent.config, name=f"tool.ckptcompat.agents[{i}].config")
            out[agent.name] = (class_path, agent.config)
        return out

    def to_json(self) -> dict[str, Any]:
        """The config as JSON (paths as strings)."""
        return {
            "source": str(self.source),
            "root": str(self.root),
            "package": self.package,
            "agents": [
                {"name": a.name, "class_path": a.class_path, "config": a.config}
                for a in self.agents
            ],
            "env_id": self.env_id,
            "checkpoints": str(self.checkpoints) if self.checkpoints else None,
            "cells": list(self.cells),
            "golden_dir": str(self.golden_dir),
            "baseline": str(self.baseline),
            "reports": str(self.reports),
            "records": str(self.records),
            "work": str(self.work),
        }


def entry_point_agents() -> dict[str, str]:
    """Agents registered in group ``ckptcompat.agents``: name -> ``module.Class``."""
    found = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value.replace(":", ".")
    return found


def _fail(source: Path, name: str, problem: str, fix: str) -> TeamConfigError:
    return TeamConfigError(f"{source}: tool.ckptcompat.{name} {problem}; {fix}")


def _string(table: dict[str, Any], source: Path, name: str, default: str | None) -> str | None:
    value = table.get(name, default)
    if value is not None and (type(value) is not str or not value):
        raise _fail(source, name, f"is {value!r}", "give a non-empty string")
    return value


def _agents(table: dict[str, Any], source: Path) -> tuple[TeamAgent, ...]:
    raw = table.get("agents", [])
    if type(raw) is not list:
        raise _fail(source, "agents", f"is {type(raw).__name__}", "use [[tool.ckptcompat.agents]]")
    agents = []
    for i, entry in enumerate(raw):
        where = f"agents[{i}]"
        if type(entry) is not dict:
            raise _fail(source, where, "is not a table", "give name, class_path and config")
        unknown = sorted(set(entry) - _AGENT_KEYS)
        if unknown:
            raise _fail(source, where, f"has unknown keys {unknown}", f"use {sorted(_AGENT_KEYS)}")
        name = entry.get("name")
        if type(name) is not str or not _NAME_RE.match(name):
            raise _fail(source, f"{where}.name", f"is {name!r}", "use lowercase [a-z0-9_]")
        if name in {a.name for a in agents}:
            raise _fail(source, f"{where}.name", f"{name!r} is listed twice", "rename one")
        class_path = entry.get("class_path")
        if class_path is not None and (type(class_path) is not str or "." not in class_path):
            raise _fail(
                source, f"{where}.class_path", f"is {class_path!r}", 'use "package.module.Class"'
            )
        config = entry.get("config", {})
        if type(config) is not dict:
            raise _fail(source, f"{where}.config", f"is {type(config).__name__}", "use a table")
        try:  # the registry's rules, when the file is read: json.dumps of a TOML date
            # crashed team.main before a cell could name the field (a new user's trial)
            validate_config(config, name=f"tool.ckptcompat.{where}.config")
        except AgentMismatchError as exc:
            raise TeamConfigError(
                f"{source}: {exc.problem} (found {exc.found}); use a string, number, boolean, "
                "array or table: TOML dates, times, inf and nan have no JSON form"
            ) from None
        agents.append(TeamAgent(name, class_path, config))
    return tuple(agents)


_MAX_CONFIG_BYTES = 1 << 20
"""A team config is a few hundred bytes; a larger file is refused before it is read."""


def _parse(source: Path) -> dict[str, Any]:
    """The TOML document at ``source``, read with a size cap.

    Raises:
        TeamConfigError: missing, unreadable, not a regular file (a directory, a FIFO),
            over ``_MAX_CONFIG_BYTES`` bytes, not UTF-8, not TOML, or nested too deeply for
            the parser (tomllib recurses per nested array or inline table and raised
            RecursionError).
    """
    try:
        if not stat.S_ISREG(source.stat().st_mode):  # a FIFO would block the read forever
            raise TeamConfigError(
                f"the team config {source} is not a regular file; pass a pyproject.toml"
            )
        with source.open("rb") as f:
            raw = f.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise TeamConfigError(f"no team config at {source}; pass a pyproject.toml") from None
    except OSError as exc:
        raise TeamConfigError(
            f"cannot read the team config {source}: {exc.strerror or exc}; pass a readable "
            "pyproject.toml"
        ) from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise TeamConfigError(
            f"{source} is over {_MAX_CONFIG_BYTES} bytes; a team config is a small TOML file, "
            "pass the project's pyproject.toml"
        )
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TeamConfigError(
            f"{source} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise TeamConfigError(f"{source} is not TOML: {exc}") from None
    except RecursionError:
        raise TeamConfigError(
            f"{source} nests arrays or tables too deeply to parse; a team config needs a few "
            "levels at most"
        ) from None


def _resolve(root: Path, value: str, source: Path, name: str) -> Path:
    """``root / value`` made absolute, or a TeamConfigError naming the field.

    A NUL byte (ValueError), a name too long (OSError ENAMETOOLONG) or a symbolic-link loop
    (RuntimeError on Python 3.11-3.12, OSError from 3.13) escaped as tracebacks.
    """
    try:
        return (root / value).resolve()
    except (ValueError, OSError, RuntimeError) as exc:
        raise _fail(
            source, name, f"is no usable path ({exc})", "give a plain relative path"
        ) from None


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where stat fails (Path.is_dir raises ENAMETOOLONG, EACCES)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def load(path: str | Path) -> TeamConfig:
    """Parse and check a team config (a pyproject.toml or a plain TOML file).

    Raises:
        TeamConfigError: missing file or table, not TOML, or an invalid field (named).
    """
    try:
        source = Path(path).resolve()
    except (ValueError, OSError, RuntimeError) as exc:
        raise TeamConfigError(
            f"{path!r} is no usable path ({exc}); pass a pyproject.toml"
        ) from None
    data = _parse(source)
    if "tool" in data or source.name == "pyproject.toml":
        tool = data.get("tool", {})
        if type(tool) is not dict:
            raise TeamConfigError(
                f"{source}: tool is {type(tool).__name__}; make it a [tool] table"
            )
        table = tool.get("ckptcompat")
        if table is None:
            raise TeamConfigError(
                f"{source} has no [tool.ckptcompat] table; add one (see README, "
                "'Use it on your agents')"
            )
        if type(table) is not dict:
            raise TeamConfigError(
                f"{source}: tool.ckptcompat is {type(table).__name__}; make it a "
                "[tool.ckptcompat] table"
            )
    else:
        table = data
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise _fail(source, str(unknown), "are unknown keys", f"use {sorted(_KEYS)}")
    root = source.parent
    package = _string(table, source, "package", None)
    if package is None:
        raise _fail(source, "package", "is missing", 'give a path ("." ) or a requirement')
    if package.startswith(".") or "/" in package:
        package = str(_resolve(root, package, source, "package"))  # a path: absolute for uv
    env_id = _string(table, source, "env_id", "CartPole-v1")
    cells = table.get("cells", [c.id for c in versions.DEFAULT])
    default_ids = [c.id for c in versions.DEFAULT]
    if type(cells) is not list or not cells or any(c not in default_ids for c in cells):
        raise _fail(source, "cells", f"is {cells!r}", f"list a subset of {default_ids}")
    checkpoints = _string(table, source, "checkpoints", None)
    checkpoints_dir = _resolve(root, checkpoints, source, "checkpoints") if checkpoints else None
    if checkpoints_dir is not None and not _is_dir(checkpoints_dir):
        raise _fail(source, "checkpoints", f"{checkpoints_dir} is not a directory", "fix the path")
    return TeamConfig(
        source=source,
        root=root,
        package=package,
        agents=_agents(table, source),
        env_id=str(env_id),
        checkpoints=checkpoints_dir,
        cells=tuple(c for c in default_ids if c in cells),
        golden_dir=_resolve(
            root, str(_string(table, source, "golden", "ckptcompat/golden")), source, "golden"
        ),
        baseline=_resolve(
            root,
            str(_string(table, source, "baseline", "ckptcompat/baseline.json")),
            source,
            "baseline",
        ),
        reports=_resolve(
            root, str(_string(table, source, "reports", "reports")), source, "reports"
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m ckptcompat.harness.team CONFIG``: print the parsed config as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ckptcompat.harness.team CONFIG", file=sys.stderr)
        return 2
    try:
        print(json.dumps(load(args[0]).to_json()))
    except TeamConfigError as exc:
        print(f"team config: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
