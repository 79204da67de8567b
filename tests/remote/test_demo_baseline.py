"""The committed baseline of the demo policies (fixtures/remote_baseline.json) against a
real evaluation through the queue in this cell, and ``eval report``'s exit status on a
return or a speed that moved.

Runs in every cell: the baseline must hold on every torch (greedy episodes on fixed seeds).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ckptcompat.remote.demo import (
    DEMO_BASELINE,
    DEMO_ENV,
    DEMO_EPISODES,
    DEMO_POLICIES,
    DEMO_SEED,
    demo_policies,
)
from ckptcompat.remote.queue import TaskQueue, TaskResult
from ckptcompat.remote.report import read_baseline
from tests.remote.test_worker import _cell, _finish, _worker


def _report(dsn: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ckptcompat", "eval", "report", "--dsn", dsn, *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_demo_policies_match_the_committed_baseline_and_regressions_fail(
    dsn: str, tmp_path: Path
) -> None:
    """Guards an accuracy or speed regression passing unseen: the six demo policies,
    evaluated by this cell's worker, give the committed mean returns (REPORT: PASS, exit
    0); a baseline whose return moved by 0.5 fails (exit 1), and so does a second cell
    whose env-steps/s, measured in the same batch, is 0.8x the reference's."""
    cell = _cell()
    baseline = read_baseline(DEMO_BASELINE)
    assert len(baseline) == DEMO_POLICIES
    with TaskQueue(dsn) as queue:
        queue.submit(
            demo_policies(tmp_path / "data"), [cell], env_id=DEMO_ENV, episodes=DEMO_EPISODES,
            seed=DEMO_SEED,
        )  # fmt: skip
    _finish(_worker(dsn, tmp_path / "shards", "--idle-exit", "2", "--poll", "0.2"))
    ok = _report(dsn, "--baseline", str(DEMO_BASELINE), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rows = json.loads(ok.stdout)["rows"]
    assert {r["policy_key"] for r in rows} == {f"demo{i}" for i in range(DEMO_POLICIES)}

    moved = json.loads(DEMO_BASELINE.read_text())
    moved["mean_return"]["demo3:v0|CartPole-v1|seed=0|episodes=5"] += 0.5
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    off = _report(dsn, "--baseline", str(tmp_path / "moved.json"))
    assert off.returncode == 1
    assert "REPORT: FAIL - 1 problems: demo3:v0 in " + cell in off.stdout
    assert "baseline 126.3" in off.stdout

    # A second cell's results, as fast as this cell's times 0.8 (its episodes took 1.25x
    # the CPU seconds, and the wall seconds).
    other = "t24" if cell != "t24" else "t26"
    with TaskQueue(dsn) as queue:
        mine = {t["policy_uri"]: t for t in queue.tasks() if t["cell"] == cell}
        batch = next(iter(mine.values()))["batch"]
        queue.submit(
            list(mine), [other], env_id=DEMO_ENV, episodes=DEMO_EPISODES, seed=DEMO_SEED,
            batch=batch,
        )  # fmt: skip
        while (claim := queue.claim(other, "slow")) is not None:
            ref = mine[claim.policy_uri]
            fields = {f: ref[f] for f in ("policy_key", "policy_version", "mean_return")}
            result = TaskResult(
                outcome="pass", episode_returns=list(ref["episode_returns"]),
                env_steps=ref["env_steps"], episodes_time_s=ref["episodes_time_s"] * 1.25,
                episodes_cpu_s=ref["episodes_cpu_s"] * 1.25, **fields,
            )  # fmt: skip
            assert queue.complete(claim, "slow", result)
    slow = _report(dsn, "--reference", cell, "--baseline", str(DEMO_BASELINE))
    assert slow.returncode == 1
    problems = slow.stdout.splitlines()[-1]
    # Each demo policy runs well under --min-speed-s of CPU (shown, not judged); the cell
    # over all six is judged, and is 0.8x.
    assert problems.startswith("REPORT: FAIL - 1 problems: ")
    assert f"{other}: 0.800x the env-steps/s of {cell} over all its policies" in problems
    assert slow.stdout.count("0.800") >= DEMO_POLICIES  # each policy's ratio is shown
