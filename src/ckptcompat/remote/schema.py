"""The task queue's tables in PostgreSQL, and the one way to connect to them.

``ckptcompat_eval_tasks``: one row per (policy, evaluator cell). ``status`` is ``queued``
(claimable), ``running`` (leased: ``lease_token``, ``heartbeat_at``), ``done`` (its result
is stored) or ``failed`` (given up after ``max_attempts`` infrastructure failures: a lease
that expired because its worker died, or an attempt past ``timeout_s``). ``attempts``
counts claims. ``ckptcompat_eval_results``: at most one row per task (its primary key),
written in the same transaction that moves the task from ``running`` to ``done`` under
the claimant's ``lease_token``.

Times are the server's clock (``clock_timestamp()``): workers on several machines never
compare their own clocks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ckptcompat.errors import TaskQueueError

if TYPE_CHECKING:
    import psycopg

__all__ = ["DSN_ENV", "RESULTS", "TASKS", "connect", "ensure_schema", "resolve_dsn"]

#: The environment variable that supplies ``--dsn`` when it is not given.
DSN_ENV = "CKPTCOMPAT_PG_DSN"
TASKS = "ckptcompat_eval_tasks"
RESULTS = "ckptcompat_eval_results"
# Any fixed 64-bit number: serialises concurrent CREATE TABLE IF NOT EXISTS (which races
# on the catalog when two workers start at once).
_SCHEMA_LOCK = 0x636B7074_65766131

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TASKS} (
    id BIGSERIAL PRIMARY KEY,
    batch TEXT NOT NULL,
    policy_uri TEXT NOT NULL,
    cell TEXT NOT NULL,
    env_id TEXT NOT NULL,
    episodes INTEGER NOT NULL CHECK (episodes >= 1),
    seed BIGINT NOT NULL CHECK (seed >= 0),
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    lease_s DOUBLE PRECISION NOT NULL CHECK (lease_s > 0),
    timeout_s DOUBLE PRECISION NOT NULL CHECK (timeout_s > 0),
    lease_token TEXT,
    worker TEXT,
    claimed_at TIMESTAMPTZ,
    heartbeat_at TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    finished_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {TASKS}_claim ON {TASKS} (cell, status, id);
CREATE TABLE IF NOT EXISTS {RESULTS} (
    task_id BIGINT PRIMARY KEY REFERENCES {TASKS} (id),
    outcome TEXT NOT NULL CHECK (outcome IN ('pass', 'fail', 'error')),
    error_type TEXT,
    error_message TEXT,
    policy_key TEXT,
    policy_version INTEGER,
    simulation_id TEXT,
    shard TEXT,
    mean_return DOUBLE PRECISION,
    episode_returns JSONB,
    env_steps BIGINT,
    eval_time_s DOUBLE PRECISION,
    episodes_time_s DOUBLE PRECISION,
    episodes_cpu_s DOUBLE PRECISION,
    torch_version TEXT,
    worker TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
-- Columns added after a release: a queue database made by an older ckptcompat gains them.
ALTER TABLE {RESULTS} ADD COLUMN IF NOT EXISTS episodes_cpu_s DOUBLE PRECISION;
"""


def resolve_dsn(dsn: str | None) -> str:
    """``dsn``, else ``$CKPTCOMPAT_PG_DSN``.

    Raises:
        TaskQueueError: neither is set.
    """
    value = dsn or os.environ.get(DSN_ENV)
    if not value:
        raise TaskQueueError(
            "no PostgreSQL server named for the task queue",
            expected=f"--dsn DSN or the environment variable {DSN_ENV}",
            found="neither",
            fix="pass e.g. --dsn 'host=db.example dbname=ckptcompat user=eval' "
            "(any libpq connection string or postgresql:// URI)",
        )
    return value


def connect(dsn: str, *, connect_timeout_s: int = 10) -> psycopg.Connection:
    """A new autocommit psycopg connection to ``dsn``, the schema ensured; every
    multi-statement change runs in an explicit ``conn.transaction()``.

    Raises:
        ModuleNotFoundError: psycopg is not installed (the command line turns it into
            MissingDependencyError: install ``ckptcompat[remote]``).
        TaskQueueError: the server cannot be reached or refuses the login.
    """
    import psycopg

    try:
        conn = psycopg.connect(dsn, connect_timeout=connect_timeout_s, autocommit=True)
    except psycopg.ProgrammingError as exc:  # libpq could not parse it: "garbage==" was a traceback
        raise TaskQueueError(
            "the task queue's DSN is not a connection string libpq can read",
            expected="key=value pairs (host=... dbname=... user=...) or a postgresql:// URI",
            found=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            fix="check --dsn / $CKPTCOMPAT_PG_DSN",
        ) from exc
    except psycopg.OperationalError as exc:
        raise TaskQueueError(
            "cannot connect to the task queue's PostgreSQL server",
            expected="a reachable server that accepts this login",
            found=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            fix="check --dsn / $CKPTCOMPAT_PG_DSN (host, port, dbname, user) and that the "
            "server is running",
        ) from exc
    ensure_schema(conn)
    return conn


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the queue's tables when missing (safe when several processes start at once)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        cur.execute(_DDL)
