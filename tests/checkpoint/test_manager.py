"""SimpleCheckpointManager: round trips, trainer resume, selection, failures, lock, faults."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import AgentOutput, MockAgent, RecurrentAgent
from ckptcompat.checkpoint.atomic import FAULT_ENV, FAULT_POINTS, hash_file
from ckptcompat.checkpoint.format import build_agent_payload
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.uri import key_and_version
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    InjectedFault,
    InputError,
    InvalidArgumentError,
    RunLockedError,
    UnsafeCheckpointError,
)

T, B = 5, 3
SPACES = {
    "vector": (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)),
    "image": (gym.spaces.Box(0, 10, (7, 7, 3), np.uint8), gym.spaces.Discrete(7)),
}


def _obs(shape: tuple[int, ...], steps: int = T, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if len(shape) == 3:
        return torch.randint(0, 11, (steps, B, *shape), generator=gen, dtype=torch.uint8)
    return torch.randn(steps, B, *shape, generator=gen)


def _mock(seed: int = 0) -> MockAgent:
    torch.manual_seed(seed)
    return MockAgent()


def _recurrent(kind: str) -> RecurrentAgent:
    torch.manual_seed(0)
    agent = RecurrentAgent(*SPACES[kind], hidden_size=16, num_layers=2, encoder_size=24)
    agent.update_obs_normalizer(_obs(agent.obs_shape, seed=99))  # non-default buffers
    return agent


def _outputs(agent: Any, obs: torch.Tensor) -> list[AgentOutput]:
    """Greedy, given-action and sampled outputs over two chunks, passing the state on."""
    done = torch.zeros(obs.shape[:2])
    done[2, 1] = 1.0
    outs = []
    with torch.no_grad():
        state = agent.initial_state(B)
        for chunk in (slice(0, 2), slice(2, T)):
            out = agent(obs[chunk], state, done[chunk], deterministic=True)
            outs.append(out)
            outs.append(agent(obs[chunk], state, done[chunk], action=out.actions))
            torch.manual_seed(123)
            outs.append(agent(obs[chunk], state, done[chunk]))
            state = out.state
    return outs


def _assert_same_outputs(a: list[AgentOutput], b: list[AgentOutput]) -> None:
    for x, y in zip(a, b, strict=True):
        for name in ("actions", "logprobs", "entropy", "values"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name
        assert len(x.state) == len(y.state)
        for s, t in zip(x.state, y.state, strict=True):
            assert torch.equal(s, t)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.fixture
def manager(tmp_path: Path) -> SimpleCheckpointManager:
    return SimpleCheckpointManager("run", tmp_path / "data")


def _index(manager: SimpleCheckpointManager) -> dict[str, Any]:
    return json.loads((manager.checkpoint_dir / "index.json").read_text())


# --------------------------------------------------------------------------- round trips
def test_mock_agent_round_trip_is_bitwise(manager: SimpleCheckpointManager) -> None:
    """Guards weights or config changing in a save/load cycle (Metta pickled whole agents)."""
    agent = _mock()
    obs = _obs(agent.obs_shape)
    uri = manager.save_agent(agent, 0, {"agent_step": 64, "score": 0.5})
    loaded = manager.load_agent(0, verify="full")
    assert type(loaded) is MockAgent
    _assert_same_outputs(_outputs(agent, obs), _outputs(loaded, obs))
    _assert_same_outputs(_outputs(agent, obs), _outputs(manager.load_from_uri(uri), obs))


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_recurrent_agent_round_trip_is_bitwise(manager: SimpleCheckpointManager, kind: str) -> None:
    """Guards the LSTM, CNN/MLP encoder or obs-normalisation buffers not surviving a round
    trip, and the recurrent state diverging when carried across calls after reload."""
    agent = _recurrent(kind)
    obs = _obs(agent.obs_shape)
    manager.save_agent(agent, 3, {"agent_step": 10, "total_time_s": 1.5, "score": None})
    loaded = manager.load_agent()
    assert type(loaded) is RecurrentAgent
    assert loaded.config == agent.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in agent.state_dict().items())
    _assert_same_outputs(_outputs(agent, obs), _outputs(loaded, obs))
    # A state produced by the original continues identically in the reloaded agent.
    with torch.no_grad():
        state = agent(obs, agent.initial_state(B), torch.zeros(T, B)).state
        a = agent(obs, state, torch.zeros(T, B), deterministic=True)
        b = loaded(obs, state, torch.zeros(T, B), deterministic=True)
    _assert_same_outputs([a], [b])


def test_saved_files_load_weights_only_with_no_allowlist(manager: SimpleCheckpointManager) -> None:
    """Guards the "Unsupported global" failure of 2.6+'s weights_only default on our files."""
    agent = _recurrent("vector")
    uri = manager.save_agent(agent, 1)
    optimizer = torch.optim.Adam(agent.parameters())
    trainer_uri = manager.save_trainer_state(optimizer, 1, 0)
    for path in (uri, trainer_uri):
        loaded = torch_compat.load(path.removeprefix("file://"))
        assert isinstance(loaded, dict)
        assert loaded["format_version"] == 1


