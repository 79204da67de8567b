"""Deprecated PolicyStore: discovery, selection, loading and saving by URI."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import MockAgent
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import CheckpointError
from ckptcompat.evaluation.stats_db import EvalStatsDB, SimulationStatsDB
from ckptcompat.policy import (
    MockPolicyRecord,
    PolicyMetadata,
    PolicyMissingError,
    PolicyRecord,
    PolicyStore,
)


def _store(tmp_path: Path) -> PolicyStore:
    with pytest.deprecated_call():
        return PolicyStore(device="cpu", data_dir=tmp_path)


def _g1_dir(tmp_path: Path, epochs: list[int], scores: list[float | None]) -> Path:
    """model_NNNN.pt files written in a scrambled order (filesystem order is not epoch order)."""
    directory = tmp_path / "oldrun" / "checkpoints"
    for epoch, score in zip(epochs, scores, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            meta = PolicyMetadata(epoch=epoch, agent_step=epoch * 10)
            if score is not None:
                meta["score"] = score
            record = PolicyRecord(None, "oldrun", None, meta)
        torch.manual_seed(epoch)
        record.policy = MockAgent()
        legacy.write_g1(record, directory / legacy.g1_filename(epoch))
    return directory


def test_latest_orders_model_files_by_number(tmp_path: Path) -> None:
    """Guards os.listdir()[-1] (filesystem order) picking an arbitrary 'latest' G1 file."""
    directory = _g1_dir(tmp_path, [10, 2, 9, 100], [None] * 4)
    store = _store(tmp_path)
    with pytest.deprecated_call():
        prs = store.policy_records(str(directory), "latest", n=3)
    assert [pr.metadata.epoch for pr in prs] == [100, 10, 9]
    assert prs[0].key_and_version() == ("oldrun", 100)


def test_top_by_score_and_all_and_rand(tmp_path: Path) -> None:
    """Guards 'top' ignoring metadata scores, and 'all'/'rand' selectors."""
    directory = _g1_dir(tmp_path, [1, 2, 3, 4, 5], [0.1, 0.9, 0.5, 0.2, 0.3])
    store = _store(tmp_path)
    with pytest.deprecated_call():
        best = store.policy_record(f"file://{directory}", "top", metric="score")
    assert best.metadata.epoch == 2
    with pytest.deprecated_call():
        assert len(store.policy_records(str(directory), "all")) == 5
    with pytest.deprecated_call():
        picked = store.policy_records(str(directory), "rand", n=2)
    assert len({pr.metadata.epoch for pr in picked}) == 2


def test_top_falls_back_to_latest_below_80_percent_scored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards the old store's rule: fewer than 80% scored records -> latest, and it logs."""
    directory = _g1_dir(tmp_path, [1, 2, 3], [0.9, None, None])
    with caplog.at_level(logging.WARNING), pytest.deprecated_call():
        pr = _store(tmp_path).policy_record(str(directory), "top")
    assert pr.metadata.epoch == 3
    assert "selecting the latest" in caplog.text


def test_managed_run_and_latest_uri(tmp_path: Path) -> None:
    """Guards the store not understanding the new manager's runs and :latest URIs."""
    manager = SimpleCheckpointManager("run", tmp_path)
    for epoch, score in [(0, 0.5), (1, 0.1), (2, 0.3)]:
        manager.save_agent(MockAgent(), epoch, {"score": score, "total_time_s": 2.0})
    store = _store(tmp_path)
    with pytest.deprecated_call():
        assert store.policy_record(str(tmp_path / "run")).metadata.epoch == 0  # top score
    with pytest.deprecated_call():
        latest = store.policy_record(f"{tmp_path}/run:latest")
    assert latest.key_and_version() == ("run", 2) and latest.metadata.train_time == 2.0
    with pytest.deprecated_call():
        assert store.policy_record("run", "latest").metadata.epoch == 2  # relative to data_dir


