"""The malicious corpus (fixtures/malicious) against every reading path: all refused, none run.

Corpus: :mod:`ckptcompat.harness.malicious` writes it (``python -m
ckptcompat.harness.malicious fixtures/malicious``); every payload's only effect, if it ever
ran, is creating the canary file named by ``CKPTCOMPAT_CANARY``.

How the paths are exercised: each reading path runs in its own child process (forked from
the shared :class:`tests.faults.ForkServer`, so torch is imported once), with
``CKPTCOMPAT_CANARY`` pointing into this test's ``tmp_path`` and ``TMPDIR`` (where a payload
that lost the variable would put it) there too, so an execution could never leave a mark
outside the test. The child records, per file and
path: the exception raised, whether the canary appeared (checked after every single
attempt), and every process-spawn or real-unpickler ``find_class`` audit event. The test
then requires UnsafeCheckpointError or CorruptCheckpointError everywhere (the doctor: a
report, no exception), no canary, no event, and that nothing was written.

``naive_load``/``trusted_load`` are never called on the corpus. Two documented controls do
run payloads or raw ``torch.load``, each in a child process with the canary in ``tmp_path``:
the liveness control (the stdlib unpickler runs each payload: proof the payloads are real)
and the legacy ``.tar`` control (raw ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ckptcompat import torch_compat
from ckptcompat.errors import UnsafeCheckpointError
from ckptcompat.harness.malicious import files as malicious
from tests.faults import SRC, ForkServer, JobResult, fork_server, tree_digest

ENTRIES: list[dict[str, Any]] = malicious.read_manifest()["files"]
NAMES: list[str] = [entry["name"] for entry in ENTRIES]
REFUSALS = {"UnsafeCheckpointError", "CorruptCheckpointError"}
#: What torch_compat.load itself must raise for each file.
_EXPECTED: dict[str, str] = {entry["name"]: entry["refused_as"] for entry in ENTRIES}
_MAX_FILE_BYTES = 16 * 1024

# Shared by every path's child: the audit hook, the per-attempt canary check, the swapped run.
_HARNESS = r"""
import contextlib, io, json, os, re, shutil, sys, tempfile, warnings
from pathlib import Path
warnings.simplefilter("ignore")
tempfile.tempdir = None  # the fork server cached its own; follow this child's TMPDIR
import torch
torch.set_num_threads(1)
CORPUS = Path(ARGS["corpus"])
WORK = Path(ARGS["work"])
CANARY = Path(os.environ["CKPTCOMPAT_CANARY"])
_SPAWN = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
          "subprocess.Popen")
_events = []

def _hook(event, args):
    # A real unpickler resolving a global fires pickle.find_class; torch's weights-only
    # unpickler and our inert scan never do. Process creation is what the payloads do;
    # the one legitimate spawn is the result record's `git rev-parse HEAD` (CLI run steps).
    if event == "subprocess.Popen" and list(args[1])[:2] == ["git", "rev-parse"]:
        return
    if event in _SPAWN or event == "pickle.find_class":
        _events.append(f"{event} {args!r:.150}")

sys.addaudithook(_hook)

def attempt(file, path, fn):
    _events.clear()
    detail = None
    try:
        detail = fn()
        outcome, message = "returned", ""
    except Exception as exc:
        outcome, message = type(exc).__name__, str(exc)[:300]
    appeared = CANARY.exists()
    if appeared:  # keep the evidence, and start the next attempt with no canary
        CANARY.rename(CANARY.with_name(f"CANARY-{file}-{len(_events)}"))
    emit(file=file, path=path, outcome=outcome, message=message, canary=appeared,
         events=list(_events), detail=detail if isinstance(detail, dict) else None)

_BASE = []

def swapped(name, which):
    # A managed run whose agent (or trainer) file was replaced by `name`, with index.json
    # updated to the new size and digest: verification passes, the loader sees the file.
    from ckptcompat.agents.mock import MockAgent
    from ckptcompat.checkpoint.atomic import hash_file
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    if not _BASE:
        base = WORK / "base"
        agent = MockAgent()
        manager = SimpleCheckpointManager("victim", base)
        manager.save_agent(agent, 1)
        manager.save_trainer_state(torch.optim.Adam(agent.parameters()), 1, 0)
        _BASE.append(base)
    data = WORK / "runs" / f"{name}-{which}"
    shutil.copytree(_BASE[0], data)
    folder = data / "victim" / "checkpoints"
    target = folder / ("victim_v1.pt" if which == "agent" else "victim_v1.trainer.pt")
    shutil.copyfile(CORPUS / name, target)
    index = json.loads((folder / "index.json").read_text())
    size, digest = hash_file(target)
    for entry in index["checkpoints" if which == "agent" else "trainer_states"]:
        entry["size_bytes"], entry["digest"] = size, digest
    (folder / "index.json").write_text(json.dumps(index))
    return data

