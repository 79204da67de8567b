"""The matrix report (harness/verdict/matrix.py, heatmap.py, report.py) on synthetic records.

Everything here is JSON, text and XML: no torch is involved, so these tests run in one
cell. The PNG needs matplotlib (the ``report`` extra), which the cell venvs do not
install; that one test skips without it, and ``nox -s matrix`` renders it every run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from ckptcompat.harness.verdict import heatmap, matrix, report
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.matrix import Baseline

pytestmark = pytest.mark.one_cell  # JSON, Markdown, XML: no torch involved

V24, V26 = "2.4.1", "2.6.0"


def _record(outcome: str = "pass", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        scenario="golden",
        artifact="g2",
        agent="mock",
        loader="naive",
        producer_torch=V24,
        consumer_torch=V26,
        producer_numpy="2.4.6",
        consumer_numpy="2.4.6",
    )
    fields.update(overrides)
    return results.make_record(outcome=outcome, **fields)  # type: ignore[arg-type]


def _key(**overrides: Any) -> str:
    return _record(**overrides)["cell_key"]


def _baseline(cells: dict[str, tuple[str, str | None]]) -> Baseline:
    return Baseline("note", {"why": "a known reason"}, cells)


def test_merge_keeps_the_worst_outcome_of_a_cell() -> None:
    """Guards a flaky or repeated check hiding its failure: records of one cell merge to
    the worst outcome (pass > skip > fail > error), with that record's detail."""
    merged = matrix.merge([_record("pass"), _record("error", detail="boom"), _record("fail")])
    assert merged[_key()] | {"duration_s": 0} == {
        "outcome": "error",
        "detail": "boom",
        "records": 3,
        "duration_s": 0,
    }


def test_statuses_against_the_baseline() -> None:
    """Guards the matrix mislabelling a cell: worse than expected is a regression, better
    an unexpected pass, a baseline cell without a record missing, a record without a
    baseline entry unknown, and a known failure with its reason ok."""
    keys = {name: _key(agent=name) for name in ("reg", "better", "missing", "known", "new")}
    base = _baseline(
        {
            keys["reg"]: ("pass", None),
            keys["better"]: ("fail", "why"),
            keys["missing"]: ("pass", None),
            keys["known"]: ("fail", "why"),
        }
    )
    got = [
        _record("fail", agent="reg"),
        _record("pass", agent="better"),
        _record("fail", agent="known"),
        _record("pass", agent="new"),
    ]
    cells = {c.agent: c for c in matrix.build(got, base)}
    assert {a: c.status for a, c in cells.items()} == {
        "reg": "regression",
        "better": "unexpected_pass",
        "missing": "missing",
        "known": "ok",
        "new": "unknown",
    }
    assert cells["known"].reason == "a known reason"


def test_numpy1_goldens_get_their_own_producer_row() -> None:
    """Guards t24 and t24np1 goldens (same torch 2.4.1) collapsing into one producer: the
    ``_numpy1`` artifact marker maps to the t24np1 cell and the plain artifact kind, also
    before a golden generation's ``_gen<N>`` suffix (seen: ``g1_numpy1_gen2`` drawn as a
    t24 panel of its own)."""
    parsed = matrix.parse_key(_key(artifact="g1_numpy1"))
    assert (parsed["producer"], parsed["kind"], parsed["consumer"]) == ("t24np1", "g1", "t26")
    assert matrix.parse_key(_key(artifact="g1"))["producer"] == "t24"
    parsed = matrix.parse_key(_key(artifact="g1_numpy1_gen2"))
    assert (parsed["producer"], parsed["kind"]) == ("t24np1", "g1_gen2")
    parsed = matrix.parse_key(_key(artifact="state_dict_gen2"))
    assert (parsed["producer"], parsed["kind"]) == ("t24", "state_dict_gen2")


def test_panels_per_artifact_kind_and_loader_and_evaluator() -> None:
    """Guards the heatmap's layout: one panel per (scenario, artifact kind, loader) --
    evaluations one per evaluating cell -- on a producer x consumer grid, producers in
    torch order with the numpy-1 variant after its plain cell, a later golden generation
    after the first, in the same kind order."""
    records = [
        _record(),
        _record(artifact="g2_numpy1"),
        _record(artifact="state_dict_gen2"),
        _record(artifact="g2_gen2"),
        _record(artifact="state_dict"),
        _record(loader="allowlist"),
        _record(scenario="evaluate", artifact="safe_v1", loader="safe", evaluator_torch=V24),
        _record(scenario="evaluate", artifact="safe_v1", loader="safe", evaluator_torch=V26),
    ]
    panels = heatmap.panels(matrix.build(records, _baseline({})))
    titles = [p.title for p in panels]
    assert titles == [
        "evaluate under t24 / safe",
        "evaluate under t26 / safe",
        "golden g2 / allowlist",
        "golden g2 / naive",
        "golden state_dict / naive",
        "golden g2_gen2 / naive",
        "golden state_dict_gen2 / naive",
    ]
    naive = panels[3]
    assert naive.producers == ["t24", "t24np1"] and naive.consumers == ["t26"]