def test_load_from_uri_loads_the_policy(tmp_path: Path) -> None:
    """Guards load_from_uri returning a record whose policy is not loaded or wrong."""
    directory = _g1_dir(tmp_path, [4], [None])
    with pytest.deprecated_call():
        record = _store(tmp_path).load_from_uri(str(directory / "model_0004.pt"))
    assert record._cached_policy is not None
    torch.manual_seed(4)
    assert torch.equal(record.policy.actor.weight, MockAgent().actor.weight)


def test_policy_record_or_mock(tmp_path: Path) -> None:
    """Guards play/replay without a policy (None URI gives a mock)."""
    store = _store(tmp_path)
    with pytest.deprecated_call():
        mock = store.policy_record_or_mock(None, run_name="play")
    assert isinstance(mock, MockPolicyRecord) and mock.run_name == "play"
    assert isinstance(mock.policy, MockAgent)


def test_save_writes_the_safe_format(tmp_path: Path) -> None:
    """Guards PolicyStore.save pickling the whole record (unloadable on 2.6+)."""
    store = _store(tmp_path)
    with pytest.deprecated_call():
        record = PolicyRecord(store, "saved", None, PolicyMetadata(epoch=0, train_time=1.5))
    record.policy = MockAgent()
    target = tmp_path / "out" / "saved_v0.pt"
    with pytest.deprecated_call():
        store.save(record, target)
    payload = torch_compat.load(target)  # weights_only=True, no allowlist
    assert payload["format"] == "ckptcompat.agent"
    assert payload["metadata"]["total_time_s"] == 1.5
    assert record.uri == f"file://{target}" and record.key_and_version() == ("saved", 0)
    with pytest.deprecated_call():
        store.save(record, tmp_path / "again_v0.pt")
    with pytest.deprecated_call():
        store.save(record)  # pr.file_path exists: replaced, as the old store did
    assert record.uri == f"file://{tmp_path / 'again_v0.pt'}"


@pytest.mark.parametrize("uri", ["wandb://run/x:v1", "s3://bucket/key.pt", "gs://b/k.pt"])
def test_remote_schemes_say_what_is_supported(tmp_path: Path, uri: str) -> None:
    """Guards remote URIs failing deep inside a client library."""
    with pytest.raises(CheckpointError, match="file://"), pytest.deprecated_call():
        _store(tmp_path).policy_record(uri)


def test_empty_directory_is_policy_missing(tmp_path: Path) -> None:
    """Guards an empty directory returning None (PolicyMissingError is a ValueError)."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyMissingError) as info, pytest.deprecated_call():
        _store(tmp_path).policy_record(str(tmp_path / "empty"))
    assert isinstance(info.value, ValueError)


def test_key_scheme_agrees_across_every_spelling(tmp_path: Path) -> None:
    """Guards the NaN fault: stats written under one key spelling, queried under another.

    The same run/epoch as a PolicyRecord, a MockPolicyRecord, a safe-format URI, a
    model_NNNN.pt URI and a :latest URI must give one (policy_key, policy_version); stats
    written under one are found under every other. Epoch 0 is a version.
    """
    manager = SimpleCheckpointManager("run", tmp_path)
    uri = manager.save_agent(MockAgent(), 0)
    g1 = _g1_dir(tmp_path / "g1", [0], [None]).parent  # .../oldrun
    os.rename(g1, tmp_path / "g1" / "run")
    g1_file = tmp_path / "g1" / "run" / "checkpoints" / "model_0000.pt"
    store = _store(tmp_path)
    with pytest.deprecated_call():
        record = PolicyRecord(store, "run", uri, None)
    with pytest.deprecated_call():
        mock = MockPolicyRecord.from_key_and_version("run", 0)
    with pytest.deprecated_call():
        old = store.policy_record(str(g1_file))
    keys = {
        record.key_and_version(),
        mock.key_and_version(),
        old.key_and_version(),
        SimulationStatsDB.key_and_version(record),
        SimulationStatsDB.key_and_version(mock),
    }
    from ckptcompat.checkpoint.uri import key_and_version

    keys |= {
        key_and_version(uri),
        key_and_version(f"{tmp_path}/run:latest"),
        key_and_version(g1_file),
    }
    assert keys == {("run", 0)}

    db_path = tmp_path / "stats.duckdb"
    with SimulationStatsDB(db_path) as db:
        db.register_simulation("sim", "eval", "CartPole-v1", policy_key="run", policy_version=0)
        db.record_policy_episode("sim", "run", 0, uri, {0: {"reward": 4.0}}, step_count=4)
    with EvalStatsDB(db_path) as db:
        for policy in (record, mock, ("run", 0)):
            assert db.get_average_metric_by_filter("reward", policy) == 4.0


def test_replacement_path_emits_no_deprecation_warning(tmp_path: Path) -> None:
    """Guards the new API warning too (warnings are errors in this suite)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        manager = SimpleCheckpointManager("new", tmp_path)
        manager.save_agent(MockAgent(), 0)
        manager.load_agent(0)
        SimpleCheckpointManager.load_from_uri(f"{tmp_path}/new:latest")


