"""The matrix: result records merged per cell and set against the committed baseline.

A *cell* is one ``cell_key`` (:func:`ckptcompat.harness.verdict.records.cell_key`). Records of the
same cell merge to the worst outcome (``pass > skip > fail > error``, docs/design.md section 8).
``fixtures/baseline.json`` names the expected outcome of every cell, and every expected
non-pass a reason; each cell then gets a *status*:

* ``ok`` -- outcome equals expected (a pass, or a known failure with its reason);
* ``regression`` -- worse than expected;
* ``unexpected_pass`` -- better than expected (fix the baseline, in a commit saying why);
* ``missing`` -- in the baseline, but no record;
* ``unknown`` -- a record of a cell the baseline does not know.

Baseline format (one cell per line, so a review diff shows each change)::

    {"schema_version": 1, "note": "...", "reasons": {"<id>": "<why>", ...},
     "cells": {"<cell_key>": {"expected": "fail", "reason": "<id>"}, ...}}

No torch, no numpy: report and gate run in a small venv.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ckptcompat import locator
from ckptcompat.harness import versions
from ckptcompat.harness.verdict.records import OUTCOMES, Record

__all__ = [
    "BASELINE_PATH",
    "BASELINE_SCHEMA",
    "RANK",
    "REVIEW",
    "STATUSES",
    "STATUS_NOUNS",
    "Baseline",
    "BaselineError",
    "MatrixCell",
    "build",
    "cell_label",
    "dump_baseline",
    "load_baseline",
    "merge",
    "parse_key",
    "propose_baseline",
    "status_line",
]

#: The committed baseline of a source checkout.
BASELINE_PATH: Path = locator.BASELINE_PATH
BASELINE_SCHEMA = 1
#: Outcome rank, best first (docs/design.md section 8: pass > skip > fail > error).
RANK: dict[str, int] = {outcome: i for i, outcome in enumerate(OUTCOMES)}
STATUSES: tuple[str, ...] = ("ok", "regression", "unexpected_pass", "missing", "unknown")
#: Each status that differs from the baseline as counted in a summary: (one, many).
STATUS_NOUNS: dict[str, tuple[str, str]] = {
    "regression": ("regression", "regressions"),
    "unexpected_pass": ("unexpected pass", "unexpected passes"),
    "missing": ("missing record", "missing records"),
    "unknown": ("not in the baseline", "not in the baseline"),
}
#: Reason id of a proposed entry that nobody has explained yet; the gate refuses it.
REVIEW = "REVIEW"
#: A golden artifact: ``<kind>[_numpy1][_gen<N>]`` (harness.golden_records.artifact_name).
_ARTIFACT_RE = re.compile(r"^(?P<kind>.+?)(?P<numpy1>_numpy1)?(?P<generation>_gen\d+)?$")


class BaselineError(Exception):
    """The baseline file is missing, malformed, or has an expected failure without a reason."""


@dataclass(frozen=True)
class Baseline:
    """The parsed baseline: ``cells`` maps cell_key -> (expected outcome, reason id or None)."""

    note: str
    reasons: dict[str, str]
    cells: dict[str, tuple[str, str | None]]

    def reason_text(self, key: str) -> str | None:
        """The reason of cell ``key``'s expected outcome, as text (None for a pass)."""
        entry = self.cells.get(key)
        if entry is None or entry[1] is None:
            return None
        return self.reasons.get(entry[1], entry[1])


@dataclass(frozen=True)
class MatrixCell:
    """One cell of the matrix.

    Attributes:
        key, scenario, kind, agent, loader: from the cell key (``kind``: the artifact
            without its ``_numpy1`` marker, which moves into ``producer``; a golden
            generation's ``_gen<N>`` suffix stays).
        producer, consumer, evaluator: cell ids (``t24np1`` for numpy-1 goldens), or the
            torch version when no cell pins it; None for an absent stage.
        outcome: the merged outcome, None without a record.
        expected, reason: from the baseline (None when it does not know the cell).
        status: one of :data:`STATUSES`.
        detail: the worst record's detail. records: how many records merged.
        duration_s: summed over the merged records (seconds).
    """

    key: str
    scenario: str
    kind: str
    agent: str
    loader: str
    producer: str | None
    consumer: str | None
    evaluator: str | None
    outcome: str | None
    expected: str | None
    reason: str | None
    status: str
    detail: str
    records: int
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        """The cell as JSON primitives."""
        return asdict(self)