def test_index_records_size_and_digest_of_the_written_bytes(
    manager: SimpleCheckpointManager,
) -> None:
    """Guards the digest computed while torch.save writes disagreeing with the file."""
    manager.save_agent(_recurrent("image"), 2, {"agent_step": 7, "score": 1.25})
    (entry,) = _index(manager)["checkpoints"]
    path = manager.checkpoint_dir / "run_v2.pt"
    assert hash_file(path) == (entry["size_bytes"], entry["digest"])
    assert entry | {"size_bytes": 0, "digest": "", "created_at": ""} == {
        "epoch": 2,
        "agent_step": 7,
        "score": 1.25,
        "total_time_s": 0.0,
        "file": "run_v2.pt",
        "size_bytes": 0,
        "digest": "",
        "created_at": "",
    }


def test_load_from_uri_forms(manager: SimpleCheckpointManager, tmp_path: Path) -> None:
    """Guards any URI form the callers use (file://, bare, run dir, :latest) resolving to
    another checkpoint than the latest indexed one, and mock:// needing a file."""
    for epoch in (0, 1, 2):
        manager.save_agent(_mock(epoch), epoch)
    want = _params(_mock(2))
    ckpt = manager.checkpoint_dir
    for uri in (
        f"file://{ckpt}/run_v2.pt",
        str(ckpt / "run_v2.pt"),
        ckpt / "run_v2.pt",
        manager.run_dir,
        f"file://{manager.run_dir}",
        f"{manager.data_dir}/run:latest",
        f"file://{manager.data_dir}/run:latest",
    ):
        loaded = SimpleCheckpointManager.load_from_uri(uri)
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in want.items()), uri
    assert type(SimpleCheckpointManager.load_from_uri("mock://anything:v3")) is MockAgent


def test_same_agent_same_bytes_with_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards golden regeneration producing different bytes (temp-name-derived archive
    folder, wall-clock created_at)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = set()
    for sub in ("a", "b"):
        mgr = SimpleCheckpointManager("run", tmp_path / sub)
        mgr.save_agent(_recurrent("vector"), 4)
        digests.add(_index(mgr)["checkpoints"][0]["digest"])
    assert len(digests) == 1


# --------------------------------------------------------------------------- epoch 0
def test_epoch_zero_is_a_real_epoch(manager: SimpleCheckpointManager) -> None:
    """Guards ``if epoch:`` treating epoch 0 as "latest" (Metta's load_agent quirk)."""
    manager.save_agent(_mock(0), 0, {"agent_step": 0, "score": 0.0})
    assert torch.equal(manager.load_agent().actor.weight, _mock(0).actor.weight)
    manager.save_agent(_mock(5), 5)
    assert torch.equal(manager.load_agent(0).actor.weight, _mock(0).actor.weight)
    assert torch.equal(manager.load_agent().actor.weight, _mock(5).actor.weight)
    assert key_and_version(manager.checkpoint_dir / "run_v0.pt") == ("run", 0)
    assert manager.select_checkpoints("all", metric="agent_step")[-1].endswith("run_v0.pt")
    assert manager.find_best_checkpoint("score").endswith("run_v0.pt")  # 0.0 is a score


