"""ckptcompat benchmarks: manager overhead, doctor speed, matrix wall time, PPO throughput,
the cost of checking zip CRC-32s on load, the doctor over a directory of 1,000 checkpoints,
and (section ``tests``, not run by default) the test suite's time.

Run in the t215 cell by ``nox -s bench`` (which installs stable-baselines3, sb3-contrib and
picklescan there only): ``python benchmarks/bench.py --out reports/bench.json --md
BENCHMARKS.md [--quick]``. Every figure is the median of interleaved runs with min and
max, as a ratio to a baseline measured in the same rounds (these machines are shared). Not a
test: nothing here asserts a time. The 1 GB files are written under ``--work`` (default a
temporary directory) and deleted at the end. ``--sections`` measures some sections and keeps
the others from the previous ``--out`` report when it was written on the same CPU with the
same numerics fingerprint (each section records when and at what load it was measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _bench_crc import bench_crc
from _bench_doctor import bench_doctor, corpus_table
from _bench_doctor_dir import bench_doctor_dir
from _bench_io import MB, CheckpointFile, bench_manager, make_agent
from _limits import missed_notes
from _matrix import bench_matrix
from _ppo import ENV_STEPS, HYPER, run_ours, run_sb3
from _ppo_curves import plot, run_curves
from _report import machine_facts, render
from _tests_time import bench_tests
from _timing import ratio, summary

from ckptcompat.checkpoint.saving import save_agent_file

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]

#: Every section, and the report keys each one writes.
SECTIONS = {
    "manager": ("manager",),
    "doctor": ("doctor", "doctor_flat", "corpus"),
    "doctor_dir": ("doctor_dir",),
    "crc": ("crc",),
    "matrix": ("matrix",),
    "ppo": ("ppo",),
    "curves": ("curves",),
    "tests": ("tests",),
}
#: What a bare ``bench.py`` runs: all but ``tests`` (it runs the whole suite, 12+ min).
DEFAULT_SECTIONS = "manager,doctor,matrix,ppo,curves,crc"
#: Seeds of the learning curves (issue 21: "return >= RecurrentPPO's on each of 3 seeds").
CURVE_SEEDS = [0, 1, 2]


def _same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Figures from two runs may share one BENCHMARKS.md only when the CPU model and the
    numerics fingerprint (kernel path, BLAS, oneDNN, threads) are the same."""
    return a.get("cpu_model") == b.get("cpu_model") and a.get("numerics") == b.get("numerics")


def _carry_over(report: dict[str, Any], previous: Path, running: set[str]) -> None:
    """Keep the sections of ``previous`` (an earlier report of this machine) that this run
    does not measure, each with the date and load it was measured at, so that
    ``--sections doctor`` updates the doctor's figures without dropping the others."""
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return
    if not _same_machine(old.get("machine", {}), report["machine"]):
        print(f"{previous}: another machine or numerics fingerprint; not reused", flush=True)
        return
    for section, keys in SECTIONS.items():
        if section in running or keys[0] not in old:
            continue
        for key in keys:
            if key in old:
                report[key] = old[key]
        report["measured"][section] = old.get("measured", {}).get(section) or {
            "started_at": old["machine"]["started_at"],
            "load_average": old["machine"]["load_average_at_start"],
            "command": old.get("command"),
        }


def _sizes(quick: bool) -> list[tuple[str, int]]:
    if quick:
        return [("1 MB", MB), ("10 MB", 10 * MB)]
    return [("1 MB", MB), ("100 MB", 100 * MB), ("1 GB", 1000 * MB)]


