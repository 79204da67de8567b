"""Two-process training under torchrun (gloo, CPU): checkpoints and resume on 1 and 2 ranks.

Runs in every cell: torch.distributed and DCP differ between 2.4 and 2.15. Budget: three
torchrun launches of two ranks (``ckptcompat run ... --nproc 2``) with a tiny agent and
rollout, plus one-process steps in this process; the rest are reads of what they wrote.

Plan (one module fixture, ``runs``):

* ``straight``: 2 ranks train 4 epochs, checkpoints every 2, safe + DCP;
* ``two``: a copy of it cut back to epoch 2 (its index lists epochs <= 2: a run stopped
  there), resumed to 4 on 2 ranks from the DCP directory -> must equal ``straight``
  bitwise (the ``bitwise`` contract);
* ``one``: another such copy resumed to 4 in one process (this one) from the DCP
  directory -> the ``exact_state`` contract;
* ``up``: one process trains 2 epochs, then 2 ranks resume it to 4 from the safe files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.rl.distributed import SINGLE, DistContext, rank_seed
from ckptcompat.rl.resume_contract import state_digest
from ckptcompat.rl.trainer import resume, train
from ckptcompat.rl.trainer_config import TrainerConfig

pytestmark = pytest.mark.slow

KWARGS = {"hidden_size": 8, "encoder_size": 8}
#: What the CLI trains with these flags (the CLI's defaults besides them).
CONFIG = TrainerConfig(seed=5, checkpoint_every=2, agent_kwargs=KWARGS)
FLAGS = ["--seed", "5", "--checkpoint-every", "2", "--agent-kwargs", json.dumps(KWARGS)]


def _cli(*args: str) -> dict[str, Any]:
    """``python -m ckptcompat ARGS``; its record (the last stdout line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "ckptcompat", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["outcome"] == "pass", (record["detail"], done.stderr[-3000:])
    return record


def _cut_back(source: Path, target: Path, epoch: int) -> None:
    """Copy run ``r`` from data dir ``source`` to ``target``, its index cut at ``epoch``."""
    shutil.copytree(source / "r", target / "r")
    index_path = target / "r" / "checkpoints" / "index.json"
    index = json.loads(index_path.read_text())
    for key in ("checkpoints", "trainer_states", "dcp_checkpoints"):
        index[key] = [e for e in index.get(key, []) if e["epoch"] <= epoch]
    index_path.write_text(json.dumps(index))


def _saved(data_dir: Path, epoch: int) -> str:
    """Digest of the safe files of run ``r`` at ``epoch``: agent state plus Adam state."""
    manager = SimpleCheckpointManager("r", data_dir)
    agent = manager.load_agent(epoch)
    optimizer = torch.optim.Adam(agent.parameters(), eps=CONFIG.ppo.adam_eps)
    manager.load_trainer_state(epoch, optimizer=optimizer, restore_rng=False)
    return state_digest(agent, optimizer)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dist")
    out: dict[str, Any] = {"root": root}
    common = ["--run", "r", *FLAGS]
    out["straight"] = _cli(
        "run", "train", *common, "--dir", str(root / "straight"), "--epochs", "4",
        "--nproc", "2", "--checkpoint-format", "dcp",
    )  # fmt: skip
    _cut_back(root / "straight", root / "two", 2)
    out["two"] = _cli(
        "run", "resume", "--run", "r", "--dir", str(root / "two"), "--epochs", "4",
        "--nproc", "2", "--from", "dcp",
    )  # fmt: skip
    _cut_back(root / "straight", root / "one", 2)
    out["one"] = resume("r", root / "one", 4, progress=False, source="dcp")
    train(CONFIG, "r", root / "up", 2, progress=False)
    out["up"] = _cli(
        "run", "resume", "--run", "r", "--dir", str(root / "up"), "--epochs", "4", "--nproc", "2"
    )
    return out


def test_two_ranks_count_one_epoch_and_every_rank_env_step(runs: dict[str, Any]) -> None:
    """One epoch counter; agent_step counts both ranks' sub-envs (2 * 8 envs * 32 steps)."""
    outputs = runs["straight"]["outputs"]
    assert (outputs["epoch"], outputs["world_size"]) == (4, 2)
    assert outputs["agent_step"] == 4 * 2 * CONFIG.ppo.batch_size


def test_rank_zero_saves_the_unwrapped_agent(runs: dict[str, Any]) -> None:
    """No ``module.`` key in a DDP run's safe file: the most reported DDP load failure."""
    manager = SimpleCheckpointManager("r", runs["root"] / "straight")
    agent = manager.load_agent(4)  # strict load into the plain agent class
    assert not [k for k in agent.state_dict() if k.startswith("module.")]


def test_trainer_state_holds_every_rank_stream(runs: dict[str, Any]) -> None:
    """rng_ranks has both ranks' streams; rank 0's is ``rng``; rank 1's differs from it.

    Guards a resume that would give rank 1 rank 0's stream (both ranks sampling the same
    actions after a resume, unlike the straight run).
    """
    manager = SimpleCheckpointManager("r", runs["root"] / "straight")
    state = manager.load_trainer_state(restore_rng=False)
    assert state is not None and state.rng_ranks is not None
    assert len(state.rng_ranks) == 2
    assert state.extra["world_size"] == 2
    assert not torch.equal(state.rng_ranks[0]["torch"], state.rng_ranks[1]["torch"])


def test_every_rank_wrote_the_dcp_directory(runs: dict[str, Any]) -> None:
    """The index lists DCP directories written by 2 ranks (one data file each)."""
    manager = SimpleCheckpointManager("r", runs["root"] / "straight")
    entries = manager.list_dcp_checkpoints()
    assert [(e.epoch, e.world_size) for e in entries] == [(2, 2), (4, 2)]
    assert entries[-1].files == (".metadata", "__0_0.distcp", "__1_0.distcp")


def test_resume_on_two_ranks_is_bitwise_the_straight_run(runs: dict[str, Any]) -> None:
    """Stop at 2, resume to 4 on 2 ranks from DCP == train 4 on 2 ranks, bit for bit.

    Guards per-rank RNG restore, per-rank env seeds at checkpoint epochs, DDP's gradient
    average and the DCP load into a fresh optimizer; the record says ``bitwise``.
    """
    root = runs["root"]
    contract = runs["two"]["outputs"]["contract"]
    assert contract["kind"] == "bitwise", contract["reason"]
    assert (contract["saved_world_size"], contract["world_size"]) == (2, 2)
    assert contract["loaded_digest"] == _saved(root / "straight", 2)
    assert _saved(root / "two", 4) == _saved(root / "straight", 4)


def test_two_to_one_loads_the_saved_state_exactly(runs: dict[str, Any]) -> None:
    """2 -> 1 from DCP: the exact_state contract; loaded == saved; losses finite."""
    result = runs["one"]
    assert result.contract.kind == "exact_state"
    assert "world size 2 -> 1" in result.contract.reason
    assert result.contract.loaded_digest == _saved(runs["root"] / "straight", 2)
    assert result.epoch == 4 and all(math.isfinite(v) for v in result.stats.values())


def test_one_to_two_loads_the_saved_state_exactly(runs: dict[str, Any]) -> None:
    """1 -> 2 from the safe files: exact_state; loaded == saved; both ranks trained on."""
    outputs = runs["up"]["outputs"]
    contract = outputs["contract"]
    assert contract["kind"] == "exact_state" and "world size 1 -> 2" in contract["reason"]
    assert contract["loaded_digest"] == _saved(runs["root"] / "up", 2)
    assert outputs["epoch"] == 4 and outputs["world_size"] == 2
    assert outputs["agent_step"] == 2 * CONFIG.ppo.batch_size + 2 * 2 * CONFIG.ppo.batch_size
    assert all(math.isfinite(v) for v in outputs["losses"].values())


def test_rank_seeds_keep_rank_zero_and_separate_the_others() -> None:
    """Rank 0 of a fresh run keeps the run's seed (N = 1 unchanged); others differ."""
    assert rank_seed(5, 0) == 5
    seeds = {rank_seed(5, r) for r in range(1, 4)} | {rank_seed(5, 1, epoch=2)}
    assert len(seeds) == 4 and 5 not in seeds and 6 not in seeds


def test_single_context_collectives_are_identities() -> None:
    """World size 1 never touches torch.distributed: N = 1 computes what it did."""
    assert SINGLE == DistContext(0, 1) and not SINGLE.distributed
    obs = torch.arange(6.0).reshape(1, 2, 3)
    assert SINGLE.gather_envs(obs) is obs
    assert SINGLE.gather_list([1.0]) == [1.0] and SINGLE.mean(2.5) == 2.5
