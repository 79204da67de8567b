"""nox sessions of ckptcompat: thin orchestration over the torch cells of harness/versions.py.

Logic lives in the package; sessions only create the cell's venv (uv, reused), install the
pinned stack and run one command. ``nox -s tests`` runs exactly the four default cells.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHON = "3.11"
CONSTRAINTS = ROOT / "constraints.txt"
JUNIT_DIR = ROOT / "reports" / "junit"

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv"  # no fallback: a missing uv is an error
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
# Interpreters come from the machine, never downloaded by uv.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


def _load_versions():
    # The noxfile runs outside the package's venvs, so load the cell table by path.
    spec = importlib.util.spec_from_file_location(
        "_ckptcompat_versions", ROOT / "src" / "ckptcompat" / "harness" / "versions.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


versions = _load_versions()


def _install_cell(session: nox.Session, cell_id: str, extras: str = "test,report,remote") -> None:
    """Install the package (editable) with the cell's torch and the shared pins."""
    cell = versions.by_id(cell_id)
    args = ["-c", str(CONSTRAINTS), "-e", f".[{extras}]", cell.torch_requirement]
    if cell.numpy is not None:
        tmp = Path(session.create_tmp())
        # uv applies constraints on top of overrides: drop the shared numpy pin too.
        constraints = tmp / "constraints-without-numpy.txt"
        lines = CONSTRAINTS.read_text().splitlines()
        constraints.write_text("\n".join(x for x in lines if not x.startswith("numpy==")) + "\n")
        args[1] = str(constraints)
        override = tmp / "numpy-override.txt"
        override.write_text(f"numpy=={cell.numpy}\n")
        args += ["--override", str(override)]
    # Compile every module of the venv to bytecode at install time. Without it a venv made
    # by uv has no .pyc and, where PYTHONDONTWRITEBYTECODE is set (this machine), every
    # process of the suite compiled torch from source: `import torch` 3.9 s of CPU instead
    # of 1.8 s, the emulation probe 7.8 s instead of 3.2 s (issue 21 item 4).
    session.install(*args, env={"UV_COMPILE_BYTECODE": "1"})
    session.run("python", "-m", "ckptcompat.harness.envinfo", cell_id)