def _saved_record(store: PolicyStore, target: Path, **extra: object) -> PolicyRecord:
    """The old save pattern: an empty record named by its path, filled, then saved."""
    with pytest.deprecated_call():
        pr = store.create_empty_policy_record(name=str(target))
    with pytest.deprecated_call():
        pr.metadata = PolicyMetadata(
            agent_step=100, epoch=5, generation=1, train_time=60.0, **extra
        )
    torch.manual_seed(5)
    pr.policy = MockAgent()
    with pytest.deprecated_call():
        store.save(pr)
    return pr


@pytest.mark.parametrize("name", ["tmpx8f2k1.pt", "weird name.pt", "policy.pt", "model.pt"])
def test_save_then_load_round_trips_any_file_name(tmp_path: Path, name: str) -> None:
    """Guards issue 15 fault 1: PolicyStore.save(pr, path) then load_from_uri(path) (and
    pr.policy) raised AgentMismatchError ("holds weights but no agent ... found a safe_v1")
    whenever the name was not <run>_v<epoch>.pt, e.g. a tempfile.NamedTemporaryFile path."""
    store = _store(tmp_path)
    target = tmp_path / "out" / name
    saved = _saved_record(store, target)
    assert saved.uri == f"file://{target}"
    for uri in (f"file://{target}", str(target)):
        with pytest.deprecated_call():
            loaded = store.load_from_uri(uri)
        torch.manual_seed(5)
        assert torch.equal(loaded.policy.actor.weight, MockAgent().actor.weight)
    with pytest.deprecated_call():
        lazy = PolicyRecord(store, "whatever", f"file://{target}", None)
    assert isinstance(lazy.policy, MockAgent)  # .policy loads through the store too
    assert torch_compat.load(target)["format"] == "ckptcompat.agent"  # still the safe format


def test_save_keeps_every_metadata_key(tmp_path: Path) -> None:
    """Guards issue 15 fault 2: save dropped metadata keys other than ours (action_names,
    generation, evals ...); a reloaded record had generation 0 and no action_names."""
    store = _store(tmp_path)
    target = tmp_path / "meta.pt"
    extra = {
        "action_names": ["move", "turn"],
        "evals": {"category_scores": {"nav": 0.5}, "avg_simulation_score": 0.25},
        "avg_reward": np.float32(42.0),  # a numpy scalar is saved as a float
        "score": 0.75,
        "run": "some_run",
        "initial_pr": None,
    }
    pr = _saved_record(store, target, **extra)
    with pytest.deprecated_call():
        loaded = store.load_from_uri(f"file://{target}")
    assert isinstance(loaded.metadata, PolicyMetadata)
    assert loaded.metadata == {**pr.metadata, "avg_reward": 42.0}
    assert loaded.metadata.generation == 1
    assert loaded.metadata["action_names"] == ["move", "turn"]
    with pytest.deprecated_call():
        assert store.policy_record(str(target)).metadata.evals["category_scores"] == {"nav": 0.5}
    pr.metadata = {"epoch": 5, "agent_step": 1, "generation": 3, "train_time": 0.0}
    with pytest.deprecated_call():
        store.save(pr)  # plain-dict metadata, same path: replaced
    with pytest.deprecated_call():
        assert store.load_from_uri(str(target)).metadata.generation == 3
    pr.metadata["opaque"] = object()
    with pytest.raises(CheckpointError, match="opaque"), pytest.deprecated_call():
        store.save(pr)
    with pytest.deprecated_call():
        assert store.load_from_uri(str(target)).metadata.generation == 3  # old file intact