def run_cli(argv):
    from ckptcompat import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    text = err.getvalue() + "\n" + out.getvalue()
    found = re.findall(r"\b([A-Z][A-Za-z]*Error): ", text)
    return {"exit": code, "error": found[0] if found else None, "text": text[-300:]}
"""

# One child per reading path; each loops over every corpus file.
_PATHS: dict[str, str] = {
    "torch_compat": """
        from ckptcompat import torch_compat
        for name in ARGS["files"]:
            attempt(name, "torch_compat.load", lambda: torch_compat.load(CORPUS / name))
            attempt(name, "torch_compat.load(mmap)",
                    lambda: torch_compat.load(CORPUS / name, mmap=True))
    """,
    "manager": """
        from ckptcompat.checkpoint.manager import SimpleCheckpointManager as M
        for name in ARGS["files"]:
            attempt(name, "load_from_uri(path)", lambda: M.load_from_uri(CORPUS / name))
            attempt(name, "load_from_uri(file://)",
                    lambda: M.load_from_uri(f"file://{CORPUS / name}"))
            data = swapped(name, "agent")
            attempt(name, "load_agent(1) swapped", lambda: M("victim", data).load_agent(1))
            attempt(name, "load_agent() swapped", lambda: M("victim", data).load_agent())
            attempt(name, ":latest swapped", lambda: M.load_from_uri(f"{data}/victim:latest"))
            attempt(name, "run dir swapped", lambda: M.load_from_uri(data / "victim"))
    """,
    "trainer_state": """
        from ckptcompat.agents.mock import MockAgent
        from ckptcompat.checkpoint.manager import SimpleCheckpointManager as M
        from ckptcompat.rl.trainer import Trainer
        for name in ARGS["files"]:
            data = swapped(name, "trainer")
            optimizer = torch.optim.Adam(MockAgent().parameters())
            attempt(name, "load_trainer_state swapped",
                    lambda: M("victim", data).load_trainer_state(optimizer=optimizer))
            attempt(name, "Trainer.resume swapped", lambda: Trainer.resume("victim", data))
    """,
    "legacy": """
        from ckptcompat.checkpoint import legacy
        from ckptcompat.checkpoint.uri import key_and_version
        for name in ARGS["files"]:
            attempt(name, "legacy.read_checkpoint", lambda: legacy.read_checkpoint(CORPUS / name))
            g1 = WORK / "g1" / name / "checkpoints"
            g1.mkdir(parents=True)
            shutil.copyfile(CORPUS / name, g1 / "model_0003.pt")
            attempt(name, "legacy.read_checkpoint(model_0003.pt)",
                    lambda: legacy.read_checkpoint(g1 / "model_0003.pt"))
            attempt(name, "key_and_version", lambda: key_and_version(CORPUS / name))
    """,
    "policy_store": """
        from ckptcompat.policy.policy_store import PolicyStore
        store = PolicyStore(device="cpu", data_dir=WORK)
        for name in ARGS["files"]:
            path = str(CORPUS / name)
            attempt(name, "policy_record().policy", lambda: store.policy_record(path).policy)
            attempt(name, "PolicyStore.load_from_uri", lambda: store.load_from_uri(path))
            attempt(name, "policy_record(file://).policy",
                    lambda: store.policy_record("file://" + path, "latest").policy)
            g1 = WORK / "g1" / name
            g1.mkdir(parents=True)
            shutil.copyfile(CORPUS / name, g1 / "model_0003.pt")
            attempt(name, "policy_records(G1 dir)",
                    lambda: [pr.policy for pr in store.policy_records(str(g1), "all")])
            data = swapped(name, "agent")
            attempt(name, "policy_record(run dir).policy",
                    lambda: store.policy_record(str(data / "victim"), "latest").policy)
            attempt(name, "key_and_version()",
                    lambda: store.policy_record(str(data / "victim"), "latest").key_and_version())
    """,
    "doctor": """
        from ckptcompat import doctor
        def diagnose(name):
            found = doctor.diagnose(CORPUS / name)
            return {
                "weights_only": {v.torch: v.weights_only.outcome for v in found.versions},
                "dangerous_allowlist": {
                    v.torch: any(e.dangerous for e in v.weights_only.allowlist)
                    for v in found.versions
                },
                "findings": sorted({f.code for f in found.findings}),
            }
        for name in ARGS["files"]:
            attempt(name, "doctor.diagnose", lambda: diagnose(name))
            attempt(name, "cli doctor", lambda: run_cli(["doctor", str(CORPUS / name)]))
    """,
    "migrate": """
        from ckptcompat.checkpoint.migrate import migrate
        out = WORK / "migrated"
        out.mkdir()
        for name in ARGS["files"]:
            attempt(name, "migrate(.pt)", lambda: migrate(CORPUS / name, out / f"{name}-dst.pt"))
            attempt(name, "migrate(data_dir)",
                    lambda: migrate(CORPUS / name, out / "data", run="victim", epoch=1))
            attempt(name, "cli migrate",
                    lambda: run_cli(["migrate", str(CORPUS / name), str(out / "cli.pt")]))
        emit(written=sorted(str(p.relative_to(out)) for p in out.rglob("*")))
    """,
    "evaluator": """
        from ckptcompat.evaluation.evaluator import evaluate_policy
        dbs = WORK / "dbs"
        dbs.mkdir()
        for name in ARGS["files"]:
            attempt(name, "evaluate_policy(path)", lambda: evaluate_policy(
                str(CORPUS / name), dbs / f"{name}.duckdb", env_id="CartPole-v1", episodes=1))
            data = swapped(name, "agent")
            attempt(name, "evaluate_policy(:latest swapped)", lambda: evaluate_policy(
                f"{data}/victim:latest", dbs / f"{name}-l.duckdb", env_id="CartPole-v1",
                episodes=1))
            attempt(name, "cli run evaluate", lambda: run_cli(
                ["run", "evaluate", "--uri", str(CORPUS / name), "--db",
                 str(dbs / f"{name}-cli.duckdb"), "--episodes", "1"]))
        emit(written=sorted(p.name for p in dbs.iterdir()))
    """,
}


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def server() -> ForkServer:
    """The shared fork server (torch imported once)."""
    return fork_server()


def _run_path(server: ForkServer, tmp_path: Path, path: str) -> JobResult:
    """Run one reading path's child over a private copy of the corpus; check the canary."""
    corpus = tmp_path / "corpus"
    shutil.copytree(malicious.CORPUS_DIR, corpus)
    before = tree_digest(corpus)
    canaries, tmpdir, work = tmp_path / "canary", tmp_path / "tmpdir", tmp_path / "work"
    for folder in (canaries, tmpdir, work):
        folder.mkdir()
    result = server.run(
        _HARNESS + textwrap.dedent(_PATHS[path]),
        {"corpus": str(corpus), "work": str(work), "files": NAMES},
        env={"CKPTCOMPAT_CANARY": str(canaries / "CANARY"), "TMPDIR": str(tmpdir)},
        timeout=300,
    )
    assert result.error is None, result.error
    assert result.code == 0, server.tail()
    # TMPDIR too: where a payload would create the canary if it lost CKPTCOMPAT_CANARY.
    assert sorted(p.name for p in canaries.iterdir()) == [], "a payload ran"
    assert not (tmpdir / "ckptcompat-canary").exists(), "a payload ran"
    assert tree_digest(corpus) == before, "a reading path changed the corpus"
    return result


