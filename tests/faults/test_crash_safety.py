"""A crash while saving never costs a committed checkpoint (docs/design.md section 4, atomic.py).

Two parts:

* every named fault point of :mod:`ckptcompat.checkpoint.atomic` (``after_temp_write``,
  ``after_fsync``, ``after_replace``, ``before_index_update``), fired through
  ``CKPTCOMPAT_FAULT`` in a child process that saves, both as :class:`InjectedFault` (raise)
  and as ``:exit`` (``os._exit(137)``: no cleanup, like a power cut), for a new epoch, an
  overwritten epoch and a trainer state -- in every cell, since torch writes the bytes;
* in one cell only, at least 50 seeded SIGKILLs of a process training (and so saving) in a
  loop, each after a ready handshake so that the kill lands inside a save.

After every crash: the previous checkpoint is still the latest and loads, every index entry
matches its file's digest, temp files are never taken for checkpoints, the lock is free for
the next writer, and the next writer (or ``rl.trainer.resume``) continues from the last
complete epoch.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ckptcompat.agents.mock import MockAgent
from ckptcompat.agents.probe import params_digest
from ckptcompat.checkpoint.atomic import (
    FAULT_EXIT_CODE,
    FAULT_POINTS,
    RunLock,
    hash_file,
)
from ckptcompat.checkpoint.index import read_index
from ckptcompat.checkpoint.layout import is_temp_name, parse_filename
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.uri import resolve
from ckptcompat.errors import CheckpointNotFoundError
from tests.faults import ForkServer, build_run, fork_server

RUN = "crashy"
#: SIGKILLs in the one-cell loop (the issue asks for at least 50).
KILLS = 60
_SEED = 20250101


@pytest.fixture(scope="module")
def server() -> ForkServer:
    """The shared fork server (torch imported once)."""
    return fork_server()


@pytest.fixture(scope="module")
def base_run(
    server: ForkServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[int, str]]:
    """A run with committed epochs 0 and 1 (agent + trainer state); params digest per epoch."""
    data = tmp_path_factory.mktemp("base")
    return data, build_run(server, data, RUN, (0, 1))


# --------------------------------------------------------------------------- checks
def _checkpoints(data: Path) -> Path:
    return data / RUN / "checkpoints"


def check_consistent(data: Path) -> dict[str, Any]:
    """Assert the run's invariants after a crash; return what was found.

    Every index entry names a non-temp file whose size and digest match; the latest
    checkpoint loads with verify="full"; the run lock can be taken and released.
    """
    folder = _checkpoints(data)
    index = read_index(folder, RUN)
    for entry in (*index.checkpoints, *index.trainer_states):
        assert not is_temp_name(entry.file), entry
        assert hash_file(folder / entry.file) == (entry.size_bytes, entry.digest), entry.file
    temps = sorted(p.name for p in folder.iterdir() if is_temp_name(p.name))
    assert all(parse_filename(name) is None for name in temps)
    latest = index.latest_checkpoint()
    assert latest is not None
    assert resolve(data / RUN).path == folder / latest.file  # never a temp file
    agent = SimpleCheckpointManager(RUN, data, cache_size=0).load_agent()
    lock = RunLock(folder)
    lock.acquire()  # raises RunLockedError if the dead writer's lock were still held
    lock.release()
    return {
        "latest": latest.epoch,
        "agents": [e.epoch for e in index.checkpoints],
        "trainers": [e.epoch for e in index.trainer_states],
        "temps": temps,
        "digest": params_digest(agent),
    }


# --------------------------------------------------------------------------- fault points
_SAVE = """
    import torch
    from ckptcompat.agents.mock import MockAgent
    from ckptcompat.errors import InjectedFault
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    manager = SimpleCheckpointManager(ARGS["run"], ARGS["data"])
    torch.manual_seed(99)
    agent = MockAgent()
    try:
        if ARGS["what"] == "trainer":
            manager.save_trainer_state(torch.optim.Adam(agent.parameters()), ARGS["epoch"], 0)
        else:
            manager.save_agent(agent, ARGS["epoch"])
    except InjectedFault as exc:
        emit(raised=str(exc))
