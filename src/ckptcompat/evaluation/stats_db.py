"""Evaluation statistics on DuckDB: episodes, simulations, policies, normalised metrics.

Three classes, each a superset of the one before (the layout callers of the old API know):

- :class:`EpisodeStatsDB`: ``episodes``, ``episode_attributes``, ``agent_groups``,
  ``agent_metrics``.
- :class:`SimulationStatsDB`: + ``simulations`` and ``agent_policies`` (which agent of
  which episode ran which ``(policy_key, policy_version)``, with the resolved URI), the
  writer API the evaluator uses, and shard merging.
- :class:`EvalStatsDB`: + the sample and metric views and the normalised aggregates.

Rules (docs/design.md sections 6 and 9; the faults they guard are in the reference note, sec. 5):

- One writer per DB file. DuckDB locks a file for one read-write process, so each process
  writes its own shard and :func:`merge_shards` combines them afterwards. Merging keeps every
  policy of every shard and is idempotent (episode ids are unique; rows merge by primary key).
- Writes are transactions: an episode is all of its rows or none of them, even if the
  process is interrupted mid-write.
- Every value reaches SQL as a parameter; identifiers come from the fixed schema in
  :mod:`ckptcompat.evaluation.stats_schema`.
- Metrics are refused at write time unless finite, so no aggregate can become NaN; an
  aggregate is ``None`` when the policy has no samples under the filter and ``0.0`` when it
  has samples but never logged the metric.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Self

from ckptcompat.errors import StatsDBError
from ckptcompat.evaluation.stats_episode import EpisodeStatsDB
from ckptcompat.evaluation.stats_merge import ShardMergeMixin
from ckptcompat.evaluation.stats_queries import EvalQueriesMixin
from ckptcompat.evaluation.stats_schema import EPISODE_TABLES, EVAL_VIEWS, SIMULATION_TABLES
from ckptcompat.evaluation.stats_values import (
    PolicyKey,
    PolicyLike,
    check_int,
    check_policy_key,
    check_policy_version,
    check_text,
    episode_rows,
    utc_naive,
)

__all__ = [
    "EvalStatsDB",
    "SimulationStatsDB",
    "merge_shards",
]

logger = logging.getLogger(__name__)


class SimulationStatsDB(ShardMergeMixin, EpisodeStatsDB):
    """Episodes plus the simulations they belong to and the policy each agent ran.

    Policies are stored as ``policy_key`` (run name), ``policy_version`` (epoch, never NULL)
    and ``policy_uri`` (the resolved URI, informational). Same constructor and errors as
    :class:`EpisodeStatsDB`.
    """

    _TABLES = EPISODE_TABLES + SIMULATION_TABLES

    @staticmethod
    def key_and_version(policy: PolicyLike) -> tuple[str, int]:
        """``(policy_key, policy_version)`` of a record, tuple or PolicyKey, validated.

        Raises:
            StatsDBError: a URI string, a None version, or any invalid key.
        """
        key = PolicyKey.of(policy)
        return key.policy_key, key.policy_version

    def register_simulation(
        self,
        simulation_id: str,
        name: str,
        env: str,
        *,
        policy_key: str,
        policy_version: int,
        policy_uri: str | None = None,
        created_at: datetime | None = None,
    ) -> None:
        """Record a simulation: one env evaluated with one policy. Idempotent.

        Args:
            simulation_id: unique id shared by every shard of this simulation.
            name: the simulation's name (``sim_name`` in filters).
            env: the env id, e.g. ``"CartPole-v1"`` (``sim_env`` in filters).
            policy_key, policy_version: the evaluated policy (docs/design.md section 6).
            policy_uri: the resolved URI it was loaded from.
            created_at: default now (UTC).

        Raises:
            StatsDBError: invalid values (before any SQL), or the id is already registered
                with another name, env or policy.
        """
        policy = PolicyKey(policy_key, policy_version, policy_uri)
        row = (
            check_text(simulation_id, what="simulation_id"),
            check_text(name, what="name"),
            check_text(env, what="env"),
            policy.policy_key,
            policy.policy_version,
            policy.policy_uri,
            utc_naive(created_at),
            None,
        )
        with self._transaction():
            existing = self._execute(
                "SELECT name, env, policy_key, policy_version FROM simulations WHERE id = ?",
                [row[0]],
            ).fetchone()
            if existing is None:
                self._execute("INSERT INTO simulations VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            elif tuple(existing) != row[1:5]:
                raise StatsDBError(
                    f"simulation {row[0]!r} is already registered differently",
                    expected=repr(tuple(existing)),
                    found=repr(row[1:5]),
                    fix="use a new simulation_id for another env or policy",
                )

    def finish_simulation(self, simulation_id: str, *, finished_at: datetime | None = None) -> None:
        """Stamp ``finished_at`` (default now, UTC) on a registered simulation.

        Raises:
            StatsDBError: the simulation is not registered in this file.
        """
        with self._transaction():
            self._require_simulation(simulation_id)
            self._execute(
                "UPDATE simulations SET finished_at = ? WHERE id = ?",
                [utc_naive(finished_at), simulation_id],
            )

    def _require_simulation(self, simulation_id: str) -> PolicyKey:
        row = self._execute(
            "SELECT policy_key, policy_version, policy_uri FROM simulations WHERE id = ?",
            [simulation_id],
        ).fetchone()
        if row is None:
            raise StatsDBError(
                f"simulation {simulation_id!r} is not registered in this DB",
                path=str(self.path),
                fix="call register_simulation(...) on this shard first",
            )
        return PolicyKey(*row)

    def record_policy_episode(
        self,
        simulation_id: str,
        policy_key: str,
        policy_version: int,
        policy_uri: str | None,
        agent_metrics: Mapping[int, Mapping[str, float]],
        *,
        step_count: int,
        seed: int | None = None,
        attributes: Mapping[str, object] | None = None,
        agent_ids: Iterable[int] | None = None,
        agent_groups: Mapping[int, int] | None = None,
        other_policies: Mapping[int, PolicyLike] | None = None,
        replay_url: str | None = None,
        episode_id: str | None = None,
        created_at: datetime | None = None,
    ) -> str:
        """Write one evaluated episode and which policy each agent ran, in one transaction.

        The evaluator's call. Every agent in ``agent_ids`` is a potential sample of its policy
        for every metric, whether or not it logged that metric.

        Args:
            simulation_id: a simulation registered in this file for this policy.
            policy_key, policy_version, policy_uri: the evaluated policy; must match the
                simulation's.
            agent_metrics: ``{agent_id: {metric: value}}``, finite values; ``{}`` for an agent
                that logged nothing.
            step_count: env steps in the episode.
            seed: the env seed of the episode.
            attributes: episode-level facts (see :meth:`record_episode`).
            agent_ids: every agent of the episode (default: the keys of ``agent_metrics``).
            agent_groups: ``{agent_id: group_id}``, if the env has teams.
            other_policies: ``{agent_id: policy}`` for agents not run by the evaluated policy.
            replay_url: where the replay lives, if any.
            episode_id: default a fresh uuid4 hex.
            created_at: episode start (default now, UTC).

        Returns:
            The episode id.

        Raises:
            StatsDBError: invalid or non-finite values, None version or URI-shaped key (all
                before any SQL), an unregistered simulation or one registered for another
                policy, metrics of an agent not in ``agent_ids``. Nothing is written then.
        """
        policy = PolicyKey(policy_key, policy_version, policy_uri)
        episode_id = uuid.uuid4().hex if episode_id is None else episode_id
        agents = sorted(
            {
                check_int(a, what="agent id")
                for a in (agent_metrics if agent_ids is None else agent_ids)
            }
        )
        others = {
            check_int(a, what="agent id"): PolicyKey.of(p)
            for a, p in (other_policies or {}).items()
        }
        strays = sorted(set(agent_metrics) - set(agents)) + sorted(set(others) - set(agents))
        if strays:
            raise StatsDBError(
                "agents have metrics or policies but are not in agent_ids",
                expected=f"a subset of {agents}",
                found=repr(strays),
            )
        rows = episode_rows(
            episode_id=episode_id,
            attributes=attributes or {},
            agent_metrics=agent_metrics,
            agent_groups=agent_groups or {},
            step_count=step_count,
            replay_url=replay_url,
            created_at=created_at,
            simulation_id=simulation_id,
            seed=seed,
        )
        with self._transaction():
            registered = self._require_simulation(simulation_id)
            if registered != policy:
                raise StatsDBError(
                    f"simulation {simulation_id!r} evaluates another policy",
                    expected=registered.label,
                    found=policy.label,
                    fix="register a simulation per policy; pass opponents in other_policies",
                )
            # Without a URI here, the one the simulation was registered with is the resolved one.
            policy = PolicyKey.of(policy, policy.policy_uri or registered.policy_uri)
            assigned = [
                (episode_id, a, p.policy_key, p.policy_version, p.policy_uri)
                for a in agents
                for p in [others.get(a, policy)]
            ]
            self._insert_episode(rows)
            self._executemany(
                "INSERT INTO agent_policies (episode_id, agent_id, policy_key, "
                "policy_version, policy_uri) VALUES (?, ?, ?, ?, ?)",
                assigned,
            )
        return episode_id

    def policy_keys(self) -> list[PolicyKey]:
        """Every ``(policy_key, policy_version)`` in the DB, sorted, with a URI.

        A policy is in the DB once a simulation evaluating it is registered (even before
        any episode) or once an agent of an episode is assigned to it (an opponent).
        """
        rows = self._execute(
            "SELECT policy_key, policy_version, MIN(policy_uri) FROM ("
            "SELECT policy_key, policy_version, policy_uri FROM simulations UNION ALL "
            "SELECT policy_key, policy_version, policy_uri FROM agent_policies"
            ") GROUP BY ALL ORDER BY 1, 2"
        ).fetchall()
        return [PolicyKey(*row) for row in rows]

    def get_all_policy_uris(self) -> list[str]:
        """Every policy as ``"key:vN"`` (the old API's spelling), sorted."""
        return [key.label for key in self.policy_keys()]

    def get_replay_urls(
        self,
        policy_key: str | None = None,
        policy_version: int | None = None,
        env: str | None = None,
    ) -> list[str]:
        """Sorted replay URLs of the episodes of simulations matching every filter given.

        The filters apply to the simulation's evaluated policy (its ``policy_key``, its
        ``policy_version``, either alone or both) and its ``env``, as the old DB's did; an
        opponent's per-agent assignment does not make an episode that policy's replay.

        Raises:
            StatsDBError: an invalid key or version (a URI as key, a negative version).
        """
        sql = (
            "SELECT DISTINCT e.replay_url FROM episodes e JOIN simulations s "
            "ON s.id = e.simulation_id WHERE e.replay_url IS NOT NULL"
        )
        params: list[object] = []
        if policy_key is not None:
            sql += " AND s.policy_key = ?"
            params.append(check_policy_key(policy_key))
        if policy_version is not None:
            sql += " AND s.policy_version = ?"
            params.append(check_policy_version(policy_version))
        if env is not None:
            sql += " AND s.env = ?"
            params.append(env)
        return [r[0] for r in self._execute(sql + " ORDER BY 1", params).fetchall()]

    @classmethod
    def from_shards_and_context(
        cls,
        sim_id: str,
        dir_with_shards: str | os.PathLike[str],
        agent_map: Mapping[int, PolicyLike],
        sim_name: str,
        sim_env: str,
        policy: PolicyLike | None = None,
        policy_uri: str | None = None,
        merged_name: str = "merged.duckdb",
        *,
        policy_record: PolicyLike | None = None,
    ) -> Self:
        """The old merge: episode-only shards in a directory + who played -> one DB.

        Deletes an old ``<dir>/<merged_name>``, registers the simulation, merges every other
        ``*.duckdb`` in the directory, stamps episodes that have no simulation with
        ``sim_id``, and assigns every agent of ``agent_map`` in every such episode to its
        policy. No shards gives an empty DB and a logged warning. Positional or keyword, in
        the old order; ``policy_record=`` is the old name of ``policy``.

        Returns:
            The merged DB, open for writing; close it when done.

        Raises:
            StatsDBError: no policy or both ``policy`` and ``policy_record``; invalid
                policies (before any SQL), or as :meth:`merge_in`.
        """
        if (policy is None) == (policy_record is None):
            raise StatsDBError(
                "from_shards_and_context needs the evaluated policy exactly once",
                expected="policy=... (or the old policy_record=...)",
                found="neither" if policy is None else "both",
            )
        primary = PolicyKey.of(policy if policy is not None else policy_record, policy_uri)
        agents = [(check_int(a, what="agent id"), PolicyKey.of(p)) for a, p in agent_map.items()]
        directory = Path(dir_with_shards)
        existed = directory.is_dir()
        dest = directory / merged_name
        for stale in (dest, dest.with_name(dest.name + ".wal")):
            stale.unlink(missing_ok=True)
        shards = sorted(p for p in directory.glob("*.duckdb") if p.name != merged_name)
        db = cls(dest)
        try:
            db.register_simulation(
                sim_id,
                sim_name,
                sim_env,
                policy_key=primary.policy_key,
                policy_version=primary.policy_version,
                policy_uri=primary.policy_uri,
            )
            if not shards:
                logger.warning(
                    "no stats shards in %s%s; the merged DB is empty",
                    directory,
                    "" if existed else " (the directory did not exist and was created)",
                )
            for shard in shards:
                db.merge_in(shard)
            with db._transaction():
                db._execute(
                    "UPDATE episodes SET simulation_id = ? WHERE simulation_id IS NULL", [sim_id]
                )
                for agent_id, key in agents:
                    db._execute(
                        "INSERT OR IGNORE INTO agent_policies (episode_id, agent_id, "
                        "policy_key, policy_version, policy_uri) SELECT id, ?, ?, ?, ? "
                        "FROM episodes WHERE simulation_id = ?",
                        [agent_id, key.policy_key, key.policy_version, key.policy_uri, sim_id],
                    )
        except BaseException:
            db.close()
            raise
        return db


class EvalStatsDB(EvalQueriesMixin, SimulationStatsDB):
    """A :class:`SimulationStatsDB` with the sample/metric views and normalised aggregates.

    Usually opened ``read_only=True`` on a merged file. The query methods are documented in
    :class:`ckptcompat.evaluation.stats_queries.EvalQueriesMixin`.
    """

    _VIEWS = EVAL_VIEWS


def merge_shards(
    dest: str | os.PathLike[str],
    shard_paths: Iterable[str | os.PathLike[str]],
) -> Path:
    """Merge closed shard files into ``dest`` (created if missing); return ``dest``.

    Each shard is merged in its own transaction; merging is idempotent, so after an error
    fix the cause and run it again.

    Raises:
        StatsDBError: as :meth:`SimulationStatsDB.merge_in`, or ``dest`` locked elsewhere.
    """
    with SimulationStatsDB(dest) as db:
        for shard in shard_paths:
            db.merge_in(shard)
    return Path(dest)
