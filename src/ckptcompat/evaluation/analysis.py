"""Per-policy summary of an evaluation stats DB: mean, std, recorded vs potential samples.

For each ``(policy_key, policy_version)`` and metric, a :class:`SummaryRow` holds the
normalised mean and population std of :class:`~ckptcompat.evaluation.stats_db.EvalStatsDB`
(over the *potential* samples -- every agent-episode of the policy, a sample that never
logged the metric counting as 0), and both counts, so a reader sees how much of the mean
rests on recorded values. A policy with no samples (unknown, or filtered out) gets
``None``, never NaN: the table says "None" and the counts say 0.

Metric selection follows the old ``analyze``: names, or ``fnmatch`` patterns matched
against the metrics each policy recorded. No torch here: it only reads the DB.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckptcompat.evaluation.stats_db import EvalStatsDB
from ckptcompat.evaluation.stats_queries import FilterCondition
from ckptcompat.evaluation.stats_values import PolicyKey, PolicyLike

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["COLUMNS", "SummaryRow", "summarize", "to_markdown", "to_rich_table"]

#: Column titles of the rendered tables, in order.
COLUMNS = ("policy_key", "policy_version", "metric", "mean", "std", "recorded", "potential")

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SummaryRow:
    """One policy's summary of one metric.

    Attributes:
        policy_key, policy_version: the policy (run name, epoch).
        metric: the metric's name.
        mean: normalised mean over the potential samples, in the metric's units; None when
            the policy has no samples, 0.0 when it has samples but never logged the metric.
        std: population std (ddof 0) over the potential samples; None as ``mean``.
        recorded: agent-episodes that logged the metric.
        potential: agent-episodes of the policy (the denominator of ``mean``).
    """

    policy_key: str
    policy_version: int
    metric: str
    mean: float | None
    std: float | None
    recorded: int
    potential: int

    def cells(self) -> tuple[str, ...]:
        """The row as display strings in :data:`COLUMNS` order ("None" for no value)."""
        return (
            self.policy_key,
            str(self.policy_version),
            self.metric,
            _number(self.mean),
            _number(self.std),
            str(self.recorded),
            str(self.potential),
        )


def _number(value: float | None) -> str:
    return "None" if value is None else f"{value:.6g}"


def _metric_names(
    db: EvalStatsDB,
    policy: PolicyKey,
    metrics: Sequence[str] | None,
    filter_condition: FilterCondition,
) -> list[str]:
    if metrics is not None and not any(_GLOB_CHARS & set(m) for m in metrics):
        # Plain names need no lookup; a never-logged one still gets its row (mean 0.0).
        return list(dict.fromkeys(metrics))
    logged = db.metric_names(policy, filter_condition)
    if metrics is None:
        return logged
    names: list[str] = []
    for pattern in metrics:
        if _GLOB_CHARS & set(pattern):
            names += [name for name in logged if fnmatch.fnmatchcase(name, pattern)]
        else:
            names.append(pattern)
    return list(dict.fromkeys(names))


def _summarize_open(
    db: EvalStatsDB,
    metrics: Sequence[str] | None,
    policies: Iterable[PolicyLike] | None,
    filter_condition: FilterCondition,
) -> list[SummaryRow]:
    keys = db.policy_keys() if policies is None else [PolicyKey.of(p) for p in policies]
    rows = []
    for key in keys:
        potential = db.potential_samples_for_metric(
            key.policy_key, key.policy_version, filter_condition
        )
        for metric in _metric_names(db, key, metrics, filter_condition):
            rows.append(
                SummaryRow(
                    policy_key=key.policy_key,
                    policy_version=key.policy_version,
                    metric=metric,
                    mean=db.get_average_metric_by_filter(metric, key, filter_condition),
                    std=db.get_std_metric_by_filter(metric, key, filter_condition),
                    recorded=db.count_metric_agents(
                        key.policy_key, key.policy_version, metric, filter_condition
                    ),
                    potential=potential,
                )
            )
    return rows


def summarize(
    db: str | os.PathLike[str] | EvalStatsDB,
    metrics: Sequence[str] | None = ("reward",),
    *,
    policies: Iterable[PolicyLike] | None = None,
    filter_condition: FilterCondition = None,
) -> list[SummaryRow]:
    """Summarise every policy in ``db`` (or the given ones) for each metric.

    Args:
        db: a merged stats DB file (opened read-only and closed again) or an open
            :class:`EvalStatsDB`.
        metrics: metric names or ``fnmatch`` patterns (``"reward*"``); a plain name gets a
            row even if never logged, a pattern only rows for metrics the policy logged;
            None: every metric each policy logged.
        policies: ``(policy_key, policy_version)`` pairs, PolicyKeys or records; default
            every policy with samples in the DB, sorted. A policy absent from the DB gets
            rows with ``mean``/``std`` None and zero counts.
        filter_condition: as in :class:`EvalStatsDB`, e.g. ``{"sim_env": "CartPole-v1"}``.

    Returns:
        Rows ordered by policy, then metric in the order requested (logged metrics sorted).

    Raises:
        StatsDBError: the file is missing or not a stats DB, an invalid policy key (a URI
            string, a None version), or an unsupported filter.
    """
    if isinstance(db, EvalStatsDB):
        return _summarize_open(db, metrics, policies, filter_condition)
    with EvalStatsDB(db, read_only=True) as opened:
        return _summarize_open(opened, metrics, policies, filter_condition)


def _escape(cell: str) -> str:
    # A '|' inside a key would end the Markdown cell early.
    return cell.replace("\\", "\\\\").replace("|", "\\|")


def to_markdown(rows: Iterable[SummaryRow]) -> str:
    """The rows as a GitHub-flavoured Markdown table (numbers right-aligned), ending "\\n".

    No rows give the header alone.
    """
    right = {"policy_version", "mean", "std", "recorded", "potential"}
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c in right else "---" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_escape(c) for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_rich_table(rows: Iterable[SummaryRow], title: str | None = None) -> Table:
    """The rows as a :class:`rich.table.Table` for terminal display."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for column in COLUMNS:
        numeric = column not in ("policy_key", "metric")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        # Escaped: rich would read a '[...]' in a key or metric name as markup.
        table.add_row(*(escape(cell) for cell in row.cells()))
    return table
