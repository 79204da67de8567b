"""EpisodeStatsDB: one DuckDB file of finished episodes, and the plumbing its subclasses share.

Every SQL statement goes through ``_execute``/``_executemany`` (one door, so a test can spy
on it or inject a fault), every write through ``_transaction`` (all rows of an episode or
none), and every value through the checks of :mod:`ckptcompat.evaluation.stats_values`
before any SQL runs.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import duckdb

from ckptcompat.errors import StatsDBError
from ckptcompat.evaluation.stats_frame import QueryResult
from ckptcompat.evaluation.stats_schema import EPISODE_TABLES, META_DDL, SCHEMA_VERSION, Table
from ckptcompat.evaluation.stats_values import EpisodeRows, episode_rows

__all__ = ["EpisodeStatsDB"]


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    if read_only and not path.is_file():
        raise StatsDBError(
            "stats DB file does not exist",
            path=str(path),
            fix="check the path, or open it without read_only to create it",
        )
    if not read_only:
        # Metta's EpisodeStatsDB made the parent directories; callers rely on it.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StatsDBError(
                "cannot create the stats DB's directory",
                expected="a writable parent directory",
                found=f"{type(exc).__name__}: {exc.strerror or exc}",
                fix="pick a path in a directory you can write",
                path=str(path),
            ) from exc
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StatsDBError(
                "stats DB is open for writing in another process",
                expected="one writer per DB file",
                found=str(exc).splitlines()[0],
                fix="let each process write its own shard file and combine them with "
                "ckptcompat.evaluation.stats_db.merge_shards",
                path=str(path),
            ) from exc
        raise StatsDBError(
            "cannot open the stats DB",
            expected="a DuckDB file",
            found=str(exc).splitlines()[0],
            path=str(path),
        ) from exc
    except duckdb.Error as exc:
        raise StatsDBError(
            "cannot open the stats DB",
            found=str(exc).splitlines()[0],
            fix="close other connections to this file in this process first",
            path=str(path),
        ) from exc


class EpisodeStatsDB:
    """Per-episode stats in one DuckDB file.

    Args:
        path: the DB file; created (with its tables and parent directories) unless
            ``read_only``.
        read_only: open an existing file without write access (several readers may share it).

    Raises:
        StatsDBError: the file is missing (read_only), locked by a writer in another process,
            not a DuckDB file, or written by a newer schema.
    """

    _TABLES: tuple[Table, ...] = EPISODE_TABLES
    _VIEWS: Mapping[str, str] = {}

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = _connect(self.path, read_only)
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- plumbing

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StatsDBError(
                "the stats DB is closed",
                path=str(self.path),
                fix="open a new EpisodeStatsDB/EvalStatsDB on the file",
            )
        return self._con

    def _execute(self, sql: str, params: Iterable[object] = ()) -> duckdb.DuckDBPyConnection:
        """The one door to SQL for reads and single writes (tests spy on it)."""
        return self._connection().execute(sql, list(params))

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """The door for batched writes (tests inject faults here)."""
        if rows:
            self._connection().executemany(sql, rows)

    def _scalar(self, sql: str, params: Iterable[object] = ()) -> Any:
        row = self._execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _table_names(self, database: str | None = None) -> set[str]:
        sql = "SELECT table_name FROM duckdb_tables() WHERE database_name = "
        if database is None:
            return {r[0] for r in self._execute(sql + "current_database()").fetchall()}
        return {r[0] for r in self._execute(sql + "?", [database]).fetchall()}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT; any exception (even KeyboardInterrupt) rolls everything back."""
        if self.read_only:
            raise StatsDBError(
                "the stats DB was opened read_only",
                path=str(self.path),
                fix="open it without read_only to write",
            )
        self._execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException as exc:
            # If ROLLBACK fails too, the original error says more; DuckDB drops an
            # unfinished transaction when the connection closes anyway.
            with suppress(duckdb.Error):
                self._execute("ROLLBACK")
            if isinstance(exc, duckdb.ConstraintException):
                raise StatsDBError(
                    "the write violates the stats DB schema; nothing was written",
                    found=str(exc).splitlines()[0],
                    fix="use unique episode ids (e.g. uuid4) and finite metrics",
                    path=str(self.path),
                ) from exc
            raise
        else:
            self._execute("COMMIT")

    def _prepare(self) -> None:
        tables = self._table_names()
        ours = {t.name for t in self._TABLES}
        if "ckptcompat_meta" in tables:
            self._check_version()  # before creating anything in a newer layout
        elif tables & ours:
            # Same table names without our marker: e.g. an old Metta DB whose columns differ.
            raise StatsDBError(
                "not a ckptcompat stats DB",
                path=str(self.path),
                expected="a file written by ckptcompat (table ckptcompat_meta)",
                found=f"tables {', '.join(sorted(tables))}",
                fix="write a new file; copy the old rows over with your own SQL if needed",
            )
        if not self.read_only:
            with self._transaction():
                self._execute(META_DDL)
                for table in self._TABLES:
                    self._execute(table.ddl())
                self._execute(
                    "INSERT OR IGNORE INTO ckptcompat_meta VALUES ('schema_version', ?)",
                    [str(SCHEMA_VERSION)],
                )
            tables = self._table_names()
        needed = {"ckptcompat_meta"} | ours
        if not needed <= tables:
            raise StatsDBError(
                "not a ckptcompat stats DB of this kind",
                path=str(self.path),
                expected=f"tables {', '.join(sorted(needed))}",
                found=f"tables {', '.join(sorted(tables)) or '(none)'}",
                fix="open it with the class that wrote it, or without read_only to add tables",
            )
        for ddl in self._VIEWS.values():
            self._execute(ddl)

    def _check_version(self) -> None:
        version = self._scalar("SELECT value FROM ckptcompat_meta WHERE key = 'schema_version'")
        if version != str(SCHEMA_VERSION):
            raise StatsDBError(
                "stats DB schema version is not the one this ckptcompat reads",
                expected=str(SCHEMA_VERSION),
                found=str(version),
                path=str(self.path),
                fix="read it with the ckptcompat version that wrote it",
            )

    # ----------------------------------------------------------------- public

    @classmethod
    @contextmanager
    def from_uri(cls, uri: str | os.PathLike[str], *, read_only: bool = False) -> Iterator[Self]:
        """The old ``with StatsDB.from_uri(path) as db:``: open a local file, close it after.

        Only local paths (or ``file://PATH``); the old API also downloaded s3:// and
        wandb:// DBs, which ckptcompat does not serve.

        Raises:
            StatsDBError: a remote URI; and as the constructor.
        """
        text = os.fspath(uri)
        if re.match(r"^(?!file://)[A-Za-z][A-Za-z0-9+.-]*://", text):
            raise StatsDBError(
                "stats DB URIs are local files only",
                expected="a local path or file://PATH",
                found=repr(text),
                fix="download the DB first, then open its local path",
            )
        db = cls(text.removeprefix("file://"), read_only=read_only)
        try:
            yield db
        finally:
            db.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """Deprecated: the raw DuckDB connection, which old callers used for SQL.

        SQL run on it bypasses every write-time check (the schema's constraints still
        hold) and runs against ckptcompat's schema, not the old one (no ``suite``
        column, ``step_count`` NOT NULL ...). Use :meth:`query` instead.

        Raises:
            StatsDBError: the DB is closed.
        """
        warnings.warn(
            "EpisodeStatsDB.con is deprecated and will be removed; use query(sql, params)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._connection()

    def tables(self) -> dict[str, str]:
        """Name -> DDL of every table and view this class maintains."""
        return {**{t.name: t.ddl() for t in self._TABLES}, **dict(self._VIEWS)}

    def query(self, sql: str, params: Iterable[object] = ()) -> QueryResult:
        """Run ``sql`` with ``params`` bound to its ``?`` and return rows as dicts.

        Put values in ``params``, never in ``sql``. Rows written this way bypass the
        write-time checks, but the schema's constraints (finite metrics, keys) still hold.

        Returns:
            A :class:`~ckptcompat.evaluation.stats_frame.QueryResult`: a list of
            ``{column: value}`` dicts that also answers the old API's DataFrame spellings
            (``result["n"][0]``, ``.empty``, ``.iloc``; these need pandas).
        """
        cursor = self._execute(sql, params)
        if cursor.description is None:
            return QueryResult()
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        return QueryResult(rows, columns)

    def record_episode(
        self,
        episode_id: str,
        attributes: Mapping[str, object],
        agent_metrics: Mapping[int, Mapping[str, float]],
        agent_groups: Mapping[int, int],
        step_count: int,
        replay_url: str | None = None,
        created_at: datetime | None = None,
        *,
        simulation_id: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Write one finished episode in one transaction (the old API's signature).

        Args:
            episode_id: unique id (a uuid4 hex); an id already present is refused.
            attributes: episode-level facts, stored as text (numbers as their repr).
            agent_metrics: ``{agent_id: {metric: value}}``; values finite; a metric left out
                counts as 0 in the normalised aggregates.
            agent_groups: ``{agent_id: group_id}``.
            step_count: env steps in the episode.
            replay_url: where the replay lives, if any.
            created_at: episode start (default: now, UTC); ``completed_at`` is now.
            simulation_id: the simulation the episode belongs to, if known yet.
            seed: the env seed of the episode.

        Raises:
            StatsDBError: an invalid or non-finite value (before any SQL), a duplicate episode
                id, or a read-only DB. Nothing of the episode is written in any of these cases.
        """
        rows = episode_rows(
            episode_id=episode_id,
            attributes=attributes,
            agent_metrics=agent_metrics,
            agent_groups=agent_groups,
            step_count=step_count,
            replay_url=replay_url,
            created_at=created_at,
            simulation_id=simulation_id,
            seed=seed,
        )
        with self._transaction():
            self._insert_episode(rows)

    def _insert_episode(self, rows: EpisodeRows) -> None:
        self._execute(
            "INSERT INTO episodes (id, simulation_id, step_count, seed, replay_url, "
            "created_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows.episode,
        )
        self._executemany(
            "INSERT INTO episode_attributes (episode_id, attribute, value) VALUES (?, ?, ?)",
            rows.attributes,
        )
        self._executemany(
            "INSERT INTO agent_groups (episode_id, group_id, agent_id) VALUES (?, ?, ?)",
            rows.groups,
        )
        self._executemany(
            "INSERT INTO agent_metrics (episode_id, agent_id, metric, value) VALUES (?, ?, ?, ?)",
            rows.metrics,
        )

    def close(self) -> None:
        """Close the connection (DuckDB checkpoints the WAL into the file); idempotent."""
        if self._con is not None:
            self._con.close()
            self._con = None

    @contextmanager
    def _released(self) -> Iterator[None]:
        """Close the connection for the block, then reopen it as it was.

        DuckDB lets one connection per process hold a file, so merging this DB's file into
        another needs it released first; its rows are all in the file once closed.
        """
        was_open = self._con is not None
        self.close()
        try:
            yield
        finally:
            if was_open:
                self._con = _connect(self.path, self.read_only)
                self._prepare()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, read_only={self.read_only})"
