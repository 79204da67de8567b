"""Crash-safety, corrupt-input, concurrency and stats-DB kill tests; and their fork server.

Most of these tests need *another process*: one that crashes, is killed, or writes while
this one reads. ``import torch`` costs 3-4 s per process, so instead of a fresh interpreter
per case they use a :class:`ForkServer`: one ``python`` subprocess that imports torch and
ckptcompat once, then forks a child per job. Each child is a real, separate process (its own
pid, file descriptors and locks; killable with SIGKILL) that starts with every module
already imported. The security suite (``tests/security``) uses it too.

The server only imports before forking and sets ``torch.set_num_threads(1)``, which the
children inherit: an OpenMP thread pool started before ``fork()`` would not exist in a
child, and a kernel waiting on it would hang.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SRC",
    "ForkServer",
    "JobResult",
    "build_run",
    "fork_server",
    "tree_digest",
]

#: ``src/`` of this checkout (children import ckptcompat from here).
SRC = Path(__file__).resolve().parents[2] / "src"

_PRELUDE = """
import os, warnings
os.environ.setdefault("OMP_NUM_THREADS", "1")
import duckdb, gymnasium, numpy, torch
import torch._dynamo  # the first optimizer built imports it: ~5 s, paid once here
torch.set_num_threads(1)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import ckptcompat.agents.mock, ckptcompat.agents.recurrent
    import ckptcompat.checkpoint.legacy, ckptcompat.checkpoint.manager
    import ckptcompat.checkpoint.migrate, ckptcompat.cli, ckptcompat.doctor
    import ckptcompat.evaluation.evaluator, ckptcompat.evaluation.stats_db
    import ckptcompat.policy.policy_store, ckptcompat.rl.trainer
"""

# The server: reads one JSON job per line on stdin, forks a child per job, reports on
# stdout one JSON event per line ("forked", "msg" from the child, "error", "exit").
# Lines are written with one os.write each (< PIPE_BUF), so a child's and the server's
# lines never interleave.
_SERVER = r"""
import json, os, select, sys, traceback
exec(compile(sys.argv[1], "<fork server prelude>", "exec"), {})

def emit(obj):
    line = json.dumps(obj, default=str)
    if len(line) > 3500:  # keep each line one atomic pipe write
        obj = {k: v[:400] if isinstance(v, str) else v for k, v in obj.items()}
        line = json.dumps(obj, default=str)
    if len(line) > 3500:
        short = {k: obj[k] for k in ("event", "job", "pid") if k in obj}
        line = json.dumps(short | {"truncated": True})
    os.write(1, (line + "\n").encode())

def run_child(job):
    def child_emit(**fields):
        emit({"event": "msg", "job": job["id"], "pid": os.getpid(), **fields})
    try:
        os.environ.update(job["env"])
        for name in job["unset"]:
            os.environ.pop(name, None)
        namespace = {"emit": child_emit, "ARGS": job["args"], "__name__": "__forked__"}
        exec(compile(job["code"], "<job %d>" % job["id"], "exec"), namespace)
    except BaseException as exc:
        emit({"event": "error", "job": job["id"], "pid": os.getpid(),
              "type": type(exc).__name__, "message": str(exc)[:1000],
              "traceback": traceback.format_exc()[-2000:]})
        os._exit(1)
    os._exit(0)

emit({"event": "ready", "pid": os.getpid()})
jobs, buffer, stdin_open = {}, b"", True
while stdin_open or jobs:
    if stdin_open:
        readable, _, _ = select.select([0], [], [], 0.01)
        if readable:
            chunk = os.read(0, 65536)
            stdin_open = bool(chunk)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                job = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    run_child(job)
                jobs[pid] = job["id"]
                emit({"event": "forked", "job": job["id"], "pid": pid})
    else:
        select.select([], [], [], 0.01)
    while jobs:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        emit({"event": "exit", "job": jobs.pop(pid), "pid": pid,
              "code": os.waitstatus_to_exitcode(status)})
