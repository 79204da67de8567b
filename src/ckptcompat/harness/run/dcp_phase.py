"""The DCP phase of the matrix in one cell, on one world size (issue 18).

``python -m ckptcompat.harness.run.dcp_phase CELL WORK RECORDS [PRODUCERS]`` runs alone
(world size 1) or as every rank of ``torchrun --standalone --nproc-per-node 2`` (world
size 2, gloo), in ``CELL``'s venv; :mod:`ckptcompat.harness.run.driver` starts both per
consumer cell.
Arguments are positional: torchrun's parser would read an option after the module name
as an abbreviation of one of its own. ``PRODUCERS`` (comma-separated cell ids) limits the
goldens checked; default: every DCP golden.

For every DCP golden (:mod:`ckptcompat.harness.golden.dcp`, one per default producer cell)
it checks three artifacts, each on this world size (so the matrix holds each resharded to
1 and to 2 ranks):

* ``dcp_ws1``: the DCP directory written by one process, resumed ``--from dcp``;
* ``dcp_ws2``: the DCP directory written by two ranks, resumed ``--from dcp``;
* ``safe_rank0_ws2``: rank 0's safe files of the two-rank run, resumed ``--from safe``.

A check copies the golden run into ``WORK/dcp-<cell>-ws<N>/<producer>-<artifact>/``, resumes
it with :meth:`~ckptcompat.rl.trainer.Trainer.resume` on every rank, and requires: the loaded
weights bitwise equal to the golden's safe file of the same epoch, one more epoch trained
with finite losses (DDP on two ranks), finite greedy returns on rank 0, and the doctor's
prediction for this torch (:func:`ckptcompat.doctor.dcp.explain_dcp`, DCP artifacts only)
agreeing with what happened. A refusal (a typed :class:`~ckptcompat.errors.CheckpointError`)
is ``fail`` with its one-line reason, anything else ``error``; the ranks' outcomes are
gathered and rank 0 writes one record per check to ``RECORDS/dcp-<cell>-ws<N>-<pid>.jsonl``
(``scenario="dcp"``, ``artifact="<artifact>_to_ws<N>"``, loader ``dcp`` or ``safe``,
``producer->consumer->consumer``).

Exit status: 0 when every check ran (whatever the outcomes), 2 on bad usage or the wrong venv.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from ckptcompat import numerics, torch_compat
from ckptcompat.doctor.dcp import explain_dcp
from ckptcompat.errors import CheckpointError
from ckptcompat.harness import versions
from ckptcompat.harness.golden.dcp import AGENT, dcp_golden_dirs
from ckptcompat.harness.golden.read import MANIFEST_NAME
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.records import Outcome
from ckptcompat.rl import distributed
from ckptcompat.rl.distributed import DistContext
from ckptcompat.rl.greedy import evaluate_greedy
from ckptcompat.rl.trainer import Trainer

__all__ = ["ARTIFACTS", "DcpArtifact", "check", "main", "run_checks"]

#: Greedy evaluation seeds after the resumed epoch (rank 0).
EVAL_SEEDS = [1000, 1001]
#: Seconds a collective may wait for the other rank before it raises (a rank that failed
#: outside a collective must not hang the phase).
COLLECTIVE_TIMEOUT_S = 120


@dataclass(frozen=True)
class DcpArtifact:
    """One artifact of a DCP golden: its name, the golden run holding it, the resume source."""

    name: str
    run: str
    source: str

    @property
    def loader(self) -> str:
        """The record's loader: ``dcp`` (DCP's reader) or ``safe`` (weights-only load)."""
        return "dcp" if self.source == "dcp" else "safe"


ARTIFACTS: tuple[DcpArtifact, ...] = (
    DcpArtifact("dcp_ws1", "ws1", "dcp"),
    DcpArtifact("dcp_ws2", "ws2", "dcp"),
    DcpArtifact("safe_rank0_ws2", "ws2", "safe"),
)
_PASSING_PREDICTIONS = ("loads",)


def _one_line(exc: BaseException) -> str:
    """The reason of a refusal, without the run's path (which differs between runs)."""
    if isinstance(exc, CheckpointError):
        text = exc.problem + (f"; found {exc.found}" if exc.found else "")
    else:
        text = str(exc)
    return f"{type(exc).__name__}: {' '.join(text.split())}"[:400]