def _attempts(result: JobResult) -> list[dict[str, Any]]:
    attempts = [m for m in result.messages if "outcome" in m]
    assert {a["file"] for a in attempts} == set(NAMES)
    return attempts


def _assert_refused(result: JobResult) -> None:
    """Every attempt raised a refusal (CLI: exit 1 naming one); no canary, no event.

    ``torch_compat.load`` itself must raise exactly the manifest's ``refused_as``.
    """
    wrong = []
    for a in _attempts(result):
        detail = a["detail"] or {}
        if a["path"].startswith("cli "):
            refused = detail.get("exit") == 1 and detail.get("error") in REFUSALS
        elif a["path"] == "torch_compat.load":
            refused = a["outcome"] == _EXPECTED[a["file"]]
        else:
            refused = a["outcome"] in REFUSALS
        if not refused or a["canary"] or a["events"]:
            wrong.append(
                f"{a['file']} via {a['path']}: {a['outcome']} {detail or a['message']!r:.200}"
                f" canary={a['canary']} events={a['events']}"
            )
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------------------- the corpus
@pytest.mark.one_cell
def test_corpus_matches_its_manifest_and_kinds() -> None:
    """Guards a corpus file edited by hand, or a kind added to the generator without
    regenerating (one cell: compares committed bytes with committed hashes)."""
    assert malicious.check() == []
    manifest = malicious.read_manifest()
    assert manifest["generated_by"] == "python -m ckptcompat.harness.malicious"
    assert NAMES == [k.name for k in malicious.KINDS]
    assert len({e["kind"] for e in ENTRIES}) >= 15
    for entry in ENTRIES:
        assert entry["description"] and entry["size_bytes"] <= _MAX_FILE_BYTES, entry["name"]
        assert entry["refused_as"] in REFUSALS


