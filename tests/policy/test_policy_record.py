"""Deprecated PolicyRecord and MockPolicyRecord: every old call pattern."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch

from ckptcompat.agents import MockAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.policy import MockPolicyRecord, PolicyMetadata, PolicyRecord, PolicyStore


def _quiet(fn, *args, **kwargs):
    with pytest.deprecated_call():
        return fn(*args, **kwargs)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[str, MockAgent]:
    agent = MockAgent()
    uri = SimpleCheckpointManager("run", tmp_path).save_agent(agent, 3, {"agent_step": 30})
    return uri, agent


def test_positional_and_keyword_constructors(saved) -> None:
    """Guards the thin stub's TypeError on the keyword form
    PolicyRecord(policy_store=..., run_name=..., uri=..., metadata=...)."""
    uri, _ = saved
    store = _quiet(PolicyStore, device="cpu")
    md = _quiet(PolicyMetadata, epoch=3)
    by_pos = _quiet(PolicyRecord, store, "run", uri, md)
    by_kw = _quiet(PolicyRecord, policy_store=store, run_name="run", uri=uri, metadata=md)
    assert (by_pos.run_name, by_pos.uri, by_pos.metadata) == (by_kw.run_name, by_kw.uri, md)
    assert by_pos.name == "run"  # the attribute's pre-July-2025 name


def test_policy_loads_lazily_once_and_setter_wins(saved) -> None:
    """Guards .policy reloading on every access, and the setter being ignored."""
    uri, agent = saved
    store = _quiet(PolicyStore)
    record = _quiet(PolicyRecord, store, "run", uri, None)
    assert record._cached_policy is None
    first = record.policy
    assert record.policy is first
    assert torch.equal(first.actor.weight, agent.actor.weight)
    other = MockAgent()
    record.policy = other
    assert record.policy is other


def test_policy_without_store_or_uri_raises_value_error() -> None:
    """Guards a silent None policy when there is nothing to load from."""
    record = _quiet(PolicyRecord, None, "run", None, None)
    with pytest.raises(ValueError, match="policy_store and a uri"):
        _ = record.policy


def test_file_path_and_metadata_types(saved) -> None:
    """Guards .file_path for file:// only, and .metadata accepting dict but not other types."""
    uri, _ = saved
    record = _quiet(PolicyRecord, None, "run", uri, {"epoch": 3, "score": 1.0})
    assert isinstance(record.metadata, PolicyMetadata) and record.metadata.epoch == 3
    assert record.file_path == uri.removeprefix("file://")
    with pytest.raises(TypeError, match="PolicyMetadata or a dict"):
        record.metadata = 5  # type: ignore[assignment]
    with pytest.raises(ValueError, match="file://"):
        _ = _quiet(PolicyRecord, None, "run", "mock://x", None).file_path


def test_repr_is_cheap(saved) -> None:
    """Guards the old heavy repr that loaded the policy (and crashed on a missing import)."""
    uri, _ = saved
    record = _quiet(PolicyRecord, _quiet(PolicyStore), "run", uri, {"epoch": 3})
    text = repr(record)
    assert "not loaded" in text and "epoch=3" in text
    assert record._cached_policy is None


def test_num_params_and_key_and_version(saved) -> None:
    """Guards key_and_version bypassing the one key scheme (docs/design.md section 6)."""
    uri, agent = saved
    record = _quiet(PolicyRecord, _quiet(PolicyStore), "run", uri, None)
    assert record.key_and_version() == ("run", 3)
    assert record.num_params() == sum(p.numel() for p in agent.parameters())


def test_pickled_record_drops_its_store(saved) -> None:
    """Guards the store being pickled into G1 files (the old save set it to None first)."""
    uri, _ = saved
    record = _quiet(PolicyRecord, _quiet(PolicyStore), "run", uri, None)
    clone = pickle.loads(pickle.dumps(record, protocol=2))
    assert clone._policy_store is None and clone.uri == uri