# --------------------------------------------------------------------------- selection
def test_selection_by_metric(manager: SimpleCheckpointManager) -> None:
    """Guards ranking by the wrong field, ties not going to the later epoch, and
    unscored checkpoints ranked as if their score were 0."""
    for epoch, step, score in [(0, 10, 0.1), (1, 30, None), (2, 20, 0.9), (3, 40, 0.9)]:
        manager.save_agent(_mock(), epoch, {"agent_step": step, "score": score})

    def names(uris: list[str]) -> list[str]:
        return [Path(u).name for u in uris]

    assert names(manager.select_checkpoints()) == ["run_v3.pt"]
    assert names(manager.select_checkpoints("latest", 2)) == ["run_v3.pt", "run_v2.pt"]
    assert names(manager.select_checkpoints("latest", 2, "agent_step")) == [
        "run_v3.pt",
        "run_v1.pt",
    ]
    assert names(manager.select_checkpoints("all", metric="score")) == [
        "run_v3.pt",
        "run_v2.pt",
        "run_v0.pt",
    ]
    assert Path(manager.find_best_checkpoint()).name == "run_v3.pt"
    assert [e.epoch for e in manager.list_checkpoints()] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="strategy"):
        manager.select_checkpoints("best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric"):
        manager.select_checkpoints(metric="total_time")
    with pytest.raises(ValueError, match="count"):
        manager.select_checkpoints(count=0)


def test_best_of_a_run_without_scores_is_not_found(manager: SimpleCheckpointManager) -> None:
    """Guards find_best_checkpoint returning None for callers that never check it."""
    manager.save_agent(_mock(), 0)
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint with a score"):
        manager.find_best_checkpoint()
    assert manager.select_checkpoints(metric="score") == []


def test_cleanup_keeps_the_newest_and_their_trainer_states(
    manager: SimpleCheckpointManager,
) -> None:
    """Guards cleanup deleting files the index still lists, or keeping orphan states."""
    optimizer = torch.optim.SGD(_mock().parameters(), lr=0.1)
    for epoch in range(5):
        manager.save_agent(_mock(), epoch)
        manager.save_trainer_state(optimizer, epoch, epoch * 10)
    assert manager.cleanup_old_checkpoints(keep_last_n=2) == 3
    index = _index(manager)
    assert [e["epoch"] for e in index["checkpoints"]] == [3, 4]
    assert [e["epoch"] for e in index["trainer_states"]] == [3, 4]
    files = sorted(p.name for p in manager.checkpoint_dir.glob("*.pt"))
    assert files == ["run_v3.pt", "run_v3.trainer.pt", "run_v4.pt", "run_v4.trainer.pt"]
    assert manager.cleanup_old_checkpoints(keep_last_n=5) == 0
    assert manager.cleanup_old_checkpoints(keep_last_n=0) == 2
    assert list(manager.checkpoint_dir.glob("*.pt")) == []
    assert manager.load_trainer_state() is None
    with pytest.raises(ValueError, match="keep_last_n"):
        manager.cleanup_old_checkpoints(-1)


# --------------------------------------------------------------------------- trainer state
def _train_steps(agent: MockAgent, optimizer: Any, scheduler: Any, steps: int) -> list[Any]:
    """A few SGD steps whose batches come from all three global RNGs; returns the draws."""
    draws = []
    for _ in range(steps):
        obs = torch.randn(2, 8, 4) + float(np.random.randn()) + random.random()
        out = agent(obs, (), torch.zeros(2, 8))
        loss = -(out.logprobs * out.values.detach()).mean() + out.values.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        draws.append((obs.sum().item(), loss.item()))
    return draws


