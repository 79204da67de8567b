"""Cross-version scenarios (harness/run/: scenarios, driver, phases, steps; golden/phase.py).

The plan is checked without torch; the phases run for real, in this cell, as the matrix
runs them in every cell: one process per phase, with a process counter on every Python
process started (a ``sitecustomize`` on PYTHONPATH that logs each interpreter's argv).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from ckptcompat.checkpoint.layout import RUN_NAME_RE
from ckptcompat.evaluation.stats_db import SimulationStatsDB
from ckptcompat.harness import versions
from ckptcompat.harness.golden import phase as phase_golden
from ckptcompat.harness.run import driver, scenarios
from ckptcompat.harness.run.scenarios import AGENTS, PHASES, Chain, Layout
from ckptcompat.harness.verdict import records as results

CELLS = scenarios.DEFAULT_CELLS
# A sitecustomize: every Python started with it on PYTHONPATH logs its command line.
_HOOK = (
    "import os, sys\n"
    'with open(os.environ["CKPTCOMPAT_PROCESS_LOG"], "a") as log:\n'
    '    log.write(" ".join(sys.orig_argv) + "\\n")\n'
)


def _this_cell() -> str:
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell is not None:
        return cell
    here = versions.cell_for_torch(str(torch.__version__))
    if here is None:
        pytest.skip(f"torch {torch.__version__} is no cell of versions.py")
    return here.id


@pytest.mark.one_cell  # pure planning, no torch involved
def test_every_chain_runs_each_phase_exactly_once_in_its_cell() -> None:
    """Guards a chain dropped from or doubled in a phase, or run under the wrong torch:
    over all cells, train covers every (agent, X, Y) once under X, resume every one once
    under Y, and evaluate every (agent, X, Y, Z) once under Z."""
    for phase in PHASES:
        seen = Counter()
        for cell in CELLS:
            for chain in scenarios.steps(phase, cell, CELLS):
                seen[chain] += 1
                stage = {"train": chain.producer, "resume": chain.consumer}.get(
                    phase, chain.evaluator
                )
                assert stage == cell, (phase, chain)
        expected = (
            scenarios.chains(CELLS)
            if phase == "evaluate"
            else {Chain(c.agent, c.producer, c.consumer) for c in scenarios.chains(CELLS)}
        )
        assert set(seen) == set(expected) and set(seen.values()) == {1}, phase
    assert len(scenarios.chains(CELLS)) == len(AGENTS) * len(CELLS) ** 3


@pytest.mark.one_cell  # pure planning, no torch involved
def test_runs_have_unique_valid_policy_keys() -> None:
    """Guards two chains sharing a run name, i.e. one (policy_key, policy_version) in a
    stats-DB shard for two different policies (runs resumed under different torches)."""
    runs = {Chain(c.agent, c.producer, c.consumer).run for c in scenarios.chains(CELLS)}
    assert len(runs) == len(AGENTS) * len(CELLS) ** 2
    assert all(RUN_NAME_RE.match(run) for run in runs)


@pytest.mark.one_cell  # pure planning, no torch involved
def test_steps_refuse_unknown_phase_or_cell() -> None:
    """Guards a typo in CI (``phase(trian, t24)``) silently running nothing."""
    with pytest.raises(ValueError, match="unknown phase"):
        scenarios.steps("trian", "t24", CELLS)
    with pytest.raises(ValueError, match="not among"):
        scenarios.steps("train", "t27", CELLS)


@pytest.mark.one_cell  # reads test_golden.py's source only
def test_in_process_golden_run_selects_every_record_emitting_consumer_test() -> None:
    """Guards test_golden.py changing under the matrix: a renamed check silently dropped
    from the matrix, a new record-emitting check left out of it, or a selected test that
    starts a process of its own (generator, repro worker) inside the process budget."""
    source = (Path(__file__).parents[1] / "golden" / "test_golden.py").read_text(encoding="utf-8")
    tests = {
        node.name: ast.get_source_segment(source, node) or ""
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }
    selected = set()
    for word in phase_golden.SELECTED:
        matched = [name for name in tests if word in name]
        assert len(matched) == 1, (word, matched)
        selected |= set(matched)
    emitting = {name for name, body in tests.items() if "emit_record(" in body}
    replaced = {name for name in emitting if phase_golden.REPLACED in name}
    assert len(replaced) == 1 and emitting == selected | replaced
    for name in selected:
        assert not re.search(r"subprocess|run_loads|sys\.executable", tests[name]), name
    args = phase_golden.pytest_args()
    assert args[0].endswith(str(phase_golden.GOLDEN_TESTS)) and "golden" in args


@pytest.mark.one_cell  # the driver's verdict on synthetic records; no torch involved
def test_matrix_ends_with_the_gates_verdict_and_fails_on_a_regression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards ``nox -s matrix`` saying "successful" while its report held 4 regressions
    (issue 20): with a baseline, the driver judges its records by the gate's rules, prints
    the verdict as its last line and exits 1 on a regression, 0 when all is as expected;
    a broken phase process fails the run even when its records match."""
    from ckptcompat.harness.verdict import matrix

    key = results.cell_key("train", "safe_v1", "mock", "safe", "2.6.0", "2.6.0")
    baseline = tmp_path / "baseline.json"
    baseline.write_text(matrix.dump_baseline("n", {}, {key: ("pass", None)}), encoding="utf-8")
    outcome, code = "fail", 0

    def fake_run_matrix(
        pythons: object, work: Path, records: Path, **kwargs: str
    ) -> list[driver.PhaseProcess]:
        record = results.make_record(
            scenario="train", artifact="safe_v1", agent="mock", loader="safe",
            producer_torch="2.6.0", consumer_torch="2.6.0", outcome=outcome,
        )  # fmt: skip
        results.append_record(records / "t26.jsonl", record | {"git_sha": kwargs["git_sha"]})
        return [driver.PhaseProcess("train", "t26", code, 0.0, 0.0, work / "log")]

    monkeypatch.setattr(driver, "run_matrix", fake_run_matrix)

    def run() -> tuple[int, str]:
        records = tmp_path / "records"
        shutil.rmtree(records, ignore_errors=True)
        argv = [f"--python=t26={sys.executable}", "--work", str(tmp_path / "work")]
        argv += ["--records", str(records), "--baseline", str(baseline)]
        status = driver.main(argv)
        return status, capsys.readouterr().out.splitlines()[-1]

    status, last = run()
    assert status == 1
    assert last == f"VERDICT: FAIL - 1 regression, 0 unexpected passes (see {tmp_path}/records)"
    outcome = "pass"
    status, last = run()
    assert status == 0 and last.startswith("VERDICT: PASS - all 1 cells")
    code = 1
    assert run()[0] == 1