def _ppo(env_steps: int, runs: int, env_counts: list[int]) -> dict[str, Any]:
    """Pairs (ours-MLP, sb3 PPO) and (ours-Recurrent, RecurrentPPO), interleaved per seed."""
    pairs = (
        ("mlp", "ours MLPAgent", "ppo", "sb3 PPO MlpPolicy"),
        ("recurrent", "ours SplitLSTMAgent", "recurrent", "sb3-contrib RecurrentPPO"),
    )
    rows = []
    for num_envs in env_counts:
        got: dict[str, list[dict[str, float]]] = {
            f"{side}:{kind}": [] for kind, _, sb3_kind, _ in pairs for side in ("ours", "sb3")
        }
        for seed in range(runs):  # interleaved: ours-MLP, PPO, ours-Recurrent, RecurrentPPO
            for kind, _, sb3_kind, _ in pairs:
                got[f"ours:{kind}"].append(run_ours(num_envs, env_steps, seed, agent=kind))
                got[f"sb3:{kind}"].append(run_sb3(sb3_kind, num_envs, env_steps, seed))
            print(
                f"  ppo {num_envs} envs seed {seed}: "
                + ", ".join(
                    f"{k} {v[-1]['env_steps_per_s']:.0f}/s R {v[-1]['return']:.0f}"
                    for k, v in got.items()
                ),
                flush=True,
            )
        for kind, ours_name, _, theirs_name in pairs:
            ours_runs, theirs_runs = got[f"ours:{kind}"], got[f"sb3:{kind}"]
            ours = [r["env_steps_per_s"] for r in ours_runs]
            theirs = [r["env_steps_per_s"] for r in theirs_runs]
            q = ratio(ours, theirs)
            ret_ours = statistics.median(r["return"] for r in ours_runs)
            ret_theirs = statistics.median(r["return"] for r in theirs_runs)
            rows.append(
                {
                    "num_envs": num_envs,
                    "ours_name": ours_name,
                    "theirs_name": theirs_name,
                    "ours": summary(ours),
                    "theirs": summary(theirs),
                    "ratio": q,
                    "return_ours": ret_ours,
                    "return_theirs": ret_theirs,
                    "returns_ours": [r["return"] for r in ours_runs],
                    "returns_theirs": [r["return"] for r in theirs_runs],
                    "runs": {"ours": ours_runs, "theirs": theirs_runs},
                    "met": q["median"] >= 1.0 and ret_ours >= ret_theirs,
                }
            )
    return {"env_steps": env_steps, "hyper": HYPER, "rows": rows}


def _io_sections(
    report: dict[str, Any],
    sections: set[str],
    sizes: list[tuple[str, int]],
    runs: int,
    work: Path,
    write: Callable[[], None],
) -> None:
    """Sections 1 and 2; the doctor reuses the manager's files (few tensors) plus a 4096,
    or, with ``--sections doctor`` alone, saves the same files itself."""
    if not sections & {"manager", "doctor"}:
        return
    files = []
    if "manager" in sections:
        report["manager"] = []
        for label, size in sizes:
            print(f"manager {label}", flush=True)
            rows, f = bench_manager(label, size, work, runs)
            report["manager"] += rows
            files.append(f)
            write()
    else:
        for label, size in sizes:
            path = work / label.replace(" ", "") / "bench_v0.pt"
            save_agent_file(make_agent(size, 8), path, run="bench", epoch=0)
            files.append(CheckpointFile(label, path, path.stat().st_size, 8))
    if "doctor" not in sections:
        return
    many = work / "many" / "bench_v0.pt"
    save_agent_file(make_agent(MB, 4096), many, run="bench", epoch=0)
    files.append(CheckpointFile("4096 tensors (1 MB)", many, many.stat().st_size, 4096))
    print("doctor", flush=True)
    report["doctor"] = bench_doctor(files, runs)
    few = {r["file"]: r["doctor_seconds"]["median"] for r in report["doctor"]}
    few = {k: v for k, v in few.items() if "tensors" not in k}
    spread = max(few.values()) / min(few.values())
    report["doctor_flat"] = (
        f"largest / smallest doctor median over {', '.join(few)} = {spread:.2f} "
        f"(goal <= 2: {'yes' if spread <= 2 else 'no'})"
    )
    report["corpus"] = corpus_table([ROOT / "fixtures" / "corpus", ROOT / "fixtures" / "malicious"])
    write()


