"""Tests of ``ckptcompat doctor PATH...`` over several files and directory trees
(ckptcompat.doctor.batch, issue 16's last deliverable, the file count of issue 21 item 3).

One cell: the doctor is standard library only and reads no file through torch, so its
answers do not depend on the cell's torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ckptcompat.doctor import batch, diagnose, verdict_line
from ckptcompat.harness import corpus
from ckptcompat.harness.fuzz import crafted
from ckptcompat.locator import GOLDEN_ROOT
from tests.faults import SRC

pytestmark = pytest.mark.one_cell

DCP_GOLDEN = GOLDEN_ROOT / "dcp" / "t26" / "ws1" / "checkpoints"


def _doctor(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "ckptcompat", "doctor", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A store: corpus files at the top, a run folder with our index and a DCP directory,
    a crafted hostile file, and things a walk must not open (a FIFO, links)."""
    root = tmp_path / "store"
    (root / "runs" / "a").mkdir(parents=True)
    for name in ("state_dict.pt", "namespace_dict.pt", "html_page.pt"):
        shutil.copy(corpus.CORPUS_DIR / name, root / name)
    shutil.copytree(DCP_GOLDEN / "ws1_v1.dcp", root / "runs" / "a" / "ws1_v1.dcp")
    shutil.copy(DCP_GOLDEN / "ws1_v1.pt", root / "runs" / "a" / "ws1_v1.pt")
    shutil.copy(DCP_GOLDEN / "index.json", root / "runs" / "a" / "index.json")
    (root / "runs" / "deep_tuple_key.pt").write_bytes(crafted.BUILDERS["deep_tuple_key"]())
    os.mkfifo(root / "runs" / "a" / "fifo.pt")
    (root / "runs" / "zero.pt").symlink_to("/dev/zero")
    (root / "runs" / "a" / "loop").symlink_to(root / "runs")
    return root


def test_directory_gives_one_line_per_file_in_order(tree: Path) -> None:
    """Guards the doctor taking one FILE only: a store of runs needed one command per file.
    Every regular file gets the single-file verdict line, DCP directories count as one
    checkpoint, and a FIFO, a link to /dev/zero and a link loop are not opened (opening a
    FIFO blocks forever; following the loop never ends)."""
    proc = _doctor(tree)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    paths = [line.split(": ", 1)[0] for line in lines]
    expected = [
        tree / "html_page.pt",
        tree / "namespace_dict.pt",
        tree / "runs" / "a" / "index.json",
        tree / "runs" / "a" / "ws1_v1.dcp",
        tree / "runs" / "a" / "ws1_v1.pt",
        tree / "runs" / "deep_tuple_key.pt",
        tree / "state_dict.pt",
    ]
    assert paths == [str(p) for p in expected]
    by_path = dict(line.split(": ", 1) for line in lines)
    for path in (tree / "namespace_dict.pt", tree / "runs" / "a" / "ws1_v1.pt"):
        assert by_path[str(path)] == verdict_line(diagnose(path))
    assert by_path[str(tree / "runs" / "a" / "ws1_v1.dcp")].startswith("DCP directory written by")
    assert "7 paths: 7 read, 0 could not be read" in proc.stderr


def test_json_is_one_record_per_line(tree: Path) -> None:
    """Guards ``--json`` over several files printing one indented document (unparseable as
    a stream): each line is one JSON object naming its file."""
    proc = _doctor(tree / "state_dict.pt", tree / "runs", "--json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 5
    assert records[0]["file"] == str(tree / "state_dict.pt")
    assert records[0]["summary"] == verdict_line(diagnose(tree / "state_dict.pt"))
    dcp = [r for r in records if r.get("kind") == "dcp_directory"]
    assert len(dcp) == 1 and dcp[0]["directory"] == str(tree / "runs" / "a" / "ws1_v1.dcp")


def test_unreadable_path_is_a_line_and_exit_2(tree: Path) -> None:
    """Guards one bad path hiding the others or exiting 0: a missing path is reported on
    its own line (text and JSON) and the others are still examined; exit 2."""
    missing = tree / "gone.pt"
    proc = _doctor(tree / "state_dict.pt", missing)
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{tree / 'state_dict.pt'}: loads with weights_only")
    assert lines[1].startswith(f"{missing}: error: CheckpointNotFoundError")
    assert "2 paths: 1 read, 1 could not be read" in proc.stderr
    proc = _doctor(missing, tree / "state_dict.pt", "--json")
    first = json.loads(proc.stdout.splitlines()[0])
    assert proc.returncode == 2 and first["error"]["type"] == "CheckpointNotFoundError"


def test_empty_directory_exits_2(tmp_path: Path, tree: Path) -> None:
    """Guards a check of an empty (or mistyped) store passing silently: a directory with
    no checkpoint under it is exit 2 with its own error line (text and JSON on stdout, as
    for a missing file), also beside a readable file (`doctor empty/ a.pt` dropped the
    directory and exited 0)."""
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    proc = _doctor(empty)
    assert proc.returncode == 2
    assert proc.stdout.startswith(f"{empty}: error: CheckpointNotFoundError: ")
    assert "no checkpoint under this directory" in proc.stdout
    assert "1 path: 0 read, 1 could not be read" in proc.stderr
    proc = _doctor(empty, "--json")
    document = json.loads(proc.stdout)
    assert proc.returncode == 2 and document["file"] == str(empty)
    assert document["error"]["type"] == "CheckpointNotFoundError"
    proc = _doctor(empty, tree / "state_dict.pt")
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{empty}: error: CheckpointNotFoundError")
    assert lines[1].startswith(f"{tree / 'state_dict.pt'}: loads with weights_only")


def test_single_file_keeps_the_full_report(tree: Path) -> None:
    """Guards the one-file command changing shape: one file still gets the full report
    (a table per version), not the summary line."""
    proc = _doctor(tree / "namespace_dict.pt")
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) > 3 and "2.15" in proc.stdout


