"""Status and results of a batch of remote evaluations, per policy and evaluator cell.

Read from the queue's results (one per task), not from the stats DB: a task re-run after
its worker died leaves an unfinished simulation in the dead worker's shard, and only the
result names the simulation that counts. Per policy, each cell is compared with a
reference cell: ``return_diff`` (its mean return minus the reference's; identical greedy
evaluations on fixed seeds give 0.0) and ``speed_ratio`` (its env-steps/s over the
reference's, measured in this batch: a ratio, never an absolute time).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["ReportRow", "build_report", "render_report", "render_status"]


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One task's line of the report.

    Attributes:
        policy_uri, cell, status, attempts: the task.
        outcome, error_type: its result (None while it has none).
        policy_key, policy_version: the stats DB key of the evaluated policy.
        mean_return: mean episode return; None without a ``pass``.
        steps_per_s: env steps per second of evaluation, loading included.
        return_diff: ``mean_return`` minus the reference cell's (None if either is None).
        speed_ratio: ``steps_per_s`` over the reference cell's.
        returns_identical: every episode's return equals the reference's, bit for bit.
    """

    policy_uri: str
    cell: str
    status: str
    attempts: int
    outcome: str | None
    error_type: str | None
    policy_key: str | None
    policy_version: int | None
    mean_return: float | None
    steps_per_s: float | None
    return_diff: float | None
    speed_ratio: float | None
    returns_identical: bool | None


def _speed(task: dict[str, Any]) -> float | None:
    steps, seconds = task.get("env_steps"), task.get("eval_time_s")
    return steps / seconds if steps and seconds else None


def build_report(tasks: Sequence[dict[str, Any]], reference: str | None) -> list[ReportRow]:
    """One :class:`ReportRow` per task (``TaskQueue.tasks`` rows), compared within each
    policy with the task of cell ``reference`` (default: the first task's cell)."""
    if not tasks:
        return []
    reference = reference or tasks[0]["cell"]
    refs = {t["policy_uri"]: t for t in tasks if t["cell"] == reference}
    rows = []
    for task in tasks:
        ref = refs.get(task["policy_uri"])
        mine, theirs = task.get("mean_return"), (ref or {}).get("mean_return")
        speed, ref_speed = _speed(task), _speed(ref or {})
        identical = None
        if task.get("episode_returns") is not None and ref and ref.get("episode_returns"):
            identical = list(task["episode_returns"]) == list(ref["episode_returns"])
        rows.append(
            ReportRow(
                policy_uri=task["policy_uri"],
                cell=task["cell"],
                status=task["status"],
                attempts=task["attempts"],
                outcome=task.get("outcome"),
                error_type=task.get("error_type"),
                policy_key=task.get("policy_key"),
                policy_version=task.get("policy_version"),
                mean_return=mine,
                steps_per_s=speed,
                return_diff=None if mine is None or theirs is None else mine - theirs,
                speed_ratio=None if speed is None or not ref_speed else speed / ref_speed,
                returns_identical=identical,
            )
        )
    return rows


def _fmt(value: object, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if isinstance(value, float) else str(value)


def render_report(rows: Sequence[ReportRow], reference: str, *, as_json: bool = False) -> str:
    """The report as a text table (or JSON: ``{"reference", "rows": [...]}``)."""
    if as_json:
        return json.dumps({"reference": reference, "rows": [dataclasses.asdict(r) for r in rows]})
    header = (
        "policy",
        "cell",
        "status",
        "tries",
        "outcome",
        "mean_return",
        "steps/s",
        f"diff vs {reference}",
        "speed ratio",
        "identical",
    )
    lines = [header]
    for r in rows:
        policy = r.policy_uri if r.policy_key is None else f"{r.policy_key}:v{r.policy_version}"
        outcome = r.outcome if r.error_type is None else f"{r.outcome} ({r.error_type})"
        lines.append(
            (
                policy,
                r.cell,
                r.status,
                str(r.attempts),
                _fmt(outcome),
                _fmt(r.mean_return),
                _fmt(r.steps_per_s, ".1f"),
                _fmt(r.return_diff),
                _fmt(r.speed_ratio, ".3f"),
                _fmt(r.returns_identical),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def render_status(counts: dict[tuple[str, str], int], failed: Sequence[dict[str, Any]]) -> str:
    """Tasks per cell and status, then each failed task with its last error."""
    statuses = ("queued", "running", "done", "failed")
    cells = sorted({cell for cell, _ in counts})
    lines = ["cell   " + "  ".join(f"{s:>7}" for s in statuses)]
    for cell in cells:
        lines.append(f"{cell:<6} " + "  ".join(f"{counts.get((cell, s), 0):>7}" for s in statuses))
    for task in failed:
        lines.append(
            f"failed: task {task['task_id']} {task['policy_uri']} in {task['cell']} "
            f"after {task['attempts']} attempts: {task['last_error']}"
        )
    return "\n".join(lines)
