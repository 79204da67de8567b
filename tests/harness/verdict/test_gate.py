"""The release gate (harness/verdict/gate.py) and the committed baseline (fixtures/baseline.json).

Records are synthetic JSON; no torch is involved, so these tests run in one cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ckptcompat.harness import versions
from ckptcompat.harness.run import scenarios
from ckptcompat.harness.verdict import gate, matrix
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.matrix import Baseline, BaselineError

pytestmark = pytest.mark.one_cell  # JSON only; no torch involved

SHA = "a" * 40


def _record(outcome: str = "pass", *, sha: str = SHA, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        scenario="golden",
        artifact="g2",
        agent="mock",
        loader="naive",
        producer_torch="2.4.1",
        consumer_torch="2.6.0",
    )
    fields.update(overrides)
    record = results.make_record(outcome=outcome, **fields)  # type: ignore[arg-type]
    return record | {"git_sha": sha}


def _key(**overrides: Any) -> str:
    return _record(**overrides)["cell_key"]


BASE = Baseline(
    "note",
    {"naive26": "naive torch.load of a whole-pickle agent on >= 2.6"},
    {_key(): ("fail", "naive26"), _key(agent="recurrent"): ("pass", None)},
)


def _kinds(records: list[dict[str, Any]], base: Baseline = BASE) -> list[str]:
    return [p.kind for p in gate.judge(records, base, SHA).problems]


def test_gate_passes_when_every_cell_matches_the_baseline() -> None:
    """Guards false alarms: known failures with reasons and passes, all recorded, pass."""
    assert _kinds([_record("fail"), _record("pass", agent="recurrent")]) == []


def test_gate_fails_on_a_regression() -> None:
    """Guards a cell getting worse (pass -> fail, fail -> error) slipping through."""
    assert _kinds([_record("error"), _record("fail", agent="recurrent")]) == ["regression"] * 2


def test_gate_fails_on_an_unexpected_pass() -> None:
    """Guards a fixed cell going unnoticed: an expected failure that now passes fails the
    gate until the baseline is updated in a commit that says why."""
    assert _kinds([_record("pass"), _record("pass", agent="recurrent")]) == ["unexpected_pass"]


def test_gate_fails_on_a_baseline_cell_without_record() -> None:
    """Guards a check that silently stopped running (a phase job that never ran in CI)."""
    assert _kinds([_record("fail")]) == ["missing"]


def test_gate_fails_on_a_record_of_an_unknown_cell() -> None:
    """Guards new checks landing unreviewed: a record the baseline has no entry for."""
    records = [_record("fail"), _record("pass", agent="recurrent"), _record(agent="new")]
    assert _kinds(records) == ["unknown"]


def test_gate_fails_on_records_from_another_git_sha() -> None:
    """Guards stale results (an old reports/records, an artifact of another run) passing
    for this commit: they fail the gate and cannot stand in for a missing fresh record."""
    records = [_record("fail"), _record("pass", agent="recurrent", sha="b" * 40)]
    assert _kinds(records) == ["foreign_sha", "missing"]


def test_baseline_refuses_expected_failures_without_reviewed_reason(tmp_path: Path) -> None:
    """Guards hand-waved baselines: a non-pass entry needs a reason from the reasons table,
    and a proposed entry still marked REVIEW is refused."""
    path = tmp_path / "baseline.json"
    path.write_text(matrix.dump_baseline("n", {}, {_key(): ("fail", None)}), encoding="utf-8")
    with pytest.raises(BaselineError, match="needs a reviewed reason"):
        matrix.load_baseline(path)
    proposed = matrix.propose_baseline([_record("fail"), _record("error", agent="x")], BASE, "n")
    path.write_text(proposed, encoding="utf-8")
    with pytest.raises(BaselineError, match="REVIEW"):
        matrix.load_baseline(path)
    lenient = matrix.load_baseline(path, strict=False)
    assert lenient.cells[_key()] == ("fail", "naive26")  # a reviewed reason is kept
    assert lenient.cells[_key(agent="x")] == ("error", matrix.REVIEW)


def test_verdict_line_counts_every_problem_kind() -> None:
    """Guards a verdict that reads green on a red run (issue 20: "successful" with 4
    regressions in the report): the line says PASS only when the gate passes, and a FAIL
    counts regressions and unexpected passes always, other problems when present."""
    green = gate.judge([_record("fail"), _record("pass", agent="recurrent")], BASE, SHA)
    assert gate.verdict_line(green, see="r/matrix.md") == (
        "VERDICT: PASS - all 2 cells as the baseline expects (see r/matrix.md)"
    )
    red = gate.judge([_record("error"), _record("fail", agent="recurrent")], BASE, SHA)
    assert gate.verdict_line(red) == "VERDICT: FAIL - 2 regressions, 0 unexpected passes"
    stale = gate.judge([_record("fail"), _record(agent="recurrent", sha="b" * 40)], BASE, SHA)
    assert gate.verdict_line(stale) == (
        "VERDICT: FAIL - 0 regressions, 0 unexpected passes, 1 missing record, "
        "1 set of records from another commit"
    )


def test_main_exit_codes_and_step_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards CI wiring: exit 0 on pass, 1 on failure, 2 without records or with an
    unreadable baseline, the verdict appended to $GITHUB_STEP_SUMMARY and printed last."""
    baseline = tmp_path / "baseline.json"
    baseline.write_text(matrix.dump_baseline("n", BASE.reasons, BASE.cells), encoding="utf-8")
    records = tmp_path / "records"
    results.append_record(records / "a.jsonl", _record("fail"))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    args = ["--records", str(records), "--baseline", str(baseline), "--git-sha", SHA]
    assert gate.main(args) == 1
    assert "gate: FAILED" in summary.read_text(encoding="utf-8")
    assert capsys.readouterr().out.splitlines()[-1].startswith("VERDICT: FAIL - ")
    results.append_record(records / "a.jsonl", _record("pass", agent="recurrent"))
    assert gate.main(args) == 0
    assert "gate: PASSED" in summary.read_text(encoding="utf-8")
    assert capsys.readouterr().out.splitlines()[-1].startswith("VERDICT: PASS - ")
    assert gate.main(["--records", str(tmp_path / "none"), "--baseline", str(baseline)]) == 2
    assert gate.main([*args[:2], "--baseline", str(tmp_path / "missing.json")]) == 2


