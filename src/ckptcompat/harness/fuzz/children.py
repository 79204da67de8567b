"""Forked children that run a list of steps and report each on a pipe, one JSON line a step.

The fuzz runner (:mod:`ckptcompat.harness.fuzz.runner`) forks one child per case and runs
the case's entry points in it, one after the other. A fork of the runner (torch imported,
~400 MiB resident) and the child's exit cost ~19 ms of CPU on 2 cores (measured,
2026-12-07): per (case, entry point) that was ~30 s of a 250-case run's ~67 s. The child
writes a line after every step, so the parent knows which step was running when the
child died or stopped answering, and the per-step timeout restarts at every line.

Standard library only; POSIX (``os.fork``, ``os.wait4``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Child", "Ended", "poll", "start"]

#: The longest line a child writes (bytes); a longer result is cut, fails to parse and
#: counts as the step having written nothing.
MAX_LINE = 60_000


@dataclass
class Ended:
    """How a child ended.

    Attributes:
        lines: one parsed result per step that finished, in order (at most ``len(steps)``).
        status: the raw wait status (``os.WIFSIGNALED`` ...); after a timeout, that of
            the SIGKILL.
        maxrss_kb: the child's peak resident memory from ``os.wait4`` (KiB).
        timed_out: a step ran longer than the timeout and the child was killed (SIGKILL).
        seconds: how long the step that was running at the end had run (seconds).
    """

    lines: list[dict[str, Any]]
    status: int
    maxrss_kb: int
    timed_out: bool
    seconds: float


@dataclass
class Child:
    """A running child: its pid, the read end of its pipe, and what it has said so far."""

    pid: int
    pipe: int
    steps: int
    step_started: float
    buffer: bytearray = field(default_factory=bytearray)
    lines: list[dict[str, Any]] = field(default_factory=list)
    garbled: bool = False  # a line did not parse: nothing after it is taken


def start(steps: Sequence[Callable[[], dict[str, Any]]]) -> Child:
    """Fork a child that runs ``steps`` in order and writes, after each, its result with
    ``start_kb`` (resident KiB when the child started) and ``seconds`` (the step's wall
    time) as one JSON line. A step must not raise; if one does, the child exits 3 after
    the lines already written.

    No per-step peak memory is written: ``getrusage`` of a live process can miss a peak
    already given back (Linux updates the high-water mark lazily); the child's peak from
    ``os.wait4`` after it exits (:attr:`Ended.maxrss_kb`) is exact and bounds every
    step's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 0
        try:
            start_kb = rss_kb()
            for step in steps:
                began = time.monotonic()
                out = step()
                out["start_kb"] = start_kb
                out["seconds"] = time.monotonic() - began
                _write_all(write, json.dumps(out, default=str).encode()[:MAX_LINE] + b"\n")
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(write)
    os.set_blocking(read, False)
    return Child(pid, read, len(steps), time.monotonic())


def poll(child: Child, timeout_s: float) -> Ended | None:
    """Read what ``child`` wrote; None while it runs within the timeout of its current
    step, else how it ended (a child past the timeout is killed first). Closes the pipe
    when it returns an :class:`Ended`."""
    _drain(child)
    got, status, usage = os.wait4(child.pid, os.WNOHANG)
    timed_out = False
    if got == 0:
        if time.monotonic() - child.step_started < timeout_s:
            return None
        os.kill(child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        timed_out = True
    seconds = time.monotonic() - child.step_started
    os.set_blocking(child.pipe, True)
    _drain(child)
    os.close(child.pipe)
    return Ended(child.lines, status, usage.ru_maxrss, timed_out, seconds)


def _drain(child: Child) -> None:
    """Read everything available; parse complete lines; restart the step clock on each."""
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(child.pipe, 65536):
            child.buffer += chunk
    if child.garbled:  # still drained, so the child never blocks on a full pipe
        child.buffer.clear()
    while not child.garbled and (end := child.buffer.find(b"\n")) >= 0:
        raw = bytes(child.buffer[:end])
        del child.buffer[: end + 1]
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            # A cut or garbled line: the step said nothing usable. Take nothing after it,
            # so the steps after it are not taken for the ones before.
            child.garbled = True
        elif len(child.lines) < child.steps:
            child.lines.append(line)
            child.step_started = time.monotonic()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def rss_kb() -> int:
    """This process's resident memory now (KiB, ``VmRSS``; 0 where /proc is missing)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
