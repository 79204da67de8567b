"""A team's own agents through ``--config``.

Covers harness/team.py, harness/golden/team.py and examples/team_project.

Runs in every cell: config parsing, the example agent via the registry, doctor + migrate of the
example's old checkpoints here, and the team matrix path end to end in THIS cell only (one
phase process per phase, the tiny default budget), gated against the example's baseline
restricted to this cell.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ckptcompat import doctor, torch_compat
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint.migrate import migrate
from ckptcompat.errors import AgentMismatchError, UnsafeCheckpointError
from ckptcompat.harness import team, versions
from ckptcompat.harness.verdict import gate
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.matrix import Baseline, load_baseline
from ckptcompat.rl.trainer_setup import env_space_configs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "team_project"
CONFIG = EXAMPLE / "pyproject.toml"


@pytest.fixture(autouse=True)
def _example_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))


def _cell() -> str:
    return os.environ.get("CKPTCOMPAT_CELL") or versions.cell_for_torch(str(torch.__version__)).id


def test_example_config_parses() -> None:
    cfg = team.load(CONFIG)
    assert [a.name for a in cfg.agents] == ["mlp"]
    assert cfg.baseline == EXAMPLE / "ckptcompat" / "baseline.json"
    assert cfg.golden_dir == EXAMPLE / "ckptcompat" / "golden"
    assert cfg.checkpoints == EXAMPLE / "checkpoints"
    assert cfg.resolved_agents() == {"mlp": ("team_agents.MLPAgent", {"hidden": 16})}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('cells = ["t99"]', "tool.ckptcompat.cells"),
        ('[[tool.ckptcompat.agents]]\nname = "Bad Name"', "agents[0].name"),
        ('[[tool.ckptcompat.agents]]\nname = "a"\nclass_path = "nodots"', "agents[0].class_path"),
        ("colour = 1", "unknown keys"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[tool.ckptcompat]\npackage = "."\n{body}\n')
    with pytest.raises(team.TeamConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        team.load(path)


def test_missing_table_and_package(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(team.TeamConfigError, match=r"no \[tool.ckptcompat\] table"):
        team.load(tmp_path / "pyproject.toml")
    (tmp_path / "team.toml").write_text("cells = ['t26']\n")
    with pytest.raises(team.TeamConfigError, match="package is missing"):
        team.load(tmp_path / "team.toml")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("team.toml", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests arrays"),
        ("team.toml", b'package = "\xff\xfe"\n', "not UTF-8"),
        ("pyproject.toml", b"tool = 5\n", "tool is int"),
        ("pyproject.toml", b"[tool]\nckptcompat = 5\n", "tool.ckptcompat is int"),
        ("team.toml", b"# pad\n" * 200_000, "is over 1048576 bytes"),
        ("team.toml", b'package = "./a\\u0000b"\n', "package is no usable path"),
        ("team.toml", b'package = "."\ngolden = "a\\u0000"\n', "golden is no usable path"),
        (
            "team.toml",
            b'package = "."\ncheckpoints = "' + b"a/" * 3000 + b'"\n',
            "checkpoints .* is not a directory",
        ),
    ],
)
def test_hostile_config_files_are_typed_errors(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    """Guards team.load on hostile TOML: 5,000 nested arrays raised RecursionError from
    tomllib, a non-UTF-8 byte UnicodeDecodeError, `tool = 5` AttributeError and
    `[tool] ckptcompat = 5` TypeError, a NUL in a path ValueError, a checkpoints path over
    PATH_MAX OSError, each a bare traceback from `nox -s matrix -- --config`; a large file
    was read whole. Each is a TeamConfigError naming the problem."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(team.TeamConfigError, match=expected):
        team.load(path)


def test_config_that_is_no_regular_file(tmp_path: Path) -> None:
    """Guards team.load on a directory (IsADirectoryError traceback) and a FIFO (the read
    blocked forever): both are TeamConfigError, and the FIFO is never opened."""
    with pytest.raises(team.TeamConfigError, match="not a regular file"):
        team.load(tmp_path)
    fifo = tmp_path / "pyproject.toml"
    os.mkfifo(fifo)
    with pytest.raises(team.TeamConfigError, match="not a regular file"):
        team.load(fifo)


#: Characters and whole TOML tokens the fuzz inserts: structure, escapes, odd values.
_TOML_NOISE = (
    *'[]{}=",.\'\n #0129az_-\\',
    "\\u0000", "\\n", "a/" * 2100, "..", "/", "~", "5", "-0.0", "inf", "nan", "true", "[]",
    "{}", "[[]]", '""', "1979-05-27", "07:32:00", "[[agents]]", "[tool]", "[tool.ckptcompat]",
    'package = "."', "cells = ", "config = ", "class_path = ", "checkpoints = ", "\\U0001F600",
)  # fmt: skip