def test_regenerated_corpus_is_byte_identical(tmp_path: Path) -> None:
    """Guards a non-deterministic generator (dates, dict order, pids in names). Files made
    with the standard library must match in every cell; torch-made ones (G1/G2/safe-v1)
    only under the writer's torch, whose pickles of nn.Module state they are."""
    malicious.generate(tmp_path)
    regenerated = malicious.read_manifest(tmp_path)
    fresh = {e["name"]: e for e in regenerated["files"]}
    same_torch = regenerated["writer"]["torch"] == malicious.read_manifest()["writer"]["torch"]
    for entry in ENTRIES:
        if entry["made_with"] == "stdlib" or same_torch:
            assert fresh[entry["name"]]["sha256"] == entry["sha256"], entry["name"]


def test_every_payload_is_live_when_really_unpickled(server: ForkServer, tmp_path: Path) -> None:
    """Guards a corpus of dud payloads, which would make "the canary never appears" prove
    nothing: in a child process with the canary in tmp_path, the *standard library*
    unpickler (the documented liveness control; not naive_load/trusted_load) runs each
    payload record and each one creates its canary. The storage-size kind carries no code
    payload (its danger is memory safety) and is skipped."""
    code = r"""
        import io, os, pickle, tarfile, time, zipfile
        from pathlib import Path
        import torch

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                _, storage_type, _, _, numel = pid
                raw = torch.UntypedStorage(numel * storage_type._dtype.itemsize)
                return torch.storage.TypedStorage(wrap_storage=raw, dtype=storage_type._dtype,
                                                  _internal=True)

        def records(data, container):
            if container == "zip":
                zf = zipfile.ZipFile(io.BytesIO(data))
                return [zf.open(i).read() for i in zf.infolist() if i.filename.endswith(".pkl")]
            if container == "legacy_tar":
                return [tarfile.open(fileobj=io.BytesIO(data)).extractfile("pickle").read()]
            if container == "legacy_stream":
                stream = io.BytesIO(data)
                for _ in range(3):  # magic number, protocol version, sys_info
                    pickle.load(stream)
                return [stream.read()]
            return [data]

        folder = Path(ARGS["canaries"])
        for name, container in ARGS["files"]:
            canary = folder / name
            os.environ["CKPTCOMPAT_CANARY"] = str(canary)
            data = Path(ARGS["corpus"], name).read_bytes()
            for record in records(data, container):
                try:
                    Unpickler(io.BytesIO(record)).load()
                except Exception:
                    pass  # a payload may fail after it ran (e.g. a type check on its result)
            deadline = time.monotonic() + 10  # Popen returns before its shell has run
            while not canary.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            emit(file=name, live=canary.exists())
    """
    canaries = tmp_path / "canaries"
    canaries.mkdir()
    files = [(e["name"], e["container"]) for e in ENTRIES if e["kind"] != "storage_size_mismatch"]
    result = server.run(
        code,
        {"corpus": str(malicious.CORPUS_DIR), "canaries": str(canaries), "files": files},
        env={"TMPDIR": str(canaries)},
    )
    assert result.error is None, result.error
    dead = [m["file"] for m in result.messages if not m["live"]]
    assert not dead, f"payloads that never create the canary: {dead}"
    assert len(result.messages) == len(files)


