"""The stats DB's layout: tables, views, schema version, and the filter whitelist.

SQL identifiers come only from here; every value travels as a parameter. Filters of the old
API (raw SQL like ``"sim_env = 'x'"``) are parsed into clauses over whitelisted columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ckptcompat.errors import StatsDBError

__all__ = [
    "EPISODE_TABLES",
    "EVAL_VIEWS",
    "FILTER_COLUMNS",
    "META_DDL",
    "SCHEMA_VERSION",
    "SIMULATION_TABLES",
    "FilterClause",
    "Table",
    "parse_filter",
]

SCHEMA_VERSION = 1
"""Version of the layout below, stored in each DB file's ``ckptcompat_meta`` table."""


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Table:
    """One table: columns as ``(name, SQL type and constraints)``, its primary key, and the
    columns that must agree when two shards hold the same primary key."""

    name: str
    columns: tuple[tuple[str, str], ...]
    primary_key: tuple[str, ...]
    merge_compare: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def ddl(self) -> str:
        cols = ", ".join(f"{name} {sql_type}" for name, sql_type in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} "
            f"({cols}, PRIMARY KEY ({', '.join(self.primary_key)}))"
        )


META_DDL = "CREATE TABLE IF NOT EXISTS ckptcompat_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

EPISODE_TABLES: tuple[Table, ...] = (
    Table(
        "episodes",
        (
            ("id", "TEXT NOT NULL"),
            ("simulation_id", "TEXT"),
            ("step_count", "BIGINT NOT NULL CHECK (step_count >= 0)"),
            ("seed", "BIGINT"),
            ("replay_url", "TEXT"),
            ("created_at", "TIMESTAMP"),
            ("completed_at", "TIMESTAMP"),
        ),
        ("id",),
        ("simulation_id", "step_count", "seed", "replay_url"),
    ),
    Table(
        "episode_attributes",
        (("episode_id", "TEXT NOT NULL"), ("attribute", "TEXT NOT NULL"), ("value", "TEXT")),
        ("episode_id", "attribute"),
        ("value",),
    ),
    Table(
        "agent_groups",
        (
            ("episode_id", "TEXT NOT NULL"),
            ("group_id", "INTEGER NOT NULL"),
            ("agent_id", "INTEGER NOT NULL"),
        ),
        ("episode_id", "group_id", "agent_id"),
        (),
    ),
    Table(
        "agent_metrics",
        (
            ("episode_id", "TEXT NOT NULL"),
            ("agent_id", "INTEGER NOT NULL"),
            ("metric", "TEXT NOT NULL"),
            # DOUBLE, not the old REAL (float32 in DuckDB); the CHECK backs up the write-time
            # refusal of NaN/inf for rows that arrive by raw SQL or from a shard.
            ("value", "DOUBLE NOT NULL CHECK (isfinite(value))"),
        ),
        ("episode_id", "agent_id", "metric"),
        ("value",),
    ),
)

SIMULATION_TABLES: tuple[Table, ...] = (
    Table(
        "simulations",
        (
            ("id", "TEXT NOT NULL"),
            ("name", "TEXT NOT NULL"),
            ("env", "TEXT NOT NULL"),
            ("policy_key", "TEXT NOT NULL"),
            ("policy_version", "INTEGER NOT NULL CHECK (policy_version >= 0)"),
            ("policy_uri", "TEXT"),
            ("created_at", "TIMESTAMP"),
            ("finished_at", "TIMESTAMP"),
        ),
        ("id",),
        # Each process registers the simulation at its own time; only identity must agree.
        ("name", "env", "policy_key", "policy_version"),
    ),
    Table(
        "agent_policies",
        (
            ("episode_id", "TEXT NOT NULL"),
            ("agent_id", "INTEGER NOT NULL"),
            ("policy_key", "TEXT NOT NULL"),
            ("policy_version", "INTEGER NOT NULL CHECK (policy_version >= 0)"),
            ("policy_uri", "TEXT"),
        ),
        ("episode_id", "agent_id"),
        ("policy_key", "policy_version"),
    ),
)

