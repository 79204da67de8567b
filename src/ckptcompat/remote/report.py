"""Status and results of a batch of remote evaluations, per policy and evaluator cell,
judged against a reference cell and a committed baseline.

Read from the queue's results (one per task), not from the stats DB: a task re-run after
its worker died leaves an unfinished simulation in the dead worker's shard, and only the
result names the simulation that counts. Per policy, each cell is compared with a
reference cell: ``return_diff`` (its mean return minus the reference's; greedy episodes
on fixed seeds give 0.0) and ``speed_ratio`` (its env-steps/s over the reference's, both
measured in this batch over the episodes alone: a ratio, never an absolute time).

:func:`judge` fails a batch (``REPORT: FAIL``, exit 1) when a task did not finish or was
given up, a cell's outcome differs from the reference's (it loads there, not here), a
mean return differs from the reference's or the baseline's by more than ``return_tol``,
or a cell is more than ``max_slowdown`` (10 %) slower than the reference. The baseline
(:func:`write_baseline`) is a JSON file of mean returns per policy key, env, seed and
episode count: what the team expects on fixed seeds, committed with its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ckptcompat.errors import InputError

__all__ = [
    "BASELINE_SCHEMA_VERSION",
    "ReportRow",
    "Verdict",
    "build_report",
    "judge",
    "read_baseline",
    "render_report",
    "render_status",
    "write_baseline",
]

BASELINE_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One task's line of the report.

    Attributes:
        policy_uri, cell, env_id, episodes, seed, status, attempts: the task.
        outcome, error_type: its result (None while it has none).
        policy_key, policy_version: the stats DB key of the evaluated policy.
        mean_return: mean episode return; None without a ``pass``.
        steps_per_s: env steps per CPU second of the episodes in the worker's evaluating
            thread (loading excluded; wall seconds for results stored without CPU time).
        reference: the cell it is compared with.
        reference_outcome: that cell's outcome for the same policy (None: no result).
        return_diff: ``mean_return`` minus the reference cell's (None if either is None).
        speed_ratio: ``steps_per_s`` over the reference cell's.
        returns_identical: every episode's return equals the reference's, bit for bit.
    """

    policy_uri: str
    cell: str
    env_id: str
    episodes: int
    seed: int
    status: str
    attempts: int
    outcome: str | None
    error_type: str | None
    policy_key: str | None
    policy_version: int | None
    mean_return: float | None
    steps_per_s: float | None
    reference: str
    reference_outcome: str | None
    return_diff: float | None
    speed_ratio: float | None
    returns_identical: bool | None

    @property
    def baseline_key(self) -> str | None:
        """``KEY:vN|ENV|seed=S|episodes=N``: where the baseline keeps this policy's return."""
        if self.policy_key is None:
            return None
        return (
            f"{self.policy_key}:v{self.policy_version}|{self.env_id}|seed={self.seed}"
            f"|episodes={self.episodes}"
        )


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The report's judgement: ``problems`` is empty when every task passed the checks."""

    problems: list[str]

    @property
    def ok(self) -> bool:
        """True when nothing regressed and every task finished."""
        return not self.problems

    def line(self) -> str:
        """The closing line, ``REPORT: PASS - ...`` or ``REPORT: FAIL - N problems: ...``."""
        if self.ok:
            return "REPORT: PASS - every cell agrees with the reference (and the baseline)"
        return f"REPORT: FAIL - {len(self.problems)} problems: " + "; ".join(self.problems)


def _speed(task: dict[str, Any]) -> float | None:
    """Env steps per CPU second of the episodes: several workers share a machine's cores
    (the demo: 4 workers on 2 cores), and per wall second a cell looked 0.28-0.58x slower
    than another only because its worker got less of the CPU. Rows stored before the CPU
    time was recorded fall back to wall seconds."""
    steps = task.get("env_steps")
    seconds = task.get("episodes_cpu_s") or task.get("episodes_time_s") or task.get("eval_time_s")
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
        ref = refs.get(task["policy_uri"]) or {}
        mine, theirs = task.get("mean_return"), ref.get("mean_return")
        speed, ref_speed = _speed(task), _speed(ref)
        identical = None
        if task.get("episode_returns") is not None and ref.get("episode_returns") is not None:
            identical = list(task["episode_returns"]) == list(ref["episode_returns"])
        rows.append(
            ReportRow(
                policy_uri=task["policy_uri"],
                cell=task["cell"],
                env_id=task["env_id"],
                episodes=task["episodes"],
                seed=task["seed"],
                status=task["status"],
                attempts=task["attempts"],
                outcome=task.get("outcome"),
                error_type=task.get("error_type"),
                policy_key=task.get("policy_key"),
                policy_version=task.get("policy_version"),
                mean_return=mine,
                steps_per_s=speed,
                reference=reference,
                reference_outcome=ref.get("outcome"),
                return_diff=None if mine is None or theirs is None else mine - theirs,
                speed_ratio=None if speed is None or not ref_speed else speed / ref_speed,
                returns_identical=identical,
            )
        )
    return rows


