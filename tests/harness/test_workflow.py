"""The CI workflow (.github/workflows/compat.yml) against versions.py and the noxfile.

The workflow cannot run here. Its job lists come from ``nox -l --json`` at run time, so
this test lists the sessions the same way, turns them into job lists with the same script
(harness/verdict/ci.py) and checks them against the cells of versions.py; then it checks the
file's jobs: the phases chained by ``needs``, each phase handing its work folder to the
next as artifacts named like :class:`~ckptcompat.harness.run.scenarios.Layout`'s folders, and
a final ``if: always()`` job running report and gate on every phase's records.

PyYAML is not in the cell venvs, so :func:`_load_yaml` reads the YAML subset the workflow
uses (block mappings and sequences, ``|`` scalars, quoted and plain scalars, ``[a, b]``)
and fails loudly on anything else.

The last test loads the noxfile and calls its ``tests`` and ``tests_summary`` sessions with
a recording stand-in for nox's session (no venv, no pytest): the JUnit files they name.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nox.registry
import pytest

from ckptcompat.harness import versions
from ckptcompat.harness.run import driver, scenarios
from ckptcompat.harness.run.scenarios import PHASES, Layout
from ckptcompat.harness.verdict import ci

pytestmark = pytest.mark.one_cell  # reads files and nox's session list; no torch involved

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "compat.yml"
WORK = "reports/work"


# --------------------------------------------------------------------------- YAML subset
def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(part) for part in text[1:-1].split(",") if part.strip()]
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise ValueError(f"tab indentation: {raw!r}")
            out.append((len(raw) - len(raw.lstrip(" ")), stripped))
    return out


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            rest = lines[i][1][2:]
            if re.match(r"^[\w.-]+:( |$)", rest):  # "- key: value" opens a mapping
                lines[i] = (indent + 2, rest)
                value, i = _block(lines, i, indent + 2)
            else:
                value, i = _scalar(rest), i + 1
            items.append(value)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        match = re.match(r"^([\w.-]+):(?: (.*))?$", lines[i][1])
        if match is None:
            raise ValueError(f"not in the YAML subset: {lines[i][1]!r}")
        key, value = match.group(1), (match.group(2) or "").strip()
        i += 1
        if value == "|":
            body = []
            while i < len(lines) and lines[i][0] > indent:
                body.append(lines[i][1])
                i += 1
            mapping[key] = "\n".join(body) + "\n"
        elif value:
            mapping[key] = _scalar(value)
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    return mapping, i


def _load_yaml(text: str) -> Any:
    lines = _lines(text)
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"unparsed YAML from line {lines[end]!r}")
    return value


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return _load_yaml(WORKFLOW.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def nox_jobs() -> dict[str, list[dict[str, str]]]:
    """The job lists the workflow's ``sessions`` job computes, from the real noxfile."""
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "--json", "-s", "tests", "phase", "dcp", "remote"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ci.job_matrix(json.loads(proc.stdout))


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def _artifacts(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s["with"] for s in job["steps"] if str(s.get("uses", "")).startswith(action)]


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


# --------------------------------------------------------------------------- tests
def test_yaml_subset_reader_reads_what_it_claims() -> None:
    """Guards this test's own YAML reader: nested mappings, ``- key:`` sequence items,
    block scalars, flow lists and quotes parse as YAML says."""
    text = (
        'a:\n  b: [x, "y"]\n  c:\n    - uses: u\n      with:\n        k: 1\n'
        "    - run: |\n        one\n        two\n"
    )
    assert _load_yaml(text) == {
        "a": {"b": ["x", "y"], "c": [{"uses": "u", "with": {"k": "1"}}, {"run": "one\ntwo\n"}]}
    }


def test_job_lists_from_nox_match_the_cell_table(nox_jobs: dict[str, list[dict[str, str]]]) -> None:
    """Guards CI drifting from versions.py: ``nox -l --json`` through harness/verdict/ci.py gives a
    tests job per default cell, a job per default cell for every scenario phase and for the
    DCP phase, and the noxfile's phases are scenarios.PHASES."""
    cells = [c.id for c in versions.DEFAULT]
    assert nox_jobs["tests"] == [{"session": f"tests({c})", "cell": c} for c in cells]
    for phase in PHASES:
        assert nox_jobs[phase] == [{"session": f"phase({phase}, {c})", "cell": c} for c in cells]
    assert nox_jobs["dcp"] == [{"session": f"dcp({c})", "cell": c} for c in cells]
    assert nox_jobs["remote"] == [{"session": f"remote({c})", "cell": c} for c in cells]
    assert list(ci.JOBS) == ["tests", *PHASES, "dcp", "remote"]