"""

_SCENARIOS = {
    "new_epoch": ("agent", 2),
    "overwrite_epoch": ("agent", 1),
    "trainer": ("trainer", 2),
}


@pytest.mark.parametrize("mode", ["raise", "exit"])
@pytest.mark.parametrize("point", FAULT_POINTS)
@pytest.mark.parametrize("scenario", sorted(_SCENARIOS))
def test_fault_point_keeps_the_previous_checkpoint(
    server: ForkServer,
    base_run: tuple[Path, dict[int, str]],
    tmp_path: Path,
    scenario: str,
    point: str,
    mode: str,
) -> None:
    """Guards a save interrupted at a named fault point (raise, or a hard exit with no
    cleanup) losing or corrupting a committed checkpoint, leaving an index entry whose
    digest describes other bytes, a temp file taken for a checkpoint, or the lock held.
    Overwriting an indexed epoch unlists it first, so its old entry may go but never lies."""
    base, digests = base_run
    data = tmp_path / "data"
    shutil.copytree(base, data)
    what, epoch = _SCENARIOS[scenario]
    suffix = ":exit" if mode == "exit" else ""
    result = server.run(
        _SAVE,
        {"run": RUN, "data": str(data), "what": what, "epoch": epoch},
        env={"CKPTCOMPAT_FAULT": point + suffix},
    )
    assert result.error is None, result.error
    if mode == "exit":
        assert result.code == FAULT_EXIT_CODE
    else:
        assert result.code == 0
        assert point in result.values("raised")[0]
    found = check_consistent(data)
    if scenario == "overwrite_epoch" and found["latest"] == 0:
        # The index write that unlists epoch 1 committed before the fault: epoch 1 is gone
        # from the index (its file may hold old or new bytes), never listed with a stale
        # digest; the previous epoch is the latest.
        assert found["agents"] == [0]
        assert found["digest"] == digests[0]
    else:
        assert found["latest"] == 1
        assert found["digest"] == digests[1]
    assert found["trainers"] == [0, 1]
    if mode == "raise":
        assert found["temps"] == []  # write_atomic removes its temp file on an exception
    # A checkpoint exists once (and only once) the index lists it.
    if scenario == "new_epoch":
        with pytest.raises(CheckpointNotFoundError):
            SimpleCheckpointManager(RUN, data).load_agent(2)
    # The next writer takes the lock, removes stale temp files and commits.
    manager = SimpleCheckpointManager(RUN, data)
    manager.save_agent(MockAgent(), 3)
    assert not any(is_temp_name(p.name) for p in _checkpoints(data).iterdir())
    assert check_consistent(data)["latest"] == 3


# --------------------------------------------------------------------------- kill loop
_TRAIN = """
    from pathlib import Path
    from ckptcompat.checkpoint import atomic, saving
    from ckptcompat.rl import trainer, trainer_config
    from ckptcompat.rl.ppo import PPOConfig

    original = atomic.write_atomic
    writes = [0]

    def signalling(path, write):
        # The handshake: tell the parent a save is starting, then write.
        writes[0] += 1
        emit(ready=writes[0], file=Path(path).name)
        return original(path, write)

    atomic.write_atomic = signalling  # write_bytes_atomic (index.json) looks it up here
    saving.write_atomic = signalling  # write_payload imported it by name
    if ARGS["fresh"]:
        config = trainer_config.TrainerConfig(
            env_id="CartPole-v1", seed=0, checkpoint_every=1,
            agent_class_path="ckptcompat.agents.mock.MockAgent",
            ppo=PPOConfig(num_envs=2, num_steps=16, num_minibatches=1, update_epochs=1),
        )
        run = trainer.Trainer.start(config, ARGS["run"], ARGS["data"], progress=False)
    else:
        run = trainer.Trainer.resume(ARGS["run"], ARGS["data"], progress=False)
    emit(resumed_from=run.epoch)
    run.train(ARGS["epochs"])