# --------------------------------------------------------------------------- reading paths
@pytest.mark.parametrize(
    "path", ["torch_compat", "manager", "trainer_state", "legacy", "policy_store"]
)
def test_loading_paths_refuse_every_file(server: ForkServer, tmp_path: Path, path: str) -> None:
    """Guards any loader executing or accepting a malicious checkpoint (CVE-2025-32434 on
    torch <= 2.5.1, CVE-2026-24747 on <= 2.9.1, plain pickle everywhere): torch_compat.load
    (also with mmap), SimpleCheckpointManager.load_from_uri and load_agent on a run whose
    file was swapped (index updated, so verification passes), load_trainer_state and
    Trainer.resume on a swapped trainer state, legacy.read_checkpoint (also as a G1 file),
    key_and_version, and PolicyStore (policy_record().policy, load_from_uri, G1 directories,
    managed runs) all raise UnsafeCheckpointError or CorruptCheckpointError; the canary never
    appears; no process is spawned and no global is resolved by a real unpickler."""
    _assert_refused(_run_path(server, tmp_path, path))


def test_migrate_without_trust_refuses_and_writes_nothing(
    server: ForkServer, tmp_path: Path
) -> None:
    """Guards migrate (the one path that may fall back to weights_only=False) doing so
    without --trust: migrate() to a .pt and to a data_dir, and `ckptcompat migrate`, refuse
    every file with a typed error and leave no output file behind."""
    result = _run_path(server, tmp_path, "migrate")
    _assert_refused(result)
    assert result.values("written") == [[]]


def test_evaluator_refuses_and_leaves_no_db(server: ForkServer, tmp_path: Path) -> None:
    """Guards the evaluator loading (or keying, via key_and_version's mmap load) a malicious
    checkpoint: evaluate_policy on the file and on a swapped run's :latest, and
    `ckptcompat run evaluate`, refuse every file before any stats DB is created."""
    result = _run_path(server, tmp_path, "evaluator")
    _assert_refused(result)
    assert result.values("written") == [[]]