def _team(session: nox.Session) -> dict | None:
    """The team config named by ``-- --config PATH``, parsed by the package; None without it."""
    args = list(session.posargs)
    if "--config" not in args:
        return None
    if args.index("--config") + 1 >= len(args):
        session.error("usage: nox -s SESSION -- --config PATH/TO/pyproject.toml")
    path = args[args.index("--config") + 1]
    # Parsed with nox's own interpreter (harness/team.py is standard library only) before
    # any venv is built: a bad config, or a cell outside its `cells`, must not cost a 3-5 GB
    # torch install first (a new user's trial).
    out = session.run(
        sys.executable, "-m", "ckptcompat.harness.team", path, silent=True, external=True,
        env={"PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    return json.loads(out)


def _install_team(session: nox.Session, python: str, cell_id: str, team: dict) -> None:
    """Install the team's package into a cell venv, with the cell's torch and shared pins."""
    torch = versions.by_id(cell_id).torch_requirement
    session.run(
        "uv", "pip", "install", "--python", python, "-c", str(CONSTRAINTS), torch,
        team["package"], external=True,
    )  # fmt: skip


# The JUnit files this nox invocation's test sessions write: nox runs every session in
# this one process, so tests_summary reads exactly these (not an older run's files).
_JUNIT_THIS_RUN: list[Path] = []


def _junit_path(session: nox.Session, cell_id: str) -> Path:
    """``tests-<cell>.xml``; ``tests-<cell>-partial.xml`` for a run narrowed with ``-- ARGS``
    (it must not replace the full run's file, which ``.ci/junit_summary.py`` counts)."""
    return JUNIT_DIR / f"tests-{cell_id}{'-partial' if session.posargs else ''}.xml"


def _drop_report(junit: Path) -> None:
    junit.unlink(missing_ok=True)


def _expect_junit(session: nox.Session, cell_id: str) -> None:
    """Before anything can fail: drop the cell's old report (a session that dies before
    pytest must not leave a stale green one), expect a new one, queue ``tests_summary``.

    The drop goes through ``session.run`` so that ``--install-only`` skips it: the matrix
    installs the tests venvs that way, and must not delete the reports the tests just
    wrote (it did, and CI's closing line then counted the matrix's report alone)."""
    junit = _junit_path(session, cell_id)
    session.run(_drop_report, junit)
    _JUNIT_THIS_RUN.append(junit)
    # nox refuses notify under --parallel (each session runs alone): no closing summary then.
    with contextlib.suppress(ValueError):
        session.notify("tests_summary")


def _bytecode_env() -> dict[str, str]:
    """Let the suite's (and the matrix's) processes cache the bytecode of what they import.

    Where PYTHONDONTWRITEBYTECODE is set (this machine), nothing from ``src/`` and
    ``tests/`` was ever cached: every pytest worker assertion-rewrote and compiled the test
    modules again (collection 6.8 s instead of 4.5 s of CPU per worker, t24, with torch's
    own bytecode present), and a venv made before ``UV_COMPILE_BYTECODE`` (which uv does
    not recompile when nothing is reinstalled) compiled torch in every process (``import
    torch`` 3.9 s instead of 1.8 s). An empty value is unset for Python. The bytecode goes
    where Python keeps it, the git-ignored ``__pycache__`` folders beside the sources, so
    the venvs' own bytecode is used as is (a PYTHONPYCACHEPREFIX would ignore it and
    recompile torch in the first processes of every cell). ckptcompat's own modules
    compile in about 0.1 s, so a test subprocess gains little from this (issue 21 item 4)."""
    return {"PYTHONDONTWRITEBYTECODE": ""}


def _run_pytest(session: nox.Session, cell_id: str, *args: str) -> None:
    """Run pytest for one cell: parallel, one JUnit XML named after the cell."""
    JUNIT_DIR.mkdir(parents=True, exist_ok=True)
    session.run(
        "python",
        "-m",
        "pytest",
        "-n",
        "auto",
        # A module (or class) at a time, in the order tests/conftest.py sorts the suite
        # (modules with slow tests first), so a module-scoped fixture is built once. The
        # default (--dist load) sends each worker a first chunk of a quarter of the
        # collection: every slow test went to one worker while the other idled for the
        # last ~70 s of a cell (measured, t24). One test at a time (--maxschedchunk 1)
        # built test_distributed's three-torchrun fixture on both workers; --dist
        # loadgroup does not group under pytest 9.2 (pytest-xdist issue #1386).
        "--dist",
        "loadscope",
        "--no-loadscope-reorder",
        f"--junitxml={_junit_path(session, cell_id)}",
        "-o",
        f"junit_suite_name={cell_id}",
        *args,
        *session.posargs,
        env={"CKPTCOMPAT_CELL": cell_id, **_bytecode_env()},
    )


@nox.session(python=PYTHON)
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.DEFAULT])
def tests(session: nox.Session, cell: str) -> None:
    """Run the test suite in one default torch cell (2.4, 2.5, 2.6, 2.15)."""
    _expect_junit(session, cell)
    _install_cell(session, cell)
    _run_pytest(session, cell)


def _named_on_command_line(name: str) -> bool:
    # Extended sessions stay in `nox -l --json` (CI derives its job list from it) but a
    # bare `nox` must not download eight more torch builds: they run only when named.
    words = [*sys.argv[1:], os.environ.get("NOXSESSION", "")]
    return any(name in word for word in words)


@nox.session(python=PYTHON, default=False)  # only when named: eight more 3-5 GB venvs
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.EXTENDED])
def tests_extended(session: nox.Session, cell: str) -> None:
    """Run the test suite in one extended torch cell (2.7 ... 2.14); only when named."""
    if not _named_on_command_line("tests_extended"):
        session.skip("extended cells run only when named: nox -s tests_extended")
    _expect_junit(session, cell)
    _install_cell(session, cell)
    _run_pytest(session, cell)


@nox.session(python=False, default=False)
def tests_summary(session: nox.Session) -> None:
    """Close a tests run: JUnit totals and failing test ids over its cells; fail if any failed."""
    # Alone (`nox -s tests_summary`) it reads every full-run report in reports/junit.
    reports = _JUNIT_THIS_RUN or [JUNIT_DIR]
    script = ROOT / "src" / "ckptcompat" / "harness" / "verdict" / "junit.py"
    session.run(sys.executable, str(script), *map(str, reports))