"""


def _complete(found: dict[str, Any]) -> int:
    """The last complete epoch: agent and trainer state both committed."""
    both = set(found["agents"]) & set(found["trainers"])
    return max(both) if both else -1


@pytest.mark.one_cell
@pytest.mark.slow
def test_sigkill_during_saves_never_loses_a_checkpoint(server: ForkServer, tmp_path: Path) -> None:
    """Guards data loss when a training process is SIGKILLed mid-save (OOM killer, pre-
    emption): 60 seeded kills, each a random delay after the child reports (over its pipe)
    that an atomic write is starting. After each: the latest checkpoint loads and matches
    its digest, every index entry matches its file, temp files are never taken for
    checkpoints, the lock is free, the last complete epoch never goes back, and
    ``Trainer.resume`` continues from exactly that epoch. Kills and losses are printed.

    The documented exception to "every test in every cell" (docs/design.md section 10): what is
    tested is the file-system protocol of atomic.py/manager.py (temp file, fsync, rename,
    index after file, flock), which does not depend on torch's version; the per-version
    part (torch writing through CountingWriter) is covered in every cell by the fault-point
    test above. Running the loop once keeps the suite fast.
    """
    rng = random.Random(_SEED)
    data = tmp_path / "data"
    first = server.run(_TRAIN, {"run": RUN, "data": str(data), "fresh": True, "epochs": 1})
    assert first.error is None and first.code == 0, (first.error, server.tail())
    committed = _complete(check_consistent(data))
    assert committed == 1
    kills, losses, landed = 0, [], {"temp file left": 0, "file ahead of index": 0, "clean": 0}
    while kills < KILLS:
        target = rng.randint(1, 8)  # kill during the target-th atomic write of this child
        delay_s = rng.uniform(0.0, 0.006)
        args = {"run": RUN, "data": str(data), "fresh": False, "epochs": 10**6}
        job = server.submit(_TRAIN, args)
        result = server.result(job)
        deadline = time.monotonic() + 60
        while len(result.values("ready")) < target and result.code is None:
            assert time.monotonic() < deadline, server.tail()
            server.next_event(1.0)
        resumed = result.values("resumed_from")
        if result.code is None:
            time.sleep(delay_s)
            server.kill(result.pid)
        server.wait(job)
        assert result.error is None, result.error
        assert result.code == -9, f"the child was not killed: {result.code}"
        kills += 1
        try:
            found = check_consistent(data)
            # The child's lock acquisition removed the temp files of the writers killed
            # before it; only its own (named with its pid) may be left.
            stale = [t for t in found["temps"] if not t.endswith(f".tmp-{result.pid}")]
            if stale:
                raise AssertionError(f"stale temp files of dead writers: {stale}")
            if resumed != [committed]:
                raise AssertionError(f"resumed from {resumed}, last complete epoch {committed}")
            if _complete(found) < committed:
                raise AssertionError(f"complete epoch went back from {committed} to {found}")
        except Exception as exc:  # count, keep going, report all at the end
            losses.append(f"kill {kills}: {type(exc).__name__}: {exc}")
            continue
        committed = _complete(found)
        ahead = any(
            (name := parse_filename(p.name)) is not None
            and name.kind == "agent"
            and name.epoch not in found["agents"]
            for p in _checkpoints(data).iterdir()
        )
        where = "temp file left" if found["temps"] else "file ahead of index" if ahead else "clean"
        landed[where] += 1
    print(
        f"\nSIGKILL loop: kills={kills} losses={len(losses)} last complete epoch={committed} "
        f"landed={landed}"
    )
    assert kills >= 50
    assert losses == [], "\n".join(losses)
    assert committed > 1, "no epoch completed between kills: the loop tested nothing"
    assert landed["temp file left"] > 0, "no kill landed inside a write"
