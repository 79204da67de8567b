"""Hostile and malformed files (issue 23): no crash, no hang, no untyped error, no silent
wrong weights, through every entry point.

Each reproducer is built in code (:mod:`ckptcompat.harness.fuzz.crafted`, a few hundred
bytes to 200 kB) and read in a forked child per entry point (:class:`tests.faults.
ForkServer`), so a regression that kills the process (SIGSEGV) fails one case instead of
the run. Entry points: the static scan, ``doctor.diagnose``, ``ckptcompat doctor`` (text
and ``--json``), ``torch_compat.load`` and ``SimpleCheckpointManager.load_from_uri`` of a
bare path. The CRC cases run in this process: they cannot crash it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from ckptcompat import doctor, torch_compat
from ckptcompat.agents.mock import MockAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import CorruptCheckpointError, LimitExceededError
from ckptcompat.harness.fuzz import crafted
from ckptcompat.scan import scan
from tests.faults import SRC, ForkServer, fork_server

ENTRY_POINTS = ("scan", "doctor", "doctor --json", "doctor text", "load", "load_from_uri")

_CHILD = """
import contextlib, io
from ckptcompat import doctor, torch_compat
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import CheckpointError
from ckptcompat.scan import scan
path, entry = ARGS["path"], ARGS["entry"]
try:
    if entry == "scan":
        emit(outcome="ok", codes=sorted(scan.scan(path).codes()))
    elif entry == "doctor":
        emit(outcome="ok", codes=sorted(f.code for f in doctor.diagnose(path).findings))
    elif entry.startswith("doctor "):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = doctor.main([path, *(["--json"] if entry == "doctor --json" else [])])
        emit(outcome="ok", exit=code, stderr=err.getvalue()[-300:])
    elif entry == "load":
        torch_compat.load(path)
        emit(outcome="loaded")
    else:
        SimpleCheckpointManager.load_from_uri(path)
        emit(outcome="loaded")
except CheckpointError as exc:
    emit(outcome="typed", type=type(exc).__name__, limit=getattr(exc, "limit", None),
         message=str(exc)[:300])
