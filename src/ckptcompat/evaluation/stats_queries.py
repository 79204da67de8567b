"""The normalised metric queries of :class:`ckptcompat.evaluation.stats_db.EvalStatsDB`.

Normalisation rule (the old EvalStatsDB's, kept because metrics are logged only when
non-zero): for a policy and filter,

1. the *potential* samples are the agent-episodes assigned to the policy in finished
   episodes (``policy_simulation_agent_samples``), whether or not they logged the metric;
2. the recorded values of the metric are summed, a missing one counting as 0;
3. the mean is that sum divided by the potential count; the std is the population std
   (ddof 0) over all potential samples, the missing ones as zeros.

So a result is ``None`` when there are no potential samples (unknown policy, empty DB,
non-matching filter) and ``0.0`` when there are samples but the metric was never logged.

Ghost episodes (the old DB's August 2025 fix, Metta's num-episodes regression): an episode
that was registered but never finished -- no ``completed_at`` and no metric row for any
agent, as rows inserted for requested-but-unfinished episodes look -- is not a sample.
Every episode our writers record has ``completed_at``, so an agent that logged nothing in a
finished episode still counts as zeros; so does a finished episode in which no agent logged
anything (the old rule, "no metric row", dropped those too and over-stated the mean).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from ckptcompat.errors import StatsDBError
from ckptcompat.evaluation.stats_schema import FILTER_COLUMNS, FilterClause, parse_filter
from ckptcompat.evaluation.stats_values import PolicyKey, PolicyLike, check_text

if TYPE_CHECKING:
    pass

__all__ = ["EvalQueriesMixin", "FilterCondition"]

FilterCondition = str | Mapping[str, str] | None
"""``"sim_env = 'CartPole-v1' AND sim_name LIKE 'eval%'"`` or ``{"sim_env": "CartPole-v1"}``."""

_SAMPLES = "policy_simulation_agent_samples"
_METRICS = "policy_simulation_agent_metrics"


def _where(policy: PolicyKey, clauses: Iterable[FilterClause]) -> tuple[str, list[object]]:
    sql, params = (
        ["policy_key = ?", "policy_version = ?"],
        [policy.policy_key, policy.policy_version],
    )
    for clause in clauses:
        # parse_filter already whitelisted these; checked again because they become SQL text.
        if clause.column not in FILTER_COLUMNS or clause.op not in ("=", "LIKE"):
            raise StatsDBError("filter clause outside the whitelist", found=repr(clause))
        sql.append(f"{clause.column} {clause.op} ?")
        params.append(clause.value)
    return " AND ".join(sql), params


if TYPE_CHECKING:
    from ckptcompat.evaluation.stats_episode import EpisodeStatsDB as _Base
else:
    _Base = object


class EvalQueriesMixin(_Base):
    """Potential samples and normalised mean/sum/std over them (module docstring).

    Every method validates its policy, metric and filter before any SQL runs, and raises
    :class:`StatsDBError` for a None version, a URI given as key, or an unsupported filter.
    """

    # ------------------------------------------------------------------ counts

    def potential_samples_for_metric(
        self, policy_key: str, policy_version: int, filter_condition: FilterCondition = None
    ) -> int:
        """Agent-episodes assigned to ``(policy_key, policy_version)`` under the filter."""
        where, params = _where(
            PolicyKey(policy_key, policy_version), parse_filter(filter_condition)
        )
        return int(self._scalar(f"SELECT COUNT(*) FROM {_SAMPLES} WHERE {where}", params))

    def count_metric_agents(
        self,
        policy_key: str,
        policy_version: int,
        metric: str,
        filter_condition: FilterCondition = None,
    ) -> int:
        """Agent-episodes of the policy that recorded ``metric`` (at most the potential)."""
        where, params = _where(
            PolicyKey(policy_key, policy_version), parse_filter(filter_condition)
        )
        return int(
            self._scalar(
                f"SELECT COUNT(*) FROM {_METRICS} WHERE {where} AND metric = ?",
                [*params, check_text(metric, what="metric")],
            )
        )

    def sample_count(
        self,
        policy: PolicyLike | None = None,
        sim_name: str | None = None,
        sim_env: str | None = None,
    ) -> int:
        """Potential samples of one policy, or of all policies, optionally by sim name/env."""
        sql, params = f"SELECT COUNT(*) FROM {_SAMPLES} WHERE TRUE", []
        if policy is not None:
            key = PolicyKey.of(policy)
            sql += " AND policy_key = ? AND policy_version = ?"
            params += [key.policy_key, key.policy_version]
        for column, value in (("sim_name", sim_name), ("sim_env", sim_env)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        return int(self._scalar(sql, params))

    # ------------------------------------------------------------------ aggregates

    def _normalized_value(
        self,
        policy: PolicyKey,
        metric: str,
        agg: Literal["AVG", "STD"],
        filter_condition: FilterCondition,
    ) -> float | None:
        metric = check_text(metric, what="metric")
        where, params = _where(policy, parse_filter(filter_condition))
        potential = int(self._scalar(f"SELECT COUNT(*) FROM {_SAMPLES} WHERE {where}", params))
        if potential == 0:
            return None
        # An aggregate without GROUP BY returns exactly one row.
        [(total, recorded)] = self._execute(
            f"SELECT COALESCE(SUM(value), 0.0), COUNT(*) FROM {_METRICS} "
            f"WHERE {where} AND metric = ?",
            [*params, metric],
        ).fetchall()
        mean = float(total) / potential
        result = mean
        if agg == "STD":
            # Two passes (deviations from the mean) instead of E[x^2] - mean^2, which cancels
            # catastrophically for large, close values; the unrecorded samples are zeros.
            squares = float(
                self._scalar(
                    f"SELECT COALESCE(SUM((value - ?) * (value - ?)), 0.0) FROM {_METRICS} "
                    f"WHERE {where} AND metric = ?",
                    [mean, mean, *params, metric],
                )
            )
            result = math.sqrt(
                max((squares + (potential - recorded) * mean * mean) / potential, 0.0)
            )
        if not math.isfinite(result):
            raise StatsDBError(
                f"aggregate of {metric!r} for {policy.label} overflowed",
                expected="a finite result",
                found=str(result),
                fix="rescale the metric when logging it",
            )
        return result

    def get_average_metric_by_filter(
        self, metric: str, policy: PolicyLike, filter_condition: FilterCondition = None
    ) -> float | None:
        """Mean of ``metric`` over the policy's potential samples, in the metric's own units.

        Returns None when there are no samples, 0.0 when the metric was never logged.
        """
        return self._normalized_value(PolicyKey.of(policy), metric, "AVG", filter_condition)

    def get_sum_metric_by_filter(
        self, metric: str, policy: PolicyLike, filter_condition: FilterCondition = None
    ) -> float | None:
        """The old API's "normalised sum": the sum over potential samples divided by their
        count, i.e. the same value as :meth:`get_average_metric_by_filter` (kept so old
        callers get the numbers they had). For a raw total multiply by the potential count.
        """
        return self._normalized_value(PolicyKey.of(policy), metric, "AVG", filter_condition)

    def get_std_metric_by_filter(
        self, metric: str, policy: PolicyLike, filter_condition: FilterCondition = None
    ) -> float | None:
        """Population std (ddof 0) of ``metric`` over the potential samples; 0.0 for one."""
        return self._normalized_value(PolicyKey.of(policy), metric, "STD", filter_condition)

    def simulation_scores(self, policy: PolicyLike, metric: str) -> dict[tuple[str, str], float]:
        """``{(sim_name, sim_env): normalised mean of metric}`` per simulation of the policy."""
        key = PolicyKey.of(policy)
        sims = self._execute(
            f"SELECT DISTINCT sim_name, sim_env FROM {_SAMPLES} WHERE "
            "policy_key = ? AND policy_version = ? ORDER BY 1, 2",
            [key.policy_key, key.policy_version],
        ).fetchall()
        scores = {}
        for sim_name, sim_env in sims:
            value = self._normalized_value(
                key, metric, "AVG", {"sim_name": sim_name, "sim_env": sim_env}
            )
            if value is not None:
                scores[(sim_name, sim_env)] = value
        return scores

    def metric_names(
        self,
        policy: PolicyLike,
        filter_condition: FilterCondition = None,
    ) -> list[str]:
        """Sorted names of the metrics the policy recorded at least once under the filter."""
        where, params = _where(PolicyKey.of(policy), parse_filter(filter_condition))
        rows = self._execute(
            f"SELECT DISTINCT metric FROM {_METRICS} WHERE {where} ORDER BY 1", params
        ).fetchall()
        return [row[0] for row in rows]