def test_trainer_state_resume_continues_identically(manager: SimpleCheckpointManager) -> None:
    """Guards a resume that differs from the uninterrupted run: Adam moments or step
    counts, the scheduler position, or any of the torch/numpy/python RNG streams."""
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    agent = MockAgent()
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    _train_steps(agent, optimizer, scheduler, 3)
    manager.save_agent(agent, 3, {"agent_step": 48})
    manager.save_trainer_state(optimizer, 3, 48, scheduler=scheduler, extra={"seed": 1})
    straight = _train_steps(agent, optimizer, scheduler, 4)
    straight_params = _params(agent)
    straight_lr = scheduler.get_last_lr()

    torch.manual_seed(999)  # scramble every stream: the resume must restore them all
    np.random.seed(999)
    random.seed(999)
    resumed_agent = manager.load_agent(3)
    resumed_optimizer = torch.optim.Adam(resumed_agent.parameters(), lr=1e-2)
    resumed_scheduler = torch.optim.lr_scheduler.StepLR(resumed_optimizer, step_size=2, gamma=0.5)
    state = manager.load_trainer_state(optimizer=resumed_optimizer, scheduler=resumed_scheduler)
    assert state is not None
    assert (state.epoch, state.agent_step, state.extra) == (3, 48, {"seed": 1})
    resumed = _train_steps(resumed_agent, resumed_optimizer, resumed_scheduler, 4)
    assert resumed == straight
    assert resumed_scheduler.get_last_lr() == straight_lr
    for key, value in straight_params.items():
        assert torch.equal(resumed_agent.state_dict()[key], value), key
    for key, value in optimizer.state_dict()["state"].items():
        for name, tensor in value.items():
            assert torch.equal(resumed_optimizer.state_dict()["state"][key][name], tensor)


def test_trainer_state_none_only_when_the_run_has_none(manager: SimpleCheckpointManager) -> None:
    """Guards a missing or unreadable trainer state turning into a silent None (Metta's
    broad except) and so into a fresh start."""
    assert manager.load_trainer_state() is None
    optimizer = torch.optim.SGD(_mock().parameters(), lr=0.1)
    manager.save_trainer_state(optimizer, 0, 0)
    assert manager.load_trainer_state().epoch == 0  # type: ignore[union-attr]
    with pytest.raises(CheckpointNotFoundError, match="no trainer state at epoch 1"):
        manager.load_trainer_state(1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with pytest.raises(AgentMismatchError, match="saved none"):
        manager.load_trainer_state(0, scheduler=scheduler)
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))] * 1, lr=0.1)
    with pytest.raises(AgentMismatchError, match="optimizer"):
        manager.load_trainer_state(0, optimizer=other)
    (manager.checkpoint_dir / "run_v0.trainer.pt").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError):
        manager.load_trainer_state()


# --------------------------------------------------------------------------- failures
def test_missing_checkpoints_raise_not_found(manager: SimpleCheckpointManager) -> None:
    """Guards a missing checkpoint surfacing as None or as a bare FileNotFoundError."""
    with pytest.raises(CheckpointNotFoundError, match="has no checkpoint"):
        manager.load_agent()
    manager.save_agent(_mock(), 1)
    with pytest.raises(CheckpointNotFoundError, match=r"indexed epochs \[1\]"):
        manager.load_agent(2)
    (manager.checkpoint_dir / "run_v1.pt").unlink()
    with pytest.raises(CheckpointNotFoundError, match="file is gone"):
        manager.load_agent(1)
    with pytest.raises(CheckpointNotFoundError):
        SimpleCheckpointManager.load_from_uri(manager.checkpoint_dir / "run_v7.pt")


