"""``python -m ckptcompat.harness.verdict.report``: records -> the matrix, in every format CI shows.

Reads every ``*.jsonl`` record file (docs/design.md section 8) under ``--records``, merges them per
cell and attaches ``expected`` from the baseline (:mod:`ckptcompat.harness.verdict.matrix`), then
writes into ``--out``:

* ``matrix.json`` -- every cell with outcome, expected, reason, status and detail;
* ``matrix.md`` -- the summary table (printed too), then what does not pass and why;
* ``matrix.html`` -- the same, coloured, with the heatmap embedded;
* ``matrix.png`` -- the heatmap (:mod:`ckptcompat.harness.verdict.heatmap`; needs matplotlib);
* ``junit/matrix.xml`` -- one test case per cell (known failures as skipped).

How to read the table: a row is one scenario, artifact kind and loader; a column the
torch that consumed (for evaluations: the torch that resumed); an entry one mark per
producer, in the order of the header. The report never judges: ``gate`` does.
Exit status: 0, or 2 when the records or the baseline cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.heatmap import (
    LEGEND_ORDER,
    MARKS,
    NO_PRODUCER,
    STATUS_COLOURS,
    STATUS_LABELS,
    Panel,
    cell_order,
    mark,
    mark_colour,
    panels,
    render_png,
    square_status,
)
from ckptcompat.harness.verdict.matrix import (
    BASELINE_PATH,
    Baseline,
    BaselineError,
    MatrixCell,
    build,
    load_baseline,
    status_line,
)

__all__ = ["LEGEND", "main", "markdown", "write_report"]

_SHOWN = 60  # rows of the "differs" list in Markdown; HTML and JSON hold every cell
LEGEND = (
    "Marks, one per producer: "
    + "  ".join(f"`{MARKS[s]}` {STATUS_LABELS[s]}" for s in LEGEND_ORDER)
    + "  `·` not applicable"
)


def _axes(all_panels: Sequence[Panel]) -> tuple[list[str], list[str]]:
    producers: list[str] = []
    consumers: list[str] = []
    for panel in all_panels:
        producers += [p for p in panel.producers if p not in producers and p != NO_PRODUCER]
        consumers += [c for c in panel.consumers if c not in consumers]
    return sorted(producers, key=cell_order), sorted(consumers, key=cell_order)


def _entry(panel: Panel, producers: Sequence[str], consumer: str) -> str:
    # A file no cell produced (a team's checkpoint) has one mark, not one per producer.
    order = [NO_PRODUCER] if panel.producers == [NO_PRODUCER] else producers
    return "".join(mark(panel.grid.get((p, consumer), [])) for p in order)


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def markdown(
    cells: Sequence[MatrixCell],
    *,
    timing: dict[str, Any] | None = None,
    baseline: Path = BASELINE_PATH,
) -> str:
    """The Markdown report: the cells counted by status, the summary table, the legend,
    known failures by reason (from ``baseline``), the cells that differ, timing."""
    all_panels = panels(cells)
    producers, consumers = _axes(all_panels)
    differs = any(c.status != "ok" for c in cells)
    head = f"**{status_line(cells)}**" if differs else status_line(cells)
    files = any(p.producers == [NO_PRODUCER] for p in all_panels)
    lines = [
        "## ckptcompat matrix",
        "",
        f"{head} (`{_display(baseline)}`).",
        "",
        f"Producers (mark order): {' '.join(producers)}. "
        + ("Rows of checkpoint files no cell produced: one mark. " if files else "")
        + "Columns: consuming torch (evaluate rows: the torch that resumed).",
        "",
        "| check | " + " | ".join(consumers) + " |",
        "|---|" + "---|" * len(consumers),
    ]
    for panel in all_panels:
        row = [f"`{_entry(panel, producers, c)}`" for c in consumers]
        lines.append(f"| {panel.title} | " + " | ".join(row) + " |")
    lines += ["", LEGEND, ""]
    known: dict[str, list[MatrixCell]] = defaultdict(list)
    for cell in cells:
        if cell.status == "ok" and cell.outcome != "pass":
            known[cell.reason or "?"].append(cell)
    if known:
        lines += [f"### Known failures ({_display(baseline)})", ""]
        lines += [f"- {len(group)} cells: {reason}" for reason, group in sorted(known.items())]
        lines.append("")
    problems = [c for c in cells if c.status != "ok"]
    if problems:
        lines += [
            "### Differs from the baseline",
            "",
            "| cell | status | outcome | expected | detail |",
            "|---|---|---|---|---|",
        ]
        for cell in problems[:_SHOWN]:
            detail = cell.detail.replace("|", "\\|").replace("\n", " ")[:160]
            lines.append(
                f"| `{cell.key}` | {MARKS[cell.status]} {cell.status} | {cell.outcome or '-'} "
                f"| {cell.expected or '-'} | {detail} |"
            )
        if len(problems) > _SHOWN:
            lines.append(
                f"| ... {len(problems) - _SHOWN} more in matrix.json / matrix.html | | | | |"
            )
        lines.append("")
    if timing:
        lines += _timing_lines(timing)
    return "\n".join(lines)


def _timing_lines(timing: dict[str, Any]) -> list[str]:
    cells = list(timing["processes_per_cell"])
    lines = [
        "### Phase processes (seconds: wall / CPU)",
        "",
        "| phase | phase wall | " + " | ".join(cells) + " |",
        "|---|---|" + "---|" * len(cells),
    ]
    for phase, wall in timing["phase_wall_s"].items():
        per: dict[str, list[dict[str, Any]]] = {}
        for p in timing["processes"]:
            if p["phase"] == phase:
                per.setdefault(p["cell"], []).append(p)
        row = [", ".join(_process_times(p) for p in per[c]) if c in per else "-" for c in cells]
        lines.append(f"| {phase} | {wall:.1f} | " + " | ".join(row) + " |")
    counts = ", ".join(f"{c} {n}" for c, n in timing["processes_per_cell"].items())
    out = [*lines, "", f"Processes per cell: {counts}"]
    if "torch_processes_per_cell" in timing:
        ranks = ", ".join(f"{c} {n}" for c, n in timing["torch_processes_per_cell"].items())
        out.append(f"Torch processes per cell (torchrun launchers and their ranks): {ranks}")
    return [*out, ""]


def _process_times(process: dict[str, Any]) -> str:
    """``wall / CPU`` of one phase process, prefixed ``wsN:`` for a torchrun of N ranks."""
    times = f"{process['wall_s']:.1f} / {process['cpu_s']:.1f}"
    world_size = process.get("world_size", 1)
    return f"ws{world_size}: {times}" if process["phase"] == "dcp" else times


def _html(cells: Sequence[MatrixCell], md_title: str, png: Path | None) -> str:
    all_panels = panels(cells)
    producers, consumers = _axes(all_panels)
    differs = any(c.status != "ok" for c in cells)
    headline = STATUS_COLOURS["regression"] if differs else STATUS_COLOURS["ok"]
    out = [
        "<!doctype html><meta charset='utf-8'><title>ckptcompat matrix</title>",
        "<style>body{font-family:sans-serif}td,th{border:1px solid #999;padding:2px 6px;"
        "font-family:monospace}table{border-collapse:collapse}</style>",
        f"<h2>{html.escape(md_title)}</h2>",
        f"<p style='color:{headline};font-weight:bold'>{html.escape(status_line(cells))}</p>",
        f"<p>Producers (mark order): {' '.join(producers)}. {html.escape(LEGEND)}</p>",
        "<table><tr><th>check</th>" + "".join(f"<th>{c}</th>" for c in consumers) + "</tr>",
    ]
    for panel in all_panels:
        out.append(f"<tr><td>{html.escape(panel.title)}</td>")
        for consumer in consumers:
            square = [c for p in panel.producers for c in panel.grid.get((p, consumer), [])]
            out.append(
                f"<td style='{_style(square_status(square))}'>"
                f"{html.escape(_entry(panel, producers, consumer))}</td>"
            )
        out.append("</tr>")
    out.append("</table>")
    if png is not None and png.is_file():
        data = base64.b64encode(png.read_bytes()).decode()
        out.append(f"<p><img alt='heatmap' src='data:image/png;base64,{data}'></p>")
    out += [
        "<h3>Every cell</h3><table><tr><th>cell</th><th>outcome</th><th>expected</th>"
        "<th>status</th><th>reason / detail</th></tr>"
    ]
    for cell in cells:
        why = cell.reason or cell.detail
        out.append(
            f"<tr><td>{html.escape(cell.key)}</td><td style='{_style(square_status([cell]))}'>"
            f"{cell.outcome or '-'}</td><td>{cell.expected or '-'}</td><td>{cell.status}</td>"
            f"<td>{html.escape(why[:300])}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out) + "\n"


def _style(status: str | None) -> str:
    """The inline style of a table square: the heatmap's colour, a readable text colour."""
    colour = STATUS_COLOURS[status] if status else "#fff"
    return f"background:{colour};color:{mark_colour(status)}"