def _minor(version: str) -> str:
    return ".".join(version.split("+", 1)[0].split(".")[:2])


def _resume_and_train(
    golden: Path, artifact: DcpArtifact, data_dir: Path, ctx: DistContext
) -> dict[str, Any]:
    """Resume the copied run, check the weights, train one epoch, evaluate; what was seen.

    Raises:
        CheckpointError: the resume refused the files.
        AssertionError: a check failed (its message says which).
    """
    trainer = Trainer.resume(
        artifact.run, data_dir, dist=ctx, source=artifact.source, progress=False
    )
    epoch = trainer.epoch
    safe = golden / artifact.run / "checkpoints" / f"{artifact.run}_v{epoch}.pt"
    saved = torch_compat.load(safe, map_location="cpu")["state_dict"]
    loaded = trainer.agent.state_dict()
    assert list(loaded) == list(saved), f"keys {list(loaded)} != saved {list(saved)}"
    unequal = [k for k in saved if not torch.equal(loaded[k], saved[k])]
    assert not unequal, f"loaded weights differ from the saved ones: {unequal}"
    result = trainer.train(epoch + 1)
    losses = {k: float(v) for k, v in result.stats.items()}
    assert losses and all(math.isfinite(v) for v in losses.values()), f"losses {losses}"
    returns = evaluate_greedy(trainer.agent, trainer.config.env_id, EVAL_SEEDS)
    assert all(math.isfinite(r) for r in returns), f"greedy returns {returns}"
    contract = trainer.contract.to_json() if trainer.contract else None
    return {"epoch": result.epoch, "returns": returns, "contract": contract}


def check(
    golden: Path, artifact: DcpArtifact, work: Path, ctx: DistContext
) -> tuple[Outcome, str, dict[str, Any]]:
    """One artifact of one golden on this rank: ``(outcome, detail, outputs)``.

    A collective: every rank calls it for the same artifact. Never raises for a check that
    fails; the outcome says how it ended.
    """
    data_dir = work / f"{golden.name}-{artifact.name}"
    if ctx.is_main:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.copytree(golden / artifact.run, data_dir / artifact.run)
    ctx.barrier()
    try:
        outputs = _resume_and_train(golden, artifact, data_dir, ctx)
        return Outcome.PASS, "", outputs
    except CheckpointError as exc:
        return Outcome.FAIL, _one_line(exc), {}
    except AssertionError as exc:
        return Outcome.FAIL, f"check failed: {exc}"[:400], {}
    except Exception as exc:  # recorded as the outcome
        return Outcome.ERROR, _one_line(exc), {}


def _doctor(
    golden: Path, artifact: DcpArtifact, manifest: dict[str, Any]
) -> tuple[str, str] | None:
    """The doctor's prediction for this torch on the artifact's DCP directory."""
    if artifact.source != "dcp":
        return None
    directory = golden / manifest["runs"][artifact.run]["dcp_dir"]
    here = _minor(str(torch.__version__))
    for prediction in explain_dcp(directory).predictions:
        if prediction.torch == here:
            return prediction.outcome, prediction.reason
    return None