def cell_label(torch_version: str | None, numpy1: bool = False) -> str | None:
    """The id of the cell pinning ``torch_version`` (numpy-1 variant if ``numpy1``)."""
    if torch_version is None:
        return None
    cell = versions.cell_for_torch(torch_version, 1 if numpy1 else None)
    return cell.id if cell is not None else torch_version


def parse_key(key: str) -> dict[str, Any]:
    """Split a cell key into scenario, kind, agent, loader and producer/consumer/evaluator ids.

    Raises:
        ValueError: not ``scenario/artifact/agent/loader/p->c->e``.
    """
    parts = key.split("/")
    chain = parts[-1].split("->") if len(parts) == 5 else []
    if len(chain) != 3:
        raise ValueError(
            f"not a cell key: {key!r} (expected scenario/artifact/agent/loader/p->c->e)"
        )
    scenario, artifact, agent, loader = parts[:4]
    match = _ARTIFACT_RE.match(artifact)
    if match is None:
        raise ValueError(f"not a cell key: {key!r} (empty artifact)")
    numpy1 = match["numpy1"] is not None
    stages = [None if v == "-" else v for v in chain]
    return {
        "scenario": scenario,
        "kind": match["kind"] + (match["generation"] or ""),
        "agent": agent,
        "loader": loader,
        "producer": cell_label(stages[0], numpy1),
        "consumer": cell_label(stages[1]),
        "evaluator": cell_label(stages[2]),
    }