def _mutate(text: str, rng: random.Random) -> str:
    """One random edit of ``text``: delete, duplicate or overwrite a span, or insert noise."""
    i = rng.randrange(len(text) + 1)
    j = min(len(text), i + rng.randrange(1, 40))
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i] + text[j:]
    if kind == 1:
        return text[:j] + text[i:j] * rng.randrange(2, 6) + text[j:]
    noise = "".join(rng.choice(_TOML_NOISE) for _ in range(rng.randrange(1, 4)))
    return text[:i] + noise + (text[j:] if kind == 2 else text[i:])


@pytest.mark.one_cell
def test_fuzzed_configs_load_or_raise_team_config_error(tmp_path: Path) -> None:
    """Guards team.load against any malformed config escaping as a traceback (this fuzz
    found a NUL byte in package/checkpoints/golden giving ValueError "embedded null byte";
    a checkpoints path over PATH_MAX gave OSError ENAMETOOLONG, found by hand). 3,000
    seeded mutations of the example's pyproject.toml (1 to 3 edits each) either load, with
    a config that goes to JSON, or raise TeamConfigError. One cell: team.load is stdlib
    TOML and path logic that imports no torch; the cells' own parsing is
    test_example_config_parses in every cell."""
    text = CONFIG.read_text()
    (tmp_path / "checkpoints").mkdir()  # the example's checkpoints = "checkpoints"
    rng = random.Random(21)
    outcomes = {"loaded": 0, "refused": 0}
    for n in range(3000):
        body = text
        for _ in range(rng.randrange(1, 4)):
            body = _mutate(body, rng)
        path = tmp_path / ("pyproject.toml" if n % 2 else "team.toml")
        path.write_bytes(body.encode("utf-8", "surrogatepass"))
        try:
            cfg = team.load(path)
        except team.TeamConfigError as exc:
            assert str(exc), body
            outcomes["refused"] += 1
        else:
            json.dumps(cfg.to_json())
            outcomes["loaded"] += 1
    assert outcomes["loaded"] > 100 and outcomes["refused"] > 1000, outcomes