def test_committed_baseline_is_reviewed_and_expects_every_safe_cell_to_pass() -> None:
    """Guards the committed baseline: it loads strictly (every expected failure has a
    reviewed reason, the note says how entries change), it expects every chain of every
    default cell (train X, resume Y, evaluate Z, both agents) and every safe-format cell
    to pass (docs/design.md: all safe-format cells pass)."""
    base = matrix.load_baseline()
    assert "commit" in base.note and "why" in base.note
    pins = {c.id: c.torch for c in versions.DEFAULT}
    for chain in scenarios.chains(scenarios.DEFAULT_CELLS):
        p, c, e = pins[chain.producer], pins[chain.consumer], pins[str(chain.evaluator)]
        for key in (
            results.cell_key("train", "safe_v1", chain.agent, "safe", p, p),
            results.cell_key("resume", "safe_v1", chain.agent, "safe", p, c),
            results.cell_key("evaluate", "safe_v1", chain.agent, "safe", p, c, e),
        ):
            assert base.cells.get(key) == ("pass", None), key
    safe = {k: v for k, v in base.cells.items() if matrix.parse_key(k)["loader"] == "safe"}
    assert safe and {v[0] for v in safe.values()} == {"pass"}
    producers = {matrix.parse_key(k)["producer"] for k in base.cells}
    assert producers == {c.id for c in versions.GOLDEN_PRODUCERS}


def test_propose_baseline_into_a_folder_not_made_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards `nox -s gate -- --config PATH --propose-baseline PATH/ckptcompat/baseline.json`
    raising FileNotFoundError (a traceback, exit 1) when the team's ckptcompat/ folder did
    not exist yet, which it does not before the first golden (a new user's trial,
    2026-12-07): the folder is made; a path that cannot be written is one line, exit 2."""
    records = tmp_path / "records"
    results.append_record(records / "a.jsonl", _record("fail"))
    target = tmp_path / "team" / "ckptcompat" / "baseline.json"
    args = ["--records", str(records), "--baseline", str(target)]
    assert gate.main([*args, "--propose-baseline", str(target)]) == 0
    assert _key() in matrix.load_baseline(target, strict=False).cells
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    capsys.readouterr()
    assert gate.main([*args, "--propose-baseline", str(blocker / "baseline.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gate: cannot write ") and "Traceback" not in err


def test_the_matrix_hint_without_a_baseline_runs_as_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the matrix's "no baseline" hint (a new user's trial, 2026-12-07): it printed
    `python -m ckptcompat.harness.verdict.gate --propose-baseline` (an argparse error), then
    a generic command with PATH placeholders and, for a team, the non-team command first
    (which fails: no records at reports/records). The verdict line now gives the one
    command for this run, --config filled in, and that command proposes the baseline."""
    from ckptcompat.harness.run import driver

    records = tmp_path / "records"
    results.append_record(records / "a.jsonl", _record("fail"))
    target = tmp_path / "team" / "ckptcompat" / "baseline.json"
    config = tmp_path / "team" / "pyproject.toml"
    assert not driver._verdict(records, target, SHA, "reports/matrix.md", config)
    line = capsys.readouterr().out.strip()
    command = f"nox -s gate -- --config {config} --propose-baseline {target}"
    assert line.startswith("VERDICT: FAIL - the run cannot be judged: no baseline at ")
    assert f"`{command}`" in line and "PATH" not in line
    assert not driver._verdict(records, target, SHA, "reports/matrix.md")
    assert f"`nox -s gate -- --propose-baseline {target}`" in capsys.readouterr().out
    # What that session runs for a team (noxfile gate: the team's records and baseline).
    assert gate.main(["--records", str(records), "--propose-baseline", str(target)]) == 0
    assert target.is_file()