def test_save_replaces_an_existing_file_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 15's save-to-an-existing-path call: the old store replaced the file;
    we refused. Replacing must never leave a half-written file: a failure mid-write keeps
    the previous file whole and leaves no temp file behind."""
    from ckptcompat.checkpoint.atomic import FAULT_ENV
    from ckptcompat.errors import InjectedFault

    store = _store(tmp_path)
    target = tmp_path / "again.pt"
    pr = _saved_record(store, target)
    old_bytes = target.read_bytes()
    pr.metadata.epoch = 6
    monkeypatch.setenv(FAULT_ENV, "after_fsync")
    with pytest.raises(InjectedFault), pytest.deprecated_call():
        store.save(pr)
    monkeypatch.delenv(FAULT_ENV)
    assert target.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.deprecated_call():
        store.save(pr)
    with pytest.deprecated_call():
        assert store.load_from_uri(str(target)).metadata.epoch == 6
    with pytest.raises(ValueError, match="another epoch"), pytest.deprecated_call():
        store.save(pr, tmp_path / "run_v2.pt")  # the name says epoch 2, the metadata 6


def test_create_empty_policy_record(tmp_path: Path) -> None:
    """Guards the missing PolicyStore.create_empty_policy_record (removed by Metta on
    2025-08-27, called by code of the period): name -> file://<checkpoint_dir>/<name>."""
    store = _store(tmp_path)
    with pytest.deprecated_call():
        pr = store.create_empty_policy_record("model_0003.pt", tmp_path / "ck")
    assert pr.uri == f"file://{tmp_path / 'ck' / 'model_0003.pt'}"
    assert pr.run_name == "model_0003.pt"
    assert pr.metadata == {"agent_step": 0, "epoch": 0, "generation": 0, "train_time": 0.0}
    with pytest.deprecated_call():
        assert store.create_empty_policy_record("x.pt").file_path == str(tmp_path / "x.pt")
    with pytest.deprecated_call():
        other = store.create_empty_policy_record("n", override_path=tmp_path / "o.pt")
    assert other.file_path == str(tmp_path / "o.pt")
    with pytest.raises(ValueError, match="policy_store and a uri"):
        PolicyRecord._quiet(None, "r", None, None).policy  # noqa: B018
    with pytest.deprecated_call():
        assert store.make_model_name(7) == "model_0007.pt"