def test_wandb_uri_info_is_parsed() -> None:
    """Guards extract_wandb_run_info, still called by old scripts."""
    record = _quiet(PolicyRecord, None, "r", "wandb://ent/proj/name:v5", None)
    assert record.extract_wandb_run_info() == ("ent", "proj", "name", "v5")


def test_mock_from_key_and_version_keys_exactly() -> None:
    """Guards the mock's URI format changing the stats-DB key (the NaN fault)."""
    mock = _quiet(MockPolicyRecord.from_key_and_version, "test_policy", 1)
    assert mock.key_and_version() == ("test_policy", 1)
    assert mock.metadata.epoch == 1
    assert isinstance(mock.policy, MockAgent)
    zero = _quiet(MockPolicyRecord.from_key_and_version, "test_policy", 0)
    assert zero.key_and_version() == ("test_policy", 0)
    with pytest.raises(ValueError):
        MockPolicyRecord.from_key_and_version("test_policy", None)  # type: ignore[arg-type]


def test_mock_defaults_are_not_shared() -> None:
    """Guards the old singleton default metadata (one mutable dict shared by every mock)."""
    a, b = _quiet(MockPolicyRecord), _quiet(MockPolicyRecord)
    a.metadata.epoch = 9
    assert b.metadata.epoch == 0
    assert a.uri == "mock://policy" and a.run_name == "mock_run"