@nox.session(python=PYTHON, default=False)
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("-c", str(CONSTRAINTS), "ruff")
    session.run("ruff", "check", "src", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py")


@nox.session(python=PYTHON, default=False)
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.GOLDEN_PRODUCERS])
def golden(session: nox.Session, cell: str) -> None:
    """Write one cell's goldens to fixtures/golden/gen2, gen3, metta, dcp (or verify them).

    Every producer cell also writes (or verifies by content) its Metta G3/G4 goldens in
    fixtures/golden/metta/<cell> (:mod:`ckptcompat.harness.generations_golden`). A default
    cell also writes (or verifies by meaning) its DCP goldens in
    fixtures/golden/dcp/<cell> (:mod:`ckptcompat.harness.golden.dcp`).

    With ``-- --config PATH``: the team's agents, into the team's golden directory. With
    ``-- --out DIR``: into DIR/gen2/<cell> instead (a byte-for-byte reproduction check).
    """
    team = _team(session)
    if team is not None and cell not in team["cells"]:  # before the cell's venv is built
        session.error(
            f"cell {cell} is not in the team's cells {team['cells']} ({team['source']}); "
            "add it to tool.ckptcompat.cells, or write goldens of those cells only"
        )
    _install_cell(session, cell)
    args = list(session.posargs)
    out = ROOT / "fixtures" / "golden"
    if "--out" in args:
        if args.index("--out") + 1 >= len(args):
            session.error('usage: nox -s "golden(t26)" -- --out DIR')
        out = Path(args[args.index("--out") + 1]).resolve()
    if team is not None:
        _install_team(session, str(Path(session.bin) / "python"), cell, team)
        session.run(
            "python", "-m", "ckptcompat.harness.golden", team["golden_dir"], cell,
            "--config", team["source"], env={"CKPTCOMPAT_CELL": cell},
        )  # fmt: skip
        return
    session.run(
        "python",
        "-m",
        "ckptcompat.harness.golden",
        str(out),
        cell,
        env={"CKPTCOMPAT_CELL": cell},
    )
    # Metta G3 (.mpt) and G4 (bundle) goldens, every producer cell (issue 22)
    session.run(
        "python",
        "-m",
        "ckptcompat.harness.generations_golden",
        str(out),
        cell,
        env={"CKPTCOMPAT_CELL": cell},
    )
    if versions.by_id(cell).is_default:  # DCP goldens: one and two ranks (issue 18)
        session.run(
            "python",
            "-m",
            "ckptcompat.harness.golden.dcp",
            str(out),
            cell,
            env={"CKPTCOMPAT_CELL": cell},
        )


ZOO_IN = ROOT / "constraints-zoo.in"


def _zoo_constraints(cell: str) -> Path:
    return ROOT / f"constraints-zoo-{cell}.txt"


@nox.session(python=False, default=False)
def zoo_constraints(session: nox.Session) -> None:
    """Resolve constraints-zoo.in per zoo producer cell into constraints-zoo-<cell>.txt.

    Each file pins the whole zoo venv: the cell's torch and torchvision, the libraries of
    constraints-zoo.in, ckptcompat's own dependencies under constraints.txt's pins except
    gymnasium and minigrid (stable-baselines3 for torch < 2.8 wants gymnasium < 1.3; the
    zoo venv never runs the test suite). Commit the files it writes.
    """
    shared = Path(session.create_tmp()) / "constraints-shared.txt"
    lines = CONSTRAINTS.read_text().splitlines()
    shared.write_text(
        "\n".join(x for x in lines if not x.startswith(("gymnasium==", "minigrid=="))) + "\n"
    )
    for cell, torchvision in versions.ZOO_PRODUCERS.items():
        if torchvision is None:
            continue
        pins = Path(session.create_tmp()) / f"zoo-{cell}.in"
        torch = versions.by_id(cell).torch_requirement
        pins.write_text(f"{torch}\ntorchvision=={torchvision}\n-e {ROOT}\n")
        out = _zoo_constraints(cell)
        session.run(
            "uv", "pip", "compile", "-q", "--python-version", PYTHON,
            "--no-header", "--no-annotate",
            "-c", str(shared), str(ZOO_IN), str(pins), "-o", str(out), external=True,
        )  # fmt: skip
        # a constraints file names versions, not this checkout
        kept = [x for x in out.read_text().splitlines() if not x.startswith("-e ")]
        header = f"# zoo producer cell {cell}: written by `nox -s zoo_constraints`; do not edit\n"
        out.write_text(header + "\n".join(kept) + "\n")


