"""The benchmark report's bookkeeping (benchmarks/bench.py, _report.py, _tests_time.py).

Nothing here times anything: these guard how figures are judged and carried, so that
BENCHMARKS.md never shows a goal as met that was not measured, or mixes machines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.one_cell

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _report  # noqa: E402
import _tests_time  # noqa: E402
import bench  # noqa: E402

_JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="{cell}" time="{time}" timestamp="2026-12-06T18:00:00">
<testcase classname="a" name="ok" time="1"/>
<testcase classname="a" name="skip" time="0"><skipped message="x"/></testcase>
{bad}
</testsuite></testsuites>
"""


def _write_junit(folder: Path, cell: str, time: float, bad: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"tests-{cell}.xml").write_text(_JUNIT.format(cell=cell, time=time, bad=bad))


def _cells() -> list[str]:
    return [c.id for c in _tests_time.versions.DEFAULT]


def test_tests_goal_met_only_when_every_cell_passed_in_time(tmp_path: Path) -> None:
    """Guards: the suite-time goal judged from JUnit sums every default cell's pytest time
    and is met only when all four reports exist and nothing failed."""
    for cell in _cells():
        _write_junit(tmp_path, cell, 100.0)
    t = _tests_time.bench_tests(tmp_path, tmp_path, tmp_path / "log")
    assert t["seconds"] == pytest.approx(100.0 * len(_cells()))
    assert t["met"] is True
    assert all(c["tests"] == 2 and c["skipped"] == 1 for c in t["cells"].values())


def test_tests_goal_not_met_with_a_failure_or_a_missing_cell(tmp_path: Path) -> None:
    """Guards: a fast suite that failed, or that lacks a cell, shown as meeting the goal."""
    cells = _cells()
    for cell in cells[1:]:
        _write_junit(tmp_path, cell, 1.0)
    missing = _tests_time.bench_tests(tmp_path, tmp_path, tmp_path / "log")
    assert missing["met"] is False
    row = _report.goal_rows({"tests": missing})[-1]
    assert row["met"] is False and f"no report for {cells[0]}" in row["measured"]
    _write_junit(
        tmp_path, cells[0], 1.0, bad='<testcase classname="a" name="f"><failure/></testcase>'
    )
    failed = _tests_time.bench_tests(tmp_path, tmp_path, tmp_path / "log")
    assert failed["met"] is False
    assert "1 failed" in _report.goal_rows({"tests": failed})[-1]["measured"]


def test_unmeasured_goals_are_listed_not_judged() -> None:
    """Guards: a section left out of --sections silently dropped from the goal table."""
    rows = _report.goal_rows({})
    assert [r["met"] for r in rows] == [None] * len(rows)
    assert any("nox -s tests" in r["figure"] for r in rows)
    assert {"manager", "doctor", "matrix", "ppo"} <= {
        r["figure"].split("`")[1] for r in rows if r["figure"].startswith("section")
    }


def _report_of(machine: dict, **sections: object) -> dict:
    return {
        "command": "bench.py",
        "machine": {"started_at": "2026-12-01T00:00:00+00:00", "load_average_at_start": [0.1]}
        | machine,
        "measured": {},
        **sections,
    }


def test_sections_not_run_are_kept_only_from_the_same_machine(tmp_path: Path) -> None:
    """Guards: `--sections doctor` dropping the other sections' figures, and figures from
    another CPU or numerics fingerprint shown as if measured on this machine."""
    here = {"cpu_model": "AMD EPYC", "numerics": {"aten_capability": "AVX512", "threads": 1}}
    old = tmp_path / "bench.json"
    old.write_text(json.dumps(_report_of(here, ppo={"rows": []}, manager=[{"x": 1}])))
    now = _report_of(here)
    bench._carry_over(now, old, {"manager"})
    assert now["ppo"] == {"rows": []} and "manager" not in now
    assert now["measured"]["ppo"]["started_at"] == "2026-12-01T00:00:00+00:00"
    other = _report_of({**here, "numerics": {"aten_capability": "AVX2", "threads": 1}})
    bench._carry_over(other, old, {"manager"})
    assert "ppo" not in other and other["measured"] == {}