def _run_counted(
    command: list[str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_HOOK, encoding="utf-8")
    log = tmp_path / "processes.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env |= {"PYTHONPATH": str(hook), "CKPTCOMPAT_PROCESS_LOG": str(log)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    started = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    return proc, started


@pytest.mark.slow
def test_phases_chain_in_this_cell_with_one_process_per_phase(tmp_path: Path) -> None:
    """Guards the X -> Y -> Z chain breaking inside one torch (checkpoint not reloadable,
    resume not continuing, evaluation keyed wrongly in the shard) and the process budget:
    the matrix driver starts exactly three processes for a cell (train, resume, evaluate)
    and none of them starts another Python."""
    cell = _this_cell()
    work, records = tmp_path / "work", tmp_path / "records"
    proc, started = _run_counted(
        [
            sys.executable,
            "-m",
            "ckptcompat.harness.run.driver",
            f"--python={cell}={sys.executable}",
            "--work",
            str(work),
            "--records",
            str(records),
            "--no-golden",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    phases = [line for line in started if "ckptcompat.harness.run.phases" in line]
    assert len(phases) == 3 and len(started) == 1 + 3, started  # the driver + one per phase
    got = list(results.read_records([records]))
    by_scenario = Counter(r["scenario"] for r in got)
    assert by_scenario == {"train": len(AGENTS), "resume": len(AGENTS), "evaluate": len(AGENTS)}
    assert [r for r in got if r["outcome"] != "pass"] == []
    assert len({r["run_id"] for r in got}) == 1
    shard = Layout(work).shard(cell)
    db = SimulationStatsDB(shard, read_only=True)
    try:
        keys = {(k.policy_key, k.policy_version) for k in db.policy_keys()}
    finally:
        db.close()
    epoch = scenarios.BUDGET.resume_epochs
    assert keys == {(Chain(a, cell, cell).run, epoch) for a in AGENTS}
    timing = json.loads((work / "timing.json").read_text(encoding="utf-8"))
    assert timing["processes_per_cell"] == {cell: 3}


@pytest.mark.slow
@pytest.mark.one_cell  # the golden step's process count does not depend on torch's version
def test_golden_step_runs_in_the_evaluate_process(tmp_path: Path) -> None:
    """Guards the golden checks or the naive loads starting processes of their own (a
    repro worker, the regeneration subprocess): the evaluate phase with golden checks is
    one Python process, and it records golden checks for every producer, naive included."""
    cell = _this_cell()
    records = tmp_path / "records"
    proc, started = _run_counted(
        [
            sys.executable,
            "-m",
            "ckptcompat.harness.run.phases",
            "evaluate",
            cell,
            "--work",
            str(tmp_path / "work"),
            "--records",
            str(records),
            "--cells",
            cell,
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(started) == 1, started
    got = list(results.read_records([records]))
    assert len(list(records.glob("*.jsonl"))) == 1  # one records file per process
    golden = [r for r in got if r["scenario"] == "golden"]
    producers = {(r["producer_torch"], r["producer_numpy"].split(".")[0]) for r in golden}
    assert len(producers) == len(versions.GOLDEN_PRODUCERS)
    assert {r["loader"] for r in golden} == {"safe", "allowlist", "naive"}
    metta = [r for r in got if r["scenario"] == "metta"]  # G3/G4 goldens, same process
    assert len({(r["producer_torch"], r["producer_numpy"]) for r in metta}) == len(producers)
    assert {r["loader"] for r in metta} == {"safe", "naive"}
    # No resume ran here, so every evaluation step has nothing to continue from.
    assert {r["outcome"] for r in got if r["scenario"] == "evaluate"} == {"skip"}