def run_checks(
    work: Path,
    records_file: Path,
    ctx: DistContext,
    producers: Sequence[str] | None = None,
) -> int:
    """Every artifact of every DCP golden (of ``producers``, default all) on this rank;
    rank 0 appends the records. A collective: every rank calls it with the same arguments.

    Returns the number of checks run.
    """
    count = 0
    goldens = [g for g in dcp_golden_dirs() if producers is None or g.name in producers]
    for golden in goldens:
        manifest = json.loads((golden / MANIFEST_NAME).read_text(encoding="utf-8"))
        producer = manifest["producer"]
        for artifact in ARTIFACTS:
            started = time.perf_counter()
            outcome, detail, outputs = check(golden, artifact, work, ctx)
            ranks = ctx.gather_object((outcome.value, detail))
            failed = [(r, o, d) for r, (o, d) in enumerate(ranks) if o != Outcome.PASS.value]
            if failed and outcome == Outcome.PASS:  # another rank failed: the run failed
                rank, worst, detail = failed[0]
                outcome, detail = Outcome(worst), f"rank {rank}: {detail}"
            predicted = _doctor(golden, artifact, manifest)
            if predicted is not None:
                outputs["doctor"] = {"outcome": predicted[0], "reason": predicted[1]}
                expects_pass = predicted[0] in _PASSING_PREDICTIONS
                if expects_pass != (outcome == Outcome.PASS) and outcome != Outcome.ERROR:
                    outcome = Outcome.FAIL
                    detail = f"doctor predicted {predicted[0]!r} but got: {detail or 'pass'}"
            outputs["world_size"] = ctx.world_size
            outputs["rank_outcomes"] = [o for o, _ in ranks]
            count += 1
            if not ctx.is_main:
                continue
            record = results.make_record(
                scenario="dcp",
                artifact=f"{artifact.name}_to_ws{ctx.world_size}",
                agent=AGENT[0],
                loader=artifact.loader,
                outcome=outcome,
                producer_torch=producer["torch"],
                consumer_torch=str(torch.__version__),
                evaluator_torch=str(torch.__version__),
                producer_numpy=producer["numpy"],
                consumer_numpy=np.__version__,
                detail=detail,
                duration_s=time.perf_counter() - started,
                outputs=outputs,
            )
            results.append_record(records_file, record)
            print(f"{record.outcome.value:<5} {record.cell_key}  {detail[:200]}", flush=True)
    return count


def _join() -> DistContext:
    """This process's rank; a two-rank run's collectives time out after
    :data:`COLLECTIVE_TIMEOUT_S` instead of gloo's 30 minutes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch_dist.is_initialized():
        timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
        torch_dist.init_process_group(backend="gloo", timeout=timeout)
    return distributed.from_environment()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (see the module docstring for arguments and exit status)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (3, 4):
        usage = "usage: python -m ckptcompat.harness.run.dcp_phase CELL WORK RECORDS [PRODUCERS]"
        print(usage, file=sys.stderr)
        return 2
    if argv is None and not numerics.requested():
        # Started by hand or by nox: the harness's processes run in the reproducible-numerics
        # mode, whose variables must be set before torch starts (each rank re-executes).
        os.execve(
            sys.executable,
            [sys.executable, "-m", "ckptcompat.harness.run.dcp_phase", *args],
            numerics.reproducible_env(),
        )
    cell, work, records = args[0], Path(args[1]), Path(args[2])
    producers = args[3].split(",") if len(args) == 4 else None
    here = versions.cell_for_torch(str(torch.__version__), int(np.__version__.split(".")[0]))
    if here is None or here.id != cell:
        problem = f"cell {cell} needs its own venv; this one has torch {torch.__version__}"
        print(f"dcp_phase: {problem}", file=sys.stderr)
        return 2
    os.environ["CKPTCOMPAT_CELL"] = cell
    numerics.apply()
    torch.set_num_threads(1)
    ctx = _join()
    try:
        work = work / f"dcp-{cell}-ws{ctx.world_size}"
        records_file = records / f"dcp-{cell}-ws{ctx.world_size}-{os.getpid()}.jsonl"
        if ctx.is_main:  # a rerun replaces its records: stale ones would merge in
            for stale in records.glob(f"dcp-{cell}-ws{ctx.world_size}-*.jsonl"):
                stale.unlink()
        count = run_checks(work, records_file, ctx, producers)
        if ctx.is_main:
            print(f"dcp phase {cell} on {ctx.world_size} rank(s): {count} checks", flush=True)
    finally:
        if ctx.distributed and torch_dist.is_initialized():
            # Every rank past here has written its records. The group is not destroyed:
            # on 2.4.1 destroy_process_group right after a barrier can deadlock
            # (~ProcessGroupGloo joins its worker under the GIL; the worker needs the GIL
            # to free the barrier's work; cli_run._rank_session) and os._exit ends it.
            ctx.barrier()
    if ctx.distributed:  # every record is written and fsynced (2.15's exit abort)
        distributed.exit_without_teardown(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
