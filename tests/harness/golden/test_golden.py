"""Golden checkpoints of every producer cell, verified in this cell (marker ``golden``).

Each test takes one producer's goldens (``fixtures/golden/<cell>/``) through the path a user
of *this* torch would take and compares with what the producer recorded in MANIFEST.json.
Every generation is checked: generation 1 (``fixtures/golden/<cell>/``, made before the
reproducible-numerics mode, so never compared bit for bit) and generation 2
(``fixtures/golden/gen2/<cell>/``, made in the mode; bitwise where this process's numerics
fingerprint allows, :func:`numerics_comparison`). Where a path cannot work on this torch (a
numpy-1 pickle needs allowlist aliases, which torch < 2.6 lacks; a plain ``torch.load`` of a
whole pickle on >= 2.6) the expected typed failure is asserted, not skipped. With
``CKPTCOMPAT_RECORDS`` set every check also writes a result record
(``ckptcompat.harness.golden.records.emit_record``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from filelock import FileLock
from packaging.version import Version

from ckptcompat import torch_compat
from ckptcompat.agents.probe import params_digest
from ckptcompat.checkpoint.rng import capture_rng_state, restore_rng_state
from ckptcompat.errors import IncompatibleCheckpointError
from ckptcompat.harness import versions
from ckptcompat.harness.fixtures.manifest import sha256_file
from ckptcompat.harness.golden import generate, read
from ckptcompat.harness.golden.read import (
    GENERATION,
    GENERATIONS,
    GOLDEN_ROOT,
    KINDS,
    MANIFEST_NAME,
    Golden,
    GoldenError,
    comparable_manifest,
    environment_differences,
    file_problems,
    generation_dir,
    golden_dirs,
    numerics_comparison,
    read_golden,
)
from ckptcompat.harness.golden.records import emit_record
from ckptcompat.harness.golden.verify import (
    compare_state_dicts,
    finite,
    greedy_returns,
    load_legacy_agent,
    load_safe_agent,
    probe_problems,
    replay_ppo_update,
)
from ckptcompat.harness.run.repro import LoadJob, LoadOutcome, run_loads
from ckptcompat.rl.trainer import Trainer

pytestmark = pytest.mark.golden

PRODUCERS = [c.id for c in versions.GOLDEN_PRODUCERS]
#: Every committed golden as ``"<cell>"`` (generation 1) or ``"gen<N>-<cell>"``, by generation.
BY_GENERATION = {g: [c if g == 1 else f"gen{g}-{c}" for c in PRODUCERS] for g in (1, *GENERATIONS)}
GOLDENS = [label for labels in BY_GENERATION.values() for label in labels]
#: (golden, agent) pairs; generation 1 holds generation 2's agents.
PAIRS = [
    pytest.param(label, agent.name, id=f"{label}-{agent.name}")
    for g, labels in BY_GENERATION.items()
    for label in labels
    for agent in generate.GENERATION_AGENTS[max(g, GENERATION)]
]
LEGACY = ("g1", "g2", "state_dict")
WHOLE_PICKLES = ("g1", "g2")


def _split(label: str) -> tuple[int, str]:
    """``"gen2-t26"`` -> ``(2, "t26")``; ``"t26"`` -> ``(1, "t26")``."""
    head, _, cell = label.partition("-")
    return (int(head.removeprefix("gen")), cell) if cell else (1, head)


@functools.cache
def _golden(label: str) -> Golden:
    generation, cell = _split(label)
    return read_golden(generation_dir(GOLDEN_ROOT, cell, generation))


def _numpy_major() -> int:
    return int(np.__version__.split(".")[0])


def _same_cell(g: Golden) -> bool:
    """This process is the producer's cell (by CKPTCOMPAT_CELL, else torch + numpy major)."""
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell is not None:
        return cell == g.cell
    producer = Version(Version(str(g.producer["torch"])).base_version)
    return producer == torch_compat.TORCH_VERSION and g.numpy_major == _numpy_major()


def _bitwise(g: Golden) -> tuple[bool, str]:
    """Whether results here must equal the producer's bit for bit, else why not.

    Only in the producer's cell, and only where the numerics fingerprints allow it: another
    CPU or kernel path is a hardware difference, judged by the tolerances instead.
    """
    if not _same_cell(g):
        return False, ""
    comparison = numerics_comparison(g)
    return comparison.bitwise, comparison.reason