"""

#: builder -> the limit torch_compat.load must name on every cell (None: any typed error;
#: files with opcodes or globals outside the weights-only set are refused as unsafe first
#: on torch < 2.10, whose full scan lists every reason).
_LIMIT = {
    "deep_tuple_key": {"max_nesting_depth"},
    "tuple_hash_bomb": {"max_unfolded_tuple_items"},
    "deflated_opcode_bomb": {"max_inflated_bytes", "max_compression_ratio"},  # both apply
}


@pytest.fixture(scope="module")
def server() -> ForkServer:
    return fork_server()


@pytest.mark.parametrize("name", sorted(crafted.BUILDERS))
def test_crafted_file_gets_a_typed_answer_everywhere(
    name: str, tmp_path: Path, server: ForkServer
) -> None:
    """Guards the four fault kinds of issue 23, one reproducer each: a 200k-level tuple
    used as a dict key or set member (SIGSEGV in the scan's inert pass, the doctor, the
    loads), a tuple hash bomb (a hang), a deflated data.pkl of cheap opcodes (50 s per
    78 kB), a legacy storage-size header used as a seek offset (OverflowError, OSError 22
    blamed on I/O), a storage-key list holding a list (TypeError), BINBYTES8/BINUNICODE8 of
    2**62 bytes in the doctor's fallback walk (MemoryError), a global named with a lone
    surrogate. Every entry point must exit cleanly: the doctor with a report (exit 0), the
    loads with a ckptcompat error (the limit named where one applies)."""
    path = tmp_path / f"{name}.pt"
    path.write_bytes(crafted.BUILDERS[name]())
    for entry in ENTRY_POINTS:
        result = server.run(_CHILD, {"path": str(path), "entry": entry}, timeout=60)
        where = f"{name} via {entry}"
        assert result.code == 0 and result.error is None, f"{where}: {result}"
        (msg,) = result.values("outcome")
        if entry in ("scan", "doctor", "doctor --json", "doctor text"):
            assert msg == "ok", where
            if entry.startswith("doctor "):
                assert result.values("exit") == [0], where
        else:
            assert msg == "typed", f"{where} loaded a hostile file"
            if name in _LIMIT:
                assert result.values("type") == ["LimitExceededError"], where
                assert set(result.values("limit")) <= _LIMIT[name], where


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_doctor_text_is_printable(tmp_path: Path, encoding: str) -> None:
    """Guards UnicodeEncodeError in the doctor's text output for a global whose name holds
    a lone surrogate: the CLI escapes what the terminal cannot encode, exit 0."""
    path = tmp_path / "surrogate.pt"
    path.write_bytes(crafted.surrogate_global())
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONIOENCODING": encoding}
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat", "doctor", str(path)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"\\ud800" in proc.stdout


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.arange(64.0), "b": torch.ones(3)}, path, pickle_protocol=2)
    return path


@pytest.mark.parametrize("damage", ["flip_tensor_bit", "shift_local_header", "mark_directory"])
def test_load_checks_zip_crcs(tmp_path: Path, damage: str) -> None:
    """Guards silent wrong weights (fault 4): torch checks no zip CRC-32, so a flipped bit
    inside a tensor record, or a local header whose extra length was edited, loaded
    changed weights through ``torch_compat.load``. The load now checks the CRC-32 of
    every record torch reads, in the same pass, and discards the payload. The fuzz run
    found a third way: a record's central DOS directory bit, which makes torch skip the
    read and return an uninitialised buffer (refused from the directory)."""
    path = _saved(tmp_path)
    good = torch_compat.load(path)
    path.write_bytes(getattr(crafted, damage)(path.read_bytes()))
    raw = torch_compat.load(path, check_crc=False)  # the fault: torch itself loads it
    if damage != "mark_directory":  # uninitialised memory may hold anything, even the same
        assert not torch.equal(raw["w"], good["w"])
    with pytest.raises(CorruptCheckpointError, match="CRC-32"):
        torch_compat.load(path)
    with pytest.raises(CorruptCheckpointError, match="CRC-32"):
        torch_compat.load(io.BytesIO(path.read_bytes()))


def test_manager_bare_path_checks_zip_crcs(tmp_path: Path) -> None:
    """Guards the manager's load of a bare path (no index entry, so no digest) returning
    changed weights after a bit flip inside a tensor record (fault 4)."""
    manager = SimpleCheckpointManager("run", tmp_path / "data")
    manager.save_agent(MockAgent(), epoch=0, metadata={"agent_step": 0, "score": None})
    bare = tmp_path / "elsewhere" / "run_v0.pt"
    bare.parent.mkdir()
    shutil.copy(manager.checkpoint_dir / "run_v0.pt", bare)
    SimpleCheckpointManager.load_from_uri(bare)
    name = next(n for n in _record_names(bare) if "/data/" in n)
    bare.write_bytes(crafted.flip_tensor_bit(bare.read_bytes(), name[name.index("/data/") :]))
    with pytest.raises(CorruptCheckpointError, match="CRC-32"):
        SimpleCheckpointManager.load_from_uri(bare)


def _record_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        return z.namelist()


@pytest.mark.one_cell
def test_doctor_verify_data_reports_crc_mismatch(tmp_path: Path) -> None:
    """Guards the doctor calling a file with a flipped tensor bit healthy: with
    ``--verify-data`` it reads every record and reports ``crc_mismatch`` (torch loads
    wrong tensors: a note on every verdict, see the per-cell test below); without, it says
    the tensor bytes were not checked. One cell: the doctor imports no torch."""
    path = _saved(tmp_path)
    assert "crc_mismatch" not in {f.code for f in doctor.diagnose(path, read_data=True).findings}
    path.write_bytes(crafted.flip_tensor_bit(path.read_bytes()))
    unread = doctor.diagnose(path)
    assert not unread.data.verified and "not checked" in unread.data.note
    read = doctor.diagnose(path, read_data=True)
    assert "crc_mismatch" in {f.code for f in read.findings}
    assert read.data.problems and "data/0" in read.data.problems[0]
    path.write_bytes(crafted.mark_directory(_saved(tmp_path).read_bytes()))
    assert "marked as a directory" in doctor.diagnose(path, read_data=True).data.problems[0]
    assert doctor.to_json(read)["data"]["verified"] is True


@pytest.mark.one_cell
def test_verify_data_does_not_call_a_big_compressed_record_damaged(tmp_path: Path) -> None:
    """Guards ``--verify-data`` listing a deflated record over max_inflated_bytes as a
    problem ("not checked: inflates past ..."), which made the file "corrupt" on every
    torch although nothing was found wrong (torch inflates it): such a record is named in
    the note as not checked, and only real damage is a problem. One cell: no torch."""
    from ckptcompat.doctor.data_check import verify_data
    from ckptcompat.scan.limits import MAX_INFLATED_BYTES

    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/data/0", bytes(MAX_INFLATED_BYTES + 1), zipfile.ZIP_DEFLATED)
        archive.writestr("a/data/1", b"x" * 64, zipfile.ZIP_STORED)
    check = verify_data(str(path), "zip")
    assert check.verified and check.problems == () and check.silent == ()
    assert "1 compressed record(s) over max_inflated_bytes" in check.note
    assert "not checked: a/data/0" in check.note
    raw = bytearray(path.read_bytes())
    raw[raw.rindex(b"x" * 64)] ^= 1  # a flipped byte in the small record is still found
    path.write_bytes(bytes(raw))
    check = verify_data(str(path), "zip")
    assert (
        [p.split(":")[0] for p in check.problems]
        == ["a/data/1"]
        == [p.split(":")[0] for p in check.silent]
    )


@pytest.mark.parametrize("damage", ["flip_tensor_bit", "shift_local_header", "mark_directory"])
def test_doctor_predicts_what_torch_does_with_damaged_records(tmp_path: Path, damage: str) -> None:
    """Guards ``doctor --verify-data`` saying "cannot load with weights_only (no allowlist
    helps) on every torch" for a file whose tensor records differ from their zip CRC-32,
    while torch loads it, plain and weights-only, as wrong tensors without an error (it
    checks no CRC-32): the prediction for this cell's torch is "loads", every verdict
    carries the corruption note and the verdict line starts with it; ``repro`` agrees row
    for row (its weights_only row was ckptcompat's CRC-checking loader, so it said NO and
    exited 1), and its extra row shows ckptcompat's loader refusing the file."""
    path = _saved(tmp_path)
    path.write_bytes(getattr(crafted, damage)(path.read_bytes()))
    diag = doctor.diagnose(path, read_data=True)
    assert [f.code for f in diag.findings if f.code in ("crc_mismatch", "damaged_record")] == [
        "crc_mismatch"
    ]
    report = diag.for_torch(torch.__version__)
    for verdict in (report.plain, report.weights_only):
        assert verdict.outcome == "loads", verdict
        assert any(n.startswith("CORRUPT DATA: 1 record(s)") for n in verdict.notes)
    assert doctor.verdict_line(diag).startswith("corrupt data: 1 record(s) differ")
    # torch itself, through the audited loaders: a user's plain torch.load, and the
    # weights-only load without ckptcompat's CRC-32 check. Neither raises.
    torch_compat.naive_load(path, map_location="cpu")
    torch_compat.load(path, map_location="cpu", check_crc=False)
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.run.repro", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "ckptcompat's load" in line)
    assert "refused: CorruptCheckpointError" in row and row.rstrip().endswith("yes")