# TEMP views: they live in the connection, so a read-only file can be queried and a merge
# never copies them.
EVAL_VIEWS: dict[str, str] = {
    # Every agent-episode assigned to a policy in a finished episode: the potential samples
    # of any metric. Finished: completed_at is set (every episode our writers record) or some
    # agent logged a metric. An episode with neither was registered but never ran to the end
    # (a "ghost"); counting its agents as zeros diluted averages (Metta's August 2025 fix).
    "policy_simulation_agent_samples": """
        CREATE OR REPLACE TEMP VIEW policy_simulation_agent_samples AS
        SELECT ap.policy_key, ap.policy_version, ap.policy_uri,
               s.id AS sim_id, s.name AS sim_name, s.env AS sim_env,
               ap.episode_id, ap.agent_id
          FROM agent_policies ap
          JOIN episodes e ON e.id = ap.episode_id
          JOIN simulations s ON s.id = e.simulation_id
         WHERE e.completed_at IS NOT NULL
            OR EXISTS (SELECT 1 FROM agent_metrics m WHERE m.episode_id = e.id)
    """,
    # The recorded metric rows of those samples (metrics are often logged only when non-zero).
    "policy_simulation_agent_metrics": """
        CREATE OR REPLACE TEMP VIEW policy_simulation_agent_metrics AS
        SELECT ap.policy_key, ap.policy_version, ap.policy_uri,
               s.id AS sim_id, s.name AS sim_name, s.env AS sim_env,
               am.episode_id, am.agent_id, am.metric, am.value
          FROM agent_metrics am
          JOIN agent_policies ap ON ap.episode_id = am.episode_id AND ap.agent_id = am.agent_id
          JOIN episodes e ON e.id = am.episode_id
          JOIN simulations s ON s.id = e.simulation_id
    """,
}

# --------------------------------------------------------------------------- filters

FILTER_COLUMNS: tuple[str, ...] = ("sim_id", "sim_name", "sim_env")
"""Columns of both views that a filter may name; nothing else reaches SQL as an identifier."""


@dataclass(frozen=True)
class FilterClause:
    """``column op value`` with ``op`` in ``=``/``LIKE``; rendered as ``column op ?``."""

    column: str
    op: str
    value: str


_CLAUSE = re.compile(
    r"\s*(?P<col>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=|LIKE\b)\s*'(?P<val>(?:[^']|'')*)'\s*",
    re.IGNORECASE,
)
_AND = re.compile(r"AND\b", re.IGNORECASE)


def _filter_error(found: str) -> StatsDBError:
    return StatsDBError(
        "unsupported filter_condition",
        expected=f"clauses \"column = 'value'\" or \"column LIKE 'pattern'\" joined by AND, "
        f"or a dict {{column: value}}, with column in {', '.join(FILTER_COLUMNS)}",
        found=found,
        fix="write quotes inside values doubled ('it''s'), or pass a dict",
    )


def parse_filter(condition: str | Mapping[str, str] | None) -> tuple[FilterClause, ...]:
    """Turn a filter into clauses over whitelisted columns.

    The old API took raw SQL (``"sim_env = 'test_env'"``) and interpolated it; this accepts
    that spelling only as data: ``column = 'value'`` or ``column LIKE 'pattern'`` clauses
    joined by AND, the value later bound as a parameter. A dict means equality.

    Raises:
        StatsDBError: any other syntax, an unknown column, or a non-string value.
    """
    if condition is None:
        return ()
    if isinstance(condition, Mapping):
        clauses = []
        for column, value in condition.items():
            if column not in FILTER_COLUMNS or not isinstance(value, str):
                raise _filter_error(f"{column!r}: {value!r}")
            clauses.append(FilterClause(column, "=", value))
        return tuple(clauses)
    if not isinstance(condition, str):
        raise _filter_error(type(condition).__name__)
    clauses, pos, text = [], 0, condition.strip()
    while text:
        match = _CLAUSE.match(text, pos)
        if match is None or match.group("col").lower() not in FILTER_COLUMNS:
            raise _filter_error(repr(condition))
        clauses.append(
            FilterClause(
                match.group("col").lower(),
                match.group("op").upper(),
                match.group("val").replace("''", "'"),
            )
        )
        pos = match.end()
        if pos == len(text):
            break
        joiner = _AND.match(text, pos)
        if joiner is None:
            raise _filter_error(repr(condition))
        pos = joiner.end()
    return tuple(clauses)