def _needs_alias(g: Golden, kind: str) -> bool:
    """A whole pickle from another numpy major names numpy.core/_core under the other
    spelling; only torch >= 2.6 can allowlist an object under a foreign name."""
    return (
        kind in WHOLE_PICKLES
        and g.numpy_major != _numpy_major()
        and not torch_compat.HAS_ALIASED_SAFE_GLOBALS
    )


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# --------------------------------------------------------------------------- the files
@pytest.mark.one_cell
def test_every_producer_has_every_generation() -> None:
    """Guards a golden generation missing for a producer cell (a new cell added to
    versions.py without `nox -s "golden(<id>)"`, or a generation directory deleted): the
    committed golden directories are exactly producers x generations. One cell: files only."""
    found = {read_golden(d).label for d in golden_dirs(GOLDEN_ROOT)}
    assert found == set(GOLDENS)


@pytest.mark.parametrize("label", GOLDENS)
def test_manifest_matches_files(label: str) -> None:
    """Guards a committed golden changing or rotting: edited bytes, a truncated copy, a
    Git-LFS pointer or autocrlf rewrite in a checkout, a stray file -- against MANIFEST
    sha256/size -- and a golden produced in the wrong venv (producer versions vs the cell),
    and a generation-2 golden produced outside the reproducible-numerics mode."""
    g = _golden(label)
    generation, cell = _split(label)
    assert file_problems(g) == []
    pin = versions.by_id(cell)
    assert g.cell == cell and g.generation == generation
    if generation >= 2:
        assert g.numerics is not None and g.numerics["reproducible"], g.numerics
    assert Version(str(g.producer["torch"])).base_version == pin.torch
    assert g.numpy_major == (int(pin.numpy.split(".")[0]) if pin.numpy else 2)


@pytest.mark.parametrize("label", GOLDENS)
def test_size_budget(label: str) -> None:
    """Guards goldens bloating the repository: each cell's directory stays under 1 MB."""
    g = _golden(label)
    total = sum(p.stat().st_size for p in g.root.rglob("*") if p.is_file())
    assert total < generate.SIZE_BUDGET_BYTES, f"{label}: {total} bytes"


@pytest.mark.parametrize("label", GOLDENS)
def test_committed_goldens_unchanged_in_worktree(label: str) -> None:
    """Guards regenerating over a committed golden: files of fixtures/golden/<cell> (or
    gen<N>/<cell>) that HEAD holds must not be modified or deleted in the work tree or index
    (append-only; new, not yet committed goldens are fine)."""
    try:
        proc = subprocess.run(
            ["git", "diff", "--name-status", "HEAD", "--", str(_golden(label).root)],
            cwd=GOLDEN_ROOT.parents[1],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git checkout with a HEAD here ({exc})")
    changed = [line for line in proc.stdout.splitlines() if not line.startswith("A")]
    assert changed == [], "committed goldens changed; goldens are append-only"


def _manifest_without_freeze(directory: Path) -> dict[str, Any]:
    """The manifest less what describes the producing machine and code, not the bytes."""
    return comparable_manifest(json.loads((directory / MANIFEST_NAME).read_text("utf-8")))


def _generate(out_dir: Path, cell: str) -> None:
    """Write ``cell``'s goldens into ``out_dir`` in a fresh process, as the producer does."""
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcompat.harness.golden", str(out_dir), cell],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="session")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``produced(cell)``: ``cell``'s goldens written once per test session by
    :func:`_generate`, read-only, shared by every test and every xdist worker that asks.

    Regenerating a cell takes about 12 s (one process per generation); the regeneration
    tests (one per committed generation of this cell) and the determinism test each did it
    themselves, four productions per cell where two (this one and the determinism test's
    second) check the same. Workers share the session's temp root (the parent of their own
    base temp) and take turns through a file lock; a production that failed leaves no
    ``done`` mark and the next test to ask tries again."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's root, common to every worker
    root = shared / "golden-production"
    root.mkdir(exist_ok=True)

    def get(cell: str) -> Path:
        out, done = root / cell, root / f"{cell}.done"
        with FileLock(root / f"{cell}.lock"):
            if not done.is_file():
                shutil.rmtree(out, ignore_errors=True)  # a failed attempt's leftovers
                _generate(out, cell)
                done.touch()
        return out

    return get


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every golden file under ``root`` but the MANIFEST, by relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }


