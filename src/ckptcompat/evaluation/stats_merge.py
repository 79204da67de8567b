"""Merging stats shards: each process writes its own DuckDB file, combined afterwards.

DuckDB lets one process at a time open a file for writing, so parallel evaluators each write
a shard and the shards are merged into one file. A merge copies rows by primary key:

- rows already present and identical are skipped, so merging a shard twice changes nothing;
- rows with the same primary key but other content (the same agent of the same episode
  assigned to another policy, a simulation id registered for another policy) are a conflict
  and stop the merge of that shard before anything of it is written;
- every policy of every shard is kept: nothing is keyed by policy alone.

A shard is a closed file, or an open stats-DB object (the old API merged those): the object
is released for the merge (its rows are all in its file once closed) and reopened after.
:meth:`ShardMergeMixin.export` is the reverse: this DB merged into another file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from ckptcompat.errors import StatsDBError
from ckptcompat.evaluation.stats_episode import EpisodeStatsDB
from ckptcompat.evaluation.stats_schema import SCHEMA_VERSION, Table

__all__ = ["ShardMergeMixin"]

_SHARD = "ckptcompat_shard"  # ATTACH alias of the shard being merged
_REMOTE = re.compile(r"^(?!file://)[A-Za-z][A-Za-z0-9+.-]*://")


if TYPE_CHECKING:
    from ckptcompat.evaluation.stats_episode import EpisodeStatsDB as _Base
else:
    _Base = object


class ShardMergeMixin(_Base):
    """``merge_in``, for :class:`ckptcompat.evaluation.stats_db.SimulationStatsDB`."""

    def merge_in(self, shard: str | os.PathLike[str] | EpisodeStatsDB) -> None:
        """Copy every row of a shard into this DB, in one transaction.

        ``shard`` is a closed file, or an open stats-DB object of this process (the old
        API's call): the object's connection is closed for the merge and reopened after,
        so it stays usable. Rows already present (same primary key, same content) are
        skipped, so merging a shard twice changes nothing. Tables the shard lacks (an
        :class:`EpisodeStatsDB` shard has no simulations) are skipped.

        Raises:
            StatsDBError: the shard is missing, still open for writing in another process,
                not a ckptcompat stats DB, of another schema version, this DB itself, or
                disagrees with rows already here (e.g. the same episode/agent assigned to
                another policy); nothing is merged.
        """
        if isinstance(shard, EpisodeStatsDB):
            if shard is self or shard.path.resolve() == self.path.resolve():
                raise StatsDBError("cannot merge a stats DB into itself", path=str(shard.path))
            with shard._released():
                self._merge_file(shard.path)
            return
        self._merge_file(Path(shard))

    def export(self, dest: str | os.PathLike[str]) -> Path:
        """Merge this DB into the stats DB file ``dest`` (created if missing); return it.

        The old ``export(dest)``: an existing ``dest`` keeps its rows and gains these (the
        merge rules above). This DB is released for the merge and reopened after. Only
        local paths (or ``file://``): ckptcompat uploads nowhere.

        Raises:
            StatsDBError: ``dest`` is a remote URI (s3://, wandb:// ...), this DB's own
                file, open for writing elsewhere, or disagrees with these rows.
        """
        text = os.fspath(dest)
        if _REMOTE.match(text):
            raise StatsDBError(
                "export writes local files only",
                expected="a local path or file://PATH",
                found=repr(text),
                fix="export to a local file, then upload it with your own tool",
            )
        target = Path(text.removeprefix("file://"))
        if target.resolve() == self.path.resolve():
            raise StatsDBError("cannot export a stats DB onto itself", path=str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._released(), type(self)(target) as into:
            into.merge_in(self.path)
        return target

    def _merge_file(self, shard_path: Path) -> None:
        if not shard_path.is_file():
            raise StatsDBError("shard file does not exist", path=str(shard_path))
        if shard_path.resolve() == self.path.resolve():
            raise StatsDBError("cannot merge a stats DB into itself", path=str(shard_path))
        try:
            self._execute(f"ATTACH ? AS {_SHARD} (READ_ONLY)", [str(shard_path)])
        except duckdb.Error as exc:
            raise StatsDBError(
                "cannot open the shard for merging",
                path=str(shard_path),
                found=str(exc).splitlines()[0],
                fix="close the shard's writer before merging",
            ) from exc
        try:
            present = self._table_names(_SHARD)
            shard_tables = [t for t in self._TABLES if t.name in present]
            self._check_shard(present, shard_path)
            with self._transaction():
                for table in shard_tables:
                    self._merge_table(table, shard_path)
        finally:
            self._execute(f"DETACH {_SHARD}")

    def _check_shard(self, present: set[str], shard_path: Path) -> None:
        if "ckptcompat_meta" not in present or "episodes" not in present:
            raise StatsDBError(
                "not a ckptcompat stats shard",
                path=str(shard_path),
                found=f"tables {', '.join(sorted(present)) or '(none)'}",
                fix="merge only files written by EpisodeStatsDB/SimulationStatsDB",
            )
        version = self._scalar(
            f"SELECT value FROM {_SHARD}.ckptcompat_meta WHERE key = 'schema_version'"
        )
        if version != str(SCHEMA_VERSION):
            raise StatsDBError(
                "shard schema version differs",
                path=str(shard_path),
                expected=str(SCHEMA_VERSION),
                found=str(version),
                fix="merge shards of one ckptcompat version",
            )

    def _merge_table(self, table: Table, shard_path: Path) -> None:
        if table.merge_compare:
            on = " AND ".join(f"s.{c} = m.{c}" for c in table.primary_key)
            differs = " OR ".join(f"s.{c} IS DISTINCT FROM m.{c}" for c in table.merge_compare)
            clash = self._execute(
                f"SELECT {', '.join('s.' + c for c in table.primary_key)} FROM "
                f"{_SHARD}.{table.name} s JOIN {table.name} m ON {on} WHERE {differs} LIMIT 1"
            ).fetchone()
            if clash is not None:
                raise StatsDBError(
                    f"shard disagrees with the merged DB in table {table.name}",
                    expected="rows with the same primary key to be identical",
                    found=f"different rows for {dict(zip(table.primary_key, clash, strict=True))}",
                    fix="check that the shards belong together; nothing of this shard was merged",
                    path=str(shard_path),
                )
        cols = ", ".join(table.column_names)
        self._execute(
            f"INSERT OR IGNORE INTO {table.name} ({cols}) SELECT {cols} FROM {_SHARD}.{table.name}"
        )
