"""``python -m ckptcompat.harness.fuzz --cases N --seed S --out DIR``: the fuzz run.

Prints one summary (cases per kind and entry point, failures, peak memory) and exits 1
on any crash, untyped exception, timeout or silent wrong load, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

__all__ = ["main", "summary"]


def summary(report: dict) -> str:  # type: ignore[type-arg]
    """The report as text: a table of runs per kind and entry point, then the verdict."""
    entries = sorted({e for row in report["cases_per_kind_and_entry"].values() for e in row})
    lines = [f"{'kind':<16}" + "".join(f"{e[:14]:>16}" for e in entries)]
    for kind, row in sorted(report["cases_per_kind_and_entry"].items()):
        lines.append(f"{kind:<16}" + "".join(f"{row.get(e, 0):>16}" for e in entries))
    lines.append("")
    for kind, results in sorted(report["results_per_kind"].items()):
        lines.append(f"  {kind:<16} " + ", ".join(f"{k} {v}" for k, v in sorted(results.items())))
    peak, grown = report["peak_maxrss_kb_per_entry"], report["peak_grown_kb_per_entry"]
    lines.append("")
    lines.append(
        "peak ru_maxrss of a child per entry point (MiB; grown during the case): "
        + ", ".join(
            f"{e} {kb / 1024:.0f} (+{grown[e] / 1024:.0f})" for e, kb in sorted(peak.items())
        )
        + f"; the runner held {report['parent_rss_kb'] / 1024:.0f} MiB when it forked; "
        + f"bound on the growth of one case {report.get('max_growth_kb', 0) / 1024:.0f} MiB"
    )
    lines.append(
        "slowest child per entry point (s): "
        + ", ".join(f"{e} {s}" for e, s in sorted(report["slowest_s_per_entry"].items()))
    )
    failures = report["failures"]
    bad = sum(failures.values())
    lines.append(
        f"FUZZ: {'FAIL' if bad else 'PASS'} - {report['cases']} cases, {report['runs']} runs in "
        f"{report['seconds']} s: "
        + ", ".join(f"{n} {k}" for k, n in failures.items())
        + (" (reproducers under failures/)" if bad else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz cases; 0 when none failed, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m ckptcompat.harness.fuzz")
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30.0, help="per child, seconds")
    parser.add_argument("--out", type=Path, default=Path("reports") / "fuzz")
    parser.add_argument(
        "--max-growth-mib",
        type=int,
        default=None,
        help="fail a case whose child grows more than this while reading it "
        "(default: runner.MAX_CASE_GROWTH_KB, 128 MiB)",
    )
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="one child per (case, entry point) instead of one per case (slower; for "
        "checking that sharing a child changes no outcome)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)  # before any fork: children inherit no thread pool
    import ckptcompat.checkpoint.manager  # imported once, before forking
    import ckptcompat.doctor  # noqa: F401
    from ckptcompat.harness.fuzz.runner import MAX_CASE_GROWTH_KB, run

    args.out.mkdir(parents=True, exist_ok=True)
    report = run(
        args.out,
        cases=args.cases,
        seed=args.seed,
        jobs=args.jobs,
        timeout_s=args.timeout,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        max_growth_kb=MAX_CASE_GROWTH_KB
        if args.max_growth_mib is None
        else args.max_growth_mib << 10,
        isolated=args.isolated,
    )
    print(summary(report))
    return 1 if sum(report["failures"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