def _curves(ours: list[float], theirs: list[float], speed: float) -> dict:
    def side(finals: list[float], steps_per_s: float) -> list[dict]:
        return [
            {
                "seed": i,
                "points": [{"env_steps": 2048, "return": r}],
                "env_steps_per_s": steps_per_s,
            }
            for i, r in enumerate(finals)
        ]

    return {
        "env_steps": 2048,
        "agent": "ckptcompat.agents.split_lstm.SplitLSTMAgent",
        "ours": side(ours, 100.0 * speed),
        "theirs": side(theirs, 100.0),
    }


def test_recurrent_goal_needs_every_seed_not_the_median() -> None:
    """Guards the recurrent goal ("return >= RecurrentPPO's on each of 3 seeds") judged on
    the median seed, which passes with one seed behind."""
    assert _report.curves_row(_curves([200, 300, 400], [100, 250, 390], 1.2))["met"] is True
    behind = _report.curves_row(_curves([200, 300, 400], [100, 350, 390], 1.2))
    assert behind["met"] is False and "s1 300.0 / 350.0" in behind["measured"]
    assert _report.curves_row(_curves([200, 300, 400], [100, 250, 390], 0.9))["met"] is False


def _matrix_run(extra: tuple[tuple[str, str, int], ...] = ()) -> dict[str, Any]:
    """One matrix run as the driver's timing.json has it: train/resume/evaluate per cell,
    the remote phase's one process in t24, DCP at world sizes 1 and 2 per cell."""
    cells = ("t24", "t25")
    slots = [(ph, c, 1) for ph in ("train", "resume", "evaluate") for c in cells]
    slots += [("remote", "t24", 1)] + [("dcp", c, ws) for c in cells for ws in (1, 2)]
    processes = [
        {"phase": ph, "cell": c, "world_size": ws, "wall_s": 1.0 + ws, "cpu_s": 1.0}
        for ph, c, ws in [*slots, *extra]
    ]
    return {
        "wall_s": 100.0,
        "phase_wall_s": dict.fromkeys(("train", "resume", "evaluate", "remote", "dcp"), 5.0),
        "processes_per_cell": {c: sum(p["cell"] == c for p in processes) for c in cells},
        "processes": processes,
    }


def test_matrix_processes_are_judged_per_phase_and_world_size() -> None:
    """Guards the matrix's process goal judged as '<= 3 per cell' (written when the matrix
    had three phases): with the remote and DCP phases every cell showed 'no'. The goal is
    README's one process per cell per phase (and per DCP world size); a phase starting a
    cell twice misses it. Also guards the per-cell table pooling DCP's two world sizes into
    one median and shifting columns where a cell has no remote process."""
    import _matrix

    fine = {k: _matrix.summarise([_matrix_run()]) for k in ("cold", "warm")}
    fine["runs"] = {"cold": [_matrix_run()], "warm": [_matrix_run()]}
    row = next(r for r in _report.goal_rows({"matrix": fine}) if "phase processes" in r["figure"])
    assert row["met"] is True and row["measured"] == "t24 6 for 6, t25 5 for 5"
    table = "\n".join(_report._matrix_lines(fine))
    t25 = "| t25 | warm | 5 for 5 (yes) | 2.0 / 1.0 | 2.0 / 1.0 | 2.0 / 1.0 | - | "
    assert t25 + "ws1: 2.0 / 1.0, ws2: 3.0 / 1.0 |" in table

    twice = {k: _matrix.summarise([_matrix_run((("train", "t25", 1),))]) for k in ("cold", "warm")}
    row = next(r for r in _report.goal_rows({"matrix": twice}) if "phase processes" in r["figure"])
    assert row["met"] is False and "t25 6 for 5" in row["measured"]