@nox.session(python=PYTHON, default=False)
@nox.parametrize("cell", [nox.param(c, id=c) for c in versions.ZOO_PRODUCERS])
def zoo(session: nox.Session, cell: str) -> None:
    """Write this producer cell's zoo (fixtures/zoo/<cell>/) with the real libraries' own
    save calls, then observe every file here (libraries installed) into OBSERVED.json.

    The libraries (Lightning, stable-baselines3, transformers, torchvision) go only into
    this non-default venv, pinned by constraints-zoo-<cell>.txt; the numpy-1 cell writes
    only the files torch and numpy make. ``-- --check`` verifies the committed folder
    against its MANIFEST instead of writing; ``-- --out DIR`` writes into DIR/<cell>.
    """
    if versions.ZOO_PRODUCERS[cell] is None:
        _install_cell(session, cell, extras="test")
    else:
        torch = versions.by_id(cell).torch_requirement
        session.install(
            "-c", str(_zoo_constraints(cell)), "-e", ".[test]", torch,
            f"torchvision=={versions.ZOO_PRODUCERS[cell]}",
            *[x.strip() for x in ZOO_IN.read_text().splitlines() if x.strip()[:1] not in ("", "#")],
        )  # fmt: skip
        session.run("python", "-m", "ckptcompat.harness.envinfo", cell)
    session.run(
        "python", "-m", "ckptcompat.harness.fixtures.zoo", cell, *session.posargs,
        env={"CKPTCOMPAT_CELL": cell},
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.DEFAULT])
def emulate(session: nox.Session, cell: str) -> None:
    """Re-run the bitwise checks and golden regeneration under every forced CPU kernel path."""
    _install_cell(session, cell)
    keyword = "regeneration or stored_ppo_update or greedy_evaluation or bitwise or deterministic"
    session.run(
        "python", "-m", "ckptcompat.harness.emulate", "--cell", cell, "--tests", keyword,
        env={"CKPTCOMPAT_CELL": cell},
    )  # fmt: skip


@nox.session(python=False, default=False)
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.DEFAULT])
def repro(session: nox.Session, cell: str) -> None:
    """Load FILE (after --) in one cell, naively and safely, next to doctor's prediction.

    Runs in the cell's tests venv (created or synced as ``tests`` does), as the matrix
    does: a venv of its own would be another 3-5 GB torch install.
    """
    if not session.posargs:
        session.error(
            'usage: nox -s "repro(t26)" -- FILE [--allow-code-execution]  (the flag loads '
            "a file the static scan says can run code; without it repro refuses, exit 2)"
        )
    python = _cell_python(session, cell)
    session.run(
        python, "-m", "ckptcompat.harness.run.repro", *session.posargs,
        env={"CKPTCOMPAT_CELL": cell}, external=True,
    )  # fmt: skip


# ------------------------------------------------------------------ the cross-version matrix
REPORTS = ROOT / "reports"
RECORDS = REPORTS / "records"
WORK = REPORTS / "work"
BASELINE = ROOT / "fixtures" / "baseline.json"
# = ckptcompat.harness.run.scenarios.PHASES (tests/harness/test_workflow.py checks they agree)
PHASES = ("train", "resume", "evaluate")


def _cell_python(session: nox.Session, cell_id: str) -> str:
    """The interpreter of cell_id's ``tests`` venv, created or synced exactly as tests does."""
    # nox gives every session its own venv; a torch venv is 5 GB, so the matrix borrows the
    # tests venvs and runs only their install step (`_install_cell`) through a nested nox.
    envdir = session.cache_dir.parent
    session.run(
        sys.executable,
        "-m",
        "nox",
        "-s",
        f"tests({cell_id})",
        "--install-only",
        "--envdir",
        str(envdir),
        external=True,
    )
    python = envdir / f"tests-{cell_id}" / "bin" / "python"
    if not python.is_file():
        session.error(f"expected the tests venv of {cell_id} at {python.parent.parent}")
    return str(python)