@pytest.mark.parametrize("label", GOLDENS)
def test_regeneration_is_byte_identical(label: str, produced: Callable[[str], Path]) -> None:
    """Guards non-deterministic golden bytes (a zip folder named after the temp file, a
    wall-clock created_at or total_time_s, thread-dependent kernels, unseeded RNG): in the
    producing environment -- versions, code digest and a bitwise-comparable numerics
    fingerprint, which any x86-64 CPU with MKL gives in the reproducible mode -- regenerating
    gives exactly the committed sha256s (MANIFEST: identical apart from the informational
    ``uv pip freeze`` and the CPU's own fingerprint). Seen: every generation-1 golden
    failed here on an Intel Xeon (made on an AMD EPYC, outside the mode)."""
    g = _golden(label)
    differences = environment_differences(g)
    if differences:
        pytest.skip(f"not the environment that produced {label}: {'; '.join(differences)}")
    fresh = generation_dir(produced(g.cell), g.cell, g.generation)

    assert _digests(fresh) == _digests(g.root)
    assert _manifest_without_freeze(fresh) == _manifest_without_freeze(g.root)


@pytest.mark.slow
def test_generation_is_deterministic_here(tmp_path: Path, produced: Callable[[str], Path]) -> None:
    """Guards non-deterministic golden bytes in THIS cell with THIS code (independent of
    the committed goldens, which older code may have written): two productions in fresh
    processes (the session's shared one and one of this test's own) give identical files
    in every generation, MANIFEST included apart from ``uv pip freeze``."""
    cell = os.environ.get("CKPTCOMPAT_CELL") or "t26"
    _generate(tmp_path / "b", cell)
    first = produced(cell)

    for generation in GENERATIONS:
        a = generation_dir(first, cell, generation)
        b = generation_dir(tmp_path / "b", cell, generation)
        assert _digests(a) and _digests(a) == _digests(b)
        assert _manifest_without_freeze(a) == _manifest_without_freeze(b)


