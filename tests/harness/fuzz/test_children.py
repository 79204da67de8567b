"""Forked children that run steps and report each on a pipe (fuzz/children.py).

The children here fork this pytest worker and run plain Python steps (no torch work), so
each test costs a few forks.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time
from typing import Any

from ckptcompat.harness.fuzz import children


def _wait(child: children.Child, timeout_s: float) -> children.Ended:
    deadline = time.monotonic() + 60
    while (ended := children.poll(child, timeout_s)) is None:
        assert time.monotonic() < deadline, "the child neither ended nor timed out"
        time.sleep(0.01)
    return ended


def _ok(n: int) -> Any:
    return lambda: {"result": "ok", "n": n}


def test_each_step_writes_its_line_in_order() -> None:
    """Guards the protocol the runner relies on: one line per step, in order, each with
    the child's start memory and the step's own time; exit 0; the child's peak memory
    from wait4 at least its start memory."""
    ended = _wait(children.start([_ok(0), _ok(1), _ok(2)]), timeout_s=30)
    assert [line["n"] for line in ended.lines] == [0, 1, 2]
    assert os.WIFEXITED(ended.status) and os.waitstatus_to_exitcode(ended.status) == 0
    assert not ended.timed_out
    for line in ended.lines:
        assert line["start_kb"] > 0 and line["seconds"] >= 0
    assert ended.maxrss_kb >= ended.lines[0]["start_kb"] * 0.99


def test_a_crash_leaves_the_lines_of_the_steps_before_it() -> None:
    """Guards crash attribution in a batch: the step that was running when the child died
    (here by SIGSEGV) is the first without a line; the steps before it keep theirs."""

    def crash() -> dict[str, Any]:
        faulthandler.disable()  # pytest's, inherited by the fork: no dump in the output
        os.kill(os.getpid(), signal.SIGSEGV)
        return {}

    ended = _wait(children.start([_ok(0), _ok(1), crash, _ok(3)]), timeout_s=30)
    assert [line["n"] for line in ended.lines] == [0, 1]
    assert os.WIFSIGNALED(ended.status) and os.WTERMSIG(ended.status) == signal.SIGSEGV


def test_the_timeout_is_per_step_and_kills_a_hung_step() -> None:
    """Guards two faults of a per-child timeout in a batch: steps that each take less than
    the timeout but together more must not be killed (the clock restarts at each line),
    and a step that hangs is killed (SIGKILL) with the lines before it kept."""

    def slow(n: int) -> Any:
        return lambda: (time.sleep(0.4), {"result": "ok", "n": n})[1]

    ended = _wait(children.start([slow(0), slow(1), slow(2), slow(3)]), timeout_s=1.0)
    assert not ended.timed_out and [line["n"] for line in ended.lines] == [0, 1, 2, 3]

    def hang() -> dict[str, Any]:
        time.sleep(600)
        return {}

    began = time.monotonic()
    ended = _wait(children.start([_ok(0), hang, _ok(2)]), timeout_s=1.0)
    assert ended.timed_out and [line["n"] for line in ended.lines] == [0]
    assert 1.0 <= ended.seconds < 30 and time.monotonic() - began < 30


def test_results_larger_than_the_pipe_buffer_do_not_block_the_child() -> None:
    """Guards a deadlock: a child writing more than the pipe holds (64 KiB) while the
    parent reads only at the end would block until its timeout."""
    big = [(lambda n=n: {"result": "ok", "n": n, "pad": "x" * 50_000}) for n in range(6)]
    ended = _wait(children.start(big), timeout_s=10)
    assert not ended.timed_out and [line["n"] for line in ended.lines] == list(range(6))


def test_a_cut_line_ends_the_reading_of_that_child() -> None:
    """Guards results taken for the wrong step: a line cut at MAX_LINE does not parse, so
    neither it nor any line after it is taken (the runner then reruns those steps)."""
    steps = [_ok(0), lambda: {"result": "ok", "pad": "x" * children.MAX_LINE}, _ok(2)]
    ended = _wait(children.start(steps), timeout_s=30)
    assert [line["n"] for line in ended.lines] == [0]


def test_a_step_that_raises_exits_3_after_the_earlier_lines() -> None:
    """Guards the child's contract: a step that raises ends the child with exit 3 (the
    runner's steps never raise; a fault in the harness must still not look clean)."""

    def boom() -> dict[str, Any]:
        raise RuntimeError("boom")

    ended = _wait(children.start([_ok(0), boom, _ok(2)]), timeout_s=30)
    assert [line["n"] for line in ended.lines] == [0]
    assert os.waitstatus_to_exitcode(ended.status) == 3


def test_rss_kb_reads_this_process() -> None:
    """Guards the memory baseline: 0 would make every child's growth its whole size."""
    assert children.rss_kb() > 1000