def test_pre_august_config_constructor_and_mock_policy(tmp_path: Path) -> None:
    """Guards the pre-2025-08-04 spelling PolicyStore(cfg, wandb_run=None) (a config object
    with device, data_dir and trainer.checkpoint.checkpoint_dir) and the old mocks'
    MockPolicy, which old save/load tests put in a record: both must work on the safe
    format, with a file named by tempfile and plain-dict metadata."""
    from types import SimpleNamespace

    from ckptcompat.policy import MockPolicy

    checkpoint_dir = tmp_path / "ck"
    for cfg in (
        {"device": "cpu", "data_dir": str(tmp_path), "trainer": {"checkpoint": {
            "checkpoint_dir": str(checkpoint_dir)}}},
        SimpleNamespace(device="cpu", data_dir=str(tmp_path), trainer=SimpleNamespace(
            checkpoint=SimpleNamespace(checkpoint_dir=str(checkpoint_dir)))),
    ):  # fmt: skip
        with pytest.deprecated_call():
            store = PolicyStore(cfg, wandb_run=None)
        assert store.device == "cpu" and store.data_dir == tmp_path
        with pytest.deprecated_call():
            pr = store.create_empty_policy_record("model_0005.pt")
        assert pr.file_path == str(checkpoint_dir / "model_0005.pt")
    torch.manual_seed(0)
    policy = MockPolicy()
    with pytest.deprecated_call():
        pr = store.create_empty_policy_record(name=str(tmp_path / "tmpk3j2.pt"))
    pr.metadata = {"action_names": ["move"], "agent_step": 1, "epoch": 5, "generation": 1,
                   "train_time": 6.0}  # fmt: skip
    pr.policy = policy
    with pytest.deprecated_call():
        store.save(pr)
    with pytest.deprecated_call():
        loaded = store.load_from_uri(pr.uri)
    x = torch.randn(1, 10)
    assert type(loaded.policy).__name__ == "MockPolicy"
    assert torch.equal(loaded.policy(x), policy(x)) and loaded.policy(x).shape == (1, 10)
    assert loaded.metadata["action_names"] == ["move"] and loaded.metadata == pr.metadata


def test_2366_file_name_facts_reach_the_metadata(tmp_path: Path) -> None:
    """Guards issue 15b bug 2: PolicyStore().load_from_uri('run__e1__s128__t0__sc130000.pt')
    answered agent_step 0 and no score although the name (and migrate) say 128 and 13.0, so
    policy_record(dir, "top") over #2366 files fell back to latest."""
    directory = tmp_path / "run" / "checkpoints"
    for epoch, score in ((1, 13.0), (2, 0.5), (3, 0.25)):
        name = legacy.g2_filename("run", epoch, agent_step=epoch * 64, total_time_s=7, score=score)
        legacy.write_g2(MockAgent(), directory / name)
    store = _store(tmp_path)
    with pytest.deprecated_call():
        record = store.load_from_uri(str(directory / "run__e1__s64__t7__sc130000.pt"))
    meta = record.metadata
    assert (meta.epoch, meta.agent_step, meta.train_time, meta["score"]) == (1, 64, 7.0, 13.0)
    with pytest.deprecated_call():
        best = store.policy_record(str(directory), "top")
    assert best.metadata.epoch == 1


def test_save_of_a_plain_module_is_agent_mismatch(tmp_path: Path) -> None:
    """Guards issue 15b bug 7: pr.policy = torch.nn.Linear(2, 2); ps.save(pr, '.../r_v1.pt')
    raised a raw AttributeError ('Linear' object has no attribute 'config') from format.py,
    where row P14 promises AgentMismatchError; nothing is written."""
    from ckptcompat.errors import AgentMismatchError

    store = _store(tmp_path)
    with pytest.deprecated_call():
        record = store.create_empty_policy_record("r", tmp_path)
        record.metadata = PolicyMetadata(epoch=1)
    record.policy = torch.nn.Linear(2, 2)
    with pytest.raises(AgentMismatchError, match="config") as caught, pytest.deprecated_call():
        store.save(record, tmp_path / "r_v1.pt")
    assert "torch.nn.modules.linear.Linear" in str(caught.value)
    assert not (tmp_path / "r_v1.pt").exists()


@pytest.mark.parametrize("spelling", ["{d}/missing.pt", "file://{d}/missing.pt", "{d}/nodir/"])
def test_missing_checkpoint_is_checkpoint_not_found(tmp_path: Path, spelling: str) -> None:
    """Guards issue 15b bug 8: ps.load_from_uri('/tmp/definitely_missing.pt') (also file://
    and a missing directory) raised the builtin FileNotFoundError from the scan's
    archive reader instead of CheckpointNotFoundError (still a FileNotFoundError)."""
    from ckptcompat.errors import CheckpointNotFoundError

    store = _store(tmp_path)
    with pytest.deprecated_call(), pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        store.load_from_uri(spelling.format(d=tmp_path))


