"""The matrix's DCP phase (ckptcompat.harness.run.dcp_phase) and its place in the driver.

Every cell for the checks on this torch (what loads differs between 2.4 and 2.15); the
two-rank run starts torchrun (two ranks plus the launcher), so it is marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from ckptcompat import torch_compat
from ckptcompat.harness import versions
from ckptcompat.harness.run import dcp_phase, driver
from ckptcompat.harness.verdict import records as results
from ckptcompat.rl.distributed import SINGLE


def _this_cell() -> str:
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell is not None:
        return cell
    found = versions.cell_for_torch(str(torch_compat.TORCH_VERSION))
    assert found is not None
    return found.id


def _other_era() -> str:
    """A default producer whose DCP this torch does not resume (2.15 <-> 2.4)."""
    return "t24" if torch_compat.TORCH_VERSION >= Version("2.10") else "t215"


def test_same_cell_dcp_goldens_resume_on_one_rank(tmp_path: Path) -> None:
    """Guards the one-rank DCP checks breaking inside one torch (the golden copied wrongly,
    the trainer's DCP resume, the weights check against the safe file, the greedy
    evaluation): this cell's three artifacts pass, one record each, with the doctor's
    'loads' and the exact-state contract of a world-size change for the two-rank run."""
    records = tmp_path / "r.jsonl"
    count = dcp_phase.run_checks(tmp_path / "work", records, SINGLE, [_this_cell()])
    got = {r.artifact: r for r in results.read_records([records])}
    assert count == 3 and sorted(got) == [
        "dcp_ws1_to_ws1",
        "dcp_ws2_to_ws1",
        "safe_rank0_ws2_to_ws1",
    ]
    assert {r.outcome.value for r in got.values()} == {"pass"}, [r.detail for r in got.values()]
    assert got["dcp_ws1_to_ws1"].loader == "dcp" and got["safe_rank0_ws2_to_ws1"].loader == "safe"
    assert got["dcp_ws2_to_ws1"].outputs["doctor"]["outcome"] == "loads"
    contract = got["dcp_ws2_to_ws1"].outputs["contract"]
    assert (contract["kind"], contract["saved_world_size"], contract["world_size"]) == (
        "exact_state",
        2,
        1,
    )
    assert got["dcp_ws1_to_ws1"].outputs["epoch"] == 2


def test_cross_era_dcp_fails_with_its_reason(tmp_path: Path) -> None:
    """Guards a DCP pair that cannot load being recorded as an error (an untyped exception,
    seen: 2.4.1's bare "too many values to unpack" on 2.15's .metadata) or without its
    reason: the DCP artifacts of the other era's producer are 'fail' with the typed
    error and its cause, the doctor predicted the failure, and rank 0's safe file of the
    same run still resumes."""
    records = tmp_path / "r.jsonl"
    dcp_phase.run_checks(tmp_path / "work", records, SINGLE, [_other_era()])
    got = {r.artifact: r for r in results.read_records([records])}
    newer = torch_compat.TORCH_VERSION >= Version("2.10")
    reason = "decoupled_weight_decay" if newer else "too many values to unpack"
    error = "AgentMismatchError" if newer else "IncompatibleCheckpointError"
    for artifact in ("dcp_ws1_to_ws1", "dcp_ws2_to_ws1"):
        record = got[artifact]
        assert record.outcome.value == "fail", record.detail
        assert record.detail.startswith(error) and reason in record.detail, record.detail
        assert record.outputs["doctor"]["outcome"] != "loads"
    assert got["safe_rank0_ws2_to_ws1"].outcome.value == "pass"


@pytest.mark.slow
def test_two_ranks_reshard_every_artifact(tmp_path: Path) -> None:
    """Guards the two-rank DCP checks (torchrun, gloo): a one-rank DCP resharded to two
    ranks, a two-rank one resumed on two, rank 0's safe files resumed on two; each rank's
    outcome gathered, one record per check written by rank 0 only, no hang, and no rank
    aborting at exit (seen on 2.15.0 in about 1 run of 10: SIGABRT in the interpreter's
    teardown after every record was written, which torchrun reports as the run failing)."""
    cell = _this_cell()
    command = driver.dcp_command(sys.executable, cell, tmp_path / "w", tmp_path / "r", 2)
    proc = subprocess.run(
        [*command, cell], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = list(results.read_records([tmp_path / "r"]))
    assert sorted(r.artifact for r in got) == [
        "dcp_ws1_to_ws2",
        "dcp_ws2_to_ws2",
        "safe_rank0_ws2_to_ws2",
    ]
    assert all(r.outcome.value == "pass" for r in got), [r.detail for r in got]
    assert all(r.outputs["rank_outcomes"] == ["pass", "pass"] for r in got)


@pytest.mark.one_cell
def test_driver_runs_the_dcp_phase_per_world_size() -> None:
    """Guards the DCP phase's commands: one plain process for one rank, torchrun's
    standalone launcher (a free port per run) for two, positional arguments only."""
    one = driver.dcp_command("py", "t26", Path("w"), Path("r"), 1)
    two = driver.dcp_command("py", "t26", Path("w"), Path("r"), 2)
    assert one == ["py", "-m", "ckptcompat.harness.run.dcp_phase", "t26", "w", "r"]
    assert two[:6] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    assert two[6:] == one[1:]
    assert driver.DCP_WORLD_SIZES == (1, 2)