def test_workflow_jobs_and_their_order(workflow: dict[str, Any]) -> None:
    """Guards the job graph: sessions -> tests, train -> resume -> evaluate, and dcp (it
    needs only the committed DCP goldens), each fed by the sessions job's list for it and
    uploading its records; report runs always, after every phase and dcp (a gate without
    the DCP records would report 96 missing cells)."""
    jobs = workflow["jobs"]
    assert list(jobs) == ["sessions", "tests", *PHASES, "dcp", "remote", "report"]
    sessions = jobs["sessions"]
    assert set(sessions["outputs"]) == set(ci.JOBS)
    assert "nox -l --json -s tests phase dcp remote > sessions.json" in _runs(sessions)
    assert "python src/ckptcompat/harness/verdict/ci.py sessions.json" in _runs(sessions)
    previous = None
    for name in ["tests", *PHASES]:
        job = jobs[name]
        assert (
            job["strategy"]["matrix"]["include"]
            == f"${{{{ fromJSON(needs.sessions.outputs.{name}) }}}}"
        )
        assert 'nox -s "${{ matrix.session }}"' in _runs(job)
        expected_needs = ["sessions"] if name in ("tests", "train") else ["sessions", previous]
        assert _needs(job) == expected_needs, name
        if name != "tests":
            previous = name
    dcp = jobs["dcp"]
    assert dcp["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.sessions.outputs.dcp) }}"
    assert 'nox -s "${{ matrix.session }}"' in _runs(dcp) and _needs(dcp) == ["sessions"]
    (records,) = _artifacts(dcp, "actions/upload-artifact")
    assert records["name"] == "records-dcp-${{ matrix.cell }}"
    assert records["path"] == "reports/records"
    report = jobs["report"]
    assert report["if"] == "always()" and _needs(report) == [*PHASES, "dcp", "remote"]
    assert "nox -s report gate" in _runs(report)


def test_remote_jobs_get_the_policies_and_references_they_judge(workflow: dict[str, Any]) -> None:
    """Guards the remote-evaluation phase missing from CI (its 32 baseline cells were
    missing at the gate): one job per consumer cell after evaluate, fed every producer's
    resumed runs (resume-* into reports/work) and evaluate's records (the in-process
    returns it compares with), failing without PostgreSQL, uploading records-remote-*."""
    remote = workflow["jobs"]["remote"]
    include = remote["strategy"]["matrix"]["include"]
    assert include == "${{ fromJSON(needs.sessions.outputs.remote) }}"
    assert _needs(remote) == ["sessions", "evaluate"]
    assert remote["env"]["CKPTCOMPAT_REQUIRE_PG"] == "1"
    assert 'nox -s "${{ matrix.session }}"' in _runs(remote)
    downloads = _artifacts(remote, "actions/download-artifact")
    assert {"pattern": "resume-*", "path": WORK} in downloads
    assert {
        "pattern": "records-evaluate-*",
        "path": "reports/records",
        "merge-multiple": "true",
    } in downloads
    (records,) = _artifacts(remote, "actions/upload-artifact")
    assert records["name"] == "records-remote-${{ matrix.cell }}"
    assert records["path"] == "reports/records"


def test_phase_artifacts_carry_the_work_layout(workflow: dict[str, Any]) -> None:
    """Guards an X -> Y -> Z chain breaking between jobs: phase P uploads
    reports/work/P-<cell> as artifact P-<cell> (scenarios.Layout's folder names), the next
    phase downloads every P-* into reports/work (one folder per artifact), and every phase
    job uploads its records for the report job, which merges records-* into one folder."""
    jobs = workflow["jobs"]
    layout = Layout(Path(WORK))
    for index, phase in enumerate(PHASES):
        uploads = {u["name"]: u for u in _artifacts(jobs[phase], "actions/upload-artifact")}
        work = uploads[f"{phase}-${{{{ matrix.cell }}}}"]
        assert work["path"] == str(layout.phase_dir(phase, "${{ matrix.cell }}"))
        assert uploads[f"records-{phase}-${{{{ matrix.cell }}}}"]["path"] == "reports/records"
        downloads = _artifacts(jobs[phase], "actions/download-artifact")
        if index == 0:
            assert downloads == []
        else:
            assert downloads == [{"pattern": f"{PHASES[index - 1]}-*", "path": WORK}]
    (records,) = _artifacts(jobs["report"], "actions/download-artifact")
    assert records == {"pattern": "records-*", "path": "reports/records", "merge-multiple": "true"}


def test_noxfile_paths_agree_with_the_workflow() -> None:
    """Guards the phase sessions writing where the workflow does not look: the noxfile's
    work and records folders are the ones the artifacts name; and the noxfile's DCP
    session resuming on other world sizes than the driver's."""
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert 'RECORDS = REPORTS / "records"' in noxfile and 'WORK = REPORTS / "work"' in noxfile
    match = re.search(r"^PHASES = (\(.*\))$", noxfile, flags=re.MULTILINE)
    assert match is not None and ast.literal_eval(match.group(1)) == scenarios.PHASES
    match = re.search(r"^DCP_WORLD_SIZES = (\(.*\))$", noxfile, flags=re.MULTILINE)
    assert match is not None and ast.literal_eval(match.group(1)) == driver.DCP_WORLD_SIZES


# --------------------------------------------------------------------------- nox -s tests
class _Session:
    """Records what a nox session function asks of its session (no venv, no install)."""

    def __init__(self, posargs: list[str], install_only: bool = False) -> None:
        self.posargs = posargs
        self.install_only = install_only
        self.calls: list[tuple[str, ...]] = []
        self.envs: list[dict[str, str] | None] = []
        self.notified: list[str] = []

    def notify(self, target: str, posargs: list[str] | None = None) -> None:
        self.notified.append(target)

    def install(self, *args: str, **kwargs: Any) -> None:
        self.calls.append(("install", *args))

    def run(self, *args: Any, **kwargs: Any) -> None:
        # As nox does: nothing runs under --install-only; a callable is called.
        if self.install_only:
            return
        if callable(args[0]):
            args[0](*args[1:])
            return
        self.calls.append(tuple(map(str, args)))
        self.envs.append(kwargs.get("env"))


@pytest.fixture
def noxfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real noxfile, loaded fresh, its JUnit folder moved under tmp_path."""
    nox.registry.reset()  # loaded once per test: each load registers its sessions again
    spec = importlib.util.spec_from_file_location("_noxfile_under_test", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "JUNIT_DIR", tmp_path / "junit")
    return module


def test_tests_sessions_close_with_one_summary_of_this_runs_reports(noxfile: Any) -> None:
    """Guards the tests run ending with only nox's per-session list (issue 20) and a
    partial run overwriting the full run's JUnit file: every cell queues tests_summary,
    which reads exactly the files this invocation's cells write; a run narrowed with
    ``-- ARGS`` writes tests-<cell>-partial.xml and leaves tests-<cell>.xml alone; a stale
    report of a cell is removed before its session can fail."""
    junit_dir = noxfile.JUNIT_DIR
    junit_dir.mkdir()
    (junit_dir / "tests-t24.xml").write_text("full run", encoding="utf-8")
    (junit_dir / "tests-t25.xml").write_text("stale", encoding="utf-8")
    partial = _Session(["-k", "allowlist"])
    noxfile.tests(partial, cell="t24")
    full = _Session([])
    noxfile.tests(full, cell="t25")
    assert partial.notified == full.notified == ["tests_summary"]
    assert f"--junitxml={junit_dir / 'tests-t24-partial.xml'}" in partial.calls[-1]
    assert f"--junitxml={junit_dir / 'tests-t25.xml'}" in full.calls[-1]
    assert (junit_dir / "tests-t24.xml").read_text(encoding="utf-8") == "full run"
    assert not (junit_dir / "tests-t25.xml").exists()  # the stale report is gone
    summary = _Session([])
    noxfile.tests_summary(summary)
    (command,) = summary.calls
    assert command[1] == str(ROOT / "src" / "ckptcompat" / "harness" / "verdict" / "junit.py")
    assert command[2:] == (
        str(junit_dir / "tests-t24-partial.xml"),
        str(junit_dir / "tests-t25.xml"),
    )


def test_installing_the_tests_venvs_keeps_the_tests_reports(noxfile: Any) -> None:
    """Guards the matrix deleting the tests' JUnit reports: it installs each cell's venv
    with ``nox -s "tests(<cell>)" --install-only``, which ran the session function and
    dropped tests-<cell>.xml, so .ci/run's closing line counted the matrix's report alone
    ("1192 passed ... in 1 report" after 3618 tests had passed)."""
    junit_dir = noxfile.JUNIT_DIR
    junit_dir.mkdir()
    (junit_dir / "tests-t24.xml").write_text("this run's report", encoding="utf-8")
    noxfile.tests(_Session([], install_only=True), cell="t24")
    assert (junit_dir / "tests-t24.xml").read_text(encoding="utf-8") == "this run's report"


def test_the_suite_caches_bytecode(noxfile: Any, tmp_path: Path) -> None:
    """Guards issue 21 item 4's finding: where PYTHONDONTWRITEBYTECODE is set (this
    machine), every pytest worker recompiled and assertion-rewrote the test modules
    (collection 6.8 s instead of 4.5 s), and a venv made without bytecode compiled torch in
    every test process. The cell's pytest runs with that variable emptied, which Python
    reads as unset: a child started with that environment writes its bytecode to
    ``__pycache__``."""
    session = _Session([])
    noxfile.tests(session, cell="t24")
    env = session.envs[-1]
    assert session.calls[-1][:3] == ("python", "-m", "pytest") and env is not None
    assert env["CKPTCOMPAT_CELL"] == "t24" and env["PYTHONDONTWRITEBYTECODE"] == ""
    assert "PYTHONPYCACHEPREFIX" not in env  # the venvs' own bytecode is used as is

    source = tmp_path / "src"
    source.mkdir()
    (source / "cached_module.py").write_text("VALUE = 1\n", encoding="utf-8")
    child_env = {**os.environ, "PYTHONPATH": str(source), **env}
    child_env.pop("PYTHONPYCACHEPREFIX", None)
    subprocess.run(
        [sys.executable, "-c", "import cached_module"], env=child_env, check=True, timeout=60
    )
    assert list((source / "__pycache__").glob("cached_module.*.pyc"))


_SCHEDULED_SUITE = {
    "test_a_shared.py": """
