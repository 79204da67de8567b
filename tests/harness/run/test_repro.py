"""``python -m ckptcompat.harness.run.repro FILE``: real loads next to the doctor's prediction."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from ckptcompat.doctor.verdict import Verdict
from ckptcompat.harness import corpus
from ckptcompat.harness.malicious import files as malicious
from ckptcompat.harness.malicious import payloads
from ckptcompat.harness.run import repro

MALICIOUS = sorted(malicious.CORPUS_DIR.glob("*.pt"))


@pytest.mark.one_cell
def test_compare_flags_outcome_and_globals_mismatches() -> None:
    """Guards repro reporting agreement when the real load contradicts the doctor (one
    cell: pure comparison logic)."""
    refused = repro.LoadOutcome(ok=False, error_type="UnsafeCheckpointError", globals=("a.B",))
    loaded = repro.LoadOutcome(ok=True, result_type="builtins.dict")
    assert repro.compare("x", Verdict("loads", ""), loaded).agrees
    assert repro.compare("x", Verdict("runs_code", ""), loaded).agrees
    assert not repro.compare("x", Verdict("loads", ""), refused).agrees
    assert not repro.compare("x", Verdict("not_fixable", ""), loaded).agrees
    assert repro.compare("x", Verdict("fixable_by_allowlist", "", ("a.B",)), refused).agrees
    mismatch = repro.compare("x", Verdict("fixable_by_allowlist", "", ("c.D",)), refused)
    assert not mismatch.agrees and "a.B" in mismatch.detail
    by_torch = repro.LoadOutcome(ok=False, globals=("a.B",), cause="UnpicklingError")
    first_c = Verdict("fixable_by_allowlist", "", ("c.D", "a.B"), "Unsupported global: c.D")
    assert not repro.compare("x", first_c, by_torch).agrees  # torch stops at its first
    first_a = Verdict("fixable_by_allowlist", "", ("a.B", "c.D"), "Unsupported global: a.B")
    assert repro.compare("x", first_a, by_torch).agrees


def test_worker_reports_failures_as_outcomes() -> None:
    """Guards a worker that dies on the first refused file instead of reporting it."""
    lfs, ok = corpus.CORPUS_DIR / "git_lfs_pointer.pt", corpus.CORPUS_DIR / "state_dict.pt"
    out = repro.run_loads(
        [
            repro.LoadJob(str(lfs), "load"),
            repro.LoadJob(str(ok), "load"),
            repro.LoadJob(str(lfs.with_name("missing.pt")), "naive"),
        ]
    )
    assert [o.ok for o in out] == [False, True, False]
    assert out[0].error_type == "CorruptCheckpointError"
    assert out[1].result_type == "collections.OrderedDict"
    assert out[2].error_type == "CheckpointNotFoundError"


@pytest.mark.slow
def test_repro_cli_agrees_on_a_numpy_file() -> None:
    """Guards the repro command itself: three subprocess loads (naive, weights-only, with
    the doctor's allowlist) agree with the prediction for this torch; exit 0."""
    path = corpus.CORPUS_DIR / "numpy_float32_array.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.run.repro", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "with the allowlist" in proc.stdout and " NO" not in proc.stdout


def test_repro_cli_missing_file_exits_2(tmp_path: Path) -> None:
    """Guards a traceback for a missing FILE."""
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.run.repro", str(tmp_path / "nope.pt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "nope.pt" in proc.stderr


def _no_loads(jobs: Sequence[repro.LoadJob], **_: object) -> list[repro.LoadOutcome]:
    raise AssertionError(f"repro started a load: {jobs}")


@pytest.mark.one_cell
@pytest.mark.parametrize("path", MALICIOUS, ids=lambda p: p.name)
def test_repro_refuses_the_malicious_corpus_without_the_flag(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards `nox -s "repro(t24)" -- fixtures/malicious/global_os_system.pt` running the
    payload (it created the canary; the output only said `runs_code loaded yes`): a file
    the static scan flags is never handed to a load without --allow-code-execution; exit
    2 and the reason. One cell: the refusal is decided statically, before any load."""
    monkeypatch.setattr(repro, "run_loads", _no_loads)
    assert repro.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "--allow-code-execution" in err
    assert "Nothing was loaded" in err


def test_repro_process_refuses_global_os_system_and_runs_nothing(tmp_path: Path) -> None:
    """Guards the same fault end to end, in every cell (on 2.4/2.5 a plain torch.load runs
    the payload): the repro command itself exits 2 and the payload's canary never appears."""
    canary = tmp_path / "canary"
    env = {**os.environ, payloads.CANARY_ENV: str(canary), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.run.repro",
         str(malicious.CORPUS_DIR / "global_os_system.pt")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "os.system" in proc.stderr and proc.stdout == ""
    assert not canary.exists() and not (tmp_path / "ckptcompat-canary").exists()


@pytest.mark.one_cell
def test_allow_code_execution_flag_is_what_lets_a_flagged_file_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards a flag that does nothing (or a refusal that ignores it): a flagged but
    harmless file (getattr(OrderedDict, "__name__"): builtins.getattr is dangerous) is
    refused without the flag and loaded with it, with a warning. One cell: the loads are
    recorded, not run."""
    path = tmp_path / "getattr.pt"
    with zipfile.ZipFile(path, "w") as zf:  # hand-written pickle bytes; scanned only
        zf.writestr(
            "archive/data.pkl",
            b"\x80\x02cbuiltins\ngetattr\nccollections\nOrderedDict\n"
            b"X\x08\x00\x00\x00__name__\x86R.",
        )
        zf.writestr("archive/version", b"3\n")
    jobs: list[repro.LoadJob] = []

    def record(given: Sequence[repro.LoadJob], **_: object) -> list[repro.LoadOutcome]:
        jobs.extend(given)
        return [repro.LoadOutcome(ok=True, result_type="builtins.str") for _ in given]

    monkeypatch.setattr(repro, "run_loads", record)
    assert repro.main([str(path)]) == 2 and jobs == []
    capsys.readouterr()
    assert repro.main([str(path), "--allow-code-execution"]) in (0, 1)
    assert {j.loader for j in jobs} == {"naive", "load"}
    out, err = capsys.readouterr()
    assert "--allow-code-execution" in err and "torch.load(FILE)" in out