def test_non_json_config_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards a TOML date in an agent's config: `nox -s matrix -- --config` and `gate`
    crashed with "TypeError: Object of type datetime is not JSON serializable" from
    team.main's json.dumps, before the cell's check could name the field (a new user's
    trial, 2026-12-07). Reading the file names it now with the registry's rules (exit 2
    from the CLI), nested ones too, and TOML's nan/inf, which a TOML-only check let through
    to the cells; resolved_agents still refuses a non-JSON config built in code."""
    path = tmp_path / "team.toml"
    path.write_text(
        'package = "."\n[[agents]]\nname = "mlp"\nclass_path = "team_agents.MLPAgent"\n'
        "config = {hidden = 16, started = 2024-01-01T00:00:00}\n"
    )
    started = r"tool\.ckptcompat\.agents\[0\]\.config\['started'\] is not a JSON primitive"
    with pytest.raises(team.TeamConfigError, match=started):
        team.load(path)
    assert team.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "agents[0].config['started'] is not a JSON primitive" in err
    assert "found datetime.datetime: " in err and "Traceback" not in err
    path.write_text(
        'package = "."\n[[agents]]\nname = "mlp"\nclass_path = "team_agents.MLPAgent"\n'
        "config = {layers = [{at = 12:00:00}]}\n"
    )
    with pytest.raises(team.TeamConfigError, match=r"config\['layers'\]\[0\]\['at'\]"):
        team.load(path)
    for value in ("nan", "inf", "-inf"):
        path.write_text(
            'package = "."\n[[agents]]\nname = "mlp"\nclass_path = "team_agents.MLPAgent"\n'
            f"config = {{clip = {value}}}\n"
        )
        with pytest.raises(team.TeamConfigError, match=r"config\['clip'\] is -?(nan|inf)"):
            team.load(path)
    built = team.TeamAgent("mlp", "team_agents.MLPAgent", {"sizes": (1, 2)})
    cfg = dataclasses.replace(team.load(CONFIG), agents=(built,))
    with pytest.raises(AgentMismatchError, match=r"agents\[0\]\.config"):
        cfg.resolved_agents()


def test_entry_points_register_agents(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(team, "entry_point_agents", lambda: {"mlp": "team_agents.MLPAgent"})
    path = tmp_path / "team.toml"
    path.write_text('package = "."\n[[agents]]\nname = "mlp"\n')
    assert team.load(path).resolved_agents() == {"mlp": ("team_agents.MLPAgent", {})}
    path.write_text('package = "."\n')
    assert team.load(path).resolved_agents() == {"mlp": ("team_agents.MLPAgent", {})}


def test_example_agent_builds_through_registry() -> None:
    agent = build_agent("team_agents.MLPAgent", {"hidden": 8})
    assert agent.config["hidden"] == 8 and agent.activation is torch.nn.Tanh
    rebuilt = build_agent("team_agents.MLPAgent", agent.config)
    assert rebuilt.config == agent.config


def test_example_checkpoints_doctor_and_migrate(tmp_path: Path) -> None:
    g2 = EXAMPLE / "checkpoints" / "mlp__e3__s384__t0__sc0.pt"
    sd = EXAMPLE / "checkpoints" / "mlp_state_dict.pt"
    assert doctor.diagnose(g2).generation == "g2"
    assert doctor.diagnose(sd).generation == "state_dict"
    with pytest.raises(UnsafeCheckpointError, match=r"team_agents\.MLPAgent"):
        migrate(g2, tmp_path / "g2.pt")
    report = migrate(g2, tmp_path / "g2_trusted.pt", trust=True)
    assert report.outputs_equal
    report = migrate(
        sd, tmp_path / "sd.pt", run="mlp", epoch=0,
        class_path="team_agents.MLPAgent", config={"hidden": 16},
    )  # fmt: skip
    assert report.generation == "state_dict"


def test_team_state_dict_of_an_agent_with_required_spaces_migrates(tmp_path: Path) -> None:
    """Guards the matrix's migrate check of a team's own bare state_dict: it passed the
    [tool.ckptcompat] config without the env's spaces, so an agent whose constructor
    requires observation_space/action_space (as the README's contract allows; MLPAgent
    here) failed with "missing 2 required positional arguments", a false failure that the
    proposed baseline then recorded as expected (a new user's trial, 2026-12-07)."""
    from ckptcompat.agents.mlp import MLPAgent
    from ckptcompat.harness.golden import team as team_checks

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    kwargs = {"hidden_sizes": [8]}
    config = {**kwargs, **env_space_configs("CartPole-v1")}
    assert config["observation_space"]["shape"] == [4] and config["hidden_sizes"] == [8]
    torch_compat.save(MLPAgent(**config).state_dict(), checkpoints / "mlp_state_dict.pt")
    cfg = dataclasses.replace(
        team.load(CONFIG),
        agents=(team.TeamAgent("mlp", "ckptcompat.agents.mlp.MLPAgent", kwargs),),
        checkpoints=checkpoints,
    )
    outcomes = {}

    def emit(scenario: str, artifact: str, agent: str, loader: str, body: Any) -> str:
        outcome, detail = team_checks._outcome(body)  # as run()'s emit records it
        outcomes[(scenario, loader)] = (outcome, detail)
        return outcome

    team_checks.checkpoint_checks(cfg, cfg.resolved_agents(), emit, tmp_path)
    assert outcomes == {
        ("checkpoints", "allowlist"): ("pass", ""),
        ("checkpoints", "naive"): ("pass", "collections.OrderedDict"),
        ("doctor", "naive"): ("pass", ""),
    }


@pytest.mark.slow
def test_team_matrix_in_this_cell(tmp_path: Path) -> None:
    """The team path end to end, one process per phase, in this cell only (budget: seconds)."""
    cell = _cell()
    env = {
        **os.environ,
        "CKPTCOMPAT_CELL": cell,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE / "src"), os.environ.get("PYTHONPATH", "")]),
        "CKPTCOMPAT_GIT_SHA": results.git_sha(),
    }
    work, records = tmp_path / "work", tmp_path / "records"
    for phase in ("train", "resume", "evaluate"):
        proc = subprocess.run(
            [sys.executable, "-m", "ckptcompat.harness.run.phases", phase, cell, "--cells", cell,
             "--work", str(work), "--records", str(records), "--config", str(CONFIG)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    got = list(results.read_records([records]))
    scenarios = {r["scenario"] for r in got}
    assert {"train", "resume", "evaluate", "checkpoints", "doctor"} <= scenarios
    here = versions.by_id(cell).torch
    full = load_baseline(EXAMPLE / "ckptcompat" / "baseline.json")

    def only_here(key: str) -> bool:
        # The chain producer->consumer->evaluator stays inside this cell ("-": no stage).
        return set(key.rsplit("/", 1)[1].split("->")) <= {here, "-"}

    mine = {k: v for k, v in full.cells.items() if only_here(k)}
    assert mine, f"the example baseline has no cells for {cell}; regenerate it (see its note)"
    got = [r for r in got if only_here(r["cell_key"])]
    verdict = gate.judge(got, Baseline(full.note, full.reasons, mine), results.git_sha())
    assert verdict.passed, gate.summary_markdown(verdict)


@pytest.mark.one_cell
def test_team_golden_of_a_cell_outside_cells_is_refused_before_any_install(
    tmp_path: Path,
) -> None:
    """Guards `nox -s "golden(t24)" -- --config` with `cells = ["t26"]`: the session built
    .nox/golden-t24 and installed torch 2.4.1 (3-5 GB on a cold cache) before the golden
    CLI refused the cell (a new user's trial, 2026-12-07). The noxfile reads the config
    with nox's own interpreter first and stops; run with --no-venv here, so any install
    attempt would fail the other way. One cell: noxfile logic, no torch involved."""
    config = tmp_path / "pyproject.toml"
    config.write_text(
        '[project]\nname = "x"\nversion = "0"\n[tool.ckptcompat]\npackage = "."\n'
        'cells = ["t26"]\n[[tool.ckptcompat.agents]]\nname = "m"\nclass_path = "x.Y"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--no-venv",
         "-s", "golden(t24)", "--", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "aborted: cell t24 is not in the team's cells ['t26']" in out, out
    assert "install" not in out.lower(), out