import os, pytest

@pytest.fixture(scope="module")
def built():
    with open(os.environ["LOG"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + " fixture\\n")
    return 1

@pytest.mark.parametrize("i", range(8))
def test_uses_it(built, i):
    with open(os.environ["LOG"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + f" a{i}\\n")
""",
    "test_m_quick.py": """
import os, pytest

@pytest.mark.parametrize("i", range(8))
def test_quick(i):
    with open(os.environ["LOG"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + f" m{i}\\n")
""",
    "test_z_slow.py": """
import os, pytest

@pytest.mark.slow
def test_slow():
    with open(os.environ["LOG"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + " slow\\n")
""",
}


def test_cells_schedule_a_module_whole_and_slow_tests_first(noxfile: Any, tmp_path: Path) -> None:
    """Guards two scheduling faults measured in issue 21 (t24): with xdist's default
    chunks every slow test went to one worker while the other idled for the last ~70 s;
    sent one test at a time, both workers built test_distributed's module fixture (three
    torchrun launches each). A suite run with the cell's own xdist arguments (from the
    noxfile) and conftest must build a module fixture once and start the slow test, which
    collects last, among the first. Also catches the arguments silently doing nothing
    (``--dist loadgroup`` under pytest 9.2, pytest-xdist issue #1386)."""
    session = _Session([])
    noxfile.tests(session, cell="t24")
    args = list(session.calls[-1][3:])
    xdist = []
    for flag, value in itertools.pairwise(args):
        if flag in ("-n", "--dist"):
            xdist += [flag, value]
    xdist += [a for a in args if a == "--no-loadscope-reorder"]
    assert "--dist" in xdist, args
    for name, text in _SCHEDULED_SUITE.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "conftest.py").write_text(
        (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n", encoding="utf-8")
    log = tmp_path / "log.txt"
    env = {**os.environ, "LOG": str(log), "CKPTCOMPAT_CELL": "t24"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *xdist, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    lines = [what for _, what in runs]
    assert sorted(lines) == sorted(["fixture", "slow", *[f"a{i}" for i in range(8)],
                                    *[f"m{i}" for i in range(8)]])  # fmt: skip
    assert lines.count("fixture") == 1, runs
    (slow_worker,) = {worker for worker, what in runs if what == "slow"}
    first = next(what for worker, what in runs if worker == slow_worker)
    assert first == "slow", runs  # the first test its worker ran