def test_doctor_reports_and_never_executes(server: ForkServer, tmp_path: Path) -> None:
    """Guards the doctor running what it inspects: doctor.diagnose and `ckptcompat doctor`
    return a report for every file (exit 0), never predict that weights_only=True loads one
    as is, flag the allowlist a payload would need as dangerous, and never run a payload."""
    result = _run_path(server, tmp_path, "doctor")
    wrong = []
    for a in _attempts(result):
        detail = a["detail"] or {}
        if a["canary"] or a["events"] or a["outcome"] != "returned":
            wrong.append(f"{a['file']} via {a['path']}: {a['outcome']} {a['message']}")
        elif a["path"] == "cli doctor":
            if detail["exit"] != 0:
                wrong.append(f"{a['file']}: `ckptcompat doctor` exited {detail['exit']}")
        else:
            for torch_minor, outcome in detail["weights_only"].items():
                dangerous = detail["dangerous_allowlist"][torch_minor]
                if outcome == "loads" or (outcome == "fixable_by_allowlist" and not dangerous):
                    wrong.append(f"{a['file']} on {torch_minor}: {outcome}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.one_cell
def test_doctor_console_script_on_every_file(tmp_path: Path) -> None:
    """Guards the installed `ckptcompat doctor` entry point executing a file: a real
    subprocess per corpus file exits 0 with a report and leaves no canary. One cell: the
    doctor imports neither torch nor numpy, so its behaviour is the same in every cell."""
    canaries = tmp_path / "canary"
    canaries.mkdir()
    env = _cli_env(canaries)
    for name in NAMES:
        done = subprocess.run(
            [*_console("ckptcompat"), "doctor", str(malicious.CORPUS_DIR / name)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (name, done.stderr)
        assert "ckptcompat doctor:" in done.stdout
        assert list(canaries.iterdir()) == [], name


def test_migrate_and_evaluate_console_scripts(tmp_path: Path) -> None:
    """Guards the installed entry points (not only cli.main): `ckptcompat migrate` and
    `ckptcompat run evaluate` in real subprocesses refuse an otherwise valid G2 agent
    carrying a payload (exit 1, the typed error named), write nothing, leave no canary, and
    suggest no `--trust` for it."""
    canaries = tmp_path / "canary"
    canaries.mkdir()
    env = _cli_env(canaries)
    victim = str(malicious.CORPUS_DIR / "g2_agent_with_payload.pt")
    out = tmp_path / "out"
    out.mkdir()
    commands = {
        "migrate": ["migrate", victim, str(out / "dst.pt")],
        "evaluate": ["run", "evaluate", "--uri", victim, "--db", str(out / "eval.duckdb"),
                     "--episodes", "1"],
    }  # fmt: skip
    # Both at once: each pays for its own `import torch`.
    running = {
        name: subprocess.Popen(
            [*_console("ckptcompat"), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, argv in commands.items()
    }
    done = {name: (p.communicate(timeout=300), p.returncode) for name, p in running.items()}
    (_, migrate_err), migrate_code = done["migrate"]
    assert migrate_code == 1, migrate_err
    assert "UnsafeCheckpointError" in migrate_err
    (evaluate_out, evaluate_err), evaluate_code = done["evaluate"]
    assert evaluate_code == 1, evaluate_err
    # A file naming a code-running global gets no ready-to-paste way to load it anyway
    # (seen by a new user: both commands ended with "... migrate --trust ..." advice).
    for text in (migrate_err, evaluate_out, evaluate_err):
        assert "--trust" not in text and "do not load or migrate it" in migrate_err.lower(), text
    record = json.loads(evaluate_out.strip().splitlines()[-1])
    assert record["outcome"] == "fail"
    assert record["detail"].split(":")[0] in REFUSALS
    assert list(out.iterdir()) == []
    assert list(canaries.iterdir()) == []


def _console(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", "ckptcompat.cli"]


def _cli_env(canaries: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CKPTCOMPAT_CANARY": str(canaries / "CANARY"), "TMPDIR": str(canaries)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.pop("CKPTCOMPAT_FAULT", None)
    return env


# --------------------------------------------------------------------------- .tar control
def test_legacy_tar_control(tmp_path: Path) -> None:
    """Control for the CVE-2025-32434 path (the pre-1.6 legacy .tar container loaded under
    weights_only=True, open up to torch 2.5.1, closed in 2.6 by pytorch#145020).

    Not a demonstrated bypass: the weights-only unpickler still guards the tar's pickle
    member, so a Python-level payload there is refused even on 2.4/2.5; the published
    exploit needs more than a canary can safely show. What this control shows: raw
    ``torch.load(weights_only=True)`` -- run via ``python -c`` in a subprocess because the
    AST rule forbids torch.load outside torch_compat (it parses .py files only) -- *enters*
    the legacy tar loader on 2.4/2.5 (a benign tar loads; the corpus tar fails only at its
    pickle member), while 2.6+ refuses the container outright; our load refuses the corpus
    tar on every version before torch reads it; the canary never appears.
    """
    benign = _benign_legacy_tar(tmp_path / "benign_tar.pt")
    canaries = tmp_path / "canary"
    canaries.mkdir()
    control = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
out = {}
for label, path in (("benign", sys.argv[1]), ("corpus", sys.argv[2])):
    try:
        out[label] = ["loaded", repr(torch.load(path, weights_only=True))]
    except Exception as exc:
        out[label] = [type(exc).__name__, str(exc)[:400]]
print(json.dumps(out))
"""
    corpus_tar = str(malicious.CORPUS_DIR / "legacy_tar_payload.pt")
    done = subprocess.run(
        [sys.executable, "-c", control, str(benign), corpus_tar],
        capture_output=True, text=True, env=_cli_env(canaries), timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    if torch_compat.TORCH_VERSION.release[:2] <= (2, 5):
        assert raw["benign"] == ["loaded", "{'step': 7}"]
        assert raw["corpus"][0] == "UnpicklingError"
        assert "Weights only load failed" in raw["corpus"][1]
    else:
        for label in ("benign", "corpus"):
            assert raw[label][0] == "RuntimeError"
            assert "legacy .tar format" in raw[label][1]
    with pytest.raises(UnsafeCheckpointError, match="tar"):
        torch_compat.load(corpus_tar)
    assert list(canaries.iterdir()) == []


def _benign_legacy_tar(path: Path) -> Path:
    """A legacy .tar checkpoint of ``{"step": 7}``: sys_info, pickle, no tensors or storages."""
    import io
    import pickle
    import tarfile

    none = pickle.dumps(0, protocol=2)
    members = [
        ("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)),
        ("pickle", pickle.dumps({"step": 7}, protocol=2)),
        ("tensors", none),
        ("storages", none + pickle.dumps([], protocol=2)),
    ]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
