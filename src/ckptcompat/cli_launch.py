"""``ckptcompat run train|resume --nproc N``: start torch's own launcher, pass its record on.

With ``N > 1`` the command runs ``python -m torch.distributed.run --standalone
--nproc-per-node N -m ckptcompat.cli_rank '["run", "STEP", ...]'`` with this interpreter
(torchrun's engine, no launcher of ours): ``N`` processes on this machine, a rendezvous on a
free local port, and in each the same command line, which then finds torchrun's
``WORLD_SIZE``/``RANK`` in its environment and trains as that rank
(:mod:`ckptcompat.rl.distributed`). The command line travels as one JSON argument because
torchrun's own parser would take ``--run`` for an abbreviation of its ``--run-path`` (and
refuse it as ambiguous) even after the script's name. Only rank 0 prints
a result record, so the children's last JSON stdout line is the step's record; this process
passes the children's stdout through and exits with the record's outcome (pass 0, fail 1,
error 2), whatever torchrun's own exit code (it is 1 for any failed child).
``OMP_NUM_THREADS`` defaults to 1 for the children (torchrun would set it and warn).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["LAUNCHED_ENV", "launch", "launched_world_size", "record_outcome"]

#: torchrun's variable: set in every process it starts.
LAUNCHED_ENV = "WORLD_SIZE"
_CODES = {"pass": 0, "fail": 1, "error": 2}


def launched_world_size() -> int | None:
    """torchrun's ``WORLD_SIZE`` in this process, or None when no launcher started it."""
    raw = os.environ.get(LAUNCHED_ENV)
    return int(raw) if raw is not None and raw.isdigit() else None


def record_outcome(stdout: str) -> tuple[str, int] | None:
    """``(outcome, exit code)`` of the last JSON record line in ``stdout``; None if none."""
    for raw in reversed(stdout.splitlines()):
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        outcome = record.get("outcome") if isinstance(record, dict) else None
        if outcome in _CODES:
            return outcome, _CODES[outcome]
    return None


def launch(step: str, argv: Sequence[str], nproc: int) -> tuple[int, str]:
    """Run ``ckptcompat run STEP *argv`` under torchrun with ``nproc`` processes.

    Args:
        step: ``"train"`` or ``"resume"``. argv: the step's arguments (``--nproc`` included,
            so each child checks it against torchrun's ``WORLD_SIZE``). nproc: >= 2.

    Returns:
        ``(torchrun's exit code, the children's stdout)``; the stdout has been written to
        this process's stdout already (stderr is inherited).
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "ckptcompat.cli_rank",
        json.dumps(["run", step, *argv]),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    sys.stdout.write(done.stdout)
    sys.stdout.flush()
    return done.returncode, done.stdout
