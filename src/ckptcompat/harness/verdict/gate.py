"""``python -m ckptcompat.harness.verdict.gate``: the release gate (docs/design.md section 8).

Compares the matrix's records with ``fixtures/baseline.json`` and fails (exit 1) on:

* a cell worse than expected (``pass > skip > fail > error``) -- a regression;
* a cell better than expected -- an unexpected pass: update the baseline in a commit that
  says why, so that a fix is noticed and kept;
* a baseline cell with no record -- a check that silently stopped running;
* a record of a cell the baseline does not know -- a new check nobody reviewed;
* a record from another git sha than the one being gated -- stale or foreign results
  (such records are left out of the comparison, so they cannot stand in for fresh ones).

Writes a Markdown summary to ``$GITHUB_STEP_SUMMARY`` when it is set, and prints it.
``--propose-baseline FILE`` instead writes a baseline expecting exactly the recorded
outcomes (reasons kept where unchanged, ``REVIEW`` elsewhere) for a human to review.

Exit status: 0 the gate passes, 1 it fails, 2 the records or the baseline cannot be read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.matrix import (
    BASELINE_PATH,
    STATUS_NOUNS,
    Baseline,
    BaselineError,
    build,
    load_baseline,
    propose_baseline,
)
from ckptcompat.harness.verdict.records import Record

__all__ = [
    "BASELINE_NOTE",
    "PROBLEM_KINDS",
    "Problem",
    "Verdict",
    "judge",
    "judge_files",
    "main",
    "summary_markdown",
    "verdict_line",
]

PROBLEM_KINDS: tuple[str, ...] = (
    "regression",
    "unexpected_pass",
    "missing",
    "unknown",
    "foreign_sha",
)
BASELINE_NOTE = (
    "Expected outcome of every matrix cell (nox -s matrix), generated from a real run with "
    "`python -m ckptcompat.harness.verdict.gate --propose-baseline` and reviewed: every expected "
    "failure names its reason. An entry changes only in a commit whose message says why."
)
_SHOWN = 60
#: Each problem kind as counted in :func:`verdict_line`: (one, many).
_NOUNS: dict[str, tuple[str, str]] = {
    **STATUS_NOUNS,
    "foreign_sha": ("set of records from another commit", "sets of records from another commit"),
}


@dataclass(frozen=True)
class Problem:
    """One reason the gate fails: ``kind`` (one of :data:`PROBLEM_KINDS`), the cell, a message."""

    kind: str
    key: str
    message: str


@dataclass
class Verdict:
    """The gate's finding: every problem, plus what was compared."""

    git_sha: str
    records: int
    cells: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when there is no problem at all."""
        return not self.problems


def judge(records: Sequence[Record], baseline: Baseline, git_sha: str) -> Verdict:
    """Compare ``records`` of commit ``git_sha`` with ``baseline`` (see the module docstring)."""
    fresh = [r for r in records if r.git_sha == git_sha]
    stale = Counter(r.git_sha for r in records if r.git_sha != git_sha)
    verdict = Verdict(git_sha=git_sha, records=len(records), cells=0)
    for sha, count in sorted(stale.items()):
        verdict.problems.append(
            Problem(
                "foreign_sha",
                "-",
                f"{count} records from git sha "
                f"{sha}, not {git_sha}; rerun the matrix on this commit",
            )
        )
    cells = build(fresh, baseline)
    verdict.cells = len(cells)
    for cell in cells:
        if cell.status == "ok":
            continue
        if cell.status == "missing":
            message = f"expected {cell.expected}, but no record"
        elif cell.status == "unknown":
            message = f"{cell.outcome}, but the baseline has no entry: review and add it"
        else:
            why = f" ({cell.reason})" if cell.reason else ""
            message = f"{cell.outcome}, expected {cell.expected}{why}: {cell.detail[:300]}"
        verdict.problems.append(Problem(cell.status, cell.key, message))
    return verdict


def judge_files(records: Sequence[Path], baseline: Path, git_sha: str) -> Verdict:
    """:func:`judge` the records read from ``records`` (files or folders) against the
    baseline file (strictly loaded).

    Raises:
        BaselineError: the baseline is missing, malformed or not reviewed.
        ValueError: a record file holds a line that is not a valid record.
    """
    return judge(list(results.read_records(records)), load_baseline(baseline), git_sha)


def summary_markdown(verdict: Verdict) -> str:
    """The gate's verdict as Markdown (the step summary and the console output)."""
    counts = Counter(p.kind for p in verdict.problems)
    head = "PASSED" if verdict.passed else "FAILED"
    lines = [
        f"### ckptcompat gate: {head}",
        "",
        f"git sha `{verdict.git_sha}`: {verdict.records} records, {verdict.cells} cells; "
        + ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in PROBLEM_KINDS),
    ]
    if verdict.problems:
        lines += ["", "| problem | cell | detail |", "|---|---|---|"]
        for problem in verdict.problems[:_SHOWN]:
            message = problem.message.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {problem.kind} | `{problem.key}` | {message} |")
        if len(verdict.problems) > _SHOWN:
            lines.append(f"| ... | {len(verdict.problems) - _SHOWN} more | see reports/matrix.md |")
        lines += [
            "",
            "A baseline entry changes only in a commit whose message says why "
            "(`nox -s gate -- --propose-baseline FILE`, for a team with `--config "
            "PATH/pyproject.toml` before it; then review).",
        ]
    return "\n".join(lines) + "\n"