def test_old_except_clauses_still_catch(manager: SimpleCheckpointManager, tmp_path: Path) -> None:
    """Guards issue 15 fault 7: old callers wrote ``except FileNotFoundError`` around a load
    of a missing checkpoint and ``except ValueError`` around a bad run name, epoch or URI;
    our typed errors must still be caught there (and stay CheckpointErrors)."""
    for call in (
        manager.load_agent,
        lambda: SimpleCheckpointManager.load_from_uri(tmp_path / "nope_v3.pt"),
        lambda: SimpleCheckpointManager.load_from_uri(f"{tmp_path}/ghost:latest"),
    ):
        try:
            call()
        except FileNotFoundError as exc:  # the old spelling
            assert isinstance(exc, CheckpointNotFoundError)
        else:
            pytest.fail("no error for a missing checkpoint")
    for call in (
        lambda: SimpleCheckpointManager("name with spaces", tmp_path),
        lambda: SimpleCheckpointManager("", tmp_path),
        lambda: manager.save_agent(_mock(), -1),
        lambda: manager.save_agent(_mock(), 0, {"bogus": 1}),
        lambda: SimpleCheckpointManager.load_from_uri("wandb://run/x:v1"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert isinstance(info.value, CheckpointError)
    # The message is the composed one, not OSError's "[Errno ...]" formatting.
    with pytest.raises(FileNotFoundError, match=r"^\S+: run 'run' has no checkpoint"):
        manager.load_agent()


@pytest.mark.parametrize("verify", ["full", "size", "none"])
@pytest.mark.parametrize("keep_bytes", [0, 200])
def test_truncated_and_empty_files_are_corrupt(
    manager: SimpleCheckpointManager, verify: str, keep_bytes: int
) -> None:
    """Guards a crash-truncated or zero-byte file surfacing as a zip/pickle traceback or a
    None; with verify="none" the loader's own sniffing still catches it."""
    manager.save_agent(_mock(), 0)
    path = manager.checkpoint_dir / "run_v0.pt"
    path.write_bytes(path.read_bytes()[:keep_bytes])
    with pytest.raises(CorruptCheckpointError):
        manager.load_agent(0, verify=verify)  # type: ignore[arg-type]


def _flip_tensor_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    offset = data.index(b"data/0") + 200  # inside the first tensor record
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_is_caught_by_full_verification_only(
    manager: SimpleCheckpointManager,
) -> None:
    """Guards the default verify mode: torch.load does not check the zip CRCs, so a bit
    flipped in tensor data loads silently as a wrong weight unless the digest is checked."""
    agent = _recurrent("vector")
    manager.save_agent(agent, 0)
    _flip_tensor_byte(manager.checkpoint_dir / "run_v0.pt")
    with pytest.raises(CorruptCheckpointError, match="digest differs"):
        manager.load_agent(0)  # the default is "full"
    with pytest.raises(CorruptCheckpointError, match="digest differs"):
        SimpleCheckpointManager.load_from_uri(manager.run_dir)
    silently_wrong = manager.load_agent(0, verify="size")
    assert any(
        not torch.equal(v, silently_wrong.state_dict()[k]) for k, v in agent.state_dict().items()
    )


def _write_payload(path: Path, mutate: Any) -> None:
    payload = build_agent_payload(
        _mock(), run="run", epoch=0, agent_step=0, total_time_s=0.0, score=None
    )
    mutate(payload)
    torch_compat.save(payload, path)


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (
            lambda p: p["agent"].update(class_path="ckptcompat.agents.nope.GoneAgent"),
            AgentMismatchError,
            "nope",
        ),
        (
            lambda p: p["agent"].update(class_path="ckptcompat.agents.mock.MockAgnet"),
            AgentMismatchError,
            "MockAgent",
        ),
        (lambda p: p["state_dict"].pop("actor.bias"), AgentMismatchError, "actor.bias"),
        (
            lambda p: p["state_dict"].update({"critic.weight": torch.zeros(1, 5)}),
            AgentMismatchError,
            "size mismatch",
        ),
        (
            lambda p: p["state_dict"].update({"actor.bias": torch.zeros(2, dtype=torch.float64)}),
            AgentMismatchError,
            "dtypes",
        ),
        (
            lambda p: p["agent"]["config"]["action_space"].update(n=3),
            AgentMismatchError,
            "size mismatch",
        ),
        (lambda p: p.update(format_version=3), IncompatibleCheckpointError, "newer"),
    ],
    ids=["unknown-module", "misspelt-class", "missing-key", "shape", "dtype", "config", "newer"],
)
def test_payload_mismatches_raise_typed_errors(
    tmp_path: Path, mutate: Any, error: type[Exception], match: str
) -> None:
    """Guards an unknown class_path, a state_dict that does not fit the saved config, or a
    newer format being loaded partially, silently cast, or reported as a bare traceback."""
    path = tmp_path / "run_v0.pt"
    _write_payload(path, mutate)
    with pytest.raises(error, match=match):
        SimpleCheckpointManager.load_from_uri(path)