def merge(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """Records per cell_key -> ``{outcome, detail, records, duration_s}``, worst outcome kept."""
    merged: dict[str, dict[str, Any]] = {}
    for record in records:
        outcome = record.outcome.value
        seen = merged.get(record.cell_key)
        if seen is None:
            merged[record.cell_key] = {
                "outcome": outcome,
                "detail": record.detail,
                "records": 1,
                "duration_s": float(record.duration_s),
            }
            continue
        seen["records"] += 1
        seen["duration_s"] += float(record.duration_s)
        if RANK[outcome] > RANK[seen["outcome"]]:
            seen["outcome"], seen["detail"] = outcome, record.detail
    return merged


def _status(outcome: str | None, expected: str | None) -> str:
    if expected is None:
        return "unknown"
    if outcome is None:
        return "missing"
    if RANK[outcome] > RANK[expected]:
        return "regression"
    if RANK[outcome] < RANK[expected]:
        return "unexpected_pass"
    return "ok"


def build(records: Iterable[Record], baseline: Baseline) -> list[MatrixCell]:
    """Every cell of the records and of the baseline, sorted by key, with its status."""
    merged = merge(records)
    cells = []
    for key in sorted(set(merged) | set(baseline.cells)):
        got = merged.get(key, {})
        expected = baseline.cells.get(key, (None, None))[0]
        outcome = got.get("outcome")
        cells.append(
            MatrixCell(
                key=key,
                **parse_key(key),
                outcome=outcome,
                expected=expected,
                reason=baseline.reason_text(key),
                status=_status(outcome, expected),
                detail=got.get("detail", "" if outcome else "no record"),
                records=got.get("records", 0),
                duration_s=round(got.get("duration_s", 0.0), 3),
            )
        )
    return cells


def status_line(cells: Sequence[MatrixCell]) -> str:
    """The cells counted by status, problems first, e.g. ``"728 cells: 4 regressions, 0
    unexpected passes; 724 as the baseline expects"`` or ``"728 cells, all as the baseline
    expects"``. Regressions and unexpected passes are always counted, the rest when present.
    """
    if not cells:
        return "no cells: no record and no baseline entry"
    counts = Counter(c.status for c in cells)
    total = f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
    if counts["ok"] == len(cells):
        return f"{total}, all as the baseline expects"
    shown = [
        f"{counts[status]} {one if counts[status] == 1 else many}"
        for status, (one, many) in STATUS_NOUNS.items()
        if counts[status] or status in ("regression", "unexpected_pass")
    ]
    return f"{total}: {', '.join(shown)}; {counts['ok']} as the baseline expects"


# --------------------------------------------------------------------------- the baseline
def load_baseline(path: str | os.PathLike[str] = BASELINE_PATH, *, strict: bool = True) -> Baseline:
    """Read and validate a baseline file.

    With ``strict=False`` (the report: show a baseline under review) entries whose reason
    is missing or unreviewed are returned as they are instead of refused.

    Raises:
        BaselineError: missing, not JSON, another schema version, an unknown outcome, or
            (strict) an expected non-pass without a known reason or still marked REVIEW.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(
            f"no baseline at {path}; propose one from the records with `nox -s gate -- "
            f"--propose-baseline {path}` (a team's: `nox -s gate -- --config "
            f"PATH/pyproject.toml --propose-baseline {path}`) and review it"
        ) from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path} is not JSON: {exc}") from None
    if data.get("schema_version") != BASELINE_SCHEMA:
        raise BaselineError(
            f"{path}: schema_version {data.get('schema_version')!r}, "
            f"this ckptcompat reads {BASELINE_SCHEMA}"
        )
    reasons = {str(k): str(v) for k, v in data.get("reasons", {}).items()}
    cells: dict[str, tuple[str, str | None]] = {}
    problems = []
    for key, entry in data.get("cells", {}).items():
        expected, reason = entry.get("expected"), entry.get("reason")
        if expected not in RANK:
            problems.append(f"{key}: expected {expected!r} is not one of {', '.join(OUTCOMES)}")
            continue
        if expected != "pass" and (reason not in reasons or reason == REVIEW):
            problems.append(
                f"{key}: expected {expected} needs a reviewed reason (found {reason!r})"
            )
        cells[key] = (expected, reason)
    unreviewed = [k for k, v in reasons.items() if k == REVIEW or v.startswith(REVIEW)]
    problems += [f"reason {k!r} is not reviewed yet" for k in unreviewed]
    if problems and strict:
        shown = "; ".join(problems[:10]) + (
            f"; ... {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise BaselineError(f"{path}: {shown}")
    return Baseline(str(data.get("note", "")), reasons, cells)


def dump_baseline(
    note: str, reasons: Mapping[str, str], cells: Mapping[str, tuple[str, str | None]]
) -> str:
    """The baseline file's text: sorted, one cell per line."""
    lines = [
        "{",
        f'  "schema_version": {BASELINE_SCHEMA},',
        f'  "note": {json.dumps(note)},',
        '  "reasons": {',
    ]
    reason_items = sorted(reasons.items())
    lines += [
        f"    {json.dumps(k)}: {json.dumps(v)}" + ("," if i < len(reason_items) - 1 else "")
        for i, (k, v) in enumerate(reason_items)
    ]
    lines += ["  },", '  "cells": {']
    items = sorted(cells.items())
    for i, (key, (expected, reason)) in enumerate(items):
        entry = {"expected": expected} | ({"reason": reason} if reason else {})
        lines.append(
            f"    {json.dumps(key)}: {json.dumps(entry)}" + ("," if i < len(items) - 1 else "")
        )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def propose_baseline(records: Iterable[Record], previous: Baseline | None, note: str) -> str:
    """A baseline expecting exactly the recorded outcomes, for review.

    A cell keeps its previous reason when its expected outcome is unchanged; any other
    non-pass gets the reason id :data:`REVIEW`, which :func:`load_baseline` refuses until
    someone writes down why.
    """
    reasons = dict(previous.reasons) if previous else {}
    cells: dict[str, tuple[str, str | None]] = {}
    for key, got in merge(records).items():
        outcome = got["outcome"]
        before = previous.cells.get(key) if previous else None
        if outcome == "pass":
            cells[key] = ("pass", None)
        elif before is not None and before[0] == outcome and before[1]:
            cells[key] = (outcome, before[1])
        else:
            cells[key] = (outcome, REVIEW)
            reasons.setdefault(REVIEW, f"{REVIEW}: write down why these cells do not pass")
    used = {reason for _, reason in cells.values() if reason}
    return dump_baseline(note, {k: v for k, v in reasons.items() if k in used}, cells)
