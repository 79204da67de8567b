"""The collector: every worker's DuckDB shard merged into one stats DB.

Shards keep the stats DB's own schema and key scheme (``policy_key`` = run,
``policy_version`` = epoch, docs/design.md section 6): the merge is
:meth:`ckptcompat.evaluation.stats_db.SimulationStatsDB.merge_in`, which copies rows by
primary key and skips identical ones, so collecting the same shard twice changes nothing.
A shard still open by a running worker is skipped (and named), not waited for: collect
again later.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ckptcompat.errors import StatsDBError
from ckptcompat.evaluation.stats_db import SimulationStatsDB

__all__ = ["CollectReport", "collect_shards"]


@dataclasses.dataclass(frozen=True)
class CollectReport:
    """What :func:`collect_shards` did.

    Attributes:
        merged: shard files merged (or found already merged: the merge skips their rows).
        skipped: (shard, reason) for shards that could not be merged now.
        episodes: episode rows in the stats DB afterwards.
    """

    merged: list[Path]
    skipped: list[tuple[Path, str]]
    episodes: int


def _settle(shard: Path) -> None:
    # A worker killed mid-write leaves a WAL beside its shard; opening the shard once as a
    # writer replays it, so the read-only merge sees every whole episode.
    if shard.with_name(shard.name + ".wal").exists():
        SimulationStatsDB(shard).close()


def collect_shards(
    shard_dir: str | os.PathLike[str], db_path: str | os.PathLike[str]
) -> CollectReport:
    """Merge every ``*.duckdb`` file of ``shard_dir`` into the stats DB ``db_path``.

    Raises:
        StatsDBError: ``db_path`` cannot be opened, or a shard disagrees with rows already
            in it (that shard is not merged; see ``merge_in``). A shard that is open by a
            worker is skipped instead.
        FileNotFoundError: ``shard_dir`` does not exist (the command line exits 2).
    """
    folder = Path(shard_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"shard directory {folder} does not exist")
    target = Path(db_path).resolve()
    shards = sorted(p for p in folder.glob("*.duckdb") if p.resolve() != target)
    merged: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    with SimulationStatsDB(db_path) as db:
        for shard in shards:
            try:
                _settle(shard)
                db.merge_in(shard)
            except StatsDBError as exc:
                if exc.problem.startswith("cannot open the shard") or "lock" in str(exc).lower():
                    skipped.append((shard, str(exc)))
                    continue
                raise
            except Exception as exc:  # duckdb's lock error while settling a busy shard
                if "lock" not in str(exc).lower():
                    raise
                skipped.append((shard, str(exc).splitlines()[0]))
                continue
            merged.append(shard)
        episodes = int(db._scalar("SELECT count(*) FROM episodes"))
    return CollectReport(merged=merged, skipped=skipped, episodes=episodes)