@pytest.mark.one_cell
def test_limits_are_refused_before_the_work(tmp_path: Path) -> None:
    """Guards the deflated opcode bomb (fault 2) costing 50 s: the scan refuses it from
    the directory's sizes, naming the limit, before inflating anything. One cell: the scan
    imports no torch."""
    path = tmp_path / "bomb.pt"
    path.write_bytes(crafted.deflated_opcode_bomb())
    result = scan.scan(path)
    (finding,) = [f for f in result.findings if f.code == "limit_exceeded"]
    assert finding.names[0] == "max_inflated_bytes"  # 80 MB, over 64 MiB
    with pytest.raises(LimitExceededError) as caught:
        scan.precheck(path, full=True)
    assert caught.value.limit == "max_inflated_bytes"
    assert "max_inflated_bytes" in str(caught.value)
    path.write_bytes(crafted.deflated_opcode_bomb(8 << 20))  # 8 MB from 8 kB
    with pytest.raises(LimitExceededError) as caught:
        scan.precheck(path, full=False)
    assert caught.value.limit == "max_compression_ratio"


@pytest.mark.one_cell
def test_record_count_limit_names_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards a directory of millions of records scanned record by record: past
    ``max_records`` the scan stops after parsing the directory and the load is refused
    naming the limit (the limit lowered to 3 here: a real one would be a 50 MB file).
    One cell: the scan imports no torch."""
    from ckptcompat.scan import archive_scan

    monkeypatch.setattr(archive_scan, "MAX_RECORDS", 3)
    path = tmp_path / "many.pt"
    path.write_bytes(crafted.torch_like_zip(b"\x80\x02}.", tensor=b"\0" * 8))
    assert "limit_exceeded" in scan.scan(path).codes()
    for full in (True, False):
        with pytest.raises(LimitExceededError) as caught:
            scan.precheck(path, full=full)
        assert caught.value.limit == "max_records"