def test_each_call_warns_once_at_the_caller() -> None:
    """Guards missing or doubled DeprecationWarnings, or ones pointing inside ckptcompat."""
    for call in (
        lambda: PolicyRecord(None, "r", None, None),
        MockPolicyRecord,
        lambda: MockPolicyRecord.from_key_and_version("k", 1),
        PolicyStore,
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert [w.category for w in caught] == [DeprecationWarning]
        assert caught[0].filename == __file__


def test_pre_refactor_pickle_checkpoint_attribute_is_policy_metadata(tmp_path: Path) -> None:
    """Guards issue 15 fault 3: a record pickled before the metadata refactor keeps its
    metadata in a ``checkpoint`` attribute (a plain dict); ``.metadata`` returned that raw
    dict instead of a PolicyMetadata (no attribute access, no required-key rules)."""
    old = PolicyRecord.__new__(PolicyRecord)
    old.__dict__.update(
        _policy_store=None,
        run_name="oldrun",
        uri="file:///nowhere/model_0007.pt",
        _cached_policy=None,
        checkpoint={"epoch": 7, "agent_step": 70, "generation": 2, "train_time": 1.0, "x": [1]},
    )
    revived = pickle.loads(pickle.dumps(old))
    for record in (old, revived):
        meta = record.metadata
        assert isinstance(meta, PolicyMetadata)
        assert meta.epoch == 7 and meta.generation == 2 and meta["x"] == [1]
        assert record.metadata is meta  # converted once
        assert isinstance(record.__dict__["checkpoint"], dict)  # the old attribute stays
    partial = PolicyRecord.__new__(PolicyRecord)
    partial.__dict__.update(_policy_store=None, run_name="r", uri=None, checkpoint={"epoch": 1})
    assert partial.metadata.agent_step == 0  # required keys filled with their defaults
    empty = PolicyRecord.__new__(PolicyRecord)
    empty.__dict__.update(_policy_store=None, run_name="r", uri=None)
    with pytest.raises(AttributeError, match=r"No metadata found.*run_name"):
        empty.metadata  # noqa: B018


def test_bare_and_mock_uris_key_by_metadata_epoch(tmp_path: Path) -> None:
    """Guards issue 15 fault 4: ``PolicyRecord(uri="mock://test_policy",
    metadata=PolicyMetadata(epoch=1))`` keyed as ("test_policy", 0), ignoring the epoch, and
    a bare-key URI ("test_policy", as the old MockPolicyRecord made them) raised
    CheckpointNotFoundError instead of keying as (uri, metadata.epoch)."""
    meta = _quiet(PolicyMetadata, epoch=1)
    mock = _quiet(PolicyRecord, uri="mock://test_policy", metadata=meta)
    assert mock.key_and_version() == ("test_policy", 1)
    bare = _quiet(PolicyRecord, None, "run", "test_policy", {"epoch": 1})
    assert bare.key_and_version() == ("test_policy", 1)
    assert _quiet(PolicyRecord, None, "run", "test_policy", None).key_and_version() == (
        "test_policy",
        0,
    )
    # An explicit :vN still wins; an existing path is a path, not a key.
    pinned = _quiet(PolicyRecord, None, "run", "mock://test_policy:v4", {"epoch": 1})
    assert pinned.key_and_version() == ("test_policy", 4)
    SimpleCheckpointManager("run", tmp_path).save_agent(MockAgent(), 2)
    store = _quiet(PolicyStore, data_dir=tmp_path)
    by_path = _quiet(PolicyRecord, store, "run", "run", {"epoch": 9})
    assert by_path.key_and_version() == ("run", 2)  # data_dir/run is a run directory
    with pytest.raises(ValueError, match="epoch"):
        _quiet(PolicyRecord, None, "r", "k", {"epoch": None}).key_and_version()


def test_unsaved_file_record_keys_by_run_and_epoch(tmp_path: Path) -> None:
    """Guards issue 15b bug 12: PolicyRecord(ps, "myrun", "file:///.../not_saved_yet.pt",
    PolicyMetadata(epoch=3)).key_and_version() (and SimulationStatsDB.key_and_version(pr))
    raised CheckpointNotFoundError although run and epoch are on the record; the key is the
    one PolicyStore.save then writes."""
    from ckptcompat.evaluation.stats_db import SimulationStatsDB

    store = _quiet(PolicyStore, data_dir=tmp_path)
    meta = _quiet(PolicyMetadata, epoch=3)
    for uri in (f"{tmp_path}/not_saved_yet.pt", f"file://{tmp_path}/not_saved_yet.pt"):
        record = _quiet(PolicyRecord, store, "myrun", uri, meta)
        assert record.key_and_version() == ("myrun", 3)
        assert SimulationStatsDB.key_and_version(record) == ("myrun", 3)
    record.policy = MockAgent()
    _quiet(store.save, record)
    assert record.key_and_version() == ("myrun", 3)


@pytest.mark.parametrize("uri", ["wandb://run/my_run:v3", "wandb://a/b/c/d", "wandb://a//n"])
def test_malformed_wandb_uri_says_the_expected_format(uri: str) -> None:
    """Guards issue 15b bug 14: PolicyRecord(None, 'x', 'wandb://run/my_run:v3', md)
    .extract_wandb_run_info() raised a raw "not enough values to unpack" ValueError; Metta
    said "Failed to parse wandb URI ... Expected format: wandb://<entity>/<project>/<name>"."""
    from ckptcompat.errors import InvalidArgumentError

    record = _quiet(PolicyRecord, None, "x", uri, None)
    with pytest.raises(InvalidArgumentError, match="Failed to parse wandb URI") as caught:
        record.extract_wandb_run_info()
    assert isinstance(caught.value, ValueError)
    assert "wandb://<entity>/<project>/<name>" in str(caught.value)
    ok = _quiet(PolicyRecord, None, "x", "wandb://ent/proj/name", None)
    assert ok.extract_wandb_run_info() == ("ent", "proj", "name", None)


def test_record_without_uri_says_how_to_get_a_key(tmp_path: Path) -> None:
    """Guards issue 15b's doc finding on R6/A1: policy_record_or_mock(None).key_and_version()
    raised ValueError "needs a uri; this record has none" with no advice."""
    from ckptcompat.errors import InvalidArgumentError

    store = _quiet(PolicyStore, data_dir=tmp_path)
    mock = _quiet(store.policy_record_or_mock, None)
    with pytest.raises(InvalidArgumentError, match="from_key_and_version") as caught:
        mock.key_and_version()
    assert isinstance(caught.value, ValueError)