def verdict_line(verdict: Verdict, *, see: str | None = None) -> str:
    """One line that tells a red run from a green one: ``VERDICT: PASS - ...`` or
    ``VERDICT: FAIL - 4 regressions, 0 unexpected passes (see reports/matrix.md)``.

    Regressions and unexpected passes are always counted, the other problems when present.
    """
    where = f" (see {see})" if see else ""
    if verdict.passed:
        return f"VERDICT: PASS - all {verdict.cells} cells as the baseline expects{where}"
    counts = Counter(p.kind for p in verdict.problems)
    shown = [
        f"{counts[kind]} {one if counts[kind] == 1 else many}"
        for kind, (one, many) in _NOUNS.items()
        if counts[kind] or kind in ("regression", "unexpected_pass")
    ]
    return f"VERDICT: FAIL - {', '.join(shown)}{where}"


def _write_step_summary(text: str) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (see the module docstring for the exit status)."""
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.verdict.gate", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--records",
        type=Path,
        nargs="+",
        default=[Path("reports/records")],
        help="record files or directories of *.jsonl",
    )
    parser.add_argument("--baseline", type=Path, default=BASELINE_PATH)
    parser.add_argument(
        "--git-sha",
        default=None,
        help="the commit being gated (default: CKPTCOMPAT_GIT_SHA, else HEAD)",
    )
    parser.add_argument(
        "--propose-baseline",
        type=Path,
        metavar="FILE",
        help="write a baseline of the recorded outcomes for review; no gate",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="a team's pyproject.toml: gate its records against its baseline",
    )
    args = parser.parse_args(argv)
    if args.config is not None:
        from ckptcompat.harness.team import TeamConfigError, load

        try:
            team = load(args.config)
        except TeamConfigError as exc:
            print(f"gate: {exc}", file=sys.stderr)
            return 2
        args.records, args.baseline = [team.records], team.baseline
    missing = [str(p) for p in args.records if not p.exists()]
    if missing:
        print(
            f"gate: no records at {', '.join(missing)}; run `nox -s matrix` first", file=sys.stderr
        )
        return 2
    try:
        if args.propose_baseline is not None:
            records = list(results.read_records(args.records))
            previous = (
                load_baseline(args.baseline, strict=False) if args.baseline.is_file() else None
            )
            text = propose_baseline(records, previous, BASELINE_NOTE)
            try:  # a team's ckptcompat/ folder may not exist yet (no golden written)
                args.propose_baseline.parent.mkdir(parents=True, exist_ok=True)
                args.propose_baseline.write_text(text, encoding="utf-8")
            except OSError as exc:
                print(
                    f"gate: cannot write {args.propose_baseline}: {exc.strerror or exc}; "
                    "pass a writable path",
                    file=sys.stderr,
                )
                return 2
            print(
                f"gate: wrote {args.propose_baseline}; review every REVIEW reason before committing"
            )
            return 0
        verdict = judge_files(args.records, args.baseline, args.git_sha or results.git_sha())
    except (BaselineError, ValueError) as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 2
    text = summary_markdown(verdict)
    print(text)
    _write_step_summary(text)
    print(verdict_line(verdict))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