@pytest.mark.slow
@pytest.mark.one_cell
def test_confirm_code_records_only_byte_identical_regeneration(tmp_path: Path) -> None:
    """Guards the regeneration test going silent after a refactor (a new producer code
    digest skipped it) or being fooled (a digest confirmed although the bytes changed):
    ``--confirm-code`` on this cell's committed generation records the code's digest in
    ``code_digests.json`` when every byte reproduces, and refuses, recording nothing, once
    one committed byte differs. One cell: comparing, recording and refusing are file logic
    that does not depend on torch's version; whether each cell's code reproduces its
    goldens byte for byte is ``test_regeneration_is_byte_identical``'s check in every cell
    (issue 21 item 4: two productions, ~8 s of a worker per cell)."""
    cell = os.environ.get("CKPTCOMPAT_CELL") or "t26"
    committed = generation_dir(GOLDEN_ROOT, cell)
    copy = generation_dir(tmp_path, cell)
    shutil.copytree(committed, copy)
    command = [sys.executable, "-m", "ckptcompat.harness.golden", str(tmp_path), cell,
               "--confirm-code"]  # fmt: skip
    ok = subprocess.run(command, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr[-2000:]
    digest = read.producer_code_digest()
    table = copy.parent / read.CONFIRMED_CODE_NAME
    recorded = json.loads(table.read_text()) if table.is_file() else {}
    assert digest in [*recorded.get(cell, []), read_golden(copy).producer["code_digest"]]
    table.unlink(missing_ok=True)
    target = copy / read_golden(copy).manifest["files"][0]["path"]
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    refused = subprocess.run(command, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "does not reproduce" in refused.stderr
    assert not table.exists()


@pytest.mark.one_cell
def test_generate_never_replaces_a_different_golden(tmp_path: Path) -> None:
    """Guards append-only goldens being overwritten by a changed generator: writing into
    a directory that holds other bytes (or unknown files) raises and writes nothing;
    identical bytes are verified, not rewritten. One cell: pure file logic, no torch."""
    target = tmp_path / "t99"
    files = {"a/x.pt": b"x", MANIFEST_NAME: b"{}"}
    assert generate.write_or_verify(target, files) == ["a/x.pt", MANIFEST_NAME]
    assert generate.write_or_verify(target, files) == []
    with pytest.raises(GoldenError, match=r"append-only.*differing: a/x\.pt"):
        generate.write_or_verify(target, {**files, "a/x.pt": b"y", "b/new.pt": b"n"})
    assert not (target / "b").exists() and (target / "a/x.pt").read_bytes() == b"x"
    with pytest.raises(GoldenError, match=r"not generated here: a/x\.pt"):
        generate.write_or_verify(target, {MANIFEST_NAME: b"{}"})


@pytest.mark.one_cell
def test_verify_ignores_only_the_manifests_provenance(tmp_path: Path) -> None:
    """Guards `nox -s "golden(t26)"` refusing its own committed goldens on a clean clone
    ("append-only ... differing: MANIFEST.json"): the venv's `uv pip freeze` (extras added
    since) and the code digest differ, as --confirm-code already allowed. Those keys (and
    the CPU named) are ignored and the committed manifest kept; any other manifest change
    (a file's digest, the kernel path) is still refused. One cell: file logic, no torch."""

    def manifest(freeze: str, digest: str, cpu: str, sha: str, path: str = "AVX512") -> bytes:
        producer = {"pip_freeze": [freeze], "code_digest": digest,
                    "numerics": {"cpu_model": cpu, "aten_capability": path}}  # fmt: skip
        return json.dumps({"producer": producer, "files": [{"path": "x", "sha": sha}]}).encode()

    target = tmp_path / "t99"
    committed = manifest("torch==2.6.0", "aaa", "AMD EPYC", "s1")
    generate.write_or_verify(target, {"x": b"x", MANIFEST_NAME: committed})
    fresh = manifest("torch==2.6.0\npsycopg==3", "bbb", "Intel Xeon", "s1")
    assert generate.write_or_verify(target, {"x": b"x", MANIFEST_NAME: fresh}) == []
    assert (target / MANIFEST_NAME).read_bytes() == committed
    other_file = manifest("torch==2.6.0", "aaa", "AMD EPYC", "s2")
    other_path = manifest("torch==2.6.0", "aaa", "AMD EPYC", "s1", path="AVX2")
    for changed in (other_file, other_path, b"[1]"):
        with pytest.raises(GoldenError, match=r"differing: MANIFEST\.json"):
            generate.write_or_verify(target, {"x": b"x", MANIFEST_NAME: changed})
    assert (target / MANIFEST_NAME).read_bytes() == committed


# --------------------------------------------------------------------------- loading
@pytest.mark.parametrize(("cell", "name"), PAIRS)
def test_safe_v1_loads_without_allowlist(cell: str, name: str) -> None:
    """Guards the safe format needing an allowlist or failing on a newer/older torch
    (e.g. a TorchVersion or numpy scalar sneaking into the payload): loads with
    weights_only=True and no safe globals, via the manager, bitwise weights, probe within
    tolerance, identical greedy actions."""
    g = _golden(cell)
    info = g.agent(name)
    started = time.perf_counter()
    payload = torch_compat.load(g.path(name, "safe_v1"))
    assert payload["format"] == "ckptcompat.agent"
    agent = load_safe_agent(g.root, name, info["epoch"])
    problems = probe_problems(g, name, agent)
    if params_digest(agent) != info["params_digest"]:
        problems.insert(0, "weights differ from the producer's")
    emit_record(
        g,
        name,
        "safe_v1",
        "safe",
        "fail" if problems else "pass",
        detail="; ".join(problems),
        duration_s=time.perf_counter() - started,
    )
    assert problems == []


@pytest.mark.parametrize("kind", LEGACY)
@pytest.mark.parametrize(("cell", "name"), PAIRS)
def test_legacy_generation_reads_through_allowlist(cell: str, name: str, kind: str) -> None:
    """Guards G1/G2/state_dict goldens becoming unreadable without weights_only=False
    ("Unsupported global: GLOBAL ...MockAgent" since 2.6): the allowlist reader loads them,
    except numpy-1 whole pickles on torch < 2.6, which must raise IncompatibleCheckpointError
    naming the alias (2.4/2.5 cannot allowlist numpy._core objects as numpy.core)."""
    g = _golden(cell)
    started = time.perf_counter()
    if _needs_alias(g, kind):
        with pytest.raises(IncompatibleCheckpointError, match="alias") as info:
            load_legacy_agent(g, name, kind)
        emit_record(
            g,
            name,
            kind,
            "allowlist",
            "fail",
            detail=_first_line(info.value),
            duration_s=time.perf_counter() - started,
        )
        return
    agent = load_legacy_agent(g, name, kind)
    problems = probe_problems(g, name, agent)
    if params_digest(agent) != g.agent(name)["params_digest"]:
        problems.insert(0, "weights differ from the producer's")
    emit_record(
        g,
        name,
        kind,
        "allowlist",
        "fail" if problems else "pass",
        detail="; ".join(problems),
        duration_s=time.perf_counter() - started,
    )
    assert problems == []


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize(("cell", "name"), PAIRS)
def test_stored_ppo_update_lands_within_tolerance(cell: str, name: str) -> None:
    """Guards optimizer state or PPO numerics drifting across torch versions (Adam state
    layout, LSTM kernels, Categorical log_prob): one update on the stored rollout from the
    stored agent + Adam state lands on the stored parameters -- within tolerance across
    versions and kernel paths, bitwise in the producing cell when the numerics fingerprints
    allow it (seen: generation 1's recurrent update failed "not bitwise equal" on an Intel
    Xeon, a hardware difference of 1.5e-8, not a regression)."""
    g = _golden(cell)
    started = time.perf_counter()
    rollout = torch_compat.load(g.path(name, "rollout"))
    expected = torch_compat.load(g.path(name, "post_update"))
    updated, stats = replay_ppo_update(g.root, name, rollout)
    tol = g.tolerances
    problems = compare_state_dicts(
        updated.state_dict(), expected["state_dict"], rtol=tol["rtol"], atol=tol["atol"]
    )
    bitwise, why_not = _bitwise(g)
    if bitwise and params_digest(updated) != expected["params_digest"]:
        problems.append("not bitwise equal in the producing cell with the same numerics")
    if not finite(stats):
        problems.append(f"non-finite losses {stats}")
    emit_record(
        g,
        name,
        "ppo_update",
        "safe",
        "fail" if problems else "pass",
        detail="; ".join([*problems[:5], *([why_not] if why_not else [])]),
        duration_s=time.perf_counter() - started,
    )
    assert problems == []


@pytest.fixture
def global_rng_restored() -> Any:
    """Trainer.resume restores the saved global RNG streams and sets one thread; undo both."""
    state = capture_rng_state()
    threads = torch.get_num_threads()
    yield
    restore_rng_state(state, None)
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("cell", "name"), PAIRS)
@pytest.mark.usefixtures("global_rng_restored")
def test_trainer_state_resumes_and_trains_on(cell: str, name: str, tmp_path: Path) -> None:
    """Guards a trainer state that loads but cannot resume (optimizer param groups or
    Adam state refused by load_state_dict, RNG state of another numpy major): the trainer
    resumes from a copy of the golden run, restores Adam exactly, and trains one more
    epoch with finite losses."""
    g = _golden(cell)
    info = g.agent(name)
    shutil.copytree(g.root / name, tmp_path / name)
    started = time.perf_counter()
    trainer = Trainer.resume(name, tmp_path, progress=False)
    try:
        saved = torch_compat.load(g.path(name, "trainer_state"))["optimizer"]["state"]
        restored = trainer.optimizer.state_dict()["state"]
        assert trainer.epoch == info["epoch"]
        assert saved.keys() == restored.keys() and saved
        for index, entry in saved.items():
            for key, value in entry.items():
                assert torch.equal(restored[index][key], value), (index, key)
        result = trainer.train(info["epoch"] + 1)
    finally:
        trainer.envs.close()
    ok = result.epoch == info["epoch"] + 1 and finite(result.stats) and bool(result.stats)
    emit_record(
        g,
        name,
        "trainer_state",
        "safe",
        "pass" if ok else "fail",
        detail="" if ok else f"stats {result.stats}",
        duration_s=time.perf_counter() - started,
    )
    assert ok, result.stats


@pytest.mark.parametrize(("cell", "name"), PAIRS)
def test_greedy_evaluation_returns_manifest_value(cell: str, name: str) -> None:
    """Guards evaluation drifting across versions (greedy actions flipping on near-ties,
    env or obs-normalisation changes): greedy returns on the manifest's seeds equal the
    producer's exactly in its own cell with the same numerics, and their mean is within 1%
    elsewhere (another CPU may flip a greedy action on a near-tie)."""
    g = _golden(cell)
    info = g.agent(name)
    evaluation = info["evaluation"]
    started = time.perf_counter()
    agent = load_safe_agent(g.root, name, info["epoch"])
    returns = greedy_returns(agent, evaluation["env_id"], evaluation["seeds"])
    mean, expected = float(np.mean(returns)), float(evaluation["mean_return"])
    bitwise, why_not = _bitwise(g)
    if bitwise:
        ok = returns == evaluation["returns"]
    else:
        ok = math.isclose(mean, expected, rel_tol=g.tolerances["eval_return_rel"])
    emit_record(
        g,
        name,
        "evaluation",
        "safe",
        "pass" if ok else "fail",
        detail=f"returns {returns}, producer {evaluation['returns']}"
        + (f"; {why_not}" if why_not else ""),
        duration_s=time.perf_counter() - started,
        evaluator=True,
        outputs={"mean_return": mean, "expected_mean_return": expected},
    )
    assert ok, f"returns {returns} vs producer {evaluation['returns']}"


# --------------------------------------------------------------------------- naive load
@pytest.fixture(scope="module")
def naive_outcomes() -> dict[tuple[str, str, str], LoadOutcome]:
    """What a plain ``torch.load(FILE)`` does here on every golden, in one subprocess
    (goldens are written by this repository, never malicious)."""
    keys, jobs = [], []
    for directory in golden_dirs(GOLDEN_ROOT):
        g = read_golden(directory)
        for name in g.agents:
            for kind in KINDS:
                keys.append((g.label, name, kind))
                jobs.append(LoadJob(str(g.path(name, kind)), "naive"))
    return dict(zip(keys, run_loads(jobs), strict=True))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("cell", "name"), PAIRS)
