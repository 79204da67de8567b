"""``ckptcompat doctor``: predictions per torch version, checked against real loads here.

The corpus (fixtures/corpus) is not malicious: its whole-object pickles name only our own
classes, the standard library and numpy, so ``naive_load`` may run on it (in a subprocess,
through :mod:`ckptcompat.harness.run.repro`). Hand-written pickles naming dangerous globals
here are only ever scanned, never unpickled.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from ckptcompat import doctor
from ckptcompat.doctor.rules import profiles, rules_profile
from ckptcompat.doctor.verdict import OUTCOMES
from ckptcompat.harness import corpus
from ckptcompat.harness.run import repro

CORPUS = sorted(p for p in corpus.CORPUS_DIR.glob("*.pt"))
TORCH = metadata.version("torch")
VERSIONS = [f"2.{m}" for m in range(4, 16)]


def _u(text: str) -> bytes:
    """BINUNICODE opcode."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _torch_zip(path: Path, pkl: bytes) -> Path:
    """A torch.save-style zip whose data.pkl is ``pkl`` (hand-written, never unpickled here)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/version", b"3\n")
    return path


def _getattr_file(tmp_path: Path) -> Path:
    # getattr(collections.OrderedDict, "__name__"): harmless, but getattr is the first step
    # of every getattr chain that reaches os.system.
    pkl = b"\x80\x02cbuiltins\ngetattr\nccollections\nOrderedDict\n" + _u("__name__") + b"\x86R."
    return _torch_zip(tmp_path / "getattr.pt", pkl)


# --------------------------------------------------------------------------- reality
def _jobs_for(path: Path, report: doctor.VersionReport) -> list[repro.LoadJob]:
    """naive + load, then for fixable: the allowlist and every leave-one-out; for
    not_fixable with refused globals: everything refused allowlisted (must still fail)."""
    jobs = [repro.LoadJob(str(path), "naive"), repro.LoadJob(str(path), "load")]
    wo = report.weights_only
    if wo.outcome == "fixable_by_allowlist":
        pairs = repro.allowlist_pairs(wo.allowlist)
        jobs.append(repro.LoadJob(str(path), "load", pairs))
        jobs += [
            repro.LoadJob(str(path), "load", pairs[:i] + pairs[i + 1 :]) for i in range(len(pairs))
        ]
    elif wo.outcome == "not_fixable" and wo.refused_globals:
        everything = tuple((g, g) for g in wo.refused_globals) + repro.allowlist_pairs(wo.allowlist)
        jobs.append(repro.LoadJob(str(path), "load", everything))
    return jobs


def test_corpus_predictions_match_real_loads_in_this_cell() -> None:
    """Guards doctor predictions that torch contradicts: the only proof the rules hold.

    For every corpus file, the doctor's verdicts for *this* torch are compared with what
    ``naive_load`` (a user's plain torch.load) and ``load`` (weights_only=True) really do
    here, in one subprocess: same outcome category, and every global torch (or our static
    precheck) names is one the doctor said this torch refuses. A fixable verdict's
    allowlist must make the load succeed and must be minimal (drop any entry, including a
    numpy dtype class the pickle never names, and it fails); a not_fixable verdict must
    stay refused with everything it refuses allowlisted.
    """
    plan: list[tuple[Path, doctor.VersionReport, int]] = []
    jobs: list[repro.LoadJob] = []
    for path in CORPUS:
        report = doctor.diagnose(path).for_torch(TORCH)
        file_jobs = _jobs_for(path, report)
        plan.append((path, report, len(file_jobs)))
        jobs += file_jobs
    outcomes = iter(repro.run_loads(jobs))
    problems = []
    for path, report, count in plan:
        results = [next(outcomes) for _ in range(count)]
        for label, verdict, outcome in (
            ("plain", report.plain, results[0]),
            ("weights_only", report.weights_only, results[1]),
        ):
            comparison = repro.compare(label, verdict, outcome)
            if not comparison.agrees:
                problems.append(f"{path.name} {label}: {comparison}")
        wo = report.weights_only
        if wo.outcome == "fixable_by_allowlist":
            if not results[2].ok:
                problems.append(f"{path.name}: the predicted allowlist fails: {results[2].message}")
            for entry, outcome in zip(wo.allowlist, results[3:], strict=True):
                if outcome.ok:
                    problems.append(f"{path.name}: loads without {entry.name}: not minimal")
        elif len(results) == 3 and results[2].ok:
            problems.append(f"{path.name}: not_fixable, yet allowlisting what is refused loads it")
    assert not problems, "\n".join(problems)


def test_corpus_covers_every_outcome_somewhere() -> None:
    """Guards a corpus too tame to test the doctor: each outcome is predicted for some
    file on some version (so the reality test above exercises all of them over the cells)."""
    seen = set()
    for path in CORPUS:
        for report in doctor.diagnose(path).versions:
            seen |= {report.plain.outcome, report.weights_only.outcome}
    assert {"loads", "runs_code", "fixable_by_allowlist", "not_fixable"} <= seen


# --------------------------------------------------------------------------- content
@pytest.mark.one_cell
def test_whole_agent_lists_allowlist_with_numpy_dtype_classes() -> None:
    """Guards the allowlist torch's own get_unsafe_globals_in_checkpoint gets wrong: a whole
    pickled MockAgent also needs numpy.dtypes.Float32DType/BoolDType/Int64DType, which the
    pickle never names (one cell: the doctor's output does not depend on the running torch).
    """
    diag = doctor.diagnose(corpus.CORPUS_DIR / "whole_mock_agent.pt")
    assert diag.generation == "g2"
    for minor in VERSIONS:
        names = {e.name for e in diag.for_torch(minor).weights_only.allowlist}
        assert {
            "ckptcompat.agents.mock.MockAgent",
            "torch.nn.modules.linear.Linear",
            "numpy.dtype",
            "numpy.dtypes.Float32DType",
            "numpy.dtypes.BoolDType",
            "numpy.dtypes.Int64DType",
        } <= names, minor
    assert "_codecs.encode" in {e.name for e in diag.for_torch("2.4").weights_only.allowlist}
    assert "_codecs.encode" not in {e.name for e in diag.for_torch("2.5").weights_only.allowlist}
    text = doctor.render_text(diag)
    assert "numpy.dtypes.Float32DType" in text and "add_safe_globals" in text


@pytest.mark.one_cell
def test_dangerous_global_is_flagged(tmp_path: Path) -> None:
    """Guards a doctor that would tell users to allowlist builtins.getattr: flagged, and
    no ready-to-paste ``add_safe_globals`` snippet holding it.

    The file is hand-written pickle bytes and is only scanned (one cell: static analysis).
    """
    diag = doctor.diagnose(_getattr_file(tmp_path))
    for report in diag.versions:
        verdict = report.weights_only
        assert verdict.outcome == "fixable_by_allowlist", report.torch
        (entry,) = [e for e in verdict.allowlist if e.name == "builtins.getattr"]
        assert entry.dangerous and not entry.curated
        assert any("DANGEROUS" in n for n in verdict.notes)
    assert diag.for_torch("2.4").plain.outcome == "runs_code"
    text = doctor.render_text(diag)
    assert "DANGEROUS" in text and "must not be loaded" in text
    assert "add_safe_globals" not in text
    assert doctor.to_json(diag)["versions"][-1]["weights_only"]["allowlist"][0]["dangerous"]
    assert diag.migration.command is None


@pytest.mark.one_cell
def test_unmodelled_pickle_is_refused_without_claiming_an_allowlist(tmp_path: Path) -> None:
    """Guards a complete-looking allowlist for a pickle the scan cannot follow: calling
    the result of getattr(...) is refused by torch whatever is allowlisted, and the doctor
    says ``refused`` naming what torch refuses (one cell: static analysis)."""
    pkl = (
        b"\x80\x02cbuiltins\ngetattr\nccollections\nOrderedDict\n"
        + _u("fromkeys")
        + b"\x86R]"
        + _u("k")
        + b"a\x85R."
    )
    diag = doctor.diagnose(_torch_zip(tmp_path / "chain.pt", pkl))
    verdict = diag.for_torch("2.15").weights_only
    assert verdict.outcome == "refused" and "cannot model" in verdict.why
    assert verdict.refused_globals == ("builtins.getattr",)


@pytest.mark.one_cell
def test_safe_format_claim_is_not_trusted_without_unpickling(tmp_path: Path) -> None:
    """Guards recognising safe_v1 from its format string alone: a dict claiming
    "ckptcompat.agent" that also calls os.system is not safe_v1, and the doctor (which
    never unpickles) creates no canary (one cell: static analysis)."""
    canary = tmp_path / "canary"
    pkl = (
        b"\x80\x02}("
        + _u("format")
        + _u("ckptcompat.agent")
        + _u("x")
        + b"cos\nsystem\n"
        + _u(f"touch {canary}")
        + b"\x85Ru."
    )
    diag = doctor.diagnose(_torch_zip(tmp_path / "fake_v1.pt", pkl))
    assert diag.generation == "other" and "os.system" in diag.generation_detail
    assert diag.for_torch("2.15").weights_only.outcome == "not_fixable"  # os is blocked
    assert diag.for_torch("2.4").weights_only.allowlist[0].dangerous
    assert not canary.exists()


@pytest.mark.one_cell
@pytest.mark.parametrize(
    ("name", "generation", "migrate"),
    [
        ("corpus_v3.pt", "safe_v1", None),
        ("model_0007.pt", "g1", "migrated/"),
        ("corpus__e5__s1200__t42__sc2500.pt", "g2", "migrated/"),
        ("whole_mock_agent.pt", "g2", "--run RUN --epoch EPOCH"),
        ("state_dict.pt", "state_dict", "--class-path ckptcompat.agents.mock.MockAgent --config"),
        ("tensor_uint16.pt", "state_dict", "--class-path CLASS_PATH --config CONFIG_JSON"),
        ("legacy_format_state_dict.pt", "state_dict", "--class-path"),
        ("namespace_dict.pt", "other", None),
        ("git_lfs_pointer.pt", "other", None),
    ],
)
def test_generation_and_migrate_command(name: str, generation: str, migrate: str | None) -> None:
    """Guards the wrong migration advice: each generation is recognised statically and
    gets the migrate command it needs; a bare state_dict gets its agent's class path and
    config from the safe-format corpus_v3.pt next to it when the keys match, placeholders
    otherwise (one cell: static analysis)."""
    diag = doctor.diagnose(corpus.CORPUS_DIR / name)
    assert diag.generation == generation
    if migrate is None:
        assert diag.migration.command is None
    else:
        assert diag.migration.command is not None and migrate in diag.migration.command
        assert "--trust" not in diag.migration.command  # everything is on the curated list


@pytest.mark.one_cell
@pytest.mark.parametrize(
    ("name", "minor", "outcome", "reason"),
    [
        ("defaultdict.pt", "2.9", "fixable_by_allowlist", ""),
        ("defaultdict.pt", "2.10", "not_fixable", "SETITEM"),
        ("protocol4.pt", "2.4", "not_fixable", "protocol 4"),
        ("numpy1_array.pt", "2.5", "not_fixable", "alias"),
        ("numpy1_array.pt", "2.6", "fixable_by_allowlist", ""),
        ("tensor_uint16.pt", "2.5", "not_fixable", "torch.uint16"),
        ("tensor_uint16.pt", "2.6", "loads", ""),
        ("dtype_float8_e8m0fnu.pt", "2.6", "not_fixable", "does not exist"),
        ("dtype_float8_e8m0fnu.pt", "2.7", "loads", ""),
        ("set.pt", "2.5", "fixable_by_allowlist", ""),
        ("bytes.pt", "2.5", "loads", ""),
        ("truncated_zip.pt", "2.15", "not_fixable", "truncated"),
        ("empty.pt", "2.4", "not_fixable", "empty"),
        ("html_page.pt", "2.6", "not_fixable", "HTML"),
    ],
)
def test_version_rules(name: str, minor: str, outcome: str, reason: str) -> None:
    """Guards the version rules of torch_versions.md on versions no default cell runs
    (2.7-2.14 are rule-based) and their reasons (one cell: static analysis)."""
    verdict = doctor.diagnose(corpus.CORPUS_DIR / name).for_torch(minor).weights_only
    assert verdict.outcome == outcome
    assert reason in " ".join((verdict.why, *verdict.blockers))


@pytest.mark.one_cell
def test_numpy1_alias_entry_on_26() -> None:
    """Guards allowlisting numpy-1 names under numpy 2 by the running object's own name,
    which torch keys differently: the entry must be an (object, "numpy.core...") alias."""
    verdict = doctor.diagnose(corpus.CORPUS_DIR / "numpy1_array.pt").for_torch("2.6").weights_only
    (alias,) = [e for e in verdict.allowlist if e.alias]
    assert (alias.name, alias.target) == (
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
    )


@pytest.mark.one_cell
def test_torchscript_is_refused_from_26_only(tmp_path: Path) -> None:
    """Guards the 2.6 change for TorchScript: <= 2.5 hands it to torch.jit.load, 2.6+ refuses
    it under weights_only (one cell: the prediction is static; the archive is hand-made)."""
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("scripted/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("scripted/constants.pkl", b"\x80\x02).")
        zf.writestr("scripted/version", b"3\n")
    diag = doctor.diagnose(path)
    assert diag.kind == "torchscript"
    assert diag.for_torch("2.5").weights_only.outcome == "loads"
    assert diag.for_torch("2.6").weights_only.outcome == "not_fixable"
    assert diag.for_torch("2.6").plain.outcome == "not_fixable"


# --------------------------------------------------------------------------- bases
@pytest.mark.one_cell
def test_every_version_has_a_prediction_and_a_basis() -> None:
    """Guards gaps in the version range and unlabelled verdicts (one cell: static)."""
    diag = doctor.diagnose(corpus.CORPUS_DIR / "set.pt")
    assert [v.torch for v in diag.versions] == VERSIONS
    bases = {v.torch: v.basis for v in diag.versions}
    assert {m for m, b in bases.items() if b == "snapshot"} == {"2.4", "2.5", "2.6", "2.15"}


@pytest.mark.one_cell
def test_rules_agree_with_the_probed_snapshots() -> None:
    """Guards the rules table (used for 2.7-2.14) drifting from what real torch does: on
    the four probed versions the rules must give the same facts as the probes (one cell:
    compares two committed tables)."""
    for probed in (p for p in profiles() if p.basis == "snapshot"):
        rules = rules_profile(probed.minor)
        for field in (
            "weights_only_default",
            "blocked_modules",
            "implemented_opcodes",
            "dtypes",
            "setitem_restricted",
            "aliases",
            "user_allowlist_key",
        ):
            assert getattr(rules, field) == getattr(probed, field), (probed.minor, field)
        # Probes also count torch's own pre-registered safe globals (NJT, device mesh).
        extra = probed.default_globals - rules.default_globals
        assert all(".nested." in g or ".distributed." in g for g in extra), extra
        assert not rules.default_globals - probed.default_globals, probed.minor


# --------------------------------------------------------------------------- CLI / JSON
_VERDICT_KEYS = {
    "outcome",
    "basis",
    "why",
    "refused_globals",
    "first_error",
    "allowlist",
    "blockers",
    "notes",
}
_ENTRY_KEYS = {"name", "target", "reason", "dangerous", "curated", "alias", "python"}


def _check_json(data: dict[str, Any]) -> None:
    assert data["schema_version"] == doctor.JSON_SCHEMA_VERSION
    assert {
        "file",
        "summary",
        "risks",
        "size_bytes",
        "kind",
        "generation",
        "generation_detail",
        "globals",
        "numpy_dtypes",
        "migration",
        "versions",
        "installed",
    } <= set(data)
    assert [v["torch"] for v in data["versions"]] == VERSIONS
    # One row per numpy major of the loading side; ``versions`` is the row of numpy_major.
    rows = {row["numpy_major"]: row["versions"] for row in data["numpy"]}
    assert sorted(rows) == [1, 2] and rows[data["numpy_major"]] == data["versions"]
    for version in [v for row in rows.values() for v in row]:
        assert version["basis"] in ("snapshot", "rules")
        for key in ("plain", "weights_only"):
            verdict = version[key]
            assert set(verdict) == _VERDICT_KEYS and verdict["basis"] == version["basis"]
            assert verdict["outcome"] in OUTCOMES
            for entry in verdict["allowlist"]:
                assert set(entry) == _ENTRY_KEYS
    assert set(data["migration"]) == {"command", "needs_trust", "note", "agent_from"}


@pytest.mark.one_cell
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_json_validates_for_every_corpus_file(path: Path) -> None:
    """Guards JSON consumers (CI, the matrix report) against missing keys or versions
    (one cell: static analysis)."""
    data = json.loads(json.dumps(doctor.to_json(doctor.diagnose(path))))
    _check_json(data)


@pytest.mark.one_cell
def test_cli_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards the ``ckptcompat doctor FILE [--json]`` entry: exit 0, parseable output
    (one cell: no torch involved)."""
    path = str(corpus.CORPUS_DIR / "namespace_dict.pt")
    assert doctor.main([path, "--json"]) == 0
    _check_json(json.loads(capsys.readouterr().out))
    assert doctor.main([path]) == 0
    out = capsys.readouterr().out
    assert "argparse.Namespace" in out and "2.15" in out


@pytest.mark.one_cell
def test_cli_json_errors_are_json_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards ``doctor --json`` printing its errors only as text on stderr: a JSON consumer
    gets ``{schema_version, file, error: {type, message}}`` on stdout, exit 2 (one cell)."""
    for path, error in ((tmp_path / "nope.pt", "CheckpointNotFoundError"),
                        (tmp_path, "CheckpointNotFoundError")):  # fmt: skip
        assert doctor.main([str(path), "--json"]) == 2
        out, err = capsys.readouterr()
        data = json.loads(out)
        assert data["schema_version"] == doctor.JSON_SCHEMA_VERSION
        assert data["file"] == str(path) and data["error"]["type"] == error
        assert str(path) in data["error"]["message"] and error in err


@pytest.mark.one_cell
def test_cli_missing_or_unreadable_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards a traceback (or exit 0) for a path that is not a readable file (one cell)."""
    assert doctor.main([str(tmp_path / "nope.pt")]) == 2
    assert doctor.main([str(tmp_path)]) == 2
    assert "nope.pt" in capsys.readouterr().err
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.pt"
        locked.write_bytes(b"x")
        locked.chmod(0)
        assert doctor.main([str(locked)]) == 2


def test_doctor_imports_neither_torch_nor_numpy_nor_the_files_modules() -> None:
    """Guards the doctor pulling in torch/numpy (seconds per call, and absent on a bare
    machine) or importing the classes a file names (that would run their module code)."""
    code = (
        "import sys; from ckptcompat import doctor\n"
        "for p in sys.argv[1:]: doctor.main([p]); doctor.main([p, '--json'])\n"
        "mods = ('torch', 'numpy', 'gymnasium', 'ckptcompat.agents', 'ckptcompat.policy',"
        " 'ckptcompat.harness.corpus_files')\n"
        "print('LOADED', [m for m in mods if m in sys.modules])\n"
    )
    files = [
        str(corpus.CORPUS_DIR / n) for n in ("model_0007.pt", "dataclass.pt", "numpy_rng_state.pt")
    ]
    proc = subprocess.run(
        [sys.executable, "-c", code, *files], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "LOADED []"


def _sparse_checkpoint(path: Path, nbytes: int) -> Path:
    """A torch.save-style zip with one float32 storage of ``nbytes`` bytes, written sparse
    (a hole, not zeros) so the test costs no disk; the storage CRC is of zeros."""
    pkl = (
        b"\x80\x02ccollections\nOrderedDict\n)R"
        + _u("weight")
        + b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        + _u("0")
        + _u("cpu")
        + b"J"
        + struct.pack("<i", nbytes // 4)
        + b"tQK\x00J"
        + struct.pack("<i", nbytes // 4)
        + b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs."
    )
    crc = 0
    zero = bytes(1 << 20)
    for _ in range(nbytes >> 20):
        crc = zlib.crc32(zero, crc)
    records: list[tuple[str, bytes | int, int]] = []
    with open(path, "wb") as fh:
        for name, data in (
            ("archive/data.pkl", pkl),
            ("archive/data/0", nbytes),
            ("archive/version", b"3\n"),
        ):
            offset = fh.tell()
            size = data if isinstance(data, int) else len(data)
            this_crc = crc if isinstance(data, int) else zlib.crc32(data)
            fh.write(
                struct.pack(
                    "<4s2B4HL2L2H",
                    b"PK\x03\x04",
                    20,
                    0,
                    0,
                    0,
                    0,
                    0,
                    this_crc,
                    size,
                    size,
                    len(name),
                    0,
                )
                + name.encode()
            )
            if isinstance(data, int):
                fh.seek(data, os.SEEK_CUR)
            else:
                fh.write(data)
            records.append((name, data, offset))
        cd_start = fh.tell()
        for name, data, offset in records:
            size = data if isinstance(data, int) else len(data)
            this_crc = crc if isinstance(data, int) else zlib.crc32(data)
            fh.write(
                struct.pack(
                    "<4s4B4HL2L5H2L",
                    b"PK\x01\x02",
                    20,
                    0,
                    20,
                    0,
                    0,
                    0,
                    0,
                    0,
                    this_crc,
                    size,
                    size,
                    len(name),
                    0,
                    0,
                    0,
                    0,
                    0,
                    offset,
                )
                + name.encode()
            )
        cd_end = fh.tell()
        fh.write(
            struct.pack(
                "<4s4H2LH",
                b"PK\x05\x06",
                0,
                0,
                len(records),
                len(records),
                cd_end - cd_start,
                cd_start,
                0,
            )
        )
    return path


@pytest.mark.one_cell
def test_doctor_reads_under_1mb_of_a_sparse_1gb_checkpoint(tmp_path: Path) -> None:
    """Guards the doctor reading storage bytes (minutes on a real 1 GB checkpoint): it reads
    the zip directory and data.pkl only. Measured as /proc/self/io rchar, not time (one
    cell: reading does not depend on torch)."""
    io_file = Path("/proc/self/io")
    if not io_file.exists():
        pytest.skip("needs /proc/self/io (Linux)")
    path = _sparse_checkpoint(tmp_path / "big.pt", 1 << 30)
    doctor.diagnose(corpus.CORPUS_DIR / "state_dict.pt")  # warm up: imports are not counted

    def rchar() -> int:
        return int(dict(line.split(": ") for line in io_file.read_text().splitlines())["rchar"])

    before = rchar()
    diag = doctor.diagnose(path)
    read = rchar() - before
    assert diag.storage_bytes == 1 << 30 and diag.generation == "state_dict"
    assert diag.for_torch("2.6").weights_only.outcome == "loads"
    assert read < 1 << 20, read


@pytest.mark.one_cell
@pytest.mark.parametrize(
    "path",
    CORPUS + sorted((corpus.CORPUS_DIR.parent / "malicious").glob("*.pt")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_scan_facts_equal_the_full_pickle_walk(path: Path) -> None:
    """Guards the doctor's single pass: the pickle facts the scan's inert pass records must
    be what the full symbolic walk (the fallback) finds, for every corpus and malicious
    file: root kind and global, format, state_dict detection, numpy dtype codes and the
    first offsets of globals and of opcodes torch refuses. Static files: one cell suffices."""
    import dataclasses

    from ckptcompat.doctor.pickle_walk import pickle_facts
    from ckptcompat.scan import scan
    from ckptcompat.scan.opcode_walk import WEIGHTS_ONLY_OPCODES

    result = scan.scan(path)
    walked = pickle_facts(str(path), dataclasses.replace(result, facts=None))
    if result.facts is None:
        return
    fast = pickle_facts(str(path), result)
    for name in ("complete", "root_kind", "root_global", "format", "tensor_mapping"):
        assert getattr(fast, name) == getattr(walked, name), name
    assert fast.numpy_dtypes == walked.numpy_dtypes
    assert dict(fast.global_pos) == dict(walked.global_pos)
    refused = result.opcodes - WEIGHTS_ONLY_OPCODES
    assert {op: fast.opcode_pos[op] for op in refused} == {
        op: walked.opcode_pos[op] for op in refused
    }