def _install_report_tools(session: nox.Session) -> None:
    """jsonschema, matplotlib and ckptcompat without its dependencies: a venv with no torch."""
    session.install("-c", str(CONSTRAINTS), "jsonschema", "matplotlib")
    session.install("--no-deps", "-e", ".")


@nox.session(python=PYTHON, default=False)
def matrix(session: nox.Session) -> None:
    """Train, resume and evaluate across the default cells, check goldens, report, judge.

    Ends with the gate's verdict on this run (``VERDICT: PASS|FAIL - ...``) and fails on
    any regression, unexpected pass, missing or unknown cell.

    With ``-- --config PATH``: a team's agents, goldens and checkpoints over its cells; the
    team's package goes into each cell's tests venv; records and report under its reports/.
    """
    _install_report_tools(session)
    team = _team(session)
    if team is not None:
        pythons = []
        for cell in team["cells"]:
            python = _cell_python(session, cell)
            _install_team(session, python, cell, team)
            pythons.append(f"--python={cell}={python}")
        session.run(
            "python", "-m", "ckptcompat.harness.run.driver", *pythons,
            "--work", team["work"], "--records", team["records"], "--report", team["reports"],
            "--baseline", team["baseline"], "--config", team["source"],
            env=_bytecode_env(),
        )  # fmt: skip
        return
    pythons = [f"--python={c.id}={_cell_python(session, c.id)}" for c in versions.DEFAULT]
    session.run(
        "python",
        "-m",
        "ckptcompat.harness.run.driver",
        *pythons,
        "--work",
        str(WORK),
        "--records",
        str(RECORDS),
        "--report",
        str(REPORTS),
        "--baseline",
        str(BASELINE),
        env=_bytecode_env(),
    )


@nox.session(python=False, default=False)
@nox.parametrize(
    ("phase", "cell"),
    [nox.param(p, c.id, id=f"{p}, {c.id}") for p in PHASES for c in versions.DEFAULT],
)
def phase(session: nox.Session, phase: str, cell: str) -> None:
    """Run one matrix phase in one cell's tests venv (CI: one job per phase and cell)."""
    python = _cell_python(session, cell)
    session.run(
        python,
        "-m",
        "ckptcompat.harness.run.phases",
        phase,
        cell,
        "--work",
        str(WORK),
        "--records",
        str(RECORDS),
        external=True,
        env={"CKPTCOMPAT_CELL": cell, **_bytecode_env()},
    )


# = ckptcompat.harness.run.driver.DCP_WORLD_SIZES (tests/harness/test_workflow.py checks it)
DCP_WORLD_SIZES = (1, 2)


@nox.session(python=False, default=False)
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.DEFAULT])
def dcp(session: nox.Session, cell: str) -> None:
    """Resume every DCP golden in one cell on 1 and 2 ranks (CI: the matrix's DCP phase)."""
    python = _cell_python(session, cell)
    phase = ["-m", "ckptcompat.harness.run.dcp_phase", cell, str(WORK), str(RECORDS)]
    for world_size in DCP_WORLD_SIZES:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
        command = phase if world_size == 1 else [*launcher, str(world_size), *phase]
        session.run(python, *command, external=True, env={"CKPTCOMPAT_CELL": cell})


@nox.session(python=False, default=False)
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.DEFAULT])
def remote(session: nox.Session, cell: str) -> None:
    """The matrix's remote-evaluation phase for one consumer cell (CI: one job per cell).

    Every default producer's resumed runs (``reports/work/resume-<X>``) through a
    throw-away PostgreSQL queue to one worker in this cell's venv, compared with the
    evaluate phase's records in ``reports/records``
    (:mod:`ckptcompat.harness.run.remote_phase`).
    """
    python = _cell_python(session, cell)
    session.run(
        python,
        "-m",
        "ckptcompat.harness.run.remote_phase",
        str(WORK),
        str(RECORDS),
        f"--python={cell}={python}",
        f"--producers={','.join(c.id for c in versions.DEFAULT)}",
        external=True,
        env={"CKPTCOMPAT_CELL": cell},
    )


