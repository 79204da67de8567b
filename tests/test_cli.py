"""The ckptcompat command line: the harness chain across processes, exit codes, help, errors."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ckptcompat import __version__, cli, cli_run
from ckptcompat.evaluation.stats_db import EvalStatsDB

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_MOCK = ROOT / "fixtures" / "golden" / "t26" / "mock"
STATE_DICT = ROOT / "fixtures" / "corpus" / "state_dict.pt"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckptcompat.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _record(stdout: str) -> dict:
    assert stdout.strip()
    return json.loads(stdout.strip().splitlines()[-1])


def _saved_run(data: Path, epochs: int = 2) -> Path:
    """``data/r/checkpoints/r_v1.pt ...``: MockAgent checkpoints saved directly (no training)."""
    from ckptcompat.agents import MockAgent
    from ckptcompat.checkpoint import SimpleCheckpointManager

    manager = SimpleCheckpointManager("r", data)
    for epoch in range(1, epochs + 1):
        manager.save_agent(MockAgent(), epoch, metadata={"agent_step": 10 * epoch, "score": None})
    return manager.checkpoint_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    "agent",
    [
        # The CLI's steps are the same code for every agent; the recurrent agent (hidden
        # state through resume and evaluation) runs them in every cell. The mock agent's
        # per-version save, load and resume are checked in every cell by test_manager,
        # test_trainer and its goldens, so its chain runs in one cell (issue 21 item 4:
        # ~10 s of a worker per cell).
        pytest.param("ckptcompat.agents.mock.MockAgent", marks=pytest.mark.one_cell),
        "ckptcompat.agents.recurrent.RecurrentAgent",
    ],
)
def test_train_resume_evaluate_chain_lands_in_the_db(
    tmp_path: Path, agent: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the round trip across processes: train -> stop -> resume -> evaluate -> DB row.

    Each step is a new process that only reads and writes files, as the matrix runs them
    across venvs; the evaluation lands under (run, epoch) of the resumed checkpoint. A
    resume below the run's epoch is bad input: exit 2 (was 1) with an ``error`` record.
    """
    train = _cli("run", "train", "--run", "r", "--dir", "d", "--agent", agent, "--seed", "3",
                 "--epochs", "2", "--checkpoint-every", "1", cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr
    first = _record(train.stdout)
    assert first["outcome"] == "pass" and first["outputs"]["epoch"] == 2
    assert train.stderr.strip() == f"ckptcompat run train: pass: {first['detail']}"

    resume = _cli("run", "resume", "--run", "r", "--dir", "d", "--epochs", "4", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    second = _record(resume.stdout)
    assert second["outputs"]["epoch"] == 4
    assert second["outputs"]["agent_step"] > first["outputs"]["agent_step"]
    assert second["outputs"]["params_digest"] != first["outputs"]["params_digest"]

    # Bad input is refused before any training: checked in this process (a child costs
    # an `import torch`); the steps that train or evaluate stay separate processes.
    code = cli.main(["run", "resume", "--run", "r", "--dir", str(tmp_path / "d"), "--epochs", "3"])
    stale = _record(capsys.readouterr().out)
    assert code == 2 and "nothing to resume" in stale["detail"] and stale["outcome"] == "error"

    evaluate = _cli("run", "evaluate", "--uri", "d/r:latest", "--db", "eval.duckdb",
                    "--episodes", "2", cwd=tmp_path)  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr
    third = _record(evaluate.stdout)
    assert (third["outputs"]["policy_key"], third["outputs"]["policy_version"]) == ("r", 4)
    assert third["outputs"]["params_digest"] == second["outputs"]["params_digest"]
    with EvalStatsDB(tmp_path / "eval.duckdb", read_only=True) as db:
        assert db.potential_samples_for_metric("r", 4) == 2
        assert db.get_average_metric_by_filter("reward", ("r", 4)) == pytest.approx(
            third["outputs"]["mean_return"]
        )


def test_failed_check_prints_a_fail_record_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards a failing step printing a traceback (or nothing) instead of a record: a
    checkpoint whose bytes no longer match its index is a failed check (exit 1, ``fail``),
    not bad input. (This test used a missing run, which is now bad input, exit 2.)"""
    folder = _saved_run(tmp_path / "d", epochs=1)
    target = folder / "r_v1.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    code = cli.main(["run", "evaluate", "--uri", f"{tmp_path}/d/r:latest",
                     "--db", str(tmp_path / "e.duckdb"), "--episodes", "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    record = _record(out)
    assert record["outcome"] == "fail" and record["detail"].startswith("CorruptCheckpointError")
    assert err.startswith("ckptcompat run evaluate: fail: CorruptCheckpointError")
    assert len(err.strip().splitlines()) == 1


def _evaluate(*more: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "evaluate", "--uri", f"{tmp}/d/r:latest", *more]


def _train(*more: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "train", "--run", "r", "--dir", f"{tmp}/d", "--epochs", "1", *more]


# case -> (argv for a tmp dir holding d/r/ (epochs 1, 2) and adir/, what stderr must say)
_BAD_INPUT: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "migrate missing source": (lambda tmp: ["migrate", "/missing.pt", f"{tmp}/out"],
                               "CheckpointNotFoundError"),
    "migrate directory source": (lambda tmp: ["migrate", f"{tmp}/adir", f"{tmp}/out"],
                                 "InputError"),
    "migrate invalid --config": (lambda tmp: ["migrate", str(STATE_DICT), "o.pt", "--config",
                                              "{not json"], "invalid JSON"),
    "migrate --config not an object": (lambda tmp: ["migrate", str(STATE_DICT), "o.pt",
                                                    "--config", "[1]"], "expected a JSON object"),
    "train unknown env": (_train("--env", "NoSuchEnv-v9"), "invalid choice: 'NoSuchEnv-v9'"),
    "train unknown agent": (_train("--agent", "nope.Nope"), "InputError"),
    "train bad run name": (lambda tmp: ["run", "train", "--run", "a/b", "--dir", f"{tmp}/d",
                                        "--epochs", "1"], "invalid run name"),
    "train missing --epochs": (lambda tmp: ["run", "train", "--run", "r", "--dir", f"{tmp}/d"],
                               "--epochs"),
    "resume missing run": (lambda tmp: ["run", "resume", "--run", "nope", "--dir", f"{tmp}/d",
                                        "--epochs", "2"], "CheckpointNotFoundError"),
    "evaluate db is a directory": (lambda tmp: _evaluate("--db", f"{tmp}/adir")(tmp),
                                   "a directory"),
    "evaluate db directory missing": (_evaluate("--db", "/nonexistent/x.duckdb"),
                                      "directory does not exist"),
    "evaluate --episodes 0": (lambda tmp: _evaluate("--db", f"{tmp}/e.duckdb", "--episodes",
                                                    "0")(tmp), "must be >= 1"),
    "evaluate missing epoch": (lambda tmp: ["run", "evaluate", "--uri", f"{tmp}/d/r:v7",
                                            "--db", f"{tmp}/e.duckdb"], "found epochs 1, 2"),
    "train --dir through a file": (lambda tmp: ["run", "train", "--run", "r", "--dir",
                                                f"{tmp}/d/r/checkpoints/r_v1.pt/sub",
                                                "--epochs", "1"], "r_v1.pt is a file"),
    "migrate DST through a file": (lambda tmp: ["migrate", f"{tmp}/d/r/checkpoints/r_v1.pt",
                                                f"{tmp}/d/r/checkpoints/r_v2.pt/sub"],
                                   "r_v2.pt is a file"),
    "migrate name without run or epoch": (lambda tmp: ["migrate", f"{tmp}/old_agent.pt",
                                                       f"{tmp}/out"], "--run/--epoch"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_BAD_INPUT))
def test_bad_input_is_a_one_screen_typed_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Guards issue 20's tracebacks: a missing or directory source for migrate
    (FileNotFoundError/IsADirectoryError), an unknown env (UnsupportedEnvError, no record),
    an unusable --db (StatsDBError), --episodes 0 (ValueError) each exited 1 like a real
    failure. Now: exit 2, a short typed message on stderr, and for ``run`` steps an
    ``error`` record as the last stdout line. Also (a new user's trial, 2026-12-07): a
    --dir or migrate DST running through a file exited 1 with "index.json is malformed,
    restore it from a backup", and a G2 file whose name gives no run or epoch exited 1."""
    from ckptcompat.agents import MockAgent
    from ckptcompat.checkpoint import legacy

    _saved_run(tmp_path / "d")
    (tmp_path / "adir").mkdir()
    legacy.write_g2(MockAgent(), tmp_path / "old_agent.pt")
    make_argv, expected = _BAD_INPUT[case]
    argv = make_argv(tmp_path)
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 6  # one screen: at most usage + one error line
    if argv[0] == "run":
        record = _record(out)
        assert record["outcome"] == "error" and record["scenario"] == f"run_{argv[1]}"
    else:
        assert out == ""


def test_evaluate_takes_run_version_uris_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards ``--uri data/r:v1`` failing with "no checkpoint file here" while
    ``mock://r:v1`` worked: DIR/RUN:vN is epoch N of that run on disk."""
    _saved_run(tmp_path / "d")
    code = cli.main(["run", "evaluate", "--uri", f"{tmp_path}/d/r:v1",
                     "--db", str(tmp_path / "e.duckdb"), "--episodes", "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (_record(out)["outputs"]["policy_key"], _record(out)["outputs"]["policy_version"]) == (
        "r",
        1,
    )


def test_migrate_and_doctor_commands(tmp_path: Path) -> None:
    """Guards the migrate/doctor commands' exit codes and messages on a legacy file."""
    from ckptcompat.agents import MockAgent
    from ckptcompat.checkpoint import legacy

    src = legacy.write_g2(MockAgent(), tmp_path / "r__e1__s10__t2__sc0.pt")
    doctor = _cli("doctor", str(src), "--json", cwd=tmp_path)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["generation"] == "g2"
    migrated = _cli("migrate", str(src), "out", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "outputs equal on the probe batch: True" in migrated.stdout
    again = _cli("migrate", str(src), "out", cwd=tmp_path)
    assert again.returncode == 1 and "never overwrit" in again.stderr
    missing = _cli("doctor", str(tmp_path / "nope.pt"), cwd=tmp_path)
    assert missing.returncode == 2


def test_doctor_migrate_command_for_a_bare_state_dict_runs_as_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the doctor printing ``--class-path CLASS_PATH --config CONFIG_JSON`` for a
    bare state_dict whose agent config sits next to it: with a safe-format checkpoint of
    the same agent beside it, the printed command (RUN/EPOCH filled in) migrates the file
    and the outputs match."""
    folder = tmp_path / "mock"
    shutil.copytree(GOLDEN_MOCK / "checkpoints", folder / "checkpoints")
    shutil.copyfile(GOLDEN_MOCK / "state_dict_v1.pt", folder / "state_dict_v1.pt")
    assert cli.main(["doctor", "--json", str(folder / "state_dict_v1.pt")]) == 0
    migration = json.loads(capsys.readouterr().out)["migration"]
    assert migration["agent_from"] == str(folder / "checkpoints" / "mock_v1.pt")
    argv = shlex.split(migration["command"])
    assert argv[:2] == ["ckptcompat", "migrate"] and "CONFIG_JSON" not in argv
    argv = [{"RUN": "r", "EPOCH": "1", "migrated/": str(tmp_path / "out")}.get(a, a) for a in argv]
    assert cli.main(argv[1:]) == 0
    assert "outputs equal on the probe batch: True" in capsys.readouterr().out


@pytest.mark.one_cell
def test_help_has_exit_codes_defaults_and_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards help without defaults or option text (--run, --epoch, --class-path, --agent,
    --env, --seed, --checkpoint-every, --uri, --episodes), a top-level help showing the
    module docstring's reStructuredText, and exit codes missing from --help (one cell:
    argparse only)."""
    ids = ("CartPole-v1", "MiniGrid-Empty-5x5-v0")
    parsers = [cli._parser(ids)]
    undocumented = []
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
            elif action.option_strings and action.dest not in ("help", "version"):
                text = action.help or ""
                if "default" not in text and "required" not in text:
                    undocumented.append(f"{parser.prog} {action.option_strings[0]}")
            elif not action.option_strings and not action.help:
                undocumented.append(f"{parser.prog} {action.dest}")
    assert undocumented == []
    for argv in (["--help"], ["run", "train", "--help"], ["migrate", "--help"]):
        assert cli.main(argv) == 0
        text = capsys.readouterr().out
        assert "``" not in text and ":class:" not in text and ":func:" not in text
        assert "2  bad input or usage" in text and "1  the check failed" in text
    assert cli.main(["run", "train", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(i in text for i in ids)
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"ckptcompat {__version__} (torch ")


@pytest.mark.one_cell
def test_train_default_agent_is_the_trainers() -> None:
    """Guards the --agent default (spelled in cli_run so --help needs no torch) drifting
    from the trainer's default agent (one cell: constants)."""
    from ckptcompat.rl.trainer_config import DEFAULT_AGENT

    assert cli_run._DEFAULT_AGENT == DEFAULT_AGENT


# A torch-less environment, as the matrix's report venv (ckptcompat installed --no-deps).
_WITHOUT_DEPS = textwrap.dedent(
    """
    import sys

    class _Missing:
        names = {"torch", "numpy", "xxhash", "gymnasium", "minigrid", "duckdb", "rich"}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Missing())
    from ckptcompat.cli import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


@pytest.mark.one_cell
def test_console_script_runs_without_torch_numpy_or_xxhash(tmp_path: Path) -> None:
    """Guards `ckptcompat` failing with ModuleNotFoundError: xxhash in the matrix's report
    venv: --help, --version and doctor work without torch, numpy or xxhash; commands that
    need them exit 2 with a typed message naming the package (one cell: no torch used)."""

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _WITHOUT_DEPS, *argv],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    assert run("--help").returncode == 0
    assert run("--version").stdout.startswith(f"ckptcompat {__version__}")
    text = run("doctor", str(STATE_DICT))
    assert text.returncode == 0, text.stderr
    assert "loads with weights_only on every torch 2.4-2.15" in text.stdout
    data = run("doctor", "--json", str(STATE_DICT))
    assert data.returncode == 0 and json.loads(data.stdout)["generation"] == "state_dict"
    for argv in (["migrate", str(STATE_DICT), "o.pt"],
                 ["run", "train", "--run", "r", "--dir", "d", "--epochs", "1"]):  # fmt: skip
        done = run(*argv)
        assert done.returncode == 2, done.stderr
        assert "MissingDependencyError" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.one_cell
def test_python_dash_m_ckptcompat_runs_the_cli(tmp_path: Path) -> None:
    """Guards `python -m ckptcompat doctor FILE` failing with "cannot be directly
    executed" (no __main__, found by a new-user trial). Version-independent: the module
    only dispatches to cli.main."""
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat", "doctor", "--json", "fixtures/corpus/set.pt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["file"].endswith("set.pt")


def test_a_warning_is_one_line_not_a_traceback_look_alike(tmp_path: Path) -> None:
    """Guards `migrate --trust` printing its TrustedLoadWarning in Python's default form,
    `.../migrate.py:77: TrustedLoadWarning: ...` followed by the source line of the call,
    which read as a traceback (a new user's trial, 2026-12-07): the warning is one line,
    `ckptcompat migrate: warning: TrustedLoadWarning: ...`, and the migration succeeds."""
    import torch

    from ckptcompat.agents import MockAgent

    agent = MockAgent()
    agent.extra_info = argparse.Namespace(note="not curated")  # outside the allowlist
    src = tmp_path / "r__e2__s0__t0__sc0.pt"
    torch.save(agent, src)  # the user's own whole-agent pickle
    done = _cli("migrate", str(src), "out", "--trust", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("ckptcompat migrate: warning: ") for line in lines)
    assert any("TrustedLoadWarning" in line for line in lines)
    assert ".py:" not in done.stderr and "return " not in done.stderr
