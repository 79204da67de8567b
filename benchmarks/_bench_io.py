"""Section 1: manager save/load overhead against torch.save + fsync and torch.load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from _sized_agent import SizedAgent
from _timing import interleaved, ratio, summary

from ckptcompat import torch_compat
from ckptcompat.checkpoint.layout import agent_filename
from ckptcompat.checkpoint.manager import SimpleCheckpointManager

__all__ = ["MB", "CheckpointFile", "bench_manager", "make_agent", "row"]

MB = 1_000_000
RUN = "bench"


class CheckpointFile:
    """A saved SizedAgent checkpoint and its label (``"100 MB"``)."""

    def __init__(self, label: str, path: Path, size_bytes: int, num_tensors: int) -> None:
        self.label, self.path, self.size_bytes, self.num_tensors = (
            label,
            path,
            size_bytes,
            num_tensors,
        )


def make_agent(size_bytes: int, num_tensors: int) -> SizedAgent:
    """A SizedAgent of about ``size_bytes`` with random weights (so nothing compresses)."""
    agent = SizedAgent(size_bytes // 4, num_tensors)
    with torch.no_grad():
        for p in agent.parameters():
            p.normal_()
    return agent


def _fsync_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as fh:
        torch_compat.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _save_times(
    manager: SimpleCheckpointManager, size_bytes: int, baseline_path: Path, runs: int
) -> dict[str, list[float]]:
    """Interleaved manager saves and save+fsync baselines; leaves epoch 0 saved."""
    agent = make_agent(size_bytes, 8)
    state_dict = agent.state_dict()

    def drop(name: str) -> None:
        # Both writers replace an existing file; start each from none so neither pays an unlink.
        if name == "torch_save_fsync":
            baseline_path.unlink(missing_ok=True)
        else:
            manager.cleanup_old_checkpoints(0)

    times = interleaved(
        {
            "torch_save_fsync": lambda: _fsync_save(state_dict, baseline_path),
            "manager_save": lambda: manager.save_agent(agent, 0),
        },
        runs,
        setup=drop,
    )
    baseline_path.unlink(missing_ok=True)
    manager.save_agent(agent, 0)
    return times


def bench_manager(
    label: str, size_bytes: int, work: Path, runs: int
) -> tuple[list[dict[str, Any]], CheckpointFile]:
    """Manager save vs save+fsync; manager load per verify mode vs load and mmap load."""
    run_dir = work / label.replace(" ", "")
    run_dir.mkdir(parents=True, exist_ok=True)
    manager = SimpleCheckpointManager(RUN, run_dir, cache_size=0)  # no cache: every load reads
    save = _save_times(manager, size_bytes, run_dir / "baseline.pt", runs)
    path = manager.checkpoint_dir / agent_filename(RUN, 0)
    loads = {
        "torch_load": lambda: torch_compat.load(path, map_location="cpu"),
        "torch_load_mmap": lambda: torch_compat.load(path, map_location="cpu", mmap=True),
    }
    for mode in ("full", "size", "none"):
        loads[f"manager_load_{mode}"] = lambda mode=mode: manager.load_agent(0, verify=mode)
    load = interleaved(loads, runs)
    big = size_bytes >= 100 * MB
    rows = [
        row(
            "1 manager",
            label,
            "manager save",
            save["manager_save"],
            save["torch_save_fsync"],
            "torch_compat.save + fsync",
            1.05 if big else None,
        ),
    ]
    for mode, goal in (("full", 1.25), ("size", 1.05), ("none", None)):
        for base, base_name in (
            ("torch_load", "torch_compat.load"),
            ("torch_load_mmap", "torch_compat.load(mmap=True)"),
        ):
            rows.append(
                row(
                    "1 manager",
                    label,
                    f"manager load verify={mode}",
                    load[f"manager_load_{mode}"],
                    load[base],
                    base_name,
                    goal if big and base == "torch_load" else None,
                )
            )
    size = path.stat().st_size
    return rows, CheckpointFile(label, path, size, 8)


def row(
    section: str,
    label: str,
    figure: str,
    times: list[float],
    base: list[float],
    base_name: str,
    goal: float | None,
    *,
    goal_kind: str = "<=",
) -> dict[str, Any]:
    """One result row: ``times`` against ``base`` as per-round ratios, with its goal."""
    r = ratio(times, base)
    met = None
    if goal is not None:
        met = r["median"] <= goal if goal_kind == "<=" else r["median"] >= goal
    return {
        "section": section,
        "file": label,
        "figure": figure,
        "baseline": base_name,
        "seconds": summary(times),
        "baseline_seconds": summary(base),
        "ratio": r,
        "goal": None if goal is None else f"{goal_kind} {goal:g}",
        "met": met,
    }