def test_foreign_files_raise_typed_errors(tmp_path: Path) -> None:
    """Guards foreign files (bare state_dict, whole pickled agent, HTML, LFS pointer) being
    unpickled unsafely or failing with an untyped error."""
    bare = tmp_path / "bare.pt"
    torch_compat.save(_mock().state_dict(), bare)
    with pytest.raises(IncompatibleCheckpointError, match="migrate"):
        SimpleCheckpointManager.load_from_uri(bare)
    whole = tmp_path / "whole.pt"
    torch_compat.save(_mock(), whole)
    with pytest.raises(UnsafeCheckpointError):
        SimpleCheckpointManager.load_from_uri(whole)
    html = tmp_path / "page.pt"
    html.write_text("<!doctype html><html></html>")
    with pytest.raises(CorruptCheckpointError, match="HTML"):
        SimpleCheckpointManager.load_from_uri(html)
    lfs = tmp_path / "lfs.pt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 3\n")
    with pytest.raises(CorruptCheckpointError, match="Git-LFS"):
        SimpleCheckpointManager.load_from_uri(lfs)


def test_bad_index_is_corrupt_not_empty(manager: SimpleCheckpointManager) -> None:
    """Guards a damaged index.json read as "no checkpoints" (a resume would start over)."""
    manager.save_agent(_mock(), 0)
    (manager.checkpoint_dir / "index.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match=r"index\.json"):
        manager.load_agent()
    with pytest.raises(CorruptCheckpointError):
        manager.load_trainer_state()


def test_bad_arguments_are_refused(manager: SimpleCheckpointManager) -> None:
    """Guards misspelt metadata keys ('total_time') being dropped silently."""
    with pytest.raises(CheckpointError, match="unknown checkpoint metadata keys"):
        manager.save_agent(_mock(), 0, {"total_time": 3})
    with pytest.raises(CheckpointError, match="epoch must be"):
        manager.save_agent(_mock(), -1)
    with pytest.raises(ValueError, match="verify"):
        manager.load_agent(verify="sha256")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="invalid run name"):
        SimpleCheckpointManager("a:b", manager.data_dir)