def test_statuses_have_distinct_colours_marks_and_legend_entries() -> None:
    """Guards a heatmap where two statuses look alike: a regression was drawn in the same
    red as a known failure and had no legend entry (issue 20). Every status has its own
    colour, mark and label, red is the regression's alone, the legend lists every status,
    and the most severe status wins in a square."""
    statuses = list(heatmap.MARKS)
    colours = [heatmap.STATUS_COLOURS[s] for s in statuses] + [heatmap.EMPTY_COLOUR]
    assert set(heatmap.STATUS_COLOURS) == set(heatmap.STATUS_LABELS) == set(statuses)
    assert sorted(heatmap.LEGEND_ORDER) == sorted(statuses)
    assert len(set(colours)) == len(colours)
    assert len(set(heatmap.MARKS.values())) == len(heatmap.MARKS)
    for status in statuses:
        assert f"`{heatmap.MARKS[status]}` {heatmap.STATUS_LABELS[status]}" in report.LEGEND
    base = _baseline({_key(agent="a"): ("fail", "why"), _key(agent="b"): ("pass", None)})
    cells = matrix.build([_record("fail", agent="a"), _record("fail", agent="b")], base)
    assert heatmap.square_status(cells) == "regression"
    assert heatmap.square_colour(cells) == heatmap.STATUS_COLOURS["regression"]
    assert heatmap.mark(cells) == heatmap.MARKS["regression"]
    known = cells[:1]  # the same outcome, expected: grey, not the regression's red
    assert heatmap.square_status(known) == "expected"
    assert heatmap.square_colour(known) != heatmap.square_colour(cells)
    assert heatmap.mark([]) == "·" and heatmap.square_colour([]) == heatmap.EMPTY_COLOUR


def test_status_line_tells_a_red_matrix_from_a_green_one() -> None:
    """Guards a summary that hides regressions in a line of counts ("Cells: 724 ok, 4
    regression", issue 20): the status line leads with what differs from the baseline."""
    base = _baseline({_key(agent="a"): ("fail", "why"), _key(agent="b"): ("pass", None)})
    green = matrix.build([_record("fail", agent="a"), _record("pass", agent="b")], base)
    assert matrix.status_line(green) == "2 cells, all as the baseline expects"
    red = matrix.build([_record("fail", agent="a"), _record("error", agent="b")], base)
    assert matrix.status_line(red) == (
        "2 cells: 1 regression, 0 unexpected passes; 1 as the baseline expects"
    )
    text = report.markdown(red)
    assert "**2 cells: 1 regression, 0 unexpected passes;" in text.splitlines()[2]
    assert "**" not in report.markdown(green).splitlines()[2]


def test_markdown_table_marks_each_producer_and_lists_reasons() -> None:
    """Guards the printed table losing information: a row per panel, a column per consumer,
    one mark per producer in header order, known failures with their reason, regressions
    listed with their detail."""
    base = _baseline(
        {
            _key(): ("fail", "why"),
            _key(agent="recurrent"): ("fail", "why"),
            _key(producer_torch=V26): ("pass", None),
        }
    )
    records = [
        _record("fail"),
        _record("fail", agent="recurrent"),
        _record("error", producer_torch=V26, detail="exploded"),
    ]
    text = report.markdown(matrix.build(records, base), baseline=Path("fixtures/x.json"))
    assert "| golden g2 / naive | `✗!` |" in text
    assert "Producers (mark order): t24 t26." in text
    assert "### Known failures (fixtures/x.json)" in text
    assert "2 cells: a known reason" in text
    assert "| ! regression | error | pass | exploded |" in text and report.LEGEND in text


