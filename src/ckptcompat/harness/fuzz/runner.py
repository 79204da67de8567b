"""Run mutated and crafted files through every entry point, in forked children.

The runner imports torch and ckptcompat once, builds the base files, runs every entry
point once on an unmutated base (:func:`warm_up`), then forks a child per case that runs
the case's entry points one after the other (:mod:`ckptcompat.harness.fuzz.children`).
A step that fails, or was running when its child crashed or hung, is run again with the
steps after it, one child per (case, entry point), and only those runs count: a crash is
the child's signal, a hang its timeout (then SIGKILL), its peak memory the ``ru_maxrss``
that :func:`os.wait4` reports. A case fails
on a crash, a timeout, an exception that is not a ckptcompat error (the doctor: any
exception but "file missing"), a doctor exit code other than 0/2, or a silent wrong load:
a byte-level mutation of a zip whose load returns anything but the base's payload, or a
child that grew more than :data:`MAX_CASE_GROWTH_KB` while reading one case.
Failing files are saved with their description as reproducers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import random
import shutil
import signal
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ckptcompat import locator
from ckptcompat.harness.fuzz import children, crafted
from ckptcompat.harness.fuzz.mutate import BYTE_KINDS, KINDS, mutate

__all__ = ["ENTRY_POINTS", "Outcome", "run"]

#: ``cli doctor`` and ``cli migrate`` run the commands' own dispatch (G3/G4 and DCP checks
#: before the doctor, migrate's generation dispatch), which ran on no fuzz case while the
#: text doctor was called directly; the CLI itself is a layer above the harness.
ENTRY_POINTS = ("doctor", "doctor --json --verify-data", "cli doctor", "cli migrate", "load",
                "load_from_uri", "load_agent indexed")  # fmt: skip
FAILURES = ("crash", "timeout", "untyped", "silent_wrong", "bad_exit", "memory")
#: The most a child may grow while it reads one case (KiB of peak resident memory over what
#: it held when the case started). The fuzz files are under 1 MB, and the largest single
#: allocation a scan limit admits for them is one inflated record (``max_inflated_bytes``,
#: 64 MiB); twice that leaves room for torch's own copies. Measured: at most +15 MiB over
#: 5,000 cases in t24 and t215 (2026-12-06). A case past it is a ``memory`` failure: some
#: declared length was allocated before it was checked.
MAX_CASE_GROWTH_KB = 128 << 10


@dataclass
class Outcome:
    """One (case, entry point) run: what happened and what it cost."""

    case: int
    kind: str
    base: str
    entry: str
    result: str  # ok | typed | loaded_same | loaded_changed | unverifiable | a FAILURES
    detail: str = ""
    maxrss_kb: int = 0  # the child's peak resident memory
    grown_kb: int = 0  # maxrss_kb less what the child held when it started the case
    seconds: float = 0.0


@dataclass
class _Base:
    name: str
    data: bytes
    digest: str | None  # the payload torch_compat.load returns; None for a legacy file
    agent_digest: str | None = None  # load_from_uri's agent, for a safe-format file
    run_dir: Path | None = None  # a managed run holding it (the indexed load)


def fingerprint(obj: Any) -> str:
    """A digest of a loaded payload: structure, dtypes, shapes and tensor bytes."""
    import torch

    h = hashlib.sha256()
    todo = [obj]
    while todo:
        item = todo.pop()
        if isinstance(item, torch.nn.Module):
            todo.append(dict(item.state_dict()))
        elif isinstance(item, torch.Tensor):
            flat = item.detach().cpu().reshape(-1).contiguous()
            h.update(f"T{item.dtype}{tuple(item.shape)}".encode())
            h.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            h.update(f"D{len(item)}".encode())
            for key, value in item.items():
                h.update(repr(key).encode("utf-8", "backslashreplace"))
                todo.append(value)
        elif isinstance(item, (list, tuple)):
            h.update(f"L{type(item).__name__}{len(item)}".encode())
            todo.extend(reversed(item))
        else:
            h.update(repr(item).encode("utf-8", "backslashreplace")[:10_000])
    return h.hexdigest()


# ------------------------------------------------------------------ the bases
#: Zoo files used as bases too (their bytes are committed, written by the libraries).
_ZOO_BASES = ("lightning.ckpt", "sb3_ppo.zip")


def build_bases(work: Path) -> list[_Base]:
    """Base files written by torch here: a safe-format agent (in a managed run), a
    state_dict, an optimizer-style nested dict, a legacy non-zip file; and the committed
    zoo's Lightning checkpoint and stable-baselines3 zip (written by those libraries)."""
    import torch

    from ckptcompat import torch_compat
    from ckptcompat.agents.mock import MockAgent
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager

    torch.manual_seed(0)
    bases = []
    run_dir = work / "base_run"
    manager = SimpleCheckpointManager("fz", run_dir)
    manager.save_agent(MockAgent(), epoch=0, metadata={"agent_step": 0, "score": None})
    path = manager.checkpoint_dir / "fz_v0.pt"
    agent = SimpleCheckpointManager.load_from_uri(path)
    bases.append(
        _Base(
            "agent_v1",
            path.read_bytes(),
            fingerprint(torch_compat.load(path)),
            fingerprint(agent),
            run_dir,
        )
    )
    sd = {f"layer{i}.weight": torch.randn(4, 3) for i in range(6)}
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(5)}},
             "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}  # fmt: skip
    for name, obj in (("state_dict", sd), ("optimizer", state)):
        buf = io.BytesIO()
        torch.save(obj, buf, pickle_protocol=2)
        (work / f"{name}.pt").write_bytes(buf.getvalue())
        digest = fingerprint(torch_compat.load(work / f"{name}.pt"))
        bases.append(_Base(name, buf.getvalue(), digest))
    buf = io.BytesIO()
    torch.save(sd, buf, pickle_protocol=2, _use_new_zipfile_serialization=False)
    bases.append(_Base("legacy", buf.getvalue(), None))
    # Files other libraries wrote (the zoo, issue 16): mutations reach the doctor's and
    # migrate's family readers (Lightning hparams, an sb3 zip's JSON and policy.pth).
    for name in _ZOO_BASES:
        path = locator.ZOO_DIR / "t26" / name
        if path.is_file():  # a source checkout; an installed wheel has no fixtures
            bases.append(_Base(f"zoo {name}", path.read_bytes(), None))
    return bases