# --------------------------------------------------------------------------- lock
_HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from ckptcompat.checkpoint.atomic import RunLock
    lock = RunLock(sys.argv[1])  # keep a reference: the lock dies with the object
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_second_writer_is_locked_out_until_the_holder_is_killed(
    manager: SimpleCheckpointManager,
) -> None:
    """Guards two live writers interleaving one run's files and index, and a SIGKILLed
    writer's lock blocking the run forever."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(manager.checkpoint_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            manager.save_agent(_mock(), 0)
        with pytest.raises(RunLockedError):
            manager.cleanup_old_checkpoints(0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        manager.save_agent(_mock(), 0)
        assert [e.epoch for e in manager.list_checkpoints()] == [0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_with_block_holds_the_lock_for_the_whole_run(manager: SimpleCheckpointManager) -> None:
    """Guards a second trainer on the same run slipping in between two saves."""
    other = SimpleCheckpointManager("run", manager.data_dir)
    with manager:
        manager.save_agent(_mock(), 0)
        with pytest.raises(RunLockedError):
            other.save_agent(_mock(), 1)
        manager.save_agent(_mock(), 1)
        assert other.load_agent(1) is not None  # readers never need the lock
    other.save_agent(_mock(), 2)


# --------------------------------------------------------------------------- faults
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_fault_points_leave_previous_checkpoint_and_index_intact(
    manager: SimpleCheckpointManager, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """Guards a save interrupted at any step corrupting the previous checkpoint or the
    index, leaking a temp file, or committing an epoch that was not completely written."""
    manager.save_agent(_mock(0), 0)
    optimizer = torch.optim.SGD(_mock().parameters(), lr=0.1)
    manager.save_trainer_state(optimizer, 0, 0)
    index_before = (manager.checkpoint_dir / "index.json").read_bytes()
    monkeypatch.setenv(FAULT_ENV, point)
    with pytest.raises(InjectedFault):
        manager.save_agent(_mock(1), 1)
    with pytest.raises(InjectedFault):
        manager.save_trainer_state(optimizer, 1, 10)
    monkeypatch.delenv(FAULT_ENV)
    assert (manager.checkpoint_dir / "index.json").read_bytes() == index_before
    assert not [p for p in manager.checkpoint_dir.iterdir() if ".tmp-" in p.name]
    assert torch.equal(manager.load_agent().actor.weight, _mock(0).actor.weight)
    assert manager.load_trainer_state().epoch == 0  # type: ignore[union-attr]
    with pytest.raises(CheckpointNotFoundError):
        manager.load_agent(1)


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_fault_while_overwriting_never_indexes_other_bytes(
    manager: SimpleCheckpointManager, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """Guards re-saving an indexed epoch: a crash mid-replace must not leave an index entry
    whose size and digest describe the old bytes of a replaced file."""
    manager.save_agent(_mock(0), 0)
    monkeypatch.setenv(FAULT_ENV, point)
    with pytest.raises(InjectedFault):
        manager.save_agent(_mock(1), 0)
    monkeypatch.delenv(FAULT_ENV)
    try:
        loaded = manager.load_agent(0, verify="full")
    except CheckpointNotFoundError:
        return  # unlisted: consistent
    assert torch.equal(loaded.actor.weight, _mock(0).actor.weight)


_KILLED_SAVE = textwrap.dedent(
    """
    import sys, torch
    from ckptcompat.agents import MockAgent
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    SimpleCheckpointManager("run", sys.argv[1]).save_agent(MockAgent(), 1)
    """
)


@pytest.mark.slow
def test_writer_killed_mid_save_leaves_a_usable_run(manager: SimpleCheckpointManager) -> None:
    """Guards a writer killed mid-save (no cleanup ran) leaving the lock held, a temp file
    mistaken for a checkpoint, or a damaged index. Slow: the subprocess imports torch."""
    manager.save_agent(_mock(0), 0)
    env = {**os.environ, FAULT_ENV: "after_temp_write:exit"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(manager.data_dir)], env=env, check=False
    )
    assert proc.returncode == 137
    assert [p.name for p in manager.checkpoint_dir.iterdir() if ".tmp-" in p.name]
    assert [e.epoch for e in manager.list_checkpoints()] == [0]
    manager.save_agent(_mock(2), 2)  # takes the lock, removes the stale temp
    assert not [p for p in manager.checkpoint_dir.iterdir() if ".tmp-" in p.name]
    assert [e.epoch for e in manager.list_checkpoints()] == [0, 2]


def test_unusable_data_dir_is_an_input_error_and_writes_nothing(tmp_path: Path) -> None:
    """Guards a data_dir running through a file: save_agent raised a raw
    NotADirectoryError/FileExistsError and load_agent a CorruptCheckpointError telling the
    user to restore index.json from a backup (found by a new user's trial, 2026-12-07).
    Both are now an InputError naming the file in the way, and nothing is written."""
    blocker = tmp_path / "weights.pt"
    blocker.write_bytes(b"not a directory")
    manager = SimpleCheckpointManager("r", blocker / "sub")
    with pytest.raises(InputError, match=r"weights\.pt is a file, not a directory"):
        manager.save_agent(MockAgent(), 0, metadata={"agent_step": 0, "score": None})
    with pytest.raises(InputError, match=r"weights\.pt is a file, not a directory"):
        manager.load_agent()
    assert blocker.read_bytes() == b"not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]


def test_bad_arguments_are_invalid_argument_errors(tmp_path: Path) -> None:
    """Guards plain ValueErrors (no expected/found/fix) for verify=, keep_last_n=,
    cache_size= and select_checkpoints' arguments: InvalidArgumentError, still a
    ValueError for old callers' except clauses."""
    manager = SimpleCheckpointManager("r", tmp_path)
    manager.save_agent(MockAgent(), 0, metadata={"agent_step": 0, "score": None})
    calls = [
        lambda: manager.load_agent(verify="sha"),  # type: ignore[arg-type]
        lambda: manager.cleanup_old_checkpoints(-1),
        lambda: SimpleCheckpointManager("r", tmp_path, cache_size=-1),
        lambda: manager.select_checkpoints("best"),
        lambda: manager.select_checkpoints(count=0),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        assert isinstance(caught.value, ValueError) and "must be" in str(caught.value)