def _parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument("--md", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="small files, few runs: a smoke run")
    parser.add_argument("--runs", type=int, help="interleaved runs per figure (default 5; quick 2)")
    parser.add_argument("--matrix-runs", type=int, help="cold+warm matrix rounds (default --runs)")
    parser.add_argument("--ppo-steps", type=int, help=f"env steps per PPO run ({ENV_STEPS})")
    parser.add_argument(
        "--sections",
        default=DEFAULT_SECTIONS,
        help="comma-separated: manager, doctor (with `doctor DIR`; doctor_dir runs that "
        "alone), matrix, ppo, crc, tests (runs `nox -s tests`) "
        f"(default: {DEFAULT_SECTIONS}); the other sections keep their figures from --out "
        "when it was written on this machine",
    )
    parser.add_argument(
        "--tests-junit",
        type=Path,
        metavar="DIR",
        help="judge the tests goal from a finished run's JUnit reports in DIR instead of "
        "running `nox -s tests` (default: not judged unless --sections has tests)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="do not keep sections from --out (default: keep the ones not run now)",
    )
    parser.add_argument("--work", type=Path, help="where the big files go (default: a temp dir)")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: rewrite --md from a saved report (after editing _limits.py)",
    )
    return parser


def _sections(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """The sections to measure: ``--sections``, plus ``tests`` with ``--tests-junit`` and
    ``doctor_dir`` with ``doctor`` (the doctor section includes `doctor DIR`)."""
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown --sections {sorted(unknown)}; expected some of {list(SECTIONS)}")
    if args.tests_junit is not None:
        sections.add("tests")
    if "doctor" in sections:
        sections.add("doctor_dir")
    return sections


def _later_sections(
    report: dict[str, Any],
    sections: set[str],
    args: argparse.Namespace,
    runs: int,
    write: Callable[[], None],
) -> None:
    """Sections 3, 4, 4a and 7: matrix, PPO, learning curves, test suite time."""
    if "matrix" in sections:
        report["matrix"] = bench_matrix(args.matrix_runs or runs, ROOT / "reports" / "bench-logs")
        write()
    if "ppo" in sections:
        steps = args.ppo_steps or (1024 if args.quick else ENV_STEPS)
        report["ppo"] = _ppo(steps, runs, [1, 8])
        write()
    if "curves" in sections:
        print("curves", flush=True)
        steps = args.ppo_steps or (1024 if args.quick else ENV_STEPS)
        report["curves"] = run_curves(steps, CURVE_SEEDS)
        picture = args.md.parent / "benchmarks" / "ppo_curves.png"
        report["curves"]["picture"] = str(
            plot(report["curves"], picture).relative_to(args.md.parent)
        )
        write()
    if "tests" in sections:
        print("tests", flush=True)
        report["tests"] = bench_tests(
            ROOT, args.tests_junit, ROOT / "reports" / "bench-logs" / "tests.log"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sections, write the JSON report and BENCHMARKS.md after each."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        saved["notes"] = missed_notes(saved)
        args.md.write_text(render(saved))
        return saved
    runs = args.runs or (2 if args.quick else 5)
    sections = _sections(parser, args)
    torch.set_num_threads(1)
    report: dict[str, Any] = {
        "command": "python benchmarks/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_facts(),
        "runs": runs,
        "quick": args.quick,
        "notes": [],
        "measured": {},
    }
    print(json.dumps(report["machine"]), flush=True)
    stamp = {
        "started_at": report["machine"]["started_at"],
        "load_average": report["machine"]["load_average_at_start"],
        "command": report["command"],
    }
    for section in sections:
        report["measured"][section] = stamp
    if not args.fresh and not args.quick:
        _carry_over(report, args.out, sections)

    def write() -> None:
        report["notes"] = missed_notes(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
        args.md.write_text(render(report))

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)  # mkdtemp needs its parent
    work = Path(tempfile.mkdtemp(prefix="ckptcompat-bench-", dir=args.work))
    try:
        _io_sections(report, sections, _sizes(args.quick), runs, work, write)
        if "crc" in sections:
            print("crc", flush=True)
            report["crc"] = bench_crc(_sizes(args.quick), work, runs)
            write()
        if "doctor_dir" in sections:
            print("doctor_dir", flush=True)
            report["doctor_dir"] = bench_doctor_dir(work, runs, 200 if args.quick else 1000)
            write()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _later_sections(report, sections, args, runs, write)
    write()
    return report


if __name__ == "__main__":
    main()