# ------------------------------------------------------------------ one child
def _entry(entry: str, path: Path, case_dir: Path) -> dict[str, Any]:
    """Run one entry point on ``path``; the child's result (never raises)."""
    from ckptcompat import doctor, torch_compat
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.errors import CheckpointError

    try:
        if entry == "doctor":
            doctor.diagnose(path)
            return {"result": "ok"}
        if entry.startswith("cli "):
            return _cli(entry.split()[1], path, case_dir)
        if entry.startswith("doctor "):
            out, err = io.StringIO(), io.StringIO()
            args = [str(path), *(["--json", "--verify-data"] if "--json" in entry else [])]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = doctor.main(args)
            if code not in (0, 2):
                return {"result": "bad_exit", "detail": f"exit {code}"}
            return {"result": "ok"}
        if entry == "load":
            return {"result": "loaded", "digest": fingerprint(torch_compat.load(path))}
        if entry == "load_from_uri":
            agent = SimpleCheckpointManager.load_from_uri(path)
            return {"result": "loaded", "digest": fingerprint(agent)}
        manager = SimpleCheckpointManager("fz", case_dir / "run")
        return {"result": "loaded", "digest": fingerprint(manager.load_agent(0))}
    except CheckpointError as exc:
        return {"result": "typed", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
    except BaseException as exc:  # what the fuzz run exists to find
        return {
            "result": "untyped",
            "detail": f"{type(exc).__name__}: {str(exc)[:300]}\n{traceback.format_exc()[-1500:]}",
        }


def _cli(command: str, path: Path, case_dir: Path) -> dict[str, Any]:
    """The commands' own dispatch: ``ckptcompat doctor FILE``
    (:func:`ckptcompat.doctor.command.run`, exit 0 or 2) or ``ckptcompat migrate FILE
    OUT/`` (:func:`ckptcompat.generations.batch.migrate_checkpoint` and its report; a
    typed error is the command's exit 2). Any other exit, or a temporary file left behind
    by a migrate that failed, is ``bad_exit``; an untyped exception is ``untyped``."""
    from ckptcompat.checkpoint.layout import is_temp_name
    from ckptcompat.doctor import command as doctor_command
    from ckptcompat.errors import CheckpointError
    from ckptcompat.generations.batch import migrate_checkpoint, render_report

    out = case_dir / "migrated"
    result = "ok"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if command == "doctor":
            code = doctor_command.run([str(path)])
            if code not in (0, 2):
                return {"result": "bad_exit", "detail": f"exit {code}"}
        else:
            try:
                render_report(migrate_checkpoint(path, out))
            except CheckpointError as exc:
                result = "typed"
                detail = f"{type(exc).__name__}: {str(exc)[:200]}"
    left = [p.name for p in out.rglob("*") if is_temp_name(p.name)] if out.exists() else []
    if left:
        return {"result": "bad_exit", "detail": f"temporary files left: {left[:3]}"}
    return {"result": result} if result == "ok" else {"result": result, "detail": detail}


@dataclass
class _Task:
    """One child's work: entry points of one case, run one after the other in one child.
    A batch (``isolated`` False) holds every entry point of its case; a step of it that
    fails, or that was running when the child died or hung, is run again with the steps
    after it as ``isolated`` tasks, one child each, and only those outcomes count."""

    case: int
    kind: str
    base: _Base
    data: bytes
    entries: list[str]
    isolated: bool


@dataclass
class _Running:
    child: children.Child
    task: _Task
    paths: list[Path]  # the case file of each entry point
    work: Path  # the directory holding them, removed when the child is settled


def _judge(
    task: _Task, entry: str, got: dict[str, Any], maxrss_kb: int, max_growth_kb: int
) -> Outcome:
    """The outcome of one entry point that wrote its result line ``got``."""
    out = Outcome(task.case, task.kind, task.base.name, entry, got["result"])
    out.detail, out.seconds, out.maxrss_kb = got.get("detail", ""), got["seconds"], maxrss_kb
    out.grown_kb = max(out.maxrss_kb - int(got.get("start_kb", 0)), 0)
    if out.result not in FAILURES and out.grown_kb > max_growth_kb:
        out.result = "memory"
        out.detail = (
            f"grew {out.grown_kb >> 10} MiB reading one case; the bound is "
            f"{max_growth_kb >> 10} MiB (the case itself: {got['result']})"
        )
        return out
    if out.result == "loaded":
        agent = entry in ("load_from_uri", "load_agent indexed")
        want = task.base.agent_digest if agent else task.base.digest
        if want is None:
            out.result = "loaded" if out.kind not in BYTE_KINDS else "unverifiable"
        elif got["digest"] == want:
            out.result = "loaded_same"
        elif out.kind in BYTE_KINDS:
            out.result, out.detail = "silent_wrong", "the load returned other data than saved"
        else:
            out.result = "loaded_changed"  # the rewritten pickle says so, with a valid CRC
    return out


def _ended_badly(task: _Task, entry: str, ended: children.Ended) -> Outcome:
    """The outcome of the entry point that was running when its child ended without
    writing its line, or (an isolated task) whose child was killed or crashed."""
    out = Outcome(task.case, task.kind, task.base.name, entry, "crash")
    out.seconds, out.maxrss_kb = ended.seconds, ended.maxrss_kb
    if ended.timed_out:
        out.result, out.detail = "timeout", f"killed after {ended.seconds:.1f} s"
    elif os.WIFSIGNALED(ended.status):
        out.detail = f"signal {signal.Signals(os.WTERMSIG(ended.status)).name}"
    else:
        out.detail = f"exit {os.waitstatus_to_exitcode(ended.status)}, no result"
    return out


def _settle(
    job: _Running, ended: children.Ended, max_growth_kb: int
) -> tuple[list[tuple[Outcome, Path]], list[_Task]]:
    """The outcomes a finished child gives (with each case file) and the tasks to run again.

    An isolated task is judged exactly as one child per (case, entry point) always was:
    a kill or a signal is the outcome whatever the child wrote; the memory grown is the
    child's peak (``os.wait4``) over what it held when it started. A batch's steps are all
    judged on the child's peak (never less than any one step's growth), so a batch that
    grew past the bound is run again isolated from its first step; otherwise from the
    first step that failed, or wrote no line, or was the last before an unclean exit.
    """
    task = job.task
    if task.isolated:
        entry, lines = task.entries[0], ended.lines
        clean = not ended.timed_out and not os.WIFSIGNALED(ended.status)
        if clean and lines:
            out = _judge(task, entry, lines[0], ended.maxrss_kb, max_growth_kb)
        else:
            out = _ended_badly(task, entry, ended)
        return [(out, job.paths[0])], []
    settled: list[tuple[Outcome, Path]] = []
    exited_clean = (
        not ended.timed_out
        and os.WIFEXITED(ended.status)
        and os.waitstatus_to_exitcode(ended.status) == 0
    )
    trusted = len(ended.lines) if exited_clean else min(len(ended.lines), len(task.entries) - 1)
    for j, entry in enumerate(task.entries[:trusted]):
        out = _judge(task, entry, ended.lines[j], ended.maxrss_kb, max_growth_kb)
        if out.result in FAILURES:
            break
        settled.append((out, job.paths[j]))
    rest = task.entries[len(settled) :]
    again = [_Task(task.case, task.kind, task.base, task.data, [e], True) for e in rest]
    return settled, again


# ------------------------------------------------------------------ the run
def warm_up(base: _Base, entries: tuple[str, ...], work: Path) -> None:
    """Run every entry point once, in this process, on ``base`` (an unmutated file torch
    wrote here), so the forked children start from its imports and per-process caches.

    Measured on 2 cores (t24, 250 cases, 1,536 children): a cold child spent ~1.2-6.7 ms
    more per entry on its first call (the doctor's per-version rows, lazy regexes) and
    up to 27 ms importing the entry modules (``ckptcompat.doctor``,
    ``ckptcompat.generations.batch`` ...), which the parent had not imported. What is
    checked is unchanged: every case still runs in a process of its own, forked from this
    one after the warm-up, and the same cases give the same results (compared on 250).

    Raises:
        RuntimeError: an entry point failed on the unmutated base (a broken build, not a
            fuzz finding: every case would fail the same way).
    """
    for i, entry in enumerate(_entries_for(base, entries)):
        case_dir = work / str(i)
        case_dir.mkdir(parents=True)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            got = _entry(entry, _place(case_dir, base, base.data, entry), case_dir)
        if got["result"] in FAILURES:
            raise RuntimeError(f"{entry} fails on the unmutated base {base.name}: {got}")
    shutil.rmtree(work, ignore_errors=True)


def _case(bases: list[_Base], i: int, seed: int) -> tuple[str, _Base, bytes]:
    """Case ``i``: the crafted files first, then mutations round-robin over the kinds,
    each from its own generator seeded by (seed, i), so cases are made one at a time."""
    crafted_files = list(crafted.BUILDERS.items())
    if i < len(crafted_files):
        name, build = crafted_files[i]
        return "crafted", _Base(name, b"", None), build()
    rng = random.Random(f"{seed}-{i}")
    kind = KINDS[i % len(KINDS)]
    base = rng.choice(bases)
    return kind, base, mutate(base.data, kind, rng)


def _entries_for(base: _Base, entries: tuple[str, ...]) -> list[str]:
    return [e for e in entries if e != "load_agent indexed" or base.run_dir is not None]


def run(
    out_dir: Path,
    *,
    cases: int,
    seed: int,
    jobs: int = 2,
    timeout_s: float = 30.0,
    entries: tuple[str, ...] = ENTRY_POINTS,
    progress: Callable[[str], None] | None = None,
    max_growth_kb: int = MAX_CASE_GROWTH_KB,
    isolated: bool = False,
) -> dict[str, Any]:
    """Run ``cases`` cases (the crafted files first, then mutations round-robin over the
    kinds) through ``entries``, ``jobs`` children at a time; write ``report.json`` and
    the failing files under ``out_dir``; return the report.

    Args:
        out_dir: created if missing; ``work/`` holds case files, ``failures/`` the saved
            reproducers (file + JSON).
        cases: how many cases; seed: the random seed (same seed, same files).
        jobs: children at a time. timeout_s: per entry point, seconds (a batch's clock
            restarts at each step's line).
        entries: the entry points (see :data:`ENTRY_POINTS`).
        progress: called with a line now and then.
        max_growth_kb: the memory bound of one case (:data:`MAX_CASE_GROWTH_KB`), KiB.
        isolated: a child per (case, entry point) from the start, as before batches
            (~2.5x the CPU of a run; a test checks both give the same report).
    """
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    failures_dir = out_dir / "failures"
    bases = build_bases(work)
    warm_up(bases[0], entries, work / "warm")
    baseline_kb = children.rss_kb()
    tasks: list[_Task] = []  # a stack: reruns first, so a case finishes before the next
    next_case = forks = reruns = 0
    running: list[_Running] = []
    outcomes: list[Outcome] = []
    started = time.monotonic()
    reported = 0
    while next_case < cases or tasks or running:
        while len(running) < jobs and (tasks or next_case < cases):
            if not tasks:
                kind, base, data = _case(bases, next_case, seed)
                todo = _entries_for(base, entries)
                if isolated:
                    tasks.extend(_Task(next_case, kind, base, data, [e], True) for e in todo[::-1])
                else:
                    tasks.append(_Task(next_case, kind, base, data, todo, False))
                next_case += 1
            running.append(_launch(tasks.pop(), work, forks))
            forks += 1
        done_any = False
        for job in list(running):
            ended = children.poll(job.child, timeout_s)
            if ended is None:
                continue
            running.remove(job)
            done_any = True
            settled, again = _settle(job, ended, max_growth_kb)
            for out, path in settled:
                outcomes.append(out)
                if out.result in FAILURES:
                    _save(failures_dir, out, path)
            reruns += len(again)
            tasks.extend(reversed(again))
            shutil.rmtree(job.work, ignore_errors=True)
        if not done_any:
            time.sleep(0.002)
        if progress and len(outcomes) >= reported + 1000:
            reported = len(outcomes)
            progress(f"{reported} runs, {time.monotonic() - started:.0f} s")
    shutil.rmtree(work, ignore_errors=True)
    report = _report(outcomes, baseline_kb, time.monotonic() - started, cases, seed)
    report["max_growth_kb"] = max_growth_kb
    report["children"], report["reruns_in_isolation"] = forks, reruns
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _launch(task: _Task, work: Path, n: int) -> _Running:
    """Place the task's case files (one directory per entry point) and fork its child."""
    paths, steps = [], []
    for j, entry in enumerate(task.entries):
        case_dir = work / f"t{n}" / f"{task.case}-{entry.split()[0]}-{j}"
        case_dir.mkdir(parents=True)
        path = _place(case_dir, task.base, task.data, entry)
        paths.append(path)
        steps.append(functools.partial(_entry, entry, path, case_dir))
    return _Running(children.start(steps), task, paths, work / f"t{n}")


def _place(case_dir: Path, base: _Base, data: bytes, entry: str) -> Path:
    """Write the case file where ``entry`` reads it (the indexed load: in a copy of the
    base's managed run, over the indexed file)."""
    if entry == "load_agent indexed" and base.run_dir is not None:
        shutil.copytree(base.run_dir, case_dir / "run")
        path = case_dir / "run" / "fz" / "checkpoints" / "fz_v0.pt"
    else:
        path = case_dir / "fz_v0.pt"
    path.write_bytes(data)
    return path


def _save(failures: Path, out: Outcome, path: Path) -> None:
    failures.mkdir(parents=True, exist_ok=True)
    stem = f"case{out.case}-{out.kind}-{out.base}-{out.entry.split()[0]}-{out.result}"
    with contextlib.suppress(OSError):
        shutil.copy(path, failures / f"{stem}.pt")
    (failures / f"{stem}.json").write_text(json.dumps(asdict(out), indent=1))


def _report(
    outcomes: list[Outcome], baseline_kb: int, seconds: float, cases: int, seed: int
) -> dict[str, Any]:
    per_kind: dict[str, Counter[str]] = defaultdict(Counter)
    per_entry: dict[str, Counter[str]] = defaultdict(Counter)
    cases_per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    peak: dict[str, int] = defaultdict(int)
    grown: dict[str, int] = defaultdict(int)
    slowest: dict[str, float] = defaultdict(float)
    for o in outcomes:
        per_kind[o.kind][o.result] += 1
        per_entry[o.entry][o.result] += 1
        cases_per[o.kind][o.entry] += 1
        peak[o.entry] = max(peak[o.entry], o.maxrss_kb)
        grown[o.entry] = max(grown[o.entry], o.grown_kb)
        slowest[o.entry] = max(slowest[o.entry], o.seconds)
    failures = [asdict(o) for o in outcomes if o.result in FAILURES]
    return {
        "cases": cases,
        "seed": seed,
        "runs": len(outcomes),
        "seconds": round(seconds, 1),
        "failures": {f: sum(1 for o in outcomes if o.result == f) for f in FAILURES},
        "failed": failures[:200],
        "cases_per_kind_and_entry": {k: dict(v) for k, v in cases_per.items()},
        "results_per_kind": {k: dict(v) for k, v in per_kind.items()},
        "results_per_entry": {k: dict(v) for k, v in per_entry.items()},
        "parent_rss_kb": baseline_kb,
        "peak_maxrss_kb_per_entry": dict(peak),
        "peak_grown_kb_per_entry": dict(grown),
        "peak_maxrss_kb": max(peak.values(), default=0),
        "peak_grown_kb": max(grown.values(), default=0),
        "slowest_s_per_entry": {k: round(v, 2) for k, v in slowest.items()},
    }