def test_naive_torch_load_outcome(
    cell: str, name: str, kind: str, naive_outcomes: dict[tuple[str, str, str], LoadOutcome]
) -> None:
    """Guards the matrix's picture of users without ckptcompat: a plain torch.load
    unpickles whole-object goldens (G1, G2) on 2.4/2.5 and refuses them from 2.6 (the
    weights_only default flip, UnsafeCheckpointError), and loads every safe-format file,
    bare state_dict and stored rollout on every version."""
    g = _golden(cell)
    outcome = naive_outcomes[(cell, name, kind)]
    emit_record(
        g,
        name,
        kind,
        "naive",
        "pass" if outcome.ok else "fail",
        detail=outcome.result_type or f"{outcome.error_type}: {outcome.message[:300]}",
    )
    if kind in WHOLE_PICKLES and torch_compat.WEIGHTS_ONLY_IS_DEFAULT:
        assert not outcome.ok and outcome.error_type == "UnsafeCheckpointError", outcome
        return
    assert outcome.ok, outcome
    expected_type = {
        "g1": "ckptcompat.policy.policy_record.PolicyRecord",
        "g2": g.agent(name)["class_path"],
        "state_dict": "collections.OrderedDict",
    }.get(kind, "builtins.dict")
    assert outcome.result_type == expected_type


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('package = "."\ncells = 3\n', "TeamConfigError: .*cells is 3"),
        ('package = "."\ncells = ["NOT_HERE"]\n', "TeamConfigError: .*cell CELL is not in"),
        (
            'package = "."\n[[agents]]\nname = "x"\nclass_path = "nope.Missing"\n',
            "AgentMismatchError: no module of agent class_path 'nope.Missing'",
        ),
        (
            'package = "."\n[[agents]]\nname = "x"\nclass_path = "collections.OrderedDict"\n',
            "AgentMismatchError: 'collections.OrderedDict' is not an agent class",
        ),
    ],
)
def test_team_golden_cli_bad_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    """Guards `nox -s "golden(t26)" -- --config` on a bad team config or an agent class
    that does not import: a traceback (TeamConfigError from team.load, AgentMismatchError
    from the registry) instead of one error line; goldens of a cell outside the team's
    `cells` were written, and the team's next matrix failed on them as "not in the
    baseline" (new users' trials). Exit 2, nothing written."""
    config = tmp_path / "team.toml"
    config.write_text(body)
    out = tmp_path / "out"
    cell = os.environ.get("CKPTCOMPAT_CELL") or "t26"
    other = next(c.id for c in versions.DEFAULT if c.id != cell)
    config.write_text(body.replace("NOT_HERE", other))
    assert generate.main([str(out), cell, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(expected.replace("CELL", cell), err), err
    assert not out.exists()