def test_team_checkpoint_rows_have_no_none_producer(tmp_path: Path) -> None:
    """Guards the team report (issue 20): checks of a team's own checkpoint files have no
    producing cell, and the heatmap's producer axis and the Markdown's producer list read
    ``None`` while each such row got one mark per producer; the known failures named our
    fixtures/baseline.json instead of the team's baseline."""
    team_file = dict(scenario="checkpoints", artifact="mlp_v3", loader="naive", producer_torch=None)
    records = [_record(), _record("fail", **team_file), _record(consumer_torch=V24, **team_file)]
    base = _baseline({_key(**team_file): ("fail", "why")})
    cells = matrix.build(records, base)
    panel = next(p for p in heatmap.panels(cells) if p.scenario == "checkpoints")
    assert panel.producers == [heatmap.NO_PRODUCER]
    team_baseline = tmp_path / "team" / "ckptcompat" / "baseline.json"
    text = report.markdown(cells, baseline=team_baseline)
    assert "None" not in text
    assert "Producers (mark order): t24." in text
    assert "| checkpoints mlp_v3 / naive | `?` | `✗` |" in text
    assert f"### Known failures ({team_baseline})" in text
    assert "fixtures/baseline.json" not in text


def test_write_report_files_and_junit_verdicts(tmp_path: Path) -> None:
    """Guards CI losing the matrix: JSON, Markdown, HTML and JUnit are written; the HTML
    colours a regression as the heatmap does; in JUnit a regression is a failure, a
    missing record an error, a known failure skipped."""
    base = _baseline(
        {
            _key(): ("fail", "why"),
            _key(agent="reg"): ("pass", None),
            _key(agent="gone"): ("pass", None),
        }
    )
    cells = matrix.build([_record("fail"), _record("fail", agent="reg")], base)
    written = report.write_report(cells, tmp_path)
    data = json.loads(written["json"].read_text(encoding="utf-8"))
    assert data["summary"] == {"missing": 1, "ok": 1, "regression": 1}
    page = written["html"].read_text(encoding="utf-8")
    assert "<table>" in page and f"background:{heatmap.STATUS_COLOURS['regression']}" in page
    cases = {c.get("name"): c for c in ET.parse(written["junit"]).getroot().iter("testcase")}
    assert cases[_key()].find("skipped") is not None
    assert cases[_key(agent="reg")].find("failure") is not None
    assert cases[_key(agent="gone")].find("error") is not None


def test_heatmap_png_is_rendered(tmp_path: Path) -> None:
    """Guards the heatmap failing to render (matplotlib API drift, glyphs) and the team
    example's layout faults (issue 20): a PNG is written, a one-row panel keeps square
    squares instead of being stretched to the panel's height, a long title is wrapped
    instead of cut, and a file no cell produced is labelled, not ``None``."""
    pytest.importorskip("matplotlib", reason="the report extra is not installed in this venv")
    from matplotlib import pyplot as plt

    long_name = "mlp__e3__s384__t0__sc0_with_a_long_name"
    team_file = dict(scenario="checkpoints", artifact=long_name, producer_torch=None)
    records = [
        _record(),
        _record(loader="allowlist"),
        *(_record(consumer_torch=v, **team_file) for v in (V24, V26)),
    ]
    panels = heatmap.panels(matrix.build(records, _baseline({})))
    path = heatmap.render_png(panels, tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig, ax = plt.subplots(figsize=(3.1, 2.9))
    try:
        heatmap._draw_panel(ax, panels[-1])
        assert ax.get_aspect() == 1.0  # square squares: a one-row panel is a strip
        assert [t.get_text() for t in ax.get_yticklabels()] == [heatmap.NO_PRODUCER]
        title = ax.get_title()
        assert "\n" in title  # wrapped, every character kept
        assert title.replace("\n", "").replace(" ", "") == panels[-1].title.replace(" ", "")
    finally:
        plt.close(fig)


def test_report_gate_and_driver_import_no_torch() -> None:
    """Guards the small report/gate venv (no torch) and the matrix driver breaking: none
    of these modules imports torch or numpy."""
    code = (
        "import sys, ckptcompat.harness.verdict.report, ckptcompat.harness.verdict.gate, "
        "ckptcompat.harness.run.driver, ckptcompat.harness.verdict.ci; "
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_cli_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards ``nox -s report``: reads a records directory, prints the Markdown table, and
    exits 2 (not a traceback) when there are no records."""
    records = tmp_path / "records"
    results.append_record(records / "a.jsonl", _record())
    assert (
        report.main(
            [
                "--records",
                str(records),
                "--out",
                str(tmp_path / "out"),
                "--baseline",
                str(tmp_path / "none.json"),
            ]
        )
        == 0
    )
    assert "| golden g2 / naive |" in capsys.readouterr().out
    assert report.main(["--records", str(tmp_path / "nothing")]) == 2
