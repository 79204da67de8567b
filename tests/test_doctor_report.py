"""The doctor's report: the verdict line, short answers, code risks, the state_dict config.

Every test here is static (files are scanned, never unpickled) and so marked ``one_cell``:
nothing depends on the installed torch. Hand-written pickles naming ``os.system`` are only
ever scanned.
"""

from __future__ import annotations

import json
import pickle
import shlex
import shutil
from pathlib import Path

import pytest

from ckptcompat import doctor
from ckptcompat.harness import corpus
from ckptcompat.harness.malicious import files as malicious

pytestmark = pytest.mark.one_cell

CORPUS = sorted(corpus.CORPUS_DIR.glob("*.pt"))
MALICIOUS = sorted(malicious.CORPUS_DIR.glob("*.pt"))
GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "t26"


def _lines(path: Path) -> list[str]:
    return doctor.render_text(doctor.diagnose(path)).splitlines()


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("state_dict.pt", "loads with weights_only on every torch 2.4-2.15"),
        (
            "tensor_uint16.pt",
            "cannot load with weights_only (no allowlist helps) on 2.4-2.5; "
            "loads with weights_only on 2.6-2.15",
        ),
        ("set.pt", "needs 1 allowlist entry on 2.4-2.5; loads with weights_only on 2.6-2.15"),
        ("whole_mock_agent.pt", "a plain torch.load runs code the file names on 2.4-2.5"),
    ],
)
def test_one_line_verdict_comes_first(name: str, verdict: str) -> None:
    """Guards a report whose answer hides below 12 table rows: the second line (after the
    file name) is one verdict over the version ranges, before the table; ``--json`` gives
    the same line as ``summary``."""
    diag = doctor.diagnose(corpus.CORPUS_DIR / name)
    lines = doctor.render_text(diag).splitlines()
    assert lines[1].startswith("  verdict      ") and verdict in lines[1]
    table = next(i for i, line in enumerate(lines) if line.lstrip().startswith("torch  release"))
    assert table > 1
    assert doctor.to_json(diag)["summary"] == lines[1].removeprefix("  verdict      ")


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("empty.pt", "an empty file, not a torch.save file: restore it"),
        ("git_lfs_pointer.pt", "a Git LFS pointer, not the file it points to: run `git lfs pull`"),
        ("html_page.pt", "an HTML file, not a torch.save file: the download returned a web page"),
        ("truncated_zip.pt", "a truncated zip archive (no central directory): restore it"),
    ],
)
def test_non_checkpoints_get_a_short_answer(name: str, answer: str) -> None:
    """Guards a 12-row table of not_fixable (and "a empty file") for files that are no
    checkpoint at all: the short answer, in English, and the size; no table."""
    lines = _lines(corpus.CORPUS_DIR / name)
    assert answer in lines[1]
    assert len(lines) == 3 and lines[2].startswith("  file ")
    assert not any("a empty" in line or "a html" in line.lower() for line in lines)


def test_a_text_file_is_called_one(tmp_path: Path) -> None:
    """Guards a text file (a README saved as .pt) reported as bytes of type "unknown"."""
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    assert "a text file, not a torch.save file" in _lines(path)[1]


@pytest.mark.parametrize("path", MALICIOUS, ids=lambda p: p.name)
def test_malicious_file_gets_no_snippet_and_no_command(path: Path) -> None:
    """Guards the doctor printing a ready-to-paste
    ``torch.serialization.add_safe_globals([os.system])`` (marked dangerous only in a
    column) or a ``migrate --trust`` command that would run the payload: every file of the
    malicious corpus gets "unsafe, do not load it" first, why, and nothing to paste."""
    diag = doctor.diagnose(path)
    text = doctor.render_text(diag)
    assert diag.risks
    assert doctor.verdict_line(diag).startswith("unsafe, do not load it: ")
    assert "add_safe_globals" not in text and "python:" not in text
    assert diag.migration.command is None and "ckptcompat migrate" not in text
    assert doctor.to_json(diag)["risks"] == list(diag.risks)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_benign_corpus_has_no_code_risk(path: Path) -> None:
    """Guards false alarms: a risk makes repro refuse the file, so none of the (benign)
    regression corpus may have one."""
    assert doctor.diagnose(path).risks == ()


def test_headerless_pickles_are_risky_only_when_they_name_globals(tmp_path: Path) -> None:
    """Guards a protocol-0 pickle without torch's header (inst_os_system_p0.pt) passing as
    "unknown bytes": torch <= 2.5's legacy loader unpickles it with the full unpickler, so
    one naming os.system is a risk; plain data is not."""
    data = tmp_path / "data.pt"
    data.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=0))
    payload = tmp_path / "payload.pt"
    payload.write_bytes(b"cos\nsystem\n(S'true'\ntR.")  # scanned only, never unpickled
    assert doctor.diagnose(data).risks == ()
    (risk,) = doctor.diagnose(payload).risks
    assert "os.system" in risk and "full unpickler" in risk


def _state_dict_beside(tmp_path: Path, agent_dir: str) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(GOLDEN / agent_dir / "checkpoints", folder / "checkpoints")
    shutil.copyfile(GOLDEN / "mock" / "state_dict_v1.pt", folder / "state_dict_v1.pt")
    return folder / "state_dict_v1.pt"


def test_state_dict_gets_the_config_of_the_agent_beside_it(tmp_path: Path) -> None:
    """Guards ``--class-path CLASS_PATH --config CONFIG_JSON`` placeholders when a
    safe-format checkpoint of the same agent (same state_dict keys) sits next to the bare
    state_dict: its class path and JSON config fill the migrate command."""
    path = _state_dict_beside(tmp_path, "mock")
    migration = doctor.diagnose(path).migration
    assert migration.command is not None and migration.agent_from is not None
    argv = shlex.split(migration.command)
    assert argv[argv.index("--class-path") + 1] == "ckptcompat.agents.mock.MockAgent"
    config = json.loads(argv[argv.index("--config") + 1])
    assert {"observation_space", "action_space"} <= set(config)
    assert migration.agent_from.endswith("checkpoints/mock_v1.pt")


def test_a_ddp_state_dict_gets_the_config_of_the_agent_beside_it(tmp_path: Path) -> None:
    """Guards the hint missing the agent next to a DDP state_dict (new-user trial,
    2026-12-06: "none next to it has these state_dict keys" for ``module.``-prefixed keys
    of the very agent beside it): keys are compared without the wrapper prefix, which
    migrate strips."""
    import torch

    from ckptcompat import torch_compat

    path = _state_dict_beside(tmp_path, "mock")
    state = torch_compat.load(path)
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    migration = doctor.diagnose(path).migration
    assert migration.agent_from is not None, migration.note
    assert migration.agent_from.endswith("checkpoints/mock_v1.pt")
    lock = path.parent / "checkpoints" / ".lock"  # the manager's writer lock: not a checkpoint
    lock.touch()
    from ckptcompat.doctor.batch import checkpoint_paths

    assert lock not in set(checkpoint_paths([tmp_path]))


def test_state_dict_beside_another_agent_keeps_the_placeholders(tmp_path: Path) -> None:
    """Guards a wrong --config: a RecurrentAgent checkpoint next to a MockAgent state_dict
    holds other keys, so the command keeps its placeholders and says why."""
    migration = doctor.diagnose(_state_dict_beside(tmp_path, "recurrent")).migration
    assert migration.command is not None and "--config CONFIG_JSON" in migration.command
    assert migration.agent_from is None
    assert "none next to it has these state_dict keys" in migration.note