def test_save_to_model_name_keys_by_the_saved_run(tmp_path: Path) -> None:
    """Guards issue 15b bug 11: a record run_name="my_run" saved to
    .../myrun/checkpoints/model_0005.pt reloaded with run_name 'my_run' but keyed as
    ('myrun', 5), and in a flat directory as the directory's name: the saved payload is
    the key, so key_and_version agrees with run_name."""
    store = _store(tmp_path)
    nested = tmp_path / "myrun" / "checkpoints" / "model_0005.pt"
    for target in (nested, tmp_path / "model_0005.pt"):
        with pytest.deprecated_call():
            record = PolicyRecord(store, "my_run", f"file://{target}", PolicyMetadata(epoch=5))
        record.policy = MockAgent()
        target.parent.mkdir(parents=True, exist_ok=True)
        with pytest.deprecated_call():
            store.save(record)
            loaded = store.load_from_uri(str(target))
        assert loaded.run_name == "my_run"
        assert loaded.key_and_version() == record.key_and_version() == ("my_run", 5)
    # A real G1 pickle still keys by its run directory.
    directory = _g1_dir(tmp_path, [3], [None])
    with pytest.deprecated_call():
        assert store.load_from_uri(str(directory / "model_0003.pt")).key_and_version() == (
            "oldrun",
            3,
        )


def test_saved_run_name_of_an_invalid_run_name(tmp_path: Path) -> None:
    """Guards issue 15b bug 13: row P13 said an invalid run name falls back to the file
    stem ('zz') while save wrote 'bad_run_'; the rule (run name made valid, a path-named
    record's file stem, else the file stem) is now the row's and the code's."""
    store = _store(tmp_path)
    cases = (("bad run!", "zz.pt", "bad_run_"), (f"{tmp_path}/old name.pt", "zz2.pt", "old_name"))
    for run_name, file_name, expected in cases:
        with pytest.deprecated_call():
            record = PolicyRecord(store, run_name, None, PolicyMetadata(epoch=1))
        record.policy = MockAgent()
        with pytest.deprecated_call():
            store.save(record, tmp_path / file_name)
            loaded = store.load_from_uri(str(tmp_path / file_name))
        assert loaded.run_name == expected and loaded.key_and_version() == (expected, 1)
    with pytest.deprecated_call():
        record = PolicyRecord(store, None, None, PolicyMetadata(epoch=2))
    record.policy = MockAgent()
    with pytest.deprecated_call():
        store.save(record, tmp_path / "zz3.pt")
        assert store.load_from_uri(str(tmp_path / "zz3.pt")).run_name == "zz3"


def test_cuda_store_on_a_cpu_machine_says_use_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 15b bug 9: PolicyStore(device="cuda").load_from_uri(p) on a CPU-only
    machine raised UnsafeCheckpointError ("Attempting to deserialize object on a CUDA
    device", torch 2.4) or CheckpointError ("weights_only=True failed", 2.6): one typed
    error on every torch, saying there is no CUDA device and to use device="cpu"."""
    from ckptcompat.errors import InvalidArgumentError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    safe = SimpleCheckpointManager("r", tmp_path).save_agent(MockAgent(), 1)
    g2 = legacy.write_g2(MockAgent(), tmp_path / "r__e2__s1__t0__sc0.pt")
    with pytest.deprecated_call():
        store = PolicyStore(device="cuda", data_dir=tmp_path)
    for uri in (safe, str(g2)):
        with (
            pytest.raises(InvalidArgumentError, match="device='cpu'") as caught,
            pytest.deprecated_call(),
        ):
            store.load_from_uri(uri)
        assert "'cuda' is not available" in str(caught.value)
        assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidArgumentError, match="not available"):
        SimpleCheckpointManager("r", tmp_path).load_agent(1, device="cuda:0")