def judge(
    rows: Sequence[ReportRow],
    *,
    return_tol: float = 1e-6,
    max_slowdown: float = 0.10,
    baseline: dict[str, float] | None = None,
) -> Verdict:
    """Judge a report: every problem of every row (see the module docstring).

    Args:
        return_tol: largest accepted absolute difference of mean returns.
        max_slowdown: largest accepted fraction a cell may be slower than the reference
            (0.10: a speed ratio below 0.90 fails).
        baseline: mean return per :attr:`ReportRow.baseline_key` (:func:`read_baseline`).
    """
    problems = []
    for row in rows:
        where = f"{row.policy_key or row.policy_uri}"
        where += f"{'' if row.policy_key is None else f':v{row.policy_version}'} in {row.cell}"
        if row.status in ("queued", "running"):
            problems.append(f"{where} is still {row.status}")
            continue
        if row.status == "failed":
            problems.append(f"{where} was given up after {row.attempts} attempts")
            continue
        if row.outcome != row.reference_outcome:
            problems.append(
                f"{where}: {row.outcome} ({row.error_type or 'no error'}), "
                f"{row.reference} {row.reference_outcome}"
            )
        if row.return_diff is not None and not abs(row.return_diff) <= return_tol:
            problems.append(
                f"{where}: mean return {row.mean_return:.6g} differs from {row.reference}'s "
                f"by {row.return_diff:+.3g} (tolerance {return_tol:g})"
            )
        if row.speed_ratio is not None and row.speed_ratio < 1 - max_slowdown:
            problems.append(
                f"{where}: {row.speed_ratio:.3f}x the env-steps/s of {row.reference} "
                f"(more than {max_slowdown:.0%} slower)"
            )
        expected = (baseline or {}).get(row.baseline_key or "")
        if (
            expected is not None
            and row.mean_return is not None
            and not abs(row.mean_return - expected) <= return_tol
        ):
            problems.append(
                f"{where}: mean return {row.mean_return:.6g}, baseline {expected:.6g} "
                f"(tolerance {return_tol:g})"
            )
    return Verdict(problems)


def write_baseline(rows: Sequence[ReportRow], path: str | os.PathLike[str]) -> Path:
    """Write the reference cell's passing mean returns as a baseline file; return its path."""
    policies = {
        r.baseline_key: r.mean_return
        for r in rows
        if r.cell == r.reference and r.outcome == "pass" and r.baseline_key
    }
    target = Path(path)
    data = {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "mean_return": dict(sorted(policies.items())),
    }
    target.write_text(json.dumps(data, indent=2) + "\n")
    return target


def read_baseline(path: str | os.PathLike[str]) -> dict[str, float]:
    """The mean returns of a baseline file written by :func:`write_baseline`.

    Raises:
        InputError: the file is missing, not JSON, or of another schema version.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(
            "cannot read the remote-evaluation baseline",
            path=path,
            expected="a JSON file written by ckptcompat eval report --write-baseline",
            found=f"{type(exc).__name__}: {exc}",
            fix="check the path, or write one with --write-baseline",
        ) from exc
    if not isinstance(data, dict) or data.get("schema_version") != BASELINE_SCHEMA_VERSION:
        raise InputError(
            "remote-evaluation baseline of another schema",
            path=path,
            expected=f"schema_version {BASELINE_SCHEMA_VERSION}",
            found=repr(data.get("schema_version") if isinstance(data, dict) else data)[:80],
            fix="write it again with --write-baseline",
        )
    return {str(k): float(v) for k, v in data.get("mean_return", {}).items() if math.isfinite(v)}


def _fmt(value: object, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if isinstance(value, float) else str(value)


def render_report(rows: Sequence[ReportRow], verdict: Verdict, *, as_json: bool = False) -> str:
    """The report as a text table ending with the verdict's line (or JSON: ``{"reference",
    "rows", "ok", "problems"}``)."""
    reference = rows[0].reference if rows else "-"
    if as_json:
        return json.dumps(
            {
                "reference": reference,
                "rows": [dataclasses.asdict(r) for r in rows],
                "ok": verdict.ok,
                "problems": verdict.problems,
            }
        )
    header = (
        "policy", "cell", "status", "tries", "outcome", "mean_return", "steps/s",
        f"diff vs {reference}", "speed ratio", "identical",
    )  # fmt: skip
    lines = [header]
    for r in rows:
        policy = r.policy_uri if r.policy_key is None else f"{r.policy_key}:v{r.policy_version}"
        outcome = r.outcome if r.error_type is None else f"{r.outcome} ({r.error_type})"
        lines.append(
            (
                policy, r.cell, r.status, str(r.attempts), _fmt(outcome), _fmt(r.mean_return),
                _fmt(r.steps_per_s, ".1f"), _fmt(r.return_diff), _fmt(r.speed_ratio, ".3f"),
                _fmt(r.returns_identical),
            )
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join([*table, verdict.line()])


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