def test_checkpoint_paths_does_not_follow_links(tree: Path) -> None:
    """Guards a walk that follows a link to its own parent forever (the API, no CLI)."""
    found = list(batch.checkpoint_paths([tree]))
    assert all("loop" not in p.parts for p in found)
    assert tree / "runs" / "zero.pt" not in found


def test_metta_generations_in_a_tree_are_one_line_each(tmp_path: Path) -> None:
    """Guards a G4 bundle directory walked as loose files (its weights.safetensors and
    policy_spec.json explained as "not a torch.save file") and a G3 .mpt explained as a
    broken torch zip, once `doctor DIR` met issue 22's generations: each is one checkpoint
    with the generation's summary, its JSON the generation's document."""
    from tests.generations.builders import tiny_agent, write_bundle, write_mpt

    store = tmp_path / "store"
    store.mkdir()
    write_mpt(store / "team:v3.mpt", tiny_agent())
    write_bundle(store / "team_v4", tiny_agent())
    write_bundle(store / "team_v5.zip", tiny_agent(), as_zip=True)
    proc = _doctor(store)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert list(lines) == [str(store / n) for n in ("team:v3.mpt", "team_v4", "team_v5.zip")]
    assert lines[str(store / "team:v3.mpt")].startswith("Metta G3 .mpt")
    assert lines[str(store / "team_v4")].startswith("Metta G4 checkpoint bundle")
    assert all("migrate reads" in summary for summary in lines.values())
    records = [json.loads(line) for line in _doctor(store, "--json").stdout.splitlines()]
    assert [r["generation"] for r in records] == ["g3", "g4", "g4"]


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_lone_fifo_or_device_is_refused_not_opened(tmp_path: Path, kind: str) -> None:
    """Guards `ckptcompat doctor PIPE` and `ckptcompat migrate PIPE DST` hanging forever,
    and `doctor /dev/zero` growing to 7 GB in 6 s: the G3/G4 check opened any existing
    path as a zip before the regular-file check (new-user trial, 2026-12-06). Both are
    refused at once with "not a regular file", exit 2 (the subprocess timeout catches a
    hang)."""
    if kind == "fifo":
        path = tmp_path / "pipe.pt"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    proc = _doctor(path)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr, proc.stderr
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    migrate = subprocess.run(
        [sys.executable, "-m", "ckptcompat", "migrate", str(path), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert migrate.returncode == 2 and "not a regular file" in migrate.stderr, migrate.stderr


def test_unreadable_generation_alone_exits_2_with_json(tmp_path: Path) -> None:
    """Guards the single-file doctor on a broken G4 bundle exiting 1 with nothing on
    stdout under --json, where every other unreadable file exits 2 with the error as JSON
    (README, new-user trial 2026-12-06)."""
    from tests.generations.builders import tiny_agent, write_bundle

    bundle = write_bundle(
        tmp_path / "bad_v1",
        tiny_agent(),
        spec={"class_path": "x", "data_path": "weights.safetensors"},
    )
    proc = _doctor(bundle, "--json")
    assert proc.returncode == 2, proc.stderr
    document = json.loads(proc.stdout)
    assert document["file"] == str(bundle) and document["error"]["type"]


def test_the_managers_own_index_is_named_not_diagnosed(tree: Path, tmp_path: Path) -> None:
    """Guards the doctor calling SimpleCheckpointManager's own index.json "a text file, not
    a torch.save file: check that this is the file torch.save wrote" when run over a data
    dir (a new user's trial, 2026-12-07): it is named as the run's index, in text and JSON,
    and counted as read. Any other index.json (here `{}`, and a hostile one nested 100,000
    deep, which json.loads refuses with RecursionError) still gets the diagnosis."""
    index = tree / "runs" / "a" / "index.json"
    line = batch.examine(index, as_json=True)
    assert line.error is None and line.summary is not None
    assert line.summary.startswith("the checkpoint manager's index of run ")
    assert "not a checkpoint" in line.summary
    assert line.document is not None and line.document["kind"] == "ckptcompat.index"
    stray = tmp_path / "other" / "index.json"
    stray.parent.mkdir()
    for body in (b"{}", b"[" * 100_000 + b"]" * 100_000):
        stray.write_bytes(body)
        line = batch.examine(stray)
        assert line.error is None and line.summary == verdict_line(diagnose(stray))
        assert "manager" not in line.summary
    proc = _doctor(tree / "runs" / "a")
    by_path = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert by_path[str(index)].startswith("the checkpoint manager's index of run ")