def _junit(cells: Sequence[MatrixCell]) -> ET.ElementTree:
    suites = ET.Element("testsuites", name="ckptcompat-matrix")
    by_scenario: dict[str, list[MatrixCell]] = defaultdict(list)
    for cell in cells:
        by_scenario[cell.scenario].append(cell)
    for scenario, group in sorted(by_scenario.items()):
        suite = ET.SubElement(suites, "testsuite", name=f"matrix.{scenario}", tests=str(len(group)))
        counts = Counter()
        for cell in group:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"matrix.{scenario}.{cell.kind}.{cell.loader}",
                name=cell.key,
                time=f"{cell.duration_s:.3f}",
            )
            message = f"outcome {cell.outcome or 'none'}, expected {cell.expected or 'none'}"
            if cell.status == "missing":
                ET.SubElement(case, "error", message=f"no record; {message}")
                counts["errors"] += 1
            elif cell.status != "ok":
                ET.SubElement(
                    case, "failure", message=f"{cell.status}: {message}"
                ).text = cell.detail
                counts["failures"] += 1
            elif cell.outcome != "pass":
                ET.SubElement(case, "skipped", message=f"known {cell.outcome}: {cell.reason}")
                counts["skipped"] += 1
        for name in ("failures", "errors", "skipped"):
            suite.set(name, str(counts[name]))
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_report(
    cells: Sequence[MatrixCell],
    out: Path,
    *,
    timing: dict[str, Any] | None = None,
    baseline: Path = BASELINE_PATH,
) -> dict[str, Path]:
    """Write every report file into ``out``; returns them by format. ``baseline`` is the
    file the cells were judged against (named in the Markdown). The PNG is left out, with
    a note on stderr, when matplotlib is missing."""
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "json": out / "matrix.json",
        "md": out / "matrix.md",
        "html": out / "matrix.html",
        "junit": out / "junit" / "matrix.xml",
    }
    summary = Counter(c.status for c in cells)
    written["json"].write_text(
        json.dumps(
            {
                "summary": dict(sorted(summary.items())),
                "timing": timing,
                "cells": [c.to_json() for c in cells],
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    text = markdown(cells, timing=timing, baseline=baseline)
    written["md"].write_text(text + "\n", encoding="utf-8")
    png: Path | None = None
    try:
        png = written["png"] = render_png(panels(cells), out / "matrix.png")
    except ImportError as exc:
        print(f"report: no heatmap ({exc}); install the report extra", file=sys.stderr)
    written["html"].write_text(_html(cells, "ckptcompat matrix", png), encoding="utf-8")
    written["junit"].parent.mkdir(parents=True, exist_ok=True)
    _junit(cells).write(written["junit"], encoding="utf-8", xml_declaration=True)
    return written


def _load(records: Iterable[Path], baseline: Path) -> list[MatrixCell]:
    # Lenient: a report must also show a baseline under review, or none yet (the gate is
    # strict about both).
    if baseline.is_file():
        base = load_baseline(baseline, strict=False)
    else:
        print(f"report: no baseline at {baseline}; every cell shows as unknown", file=sys.stderr)
        base = Baseline("", {}, {})
    return build(results.read_records(records), base)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.verdict.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--records",
        type=Path,
        nargs="+",
        required=True,
        help="record files or directories of *.jsonl",
    )
    parser.add_argument("--baseline", type=Path, default=BASELINE_PATH)
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--timing", type=Path, help="timing.json of the matrix run, if any")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.records if not p.exists()]
    if missing:
        print(
            f"report: no records at {', '.join(missing)}; run `nox -s matrix` first",
            file=sys.stderr,
        )
        return 2
    try:
        cells = _load(args.records, args.baseline)
    except (BaselineError, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    timing = None
    if args.timing is not None and args.timing.is_file():
        timing = json.loads(args.timing.read_text(encoding="utf-8"))
    written = write_report(cells, args.out, timing=timing, baseline=args.baseline)
    print(written["md"].read_text(encoding="utf-8"))
    print("report: wrote " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
