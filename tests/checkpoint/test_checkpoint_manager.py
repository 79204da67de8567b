"""Deprecated CheckpointManager: the call patterns of Metta's #2366 checkpoint manager.

Written from the old callers' patterns (the trainer's resume and the #2366 tests), not
copied: construction by ``(run_name, run_dir)`` or ``run=``, ``total_time`` metadata,
``save_trainer_state(..., stopwatch_state=)`` and ``load_trainer_state()`` read as a dict.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from ckptcompat.agents import MockAgent
from ckptcompat.checkpoint import CheckpointManager, SimpleCheckpointManager, legacy
from ckptcompat.errors import CheckpointError

# The deprecated methods warn on every call (test_deprecated_methods_warn_at_the_caller
# asserts it); the other tests exercise what they do.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:CheckpointManager\.\w+ is deprecated:DeprecationWarning"
)


def _manager(*args: object, **kwargs: object) -> CheckpointManager:
    with pytest.deprecated_call():
        return CheckpointManager(*args, **kwargs)  # type: ignore[arg-type]


def test_2366_constructor_spellings(tmp_path: Path) -> None:
    """Guards issue 15's missing #2366 spelling CheckpointManager(run_name, run_dir): files
    go to run_dir/<run>/checkpoints as there; run= (renamed the same day) works too, and
    an invalid run name is a ValueError as the old manager raised."""
    positional = _manager("test_run", tmp_path)
    keyword = _manager(run_name="test_run", run_dir=tmp_path)
    renamed = _manager(run="test_run", run_dir=tmp_path, cache_size=0)
    for manager in (positional, keyword, renamed):
        assert isinstance(manager, SimpleCheckpointManager)
        assert manager.checkpoint_dir == tmp_path / "test_run" / "checkpoints"
        assert Path(manager.run_dir) / "test_run" / "checkpoints" == manager.checkpoint_dir
        assert manager.run_name == manager.run == "test_run"
    for bad in ("", "name with spaces", "name/with/slash", "name*with*asterisk"):
        with pytest.raises(ValueError), pytest.deprecated_call():
            CheckpointManager(run=bad, run_dir=tmp_path)
    with pytest.raises(ValueError, match="both"), pytest.deprecated_call():
        CheckpointManager("a", tmp_path, run_name="b")


def test_total_time_metadata_and_round_trip(tmp_path: Path) -> None:
    """Guards #2366 callers' metadata {"agent_step", "total_time", "score"}: total_time
    (seconds) is stored as total_time_s; selection by score and loading work as before."""
    manager = _manager("run", tmp_path)
    for epoch, score in ((1, 0.5), (5, 0.9), (10, 0.8)):
        metadata = {"agent_step": epoch * 100, "total_time": epoch * 30, "score": score}
        manager.save_agent(MockAgent(), epoch, metadata)
    entries = {e.epoch: e for e in manager.list_checkpoints()}
    assert entries[5].total_time_s == 150.0 and entries[10].agent_step == 1000
    assert manager.select_checkpoints("latest", 1, "score")[0].endswith("run_v5.pt")
    assert isinstance(manager.load_agent(), MockAgent)
    with pytest.raises(CheckpointError, match="both"):
        manager.save_agent(MockAgent(), 2, {"total_time": 1, "total_time_s": 1.0})


def test_trainer_state_with_stopwatch_reads_as_a_dict(tmp_path: Path) -> None:
    """Guards #2366 resume code: save_trainer_state(..., stopwatch_state=) then
    state = load_trainer_state(); state["epoch"], state["optimizer_state"],
    state["stopwatch_state"]; None only when the run has no trainer state."""
    manager = _manager("run", tmp_path)
    assert manager.load_trainer_state() is None
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))])
    manager.save_trainer_state(optimizer, 5, 1000, stopwatch_state={"elapsed_time": 123.45})
    state = manager.load_trainer_state()
    assert state is not None
    assert state["epoch"] == 5 and state["agent_step"] == 1000
    assert state["stopwatch_state"]["elapsed_time"] == 123.45
    assert "optimizer_state" in state and state["optimizer_state"] == state.optimizer_state
    assert state.get("curriculum_state") is None and "curriculum_state" not in state
    assert state.keys()[:3] == ["epoch", "agent_step", "optimizer_state"]
    with pytest.raises(KeyError, match="trainer-state keys"):
        state["nope"]
    manager.save_trainer_state(optimizer, 6, 1100)  # the final save passes no stopwatch
    assert "stopwatch_state" not in manager.load_trainer_state()  # type: ignore[operator]


def test_replacement_does_not_warn(tmp_path: Path) -> None:
    """Guards the DeprecationWarning leaking into SimpleCheckpointManager (the replacement)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        SimpleCheckpointManager("run", tmp_path).save_agent(MockAgent(), 0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_load_from_uri_reads_2366_and_g1_files(tmp_path: Path) -> None:
    """Guards issue 15b bug 1: CheckpointManager.load_from_uri('.../run__e1__s128__t0__sc130000.pt')
    (a file #2366's save_agent wrote) raised UnsafeCheckpointError although K3 promises
    load_from_uri still reads old names; the G1 model_0001.pt failed the same way."""
    agent = MockAgent()
    dunder = legacy.write_g2(agent, tmp_path / "run__e1__s128__t0__sc130000.pt")
    colon = legacy.write_g2(agent, tmp_path / "run:v2.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ckptcompat.policy import PolicyMetadata, PolicyRecord

        record = PolicyRecord(None, "run", None, PolicyMetadata(epoch=1))
    record.policy = agent
    g1 = legacy.write_g1(record, tmp_path / "run" / "checkpoints" / "model_0001.pt")
    for path in (dunder, colon, g1):
        for uri in (str(path), f"file://{path}"):
            for loader in (CheckpointManager, SimpleCheckpointManager):
                loaded = loader.load_from_uri(uri)
                assert isinstance(loaded, MockAgent) and _same_weights(loaded, agent)


def test_select_by_score_keeps_unscored_checkpoints(tmp_path: Path) -> None:
    """Guards issue 15b bug 4: select_checkpoints('all', metric='score') over epochs 1 (score
    0.5), 2 and 3 (no score) answered only epoch 1, and [] for a run without scores (the
    caller's uris[0] then raised IndexError); #2366 listed every file, a missing score as 0."""
    manager = _manager("r", tmp_path)
    manager.save_agent(MockAgent(), 1, {"score": 0.5})
    manager.save_agent(MockAgent(), 2, {"agent_step": 2})
    manager.save_agent(MockAgent(), 3, {})
    names = [uri.rsplit("/", 1)[1] for uri in manager.select_checkpoints("all", metric="score")]
    assert names == ["r_v1.pt", "r_v3.pt", "r_v2.pt"]
    unscored = _manager("u", tmp_path)
    unscored.save_agent(MockAgent(), 0, {})
    assert unscored.select_checkpoints("latest", 1, "score")[0].endswith("u_v0.pt")
    with pytest.raises(ValueError, match="count"):
        manager.select_checkpoints("latest", 0, "score")


def test_numpy_scalars_in_save_metadata(tmp_path: Path) -> None:
    """Guards issue 15b bug 6: save_agent(agent, 4, {'score': np.float32(0.5)}) raised
    "score must be a finite number or None ... found np.float32(0.5)" (and total_time as
    np.float32 was refused) while np.int64 agent_step and PolicyStore took numpy scalars;
    an agent_step error spoke of "a valid epoch"."""
    import numpy as np

    manager = _manager("r", tmp_path)
    metadata = {"agent_step": np.int64(7), "total_time": np.float32(1.5), "score": np.float32(0.5)}
    manager.save_agent(MockAgent(), 4, metadata)
    entry = manager.list_checkpoints()[0]
    assert (entry.agent_step, entry.total_time_s, entry.score) == (7, 1.5, 0.5)
    assert type(entry.score) is float and type(entry.total_time_s) is float
    with pytest.raises(CheckpointError, match="agent_step") as caught:
        manager.save_agent(MockAgent(), 5, {"agent_step": -1})
    assert "epoch" not in str(caught.value)
    with pytest.raises(CheckpointError, match="finite"):
        manager.save_agent(MockAgent(), 5, {"score": np.float32("nan")})


def test_save_agent_takes_2366_wandb_run(tmp_path: Path) -> None:
    """Guards issue 15b bug 5: cm.save_agent(agent, 4, {...}, wandb_run=None) raised
    TypeError (unexpected keyword 'wandb_run'), #2366's signature; a real run is not
    uploaded to, and a warning says so."""
    manager = _manager("r", tmp_path)
    uri = manager.save_agent(MockAgent(), 4, {"agent_step": 1}, wandb_run=None)
    assert uri.startswith("file://") and uri.endswith("r_v4.pt")
    with pytest.warns(UserWarning, match="does not upload to wandb"):
        uri = manager.save_agent(MockAgent(), 5, {"agent_step": 2}, object())
    assert uri.endswith("r_v5.pt")


def test_deprecated_methods_warn_at_the_caller(tmp_path: Path) -> None:
    """Guards issue 15b's doc finding: rows K2 and K7 said deprecated, but only the
    constructor warned; save_agent, save_trainer_state and load_trainer_state now warn
    once each, at the caller's line, naming the replacement."""
    manager = _manager("r", tmp_path)
    optimizer = torch.optim.SGD(MockAgent().parameters(), lr=0.1)
    calls = (
        lambda: manager.save_agent(MockAgent(), 1, {"agent_step": 1}),
        lambda: manager.save_trainer_state(optimizer, 1, 1),
        lambda: manager.load_trainer_state(restore_rng=False),
    )
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert [w.category for w in caught] == [DeprecationWarning]
        assert caught[0].filename == __file__
        assert "SimpleCheckpointManager" in str(caught[0].message)


def test_keys_2366_ignored_are_ignored_with_a_warning(tmp_path: Path) -> None:
    """Guards issue 15b's doc finding on K2: save_agent refused metadata keys that #2366
    ignored and Metta's trainer passed (total_train_time, avg_reward, category_scores;
    upload_to_wandb and is_final without a wandb run). This reverses the old assertion
    that upload_to_wandb is a ValueError: the #2366 call must run."""
    manager = _manager("r", tmp_path)
    metadata = {
        "agent_step": 5,
        "total_time": 2,
        "score": 0.5,
        "total_train_time": 2.0,
        "avg_reward": 1.0,
        "category_scores": {"nav": 0.5},
        "upload_to_wandb": False,
        "is_final": True,
    }
    with pytest.warns(UserWarning, match="ignores metadata keys") as caught:
        manager.save_agent(MockAgent(), 3, metadata)
    [message] = [str(w.message) for w in caught if w.category is UserWarning]
    assert "['avg_reward', 'category_scores', 'is_final', 'total_train_time', 'upload" in message
    entry = manager.list_checkpoints()[0]
    assert (entry.agent_step, entry.total_time_s, entry.score) == (5, 2.0, 0.5)


def test_normalize_uri_and_get_policy_metadata(tmp_path: Path) -> None:
    """Guards issue 15b's missing rows: #2366's static CheckpointManager.normalize_uri and
    get_policy_metadata raised AttributeError."""
    manager = _manager("r", tmp_path)
    uri = manager.save_agent(MockAgent(), 3, {"agent_step": 30, "total_time": 7.9})
    path = uri.removeprefix("file://")
    with pytest.deprecated_call():
        assert CheckpointManager.normalize_uri(path) == uri
        assert CheckpointManager.normalize_uri("mock://k") == "mock://k"
        metadata = CheckpointManager.get_policy_metadata(path)
    assert metadata == {
        "run_name": "r",
        "epoch": 3,
        "uri": uri,
        "original_uri": path,
        "agent_step": 30,
        "total_time": 7,
        "score": 0.0,
    }
    old = legacy.write_g2(MockAgent(), tmp_path / "old__e2__s64__t5__sc5000.pt")
    with pytest.deprecated_call():
        facts = CheckpointManager.get_policy_metadata(f"file://{old}")
    assert (facts["run_name"], facts["epoch"], facts["agent_step"], facts["score"]) == (
        "old",
        2,
        64,
        0.5,
    )