@nox.session(python=False, default=False)
@nox.parametrize("cell", [nox.param(c.id, id=c.id) for c in versions.DEFAULT])
def evalworker(session: nox.Session, cell: str) -> None:
    """Run a remote-evaluation worker of one cell in its tests venv (``-- --dsn ... --once``).

    Claims only that cell's tasks from the PostgreSQL queue (``--dsn`` or
    ``CKPTCOMPAT_PG_DSN``); episodes go to ``reports/eval-shards`` unless ``--shard-dir``.
    """
    python = _cell_python(session, cell)
    args = list(session.posargs)
    if "--shard-dir" not in args:
        args += ["--shard-dir", str(REPORTS / "eval-shards")]
    session.run(
        python, "-m", "ckptcompat", "eval", "worker", "--cell", cell, *args,
        external=True, env={"CKPTCOMPAT_CELL": cell},
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def report(session: nox.Session) -> None:
    """Merge reports/records into reports/matrix.{json,md,html,png} and JUnit XML."""
    _install_report_tools(session)
    session.run(
        "python",
        "-m",
        "ckptcompat.harness.verdict.report",
        "--records",
        str(RECORDS),
        "--baseline",
        str(BASELINE),
        "--out",
        str(REPORTS),
        "--timing",
        str(WORK / "timing.json"),
        *session.posargs,
    )


@nox.session(python=PYTHON, default=False)
def gate(session: nox.Session) -> None:
    """Fail on any matrix cell that differs from fixtures/baseline.json (docs/design.md sec. 8)."""
    session.install("-c", str(CONSTRAINTS), "jsonschema")
    session.install("--no-deps", "-e", ".")
    if _team(session) is not None:  # the team's records against the team's baseline
        session.run("python", "-m", "ckptcompat.harness.verdict.gate", *session.posargs)
        return
    # Any other argument goes to the gate's own parser: a typo is an error, never ignored.
    session.run(
        "python",
        "-m",
        "ckptcompat.harness.verdict.gate",
        "--records",
        str(RECORDS),
        "--baseline",
        str(BASELINE),
        *session.posargs,
    )


@nox.session(python=False, default=False)
@nox.parametrize("cell", [nox.param(c, id=c) for c in ("t24", "t215")])
def fuzz(session: nox.Session, cell: str) -> None:
    """Hostile files: 5,000 seeded cases through every entry point, each in a forked child.

    t24 takes the full static scan before torch reads a file, t215 the light checks;
    ``-- --cases N --seed S`` overrides. Fails on any crash, untyped exception, timeout or
    silent wrong load, with the files saved under reports/fuzz/<cell>/failures/.
    """
    python = _cell_python(session, cell)
    session.run(
        python, "-m", "ckptcompat.harness.fuzz", "--cases", "5000",
        "--out", str(REPORTS / "fuzz" / cell), *session.posargs,
        external=True, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def fuzz_coverage(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the static scanner with atheris (standard library only:
    no torch). Ten minutes by default; libFuzzer flags after ``--``; findings are written
    to reports/fuzz/ as crash-* files."""
    session.install("atheris<3.1")  # the last release with CPython 3.11 wheels
    session.install("--no-deps", "-e", ".")
    out = REPORTS / "fuzz"
    out.mkdir(parents=True, exist_ok=True)
    session.run(
        "python", "-m", "ckptcompat.harness.fuzz.coverage", "-max_total_time=600",
        "-timeout=20", "-rss_limit_mb=2048", "-max_len=300000", f"-artifact_prefix={out}/",
        *session.posargs, str(out / "coverage-corpus"),
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmark manager, doctor and PPO as ratios to baselines in the t215 cell (BENCHMARKS.md)."""
    _install_cell(session, "t215")
    # Comparison tools live only in this venv; unpinned, so their versions are printed.
    tools = ("stable-baselines3", "sb3-contrib", "picklescan", "pyinstrument", "matplotlib")
    cell = versions.by_id("t215")
    session.install("-c", str(CONSTRAINTS), cell.torch_requirement, *tools)
    show = f"import importlib.metadata as m; [print(n, m.version(n)) for n in {tools!r}]"
    session.run("python", "-c", show)
    session.run("python", "benchmarks/bench.py", *session.posargs)
