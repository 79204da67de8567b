"""Sections 1 and 2: manager save/load overhead and doctor speed, against baselines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from _sized_agent import SizedAgent
from _timing import interleaved, ratio, summary

from ckptcompat import torch_compat
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.uri import agent_filename
from ckptcompat.doctor import diagnose
from ckptcompat.errors import CheckpointError

__all__ = ["CheckpointFile", "bench_doctor", "bench_manager", "corpus_table", "make_agent"]

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
        _row(
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
                _row(
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


def _row(
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


def _picklescan_cli(path: Path) -> None:
    exe = Path(sys.executable).parent / "picklescan"
    subprocess.run([str(exe), "--path", str(path)], capture_output=True, check=False)


def _picklescan(path: Path) -> Any:
    from picklescan.scanner import scan_file_path

    return scan_file_path(str(path))


def bench_doctor(files: list[CheckpointFile], runs: int) -> list[dict[str, Any]]:
    """diagnose vs torch_compat.load, torch's unsafe-globals scan and picklescan, per file.

    Ratios are tool / doctor: above 1 means the doctor is that many times faster.
    """
    rows = []
    for f in files:
        times = interleaved(
            {
                "doctor": lambda f=f: diagnose(f.path),
                "torch_load": lambda f=f: torch_compat.load(f.path, map_location="cpu"),
                "torch_scan": lambda f=f: torch.serialization.get_unsafe_globals_in_checkpoint(
                    f.path
                ),
                "picklescan": lambda f=f: _picklescan(f.path),
                "picklescan_cli": lambda f=f: _picklescan_cli(f.path),
            },
            runs,
        )
        many = f.num_tensors >= 4096
        goals = {
            "torch_load": (20.0 if many else None, "torch_compat.load"),
            "torch_scan": (1.0 if many else None, "get_unsafe_globals_in_checkpoint"),
            "picklescan": (1.0, "picklescan scan_file_path (in-process)"),
            "picklescan_cli": (1.0, "picklescan CLI (subprocess)"),
        }
        for name, (goal, base_name) in goals.items():
            row = _row(
                "2 doctor",
                f.label,
                "doctor speedup (tool / doctor)",
                times[name],
                times["doctor"],
                base_name,
                goal,
                goal_kind=">=",
            )
            if goal == 1.0:
                row["goal"] = "> 1"
                row["met"] = row["ratio"]["median"] > 1.0
            row["doctor_seconds"] = summary(times["doctor"])
            rows.append(row)
    return rows


def corpus_table(dirs: list[Path]) -> list[dict[str, Any]]:
    """What each tool reports per fixture file: doctor verdict, picklescan, torch's scan."""
    table = []
    for d in dirs:
        for path in sorted(d.glob("*.pt")):
            row: dict[str, Any] = {"file": f"{d.name}/{path.name}"}
            try:
                report = diagnose(path).for_torch(torch.__version__)
                row["doctor"] = report.weights_only.outcome
                row["doctor_refused"] = list(report.weights_only.refused_globals)
            except CheckpointError as exc:
                row["doctor"] = f"error: {type(exc).__name__}"
            try:
                result = _picklescan(path)
                if result.scan_err:
                    row["picklescan"] = "scan error"
                elif result.infected_files:
                    row["picklescan"] = f"dangerous ({result.issues_count} issues)"
                else:
                    row["picklescan"] = f"clean ({len(result.globals)} globals)"
            except Exception as exc:  # a third-party tool: record any failure as its verdict
                row["picklescan"] = f"raised {type(exc).__name__}"
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
                row["torch_unsafe_globals"] = list(unsafe)
            except Exception as exc:  # torch's scan refuses non-zip and broken files
                row["torch_unsafe_globals"] = f"raised {type(exc).__name__}"
            table.append(row)
    return table