"""


@dataclass
class JobResult:
    """What one forked child did.

    Attributes:
        job: the job id. pid: the child's pid.
        code: exit code; negative for a signal (``-9`` after SIGKILL), 137 for a
            ``CKPTCOMPAT_FAULT=point:exit`` fault.
        messages: the ``emit(**fields)`` calls of the child, in order.
        error: ``{"type", "message", "traceback"}`` when the job's code raised.
    """

    job: int
    pid: int = 0
    code: int | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def values(self, key: str) -> list[Any]:
        """The ``key`` field of every message that has it."""
        return [m[key] for m in self.messages if key in m]


class ForkServer:
    """A Python subprocess that imports torch and ckptcompat once and forks a child per job.

    A job is Python source run in the child with ``emit(**fields)`` (a JSON-able report to
    the test) and ``ARGS`` (the job's arguments) in its namespace. Children run with the
    environment of the server plus the job's ``env``; their stderr goes to a log file
    (:attr:`log`), never to a pipe nobody reads.

    Raises:
        RuntimeError: the server did not start within ``start_timeout`` seconds.
    """

    def __init__(self, prelude: str = _PRELUDE, *, start_timeout: float = 120.0) -> None:
        self.log = Path(tempfile.mkstemp(prefix="ckptcompat-forkserver-", suffix=".log")[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        env.pop("CKPTCOMPAT_FAULT", None)  # only a job's own env may name a fault point
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, textwrap.dedent(prelude)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=tempfile.gettempdir(),
            )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._out = self._proc.stdout.fileno()
        self._buffer = b""
        self._results: dict[int, JobResult] = {}
        self._next = 0
        first = self.next_event(start_timeout)
        if first is None or first.get("event") != "ready":
            self.close()
            raise RuntimeError(f"fork server did not start: {first!r}; log: {self.tail()}")

    # ------------------------------------------------------------------ events
    def alive(self) -> bool:
        """True while the server process runs."""
        return self._proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's (and children's) stderr log."""
        return self.log.read_text(errors="replace")[-chars:]

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event line (already applied to its job's result), or None on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([self._out], [], [], left)
            if not readable:
                return None
            chunk = os.read(self._out, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        event = json.loads(line)
        self._apply(event)
        return event

    def _apply(self, event: dict[str, Any]) -> None:
        job = event.get("job")
        if job is None:
            return
        result = self._results.setdefault(job, JobResult(job))
        kind = event["event"]
        if kind == "forked":
            result.pid = event["pid"]
        elif kind == "msg":
            result.messages.append(
                {k: v for k, v in event.items() if k not in ("event", "job", "pid")}
            )
        elif kind == "error":
            result.error = {k: event[k] for k in ("type", "message", "traceback")}
        elif kind == "exit":
            result.code = event["code"]

    # ------------------------------------------------------------------ jobs
    def submit(
        self,
        code: str,
        args: Any = None,
        *,
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
    ) -> int:
        """Start a child running ``code``; return its job id (see :meth:`wait`)."""
        assert self._proc.stdin is not None
        self._next += 1
        job = {
            "id": self._next,
            "code": textwrap.dedent(code),
            "args": args,
            "env": env or {},
            "unset": list(unset),
        }
        self._results[self._next] = JobResult(self._next)
        self._proc.stdin.write((json.dumps(job) + "\n").encode())
        self._proc.stdin.flush()
        return self._next

    def result(self, job: int) -> JobResult:
        """The job's result so far (``code`` is None while it runs)."""
        return self._results[job]

    def wait(self, job: int, timeout: float = 120.0) -> JobResult:
        """Block until job ``job`` has exited; return its result.

        Raises:
            TimeoutError: it did not exit within ``timeout`` seconds (it is then killed).
        """
        deadline = time.monotonic() + timeout
        while self._results[job].code is None:
            left = deadline - time.monotonic()
            if left <= 0 or (self.next_event(min(left, 1.0)) is None and not self.alive()):
                pid = self._results[job].pid
                if pid:
                    self.kill(pid)
                raise TimeoutError(f"job {job} did not finish in {timeout} s; {self.tail()}")
        return self._results[job]

    def run(self, code: str, args: Any = None, *, timeout: float = 120.0, **kw: Any) -> JobResult:
        """:meth:`submit` then :meth:`wait`."""
        return self.wait(self.submit(code, args, **kw), timeout)

    @staticmethod
    def kill(pid: int) -> None:
        """SIGKILL one child by pid (it is the server's child, reaped by the server)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the server: close its stdin, wait for running children, then for it."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self.log.unlink(missing_ok=True)


_SHARED: list[ForkServer] = []


def fork_server() -> ForkServer:
    """The process-wide :class:`ForkServer`, started on first use and stopped at exit.

    Shared by the fault and security modules so that a test session pays for one
    ``import torch``, not one per module (each pytest-xdist worker has its own).
    """
    if _SHARED and _SHARED[0].alive():
        return _SHARED[0]
    _SHARED[:] = [ForkServer()]
    atexit.register(_SHARED[0].close)
    return _SHARED[0]


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """``{relative path: (mode, sha256 or "dir")}`` of everything under ``root``.

    Used to prove that a failed operation overwrote or deleted nothing.
    """
    import hashlib

    out: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = (path.stat().st_mode, "dir")
        else:
            out[rel] = (path.stat().st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


_BUILD_RUN = """
import torch
from ckptcompat.agents.mock import MockAgent
from ckptcompat.agents.probe import params_digest
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
manager = SimpleCheckpointManager(ARGS["run"], ARGS["data"])
for epoch in ARGS["epochs"]:
    torch.manual_seed(epoch)
    agent = MockAgent()
    manager.save_agent(agent, epoch, {"agent_step": 10 * epoch})
    manager.save_trainer_state(torch.optim.Adam(agent.parameters()), epoch, 10 * epoch)
    emit(epoch=epoch, digest=params_digest(agent))
"""


def build_run(server: ForkServer, data: Path, run: str, epochs: tuple[int, ...]) -> dict[int, str]:
    """Save a MockAgent (seeded by its epoch) and an Adam trainer state at each epoch.

    Done in a child: the first optimizer built imports torch._dynamo (~5 s), which the fork
    server has already paid for. Returns ``{epoch: params_digest}``.
    """
    result = server.run(_BUILD_RUN, {"run": run, "data": str(data), "epochs": list(epochs)})
    assert result.error is None, result.error
    return {m["epoch"]: m["digest"] for m in result.messages}
