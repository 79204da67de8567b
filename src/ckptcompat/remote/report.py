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
a cell is more than ``max_slowdown`` (10 %) slower than the reference (per policy, and
over all its policies; judged only on ``min_speed_s`` of episodes or more, in CPU
seconds), a policy was evaluated nowhere (it fails in every cell alike), or two policy
files share a key (same run name and epoch from other data dirs). The baseline
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

#: The fewest seconds of episodes a speed ratio is judged on (see :func:`judge`).
MIN_SPEED_S = 0.5

__all__ = [
    "BASELINE_SCHEMA_VERSION",
    "MIN_SPEED_S",
    "ReportRow",
    "Verdict",
    "ambiguous_keys",
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
        error_message: the typed error's message of a ``fail``/``error`` result.
        env_steps: env steps of the episodes; speed_s: the seconds ``steps_per_s``
            divides by (CPU seconds, or wall seconds for rows stored without them).
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
    error_message: str | None = None
    env_steps: int | None = None
    speed_s: float | None = None

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
    """The report's judgement: ``problems`` is empty when every task passed the checks;
    ``with_baseline`` says whether a baseline was compared (the PASS line named one even
    when none was given, new-user trial 2026-12-06)."""

    problems: list[str]
    with_baseline: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing regressed and every task finished."""
        return not self.problems

    def line(self) -> str:
        """The closing line, ``REPORT: PASS - ...`` or ``REPORT: FAIL - N problems: ...``."""
        if self.ok:
            baseline = " and the baseline" if self.with_baseline else ""
            return f"REPORT: PASS - every cell agrees with the reference{baseline}"
        return f"REPORT: FAIL - {len(self.problems)} problems: " + "; ".join(self.problems)


def _speed_s(task: dict[str, Any]) -> float | None:
    return task.get("episodes_cpu_s") or task.get("episodes_time_s") or task.get("eval_time_s")


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
                error_message=task.get("error_message"),
                env_steps=task.get("env_steps"),
                speed_s=_speed_s(task) if task.get("env_steps") else None,
            )
        )
    return rows


def _label(row: ReportRow, ambiguous: set[str]) -> str:
    """``KEY:vN`` of the row's policy, its URI when another policy shares that key."""
    if row.policy_key is None or (row.baseline_key or "") in ambiguous:
        return row.policy_uri
    return f"{row.policy_key}:v{row.policy_version}"


def ambiguous_keys(rows: Sequence[ReportRow]) -> set[str]:
    """Baseline keys that name more than one policy file in the batch: two runs of the
    same name and epoch in different data dirs (``KEY:vN`` cannot tell them apart, so
    their rows looked alike and a baseline kept one of their returns, new-user trial
    2026-12-06)."""
    uris: dict[str, set[str]] = {}
    for row in rows:
        if row.baseline_key:
            uris.setdefault(row.baseline_key, set()).add(row.policy_uri)
    return {key for key, found in uris.items() if len(found) > 1}


def _cell_speeds(rows: Sequence[ReportRow]) -> dict[str, tuple[int, float, int, float]]:
    """Per cell: (steps, seconds) over the policies that passed there and in the reference,
    and the reference's (steps, seconds) over the same policies."""
    refs = {r.policy_uri: r for r in rows if r.cell == r.reference}
    out: dict[str, tuple[int, float, int, float]] = {}
    for row in rows:
        ref = refs.get(row.policy_uri)
        if ref is None or not (row.env_steps and row.speed_s and ref.env_steps and ref.speed_s):
            continue
        steps, seconds, ref_steps, ref_seconds = out.get(row.cell, (0, 0.0, 0, 0.0))
        out[row.cell] = (
            steps + row.env_steps, seconds + row.speed_s,
            ref_steps + ref.env_steps, ref_seconds + ref.speed_s,
        )  # fmt: skip
    return out


def judge(
    rows: Sequence[ReportRow],
    *,
    return_tol: float = 1e-6,
    max_slowdown: float = 0.10,
    baseline: dict[str, float] | None = None,
    min_speed_s: float = MIN_SPEED_S,
) -> Verdict:
    """Judge a report: every problem of every row (see the module docstring).

    Args:
        return_tol: largest accepted absolute difference of mean returns.
        max_slowdown: largest accepted fraction a cell may be slower than the reference
            (0.10: a speed ratio below 0.90 fails).
        baseline: mean return per :attr:`ReportRow.baseline_key` (:func:`read_baseline`).
        min_speed_s: the fewest seconds of episodes (on both sides) a speed ratio is judged
            on: a policy's ratio below it is shown, not judged (5 episodes of 9 steps take
            20 ms, and 10% of that is timer and reset noise); each cell's ratio over all
            its policies is judged when its seconds reach it.
    """
    problems = []
    slow_cells: set[str] = set()  # cells a policy's ratio already failed
    ambiguous = ambiguous_keys(rows)
    for key in sorted(ambiguous):
        problems.append(
            f"{key}: several policy files share this key (same run and epoch in other data "
            "dirs); rows are labelled by URI and the baseline cannot tell them apart"
        )
    for row in rows:
        where = f"{_label(row, ambiguous)} in {row.cell}"
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
        elif row.cell == row.reference and row.outcome in ("fail", "error"):
            # It fails in every cell alike: nothing was evaluated, which must not pass.
            problems.append(
                f"{where}: {row.outcome} ({row.error_type}) in the reference cell and in "
                f"every other: not evaluated anywhere; {(row.error_message or '')[:200]}"
            )
        if row.return_diff is not None and not abs(row.return_diff) <= return_tol:
            problems.append(
                f"{where}: mean return {row.mean_return:.6g} differs from {row.reference}'s "
                f"by {row.return_diff:+.3g} (tolerance {return_tol:g})"
            )
        ref_s = next(
            (r.speed_s for r in rows if r.cell == r.reference and r.policy_uri == row.policy_uri),
            None,
        )
        judged = min(row.speed_s or 0.0, ref_s or 0.0) >= min_speed_s
        if judged and row.speed_ratio is not None and row.speed_ratio < 1 - max_slowdown:
            slow_cells.add(row.cell)
            problems.append(
                f"{where}: {row.speed_ratio:.3f}x the env-steps/s of {row.reference} "
                f"(more than {max_slowdown:.0%} slower)"
            )
        expected = (baseline or {}).get(row.baseline_key or "")
        if (
            expected is not None
            and (row.baseline_key or "") not in ambiguous
            and row.mean_return is not None
            and not abs(row.mean_return - expected) <= return_tol
        ):
            problems.append(
                f"{where}: mean return {row.mean_return:.6g}, baseline {expected:.6g} "
                f"(tolerance {return_tol:g})"
            )
    for cell, (steps, seconds, ref_steps, ref_seconds) in sorted(_cell_speeds(rows).items()):
        if min(seconds, ref_seconds) < min_speed_s or cell in (rows[0].reference, *slow_cells):
            continue
        ratio = (steps / seconds) / (ref_steps / ref_seconds)
        if ratio < 1 - max_slowdown:
            problems.append(
                f"{cell}: {ratio:.3f}x the env-steps/s of {rows[0].reference} over all its "
                f"policies ({steps} steps in {seconds:.2f} s; more than {max_slowdown:.0%} "
                "slower)"
            )
    return Verdict(problems, with_baseline=baseline is not None)


def write_baseline(rows: Sequence[ReportRow], path: str | os.PathLike[str]) -> Path:
    """Write the reference cell's passing mean returns as a baseline file; return its path.

    Raises:
        InputError: two policy files of the batch share a key (:func:`ambiguous_keys`):
            the file could keep only one of their returns.
    """
    ambiguous = ambiguous_keys(rows)
    if ambiguous:
        raise InputError(
            "two policies of this batch share a baseline key",
            path=path,
            expected="one policy file per run name and epoch",
            found=", ".join(sorted(ambiguous)[:3]),
            fix="submit the runs under distinct names (ckptcompat run --run NAME) or in "
            "separate batches (--batch)",
        )
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
    ambiguous = ambiguous_keys(rows)
    for r in rows:
        policy = _label(r, ambiguous)
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
