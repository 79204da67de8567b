"""One phase of the cross-version scenarios in one cell, in one process.

``python -m ckptcompat.harness.run.phases PHASE CELL --work DIR --records DIR [--cells a,b,..]``
runs every step of ``PHASE`` (``train``, ``resume`` or ``evaluate``) whose torch is
``CELL``'s (see :func:`ckptcompat.harness.run.scenarios.steps`) and appends one result record
per check to ``<records>/<phase>-<cell>-<pid>.jsonl``. The evaluate phase then runs, in the
same process, the Metta G3/G4 golden checks of :mod:`ckptcompat.harness.generations_golden.check`
(doctor, migrate, probe: no unpickling), the zoo of other libraries' files
(:mod:`ckptcompat.harness.fixtures.zoo.check`: each load against the doctor's prediction)
and the golden checks of
:mod:`ckptcompat.harness.golden.phase` (whose naive whole-pickle loads come last). It must run
in ``CELL``'s venv: a mismatch between the running torch and the cell's pin is a usage error.

The checks of every step: :mod:`ckptcompat.harness.run.steps`.

Exit status: 0 when every step ran (whatever the outcomes), 1 when the golden checks could
not run, 2 on bad usage or the wrong venv.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ckptcompat import numerics
from ckptcompat.harness import envinfo, versions
from ckptcompat.harness.run import scenarios
from ckptcompat.harness.run.scenarios import AGENTS, BUDGET, Budget, Layout
from ckptcompat.harness.run.steps import (
    DEFAULT_SPECS,
    AgentSpecs,
    evaluate_step,
    resume_step,
    train_step,
)
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.records import Outcome, Record

__all__ = ["main", "run_phase"]


# --------------------------------------------------------------------------- the phase
def run_phase(
    phase: str,
    cell: str,
    layout: Layout,
    records_file: Path,
    *,
    cells: Sequence[str],
    agents: Sequence[str] = tuple(AGENTS),
    budget: Budget = BUDGET,
    specs: AgentSpecs = DEFAULT_SPECS,
) -> list[Record]:
    """Run and record every step of ``phase`` under ``cell`` (see the module docstring).

    The phase owns ``layout.phase_dir(phase, cell)``: it starts empty, so a rerun neither
    trips over its own earlier runs nor appends to an earlier shard.
    """
    shutil.rmtree(layout.phase_dir(phase, cell), ignore_errors=True)
    written = []
    todo = scenarios.steps(phase, cell, cells, agents)
    if phase == "train":
        jobs = [lambda a=a: train_step(a, cell, cells, layout, budget, specs) for a in agents]
    elif phase == "resume":
        jobs = [lambda c=c: resume_step(c, layout, budget) for c in todo]
    else:
        jobs = [lambda c=c: evaluate_step(c, layout, budget) for c in todo]
    for job in jobs:
        record = job()
        results.append_record(records_file, record)
        written.append(record)
        print(
            f"{record.outcome.value:<5} {record.cell_key}  ({record.duration_s:.2f} s)"
            + (f"\n      {record.detail[:300]}" if record.outcome != Outcome.PASS else ""),
            flush=True,
        )
    return written


def _check_venv(cell: str) -> str | None:
    numpy_major = int(np.__version__.split(".")[0])
    here = versions.cell_for_torch(str(torch.__version__), numpy_major)
    if here is None or here.id != cell:
        return (
            f"phase for cell {cell} needs torch {versions.by_id(cell).torch}; this "
            f"interpreter ({sys.executable}) has torch {torch.__version__}, numpy "
            f"{np.__version__}. Run it with the cell's venv (nox -s matrix does)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (see the module docstring for arguments and exit status)."""
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.run.phases", description=__doc__.splitlines()[0]
    )
    parser.add_argument("phase", choices=scenarios.PHASES)
    parser.add_argument("cell")
    parser.add_argument("--work", type=Path, required=True, help="the matrix work directory")
    parser.add_argument("--records", type=Path, required=True, help="directory for JSONL")
    parser.add_argument(
        "--cells",
        default=",".join(scenarios.DEFAULT_CELLS),
        help="comma-separated cells of the matrix (default: the default cells)",
    )
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--no-golden", action="store_true", help="evaluate: skip golden checks")
    parser.add_argument(
        "--config", type=Path, help="a team's pyproject.toml: its agents, goldens, checkpoints"
    )
    args = parser.parse_args(argv)
    if argv is None and not numerics.requested():
        # Started by hand: the harness's processes run in the reproducible-numerics mode,
        # whose variables must be set before torch starts.
        os.execve(
            sys.executable,
            [sys.executable, "-m", "ckptcompat.harness.run.phases", *sys.argv[1:]],
            numerics.reproducible_env(),
        )
    cells, agents = args.cells.split(","), args.agents.split(",")
    specs, budget, team = DEFAULT_SPECS, BUDGET, None
    if args.config is not None:
        from ckptcompat.harness import team as team_config

        team = team_config.load(args.config)
        specs = team.resolved_agents()
        agents, budget = list(specs), dataclasses.replace(BUDGET, env_id=team.env_id)
    problem = _check_venv(args.cell) or (
        None
        if args.cell in cells and set(agents) <= set(specs)
        else f"cell {args.cell} must be among --cells and agents among {', '.join(specs)}"
    )
    if problem:
        print(f"phases: {problem}", file=sys.stderr)
        return 2
    os.environ["CKPTCOMPAT_CELL"] = args.cell
    numerics.apply()
    torch.set_num_threads(1)  # the producers' setting; and one core per cell process
    facts = envinfo.facts()
    print(
        f"phase {args.phase} in cell {args.cell}: torch={facts['torch']} "
        f"numpy={facts['numpy']} python={facts['python']}",
        flush=True,
    )
    # A rerun of this phase in this cell replaces its records: stale ones would merge in.
    for stale in args.records.glob(f"{args.phase}-{args.cell}-*.jsonl"):
        stale.unlink()
    records_file = args.records / f"{args.phase}-{args.cell}-{os.getpid()}.jsonl"
    layout = Layout(args.work)
    run_phase(
        args.phase,
        args.cell,
        layout,
        records_file,
        cells=cells,
        agents=agents,
        budget=budget,
        specs=specs,
    )
    if args.phase == "evaluate" and team is not None:
        from ckptcompat.harness.golden import team as team_golden

        return team_golden.run(args.cell, team, specs, records_file, not args.no_golden)
    if args.phase == "evaluate" and not args.no_golden:
        from ckptcompat.harness.fixtures.zoo import check as zoo_check
        from ckptcompat.harness.generations_golden import check as metta_golden
        from ckptcompat.harness.golden import phase as golden_phase

        metta_golden.run(records_file)  # Metta G3/G4 goldens: doctor, migrate, probe (issue 22)
        zoo_check.run(records_file)  # other libraries' files: prediction vs reality (issue 16)
        return golden_phase.run(args.cell, records_file, args.work / f".golden-{os.getpid()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
