"""The DuckDB stats DB: potential samples, normalisation, keys, shards, transactions.

The reference data set is the one of the old ``test_eval_stats_db.py`` (reference note,
section 5): 5 episodes x 2 agents; agent 0 runs ``test_policy`` v1, agent 1 ``other_policy``
v2; ``hearts_collected`` is logged (3.0) only for agent 0 in episodes 0 and 1, so its
normalised mean is 6 / 5 = 1.2 while the raw AVG over recorded rows is 3.0.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ckptcompat.errors import StatsDBError
from ckptcompat.evaluation.stats_db import EvalStatsDB, SimulationStatsDB, merge_shards
from ckptcompat.evaluation.stats_episode import EpisodeStatsDB
from ckptcompat.evaluation.stats_values import PolicyKey

# DuckDB and pure Python only: no torch is imported, so one cell suffices.
pytestmark = pytest.mark.one_cell

POLICY = ("test_policy", 1)
OTHER = ("other_policy", 2)
URI = "file:///data/test_policy/checkpoints/test_policy_v1.pt"
ALL_TABLES = (
    "episodes",
    "episode_attributes",
    "agent_groups",
    "agent_metrics",
    "simulations",
    "agent_policies",
)


def _register(db: SimulationStatsDB, sim_id: str, key: str, version: int, **kw: Any) -> None:
    db.register_simulation(
        sim_id,
        kw.pop("name", "test_sim"),
        kw.pop("env", "test_env"),
        policy_key=key,
        policy_version=version,
        policy_uri=kw.pop("uri", None),
    )


def _write_reference(path: Path) -> None:
    with SimulationStatsDB(path) as db:
        _register(db, "sim-1", *POLICY, uri=URI)
        for i in range(5):
            metrics: dict[int, dict[str, float]] = {0: {"reward": 1.0}, 1: {"reward": 2.0}}
            if i < 2:
                metrics[0]["hearts_collected"] = 3.0
            db.record_policy_episode(
                "sim-1",
                *POLICY,
                URI,
                metrics,
                step_count=100,
                seed=i,
                attributes={"map": "5x5", "difficulty": 0.5},
                agent_groups={0: 0, 1: 1},
                other_policies={1: OTHER},
                replay_url=f"file:///replays/{i}.json",
                episode_id=f"ep-{i}",
            )


def _counts(db: EpisodeStatsDB, tables: tuple[str, ...] = ALL_TABLES) -> dict[str, int]:
    return {t: db.query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in tables}


@pytest.fixture
def ref_path(tmp_path: Path) -> Path:
    path = tmp_path / "ref.duckdb"
    _write_reference(path)
    return path


@pytest.fixture
def eval_db(ref_path: Path) -> Iterator[EvalStatsDB]:
    with EvalStatsDB(ref_path, read_only=True) as db:
        yield db


class _Record:
    """Stands in for a PolicyRecord/MockPolicyRecord: it names its policy itself."""

    def __init__(self, key: str, version: int, uri: str = "mock://x") -> None:
        self._kv, self.uri = (key, version), uri

    def key_and_version(self) -> tuple[str, int]:
        return self._kv


# ----------------------------------------------------------------- normalisation


def test_potential_samples_count_every_assigned_agent_episode(eval_db: EvalStatsDB) -> None:
    """Guards the normalisation rule: metrics are logged only when non-zero, so the mean
    divides by the agent-episodes assigned to the policy (5), not by the recorded rows (2)."""
    assert eval_db.potential_samples_for_metric(*POLICY) == 5
    assert eval_db.potential_samples_for_metric(*OTHER) == 5
    assert eval_db.count_metric_agents(*POLICY, "hearts_collected") == 2
    assert eval_db.get_average_metric_by_filter("hearts_collected", POLICY) == pytest.approx(1.2)
    assert eval_db.get_sum_metric_by_filter("hearts_collected", POLICY) == pytest.approx(1.2)
    assert eval_db.get_average_metric_by_filter("reward", OTHER) == pytest.approx(2.0)
    raw = eval_db.query(
        "SELECT AVG(value) AS v FROM policy_simulation_agent_metrics "
        "WHERE policy_key = ? AND policy_version = ? AND metric = ?",
        [*POLICY, "hearts_collected"],
    )
    assert raw[0]["v"] == pytest.approx(3.0)
    assert eval_db.simulation_scores(POLICY, "hearts_collected") == {
        ("test_sim", "test_env"): pytest.approx(1.2)
    }
    assert eval_db.sample_count() == 10
    assert eval_db.sample_count(POLICY, sim_env="test_env") == 5
    assert eval_db.metric_names(POLICY) == ["hearts_collected", "reward"]


def test_agent_that_logged_nothing_is_a_zero_sample(tmp_path: Path) -> None:
    """Guards against the old 'ghost episode' exclusion dropping real agent-episodes that
    logged no metric at all, which would inflate the mean (here 4/2 instead of 4/3)."""
    with SimulationStatsDB(tmp_path / "s.duckdb") as db:
        _register(db, "sim", *POLICY)
        db.record_policy_episode("sim", *POLICY, None, {0: {"score": 4.0}, 1: {}}, step_count=3)
        db.record_policy_episode("sim", *POLICY, None, {}, agent_ids=[0], step_count=3)
    with EvalStatsDB(tmp_path / "s.duckdb", read_only=True) as db:
        assert db.potential_samples_for_metric(*POLICY) == 3
        assert db.get_average_metric_by_filter("score", POLICY) == pytest.approx(4 / 3)


def test_never_logged_metric_is_zero_not_none(eval_db: EvalStatsDB) -> None:
    """Guards the 0.0-vs-None contract: samples exist, the metric was never logged."""
    for get in (
        eval_db.get_average_metric_by_filter,
        eval_db.get_sum_metric_by_filter,
        eval_db.get_std_metric_by_filter,
    ):
        assert get("never_logged", POLICY) == 0.0
    assert eval_db.count_metric_agents(*POLICY, "never_logged") == 0


@pytest.mark.parametrize(
    ("policy", "filter_condition"),
    [
        (("unknown_policy", 1), None),
        (("test_policy", 2), None),  # known key, unknown version
        (POLICY, "sim_env = 'other_env'"),
        (POLICY, {"sim_name": "other_sim"}),
    ],
)
def test_no_samples_is_none(eval_db: EvalStatsDB, policy: Any, filter_condition: Any) -> None:
    """Guards against NULL aggregates over no rows turning into NaN (the audit's failure)
    or a fake 0.0: no samples for the policy/filter gives None."""
    assert eval_db.get_average_metric_by_filter("reward", policy, filter_condition) is None
    assert eval_db.get_sum_metric_by_filter("reward", policy, filter_condition) is None
    assert eval_db.get_std_metric_by_filter("reward", policy, filter_condition) is None
    assert eval_db.potential_samples_for_metric(policy[0], policy[1], filter_condition) == 0


def test_empty_db_is_none(tmp_path: Path) -> None:
    """Guards the empty-DB case: None and zero counts, never NaN or an exception."""
    with EvalStatsDB(tmp_path / "empty.duckdb") as db:
        assert db.get_average_metric_by_filter("reward", POLICY) is None
        assert db.get_std_metric_by_filter("reward", POLICY) is None
        assert db.potential_samples_for_metric(*POLICY) == 0
        assert db.get_all_policy_uris() == []
        assert db.simulation_scores(POLICY, "reward") == {}


def test_std_with_one_sample_and_zero_filled_samples(tmp_path: Path) -> None:
    """Guards std edge cases: one sample gives 0.0 (not NaN from ddof=1, not None), and
    unrecorded samples count as zeros in the population std."""
    with SimulationStatsDB(tmp_path / "s.duckdb") as db:
        _register(db, "one", "single", 0)
        db.record_policy_episode("one", "single", 0, None, {0: {"r": 7.5}}, step_count=1)
    with EvalStatsDB(tmp_path / "s.duckdb", read_only=True) as db:
        assert db.get_std_metric_by_filter("r", ("single", 0)) == 0.0
        assert db.get_average_metric_by_filter("r", ("single", 0)) == 7.5
    with EvalStatsDB(tmp_path / "s2.duckdb") as db:
        _register(db, "big", "big", 3)
        for value in (1e9 + 3, 1e9 + 3, None, None, None):
            metrics = {} if value is None else {"r": value}
            db.record_policy_episode("big", "big", 3, None, {0: metrics}, step_count=1)
        expected = statistics.pstdev([1e9 + 3, 1e9 + 3, 0, 0, 0])
        assert db.get_std_metric_by_filter("r", ("big", 3)) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------- filters and SQL safety


@pytest.mark.parametrize(
    "filter_condition",
    [
        "sim_env = 'test_env'",
        "SIM_ENV='test_env' and sim_name like 'test%'",
        {"sim_env": "test_env", "sim_name": "test_sim"},
    ],
)
def test_filter_forms(eval_db: EvalStatsDB, filter_condition: Any) -> None:
    """Guards compatibility with the old raw-SQL filter spelling, now parsed as data."""
    value = eval_db.get_average_metric_by_filter("hearts_collected", POLICY, filter_condition)
    assert value == pytest.approx(1.2)


@pytest.mark.parametrize(
    "filter_condition",
    [
        "sim_env = 'x' OR 1=1",
        "sim_env = 'x'; DROP TABLE episodes",
        "policy_key = 'test_policy'",
        "sim_env = test_env",
        {"episode_id": "ep-0"},
        {"sim_env": 3},
    ],
)
def test_filter_outside_whitelist_refused(eval_db: EvalStatsDB, filter_condition: Any) -> None:
    """Guards against SQL injection through filter_condition (the old API interpolated it)."""
    with pytest.raises(StatsDBError, match="unsupported filter_condition"):
        eval_db.get_average_metric_by_filter("reward", POLICY, filter_condition)
    assert eval_db.potential_samples_for_metric(*POLICY) == 5


def test_key_and_names_with_quotes_are_parameterised(tmp_path: Path) -> None:
    """Guards the f-string SQL of the old DB: a key like it's:v1 broke or injected SQL."""
    key = "it's:v1"
    with SimulationStatsDB(tmp_path / "q.duckdb") as db:
        _register(db, "sim'1", key, 3, name="it's sim", env="env'); DROP TABLE episodes; --")
        db.record_policy_episode("sim'1", key, 3, None, {0: {"met'ric": 2.0}}, step_count=1)
        assert db.get_all_policy_uris() == ["it's:v1:v3"]
    with EvalStatsDB(tmp_path / "q.duckdb", read_only=True) as db:
        assert db.get_average_metric_by_filter("met'ric", (key, 3)) == 2.0
        assert db.get_average_metric_by_filter("met'ric", (key, 3), "sim_name = 'it''s sim'") == 2.0
        assert db.get_average_metric_by_filter("met'ric", (key, 3), {"sim_name": "it's"}) is None
        assert _counts(db)["episodes"] == 1


# ----------------------------------------------------------------- keys


def test_epoch_zero_is_a_version(tmp_path: Path) -> None:
    """Guards 'epoch 0 treated as falsy': (key, 0) is stored and found under every spelling."""
    with SimulationStatsDB(tmp_path / "z.duckdb") as db:
        _register(db, "sim", "run", 0, uri="file:///d/run/checkpoints/run_v0.pt")
        db.record_policy_episode("sim", "run", 0, None, {0: {"r": 5.0}}, step_count=1)
    with EvalStatsDB(tmp_path / "z.duckdb", read_only=True) as db:
        for spelling in (("run", 0), PolicyKey("run", 0), _Record("run", 0)):
            assert db.get_average_metric_by_filter("r", spelling) == 5.0
        assert db.get_average_metric_by_filter("r", ("run", 1)) is None
        assert db.get_all_policy_uris() == ["run:v0"]
        assert db.policy_keys()[0].policy_uri == "file:///d/run/checkpoints/run_v0.pt"


def _forbid_sql(db: EpisodeStatsDB, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"SQL ran: {args[0]!r}")

    monkeypatch.setattr(db, "_execute", refuse)
    monkeypatch.setattr(db, "_executemany", refuse)


_NONE: Any = None  # typed Any: these calls pass None where the API says int on purpose

_NONE_VERSION_CALLS: dict[str, Callable[[EvalStatsDB], object]] = {
    "register_simulation": lambda db: _register(db, "sim-2", "test_policy", _NONE),
    "record_policy_episode": lambda db: db.record_policy_episode(
        "sim-1", "test_policy", _NONE, None, {0: {"r": 1.0}}, step_count=1
    ),
    "get_average_metric_by_filter": lambda db: db.get_average_metric_by_filter(
        "reward", ("test_policy", _NONE)
    ),
    "get_std_metric_by_filter (record)": lambda db: db.get_std_metric_by_filter(
        "reward", _Record("test_policy", _NONE)
    ),
    "potential_samples_for_metric": lambda db: db.potential_samples_for_metric(
        "test_policy", _NONE
    ),
    "count_metric_agents": lambda db: db.count_metric_agents("test_policy", _NONE, "r"),
    "sample_count": lambda db: db.sample_count(("test_policy", _NONE)),
    # get_replay_urls is not here: None is its "no filter" default, and policy_version
    # without policy_key is a filter of its own (issue 15 fault 5; see
    # test_listings_read_the_simulations_policy).
}


@pytest.mark.parametrize("call", _NONE_VERSION_CALLS.values(), ids=_NONE_VERSION_CALLS.keys())
def test_none_version_raises_before_sql(
    ref_path: Path, monkeypatch: pytest.MonkeyPatch, call: Callable[[EvalStatsDB], object]
) -> None:
    """Guards the old f-string SQL rendering 'policy_version = None' (and a None epoch
    silently becoming 0): a None version raises a typed error before any SQL runs."""
    with EvalStatsDB(ref_path) as db:
        _forbid_sql(db, monkeypatch)
        with pytest.raises(StatsDBError, match=r"policy_version|policy_key"):
            call(db)


@pytest.mark.parametrize("version", [None, True, "1", 1.0, -1, 2**31])
def test_invalid_versions_refused(version: object) -> None:
    """Guards version coercion: bools, strings, floats, negatives are not epochs."""
    with pytest.raises(StatsDBError, match="policy_version"):
        PolicyKey("run", version)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "policy",
    ["file:///d/run/checkpoints/run_v1.pt", ("mock://test_policy", 1), ("", 1), ("run",)],
)
def test_uri_as_key_refused(ref_path: Path, policy: Any) -> None:
    """Guards the key-scheme fault: rows keyed by the full URI ('mock://test_policy') were
    invisible to queries by run name; a URI must be resolved to (run, epoch) first."""
    with EvalStatsDB(ref_path, read_only=True) as db, pytest.raises(StatsDBError):
        db.get_average_metric_by_filter("reward", policy)


def test_simulation_of_another_policy_refused(ref_path: Path) -> None:
    """Guards silent mis-keying: an episode recorded under a simulation registered for
    another policy is refused and nothing of it is written."""
    with SimulationStatsDB(ref_path) as db:
        before = _counts(db)
        with pytest.raises(StatsDBError, match="evaluates another policy"):
            db.record_policy_episode("sim-1", "test_policy", 2, None, {0: {"r": 1.0}}, step_count=1)
        with pytest.raises(StatsDBError, match="not registered"):
            db.record_policy_episode("nope", *POLICY, None, {0: {"r": 1.0}}, step_count=1)
        with pytest.raises(StatsDBError, match="registered differently"):
            _register(db, "sim-1", "test_policy", 2)
        _register(db, "sim-1", *POLICY)  # the same registration again is a no-op
        assert _counts(db) == before


# ----------------------------------------------------------------- write-time checks


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "3.0", None])
def test_non_finite_metric_rejected_and_nothing_written(tmp_path: Path, bad: object) -> None:
    """Guards NaN entering the DB (where SUM turns NaN and pandas coalescing once masked
    it as 0.0): a NaN/inf/non-number metric is refused before SQL, leaving no rows."""
    with SimulationStatsDB(tmp_path / "n.duckdb") as db:
        _register(db, "sim", *POLICY)
        metrics = {0: {"reward": 1.0}, 1: {"reward": bad}}
        with pytest.raises(StatsDBError, match="not a finite number"):
            db.record_policy_episode("sim", *POLICY, None, metrics, step_count=1)  # type: ignore[arg-type]
        with pytest.raises(StatsDBError, match="not a finite number"):
            db.record_episode("ep", {}, metrics, {}, 1)  # type: ignore[arg-type]
        assert _counts(db) == {t: int(t == "simulations") for t in ALL_TABLES}
        # The schema refuses NaN too, for rows that bypass the writer.
        with pytest.raises(duckdb.ConstraintException):
            db.query("INSERT INTO agent_metrics VALUES ('e', 0, 'm', ?)", [math.nan])


@pytest.mark.parametrize("fault", [RuntimeError("disk gone"), KeyboardInterrupt()])
def test_error_mid_episode_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: BaseException
) -> None:
    """Guards partial episodes: a failure after some rows of an episode were inserted
    (here at the third batched insert, even a KeyboardInterrupt) leaves none of its rows,
    and the DB stays usable."""
    with SimulationStatsDB(tmp_path / "t.duckdb") as db:
        _register(db, "sim", *POLICY)
        real = db._executemany
        calls: list[str] = []

        def flaky(sql: str, rows: list[tuple[Any, ...]]) -> None:
            calls.append(sql)
            if len(calls) == 3:
                raise fault
            real(sql, rows)

        monkeypatch.setattr(db, "_executemany", flaky)
        kwargs: dict[str, Any] = {
            "step_count": 9,
            "attributes": {"a": 1},
            "agent_groups": {0: 0},
            "episode_id": "ep-x",
        }
        with pytest.raises(type(fault)):
            db.record_policy_episode("sim", *POLICY, None, {0: {"r": 1.0}}, **kwargs)
        assert len(calls) == 3
        assert _counts(db) == {t: int(t == "simulations") for t in ALL_TABLES}
        monkeypatch.setattr(db, "_executemany", real)
        db.record_policy_episode("sim", *POLICY, None, {0: {"r": 1.0}}, **kwargs)
        assert _counts(db)["agent_metrics"] == 1


def test_duplicate_episode_id_refused_atomically(ref_path: Path) -> None:
    """Guards double-recording: re-using an episode id is refused with nothing written."""
    with SimulationStatsDB(ref_path) as db:
        before = _counts(db)
        with pytest.raises(StatsDBError, match="violates the stats DB schema"):
            db.record_policy_episode(
                "sim-1", *POLICY, None, {5: {"r": 1.0}}, step_count=1, episode_id="ep-0"
            )
        assert _counts(db) == before


def test_read_only_refuses_writes(ref_path: Path) -> None:
    """Guards accidental writes through an analysis handle."""
    with SimulationStatsDB(ref_path, read_only=True) as db, pytest.raises(StatsDBError):
        db.record_episode("ep-new", {}, {0: {"r": 1.0}}, {}, 1)


# ----------------------------------------------------------------- shards


def _write_shard(path: Path, sim_id: str, key: str, reward: float) -> None:
    with SimulationStatsDB(path) as db:
        _register(db, sim_id, key, 1, uri=f"file:///d/{key}/checkpoints/{key}_v1.pt")
        for _ in range(2):
            db.record_policy_episode(sim_id, key, 1, None, {0: {"reward": reward}}, step_count=5)


def test_shard_merge_keeps_both_policies_and_is_idempotent(tmp_path: Path) -> None:
    """Guards losing a policy when merging per-process shards, and duplicated rows when a
    shard is merged twice (merges copy by primary key)."""
    a, b, dest = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "merged.duckdb"
    _write_shard(a, "sim-x", "policy_X", 1.0)
    _write_shard(b, "sim-y", "policy_Y", 3.0)
    assert merge_shards(dest, [a, b]) == dest
    with EvalStatsDB(dest, read_only=True) as db:
        assert db.get_all_policy_uris() == ["policy_X:v1", "policy_Y:v1"]
        counts = _counts(db)
        assert counts["episodes"] == 4 and counts["simulations"] == 2
    merge_shards(dest, [b, a, b])
    with EvalStatsDB(dest, read_only=True) as db:
        assert _counts(db) == counts
        assert db.get_average_metric_by_filter("reward", ("policy_X", 1)) == 1.0
        assert db.get_average_metric_by_filter("reward", ("policy_Y", 1)) == 3.0


def test_same_simulation_from_two_shards_merges(tmp_path: Path) -> None:
    """Guards the normal parallel case: two processes of one simulation, one shard each."""
    a, b, dest = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "m.duckdb"
    _write_shard(a, "sim", "policy_X", 1.0)
    _write_shard(b, "sim", "policy_X", 3.0)
    merge_shards(dest, [a, b])
    with EvalStatsDB(dest, read_only=True) as db:
        assert db.potential_samples_for_metric("policy_X", 1) == 4
        assert db.get_average_metric_by_filter("reward", ("policy_X", 1)) == 2.0


def test_conflicting_shard_refused_whole(tmp_path: Path) -> None:
    """Guards silent INSERT OR IGNORE of contradicting rows: a shard registering the same
    simulation id for another policy is refused, and none of its rows are merged."""
    a, b, dest = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "m.duckdb"
    _write_shard(a, "sim", "policy_X", 1.0)
    _write_shard(b, "sim", "policy_Y", 3.0)
    with pytest.raises(StatsDBError, match="disagrees"):
        merge_shards(dest, [a, b])
    with EvalStatsDB(dest, read_only=True) as db:
        assert db.get_all_policy_uris() == ["policy_X:v1"]
        assert _counts(db)["episodes"] == 2


def test_merge_refuses_open_shard_and_non_shards(tmp_path: Path) -> None:
    """Guards merging a shard whose writer is still open, and merging foreign files."""
    a, dest = tmp_path / "a.duckdb", tmp_path / "m.duckdb"
    with SimulationStatsDB(a), pytest.raises(StatsDBError, match=r"(?i)close the shard's writer"):
        merge_shards(dest, [a])
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).close()
    with pytest.raises(StatsDBError, match="not a ckptcompat stats shard"):
        merge_shards(dest, [foreign])
    with pytest.raises(StatsDBError, match="does not exist"):
        merge_shards(dest, [tmp_path / "missing.duckdb"])


def test_from_shards_and_context(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Guards the old merge of episode-only shards: the simulation row, sim ids stamped on
    episodes, agent_policies for every (episode x agent) and the metric, as its test had."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for n in range(2):
        with EpisodeStatsDB(shards / f"{n}_worker.duckdb") as db:
            db.record_episode(f"ep-{n}", {}, {0: {"reward": 1.0}}, {0: 0}, 10)
    db = SimulationStatsDB.from_shards_and_context(
        sim_id="sim",
        dir_with_shards=shards,
        agent_map={0: POLICY},
        sim_name="test_sim",
        sim_env="test_env",
        policy=POLICY,
    )
    db.close()
    with EvalStatsDB(shards / "merged.duckdb", read_only=True) as ev:
        rows = ev.query("SELECT DISTINCT policy_key, policy_version FROM agent_policies")
        assert rows == [{"policy_key": "test_policy", "policy_version": 1}]
        assert ev.query("SELECT name, env FROM simulations") == [
            {"name": "test_sim", "env": "test_env"}
        ]
        assert (
            ev.query("SELECT COUNT(*) AS n FROM episodes WHERE simulation_id = 'sim'")[0]["n"] == 2
        )
        assert ev.get_average_metric_by_filter("reward", POLICY) == 1.0
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.WARNING):
        SimulationStatsDB.from_shards_and_context(
            sim_id="s",
            dir_with_shards=empty,
            agent_map={},
            sim_name="n",
            sim_env="e",
            policy=POLICY,
        ).close()
    assert "no stats shards" in caplog.text


# ----------------------------------------------------------------- files and processes

_READER = textwrap.dedent(
    """
    import json, sys
    from ckptcompat.evaluation.stats_db import EvalStatsDB
    with EvalStatsDB(sys.argv[1], read_only=True) as db:
        out = {
            "avg": db.get_average_metric_by_filter("hearts_collected", ("test_policy", 1)),
            "std": db.get_std_metric_by_filter("hearts_collected", ("test_policy", 1)),
            "potential": db.potential_samples_for_metric("test_policy", 1),
            "none": db.get_average_metric_by_filter("reward", ("nobody", 1)),
            "policies": db.get_all_policy_uris(),
            "replays": db.get_replay_urls("test_policy", 1, "test_env"),
        }
    print(json.dumps(out))
    """
)


def _read_results(db: EvalStatsDB) -> dict[str, Any]:
    return {
        "avg": db.get_average_metric_by_filter("hearts_collected", POLICY),
        "std": db.get_std_metric_by_filter("hearts_collected", POLICY),
        "potential": db.potential_samples_for_metric(*POLICY),
        "none": db.get_average_metric_by_filter("reward", ("nobody", 1)),
        "policies": db.get_all_policy_uris(),
        "replays": db.get_replay_urls("test_policy", 1, "test_env"),
    }


def test_reopened_in_a_new_process_reads_the_same(ref_path: Path) -> None:
    """Guards durability and the cross-process contract: a DB written and closed here is
    read by another process (as the CLI's evaluate step and the harness do) identically."""
    with EvalStatsDB(ref_path, read_only=True) as db:
        here = _read_results(db)
    proc = subprocess.run(
        [sys.executable, "-c", _READER, str(ref_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here
    assert here["avg"] == pytest.approx(1.2) and len(here["replays"]) == 5


def test_second_writer_process_refused(ref_path: Path) -> None:
    """Guards 'one writer per DB file': a second process opening a DB held for writing gets
    a StatsDBError pointing at shards and merge_shards, not a raw DuckDB lock error."""
    code = textwrap.dedent(
        """
        import sys
        from ckptcompat.errors import StatsDBError
        from ckptcompat.evaluation.stats_db import SimulationStatsDB
        try:
            SimulationStatsDB(sys.argv[1])
        except StatsDBError as exc:
            print("refused:", exc)
        """
    )
    with SimulationStatsDB(ref_path):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(ref_path)], capture_output=True, text=True, check=True
        )
    assert proc.stdout.startswith("refused:")
    assert "merge_shards" in proc.stdout


def test_newer_or_foreign_layout_refused(ref_path: Path, tmp_path: Path) -> None:
    """Guards reading a DB whose layout this version does not know: a newer schema version,
    or an old Metta-style file with the same table names (REAL values, no policy_uri)."""
    with SimulationStatsDB(ref_path) as db:
        db.query("UPDATE ckptcompat_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StatsDBError, match="schema version"):
        EvalStatsDB(ref_path, read_only=True)
    with pytest.raises(StatsDBError, match="schema version"):
        SimulationStatsDB(ref_path)
    old = tmp_path / "metta.duckdb"
    with duckdb.connect(str(old)) as con:
        con.execute(
            "CREATE TABLE agent_metrics (episode_id TEXT, agent_id INT, metric TEXT, value REAL)"
        )
    with pytest.raises(StatsDBError, match="not a ckptcompat stats DB"):
        EvalStatsDB(old)
    db = EvalStatsDB(tmp_path / "closed.duckdb")
    db.close()
    with pytest.raises(StatsDBError, match="closed"):
        db.get_average_metric_by_filter("reward", POLICY)


# ----------------------------------------------------------------- issue 15: listings, ghosts


def _old_replay_layout(path: Path) -> None:
    """Three simulations, one replayed episode each, as the old replay-URL test laid out:
    (policy1 v1, env1), (policy1 v2, env2), (policy2 v1, env1). In every episode agent 1 is
    an opponent run by policy2 v2, so per-agent rows name policies that are not the
    simulation's."""
    with SimulationStatsDB(path) as db:
        for i, (key, version, env) in enumerate(
            [("policy1", 1, "env1"), ("policy1", 2, "env2"), ("policy2", 1, "env1")]
        ):
            _register(db, f"sim{i}", key, version, name=f"sim{i}", env=env)
            db.record_policy_episode(
                f"sim{i}",
                key,
                version,
                None,
                {0: {"reward": 1.0}},
                agent_ids=[0, 1],
                other_policies={1: ("policy2", 2)},
                step_count=1,
                replay_url=f"https://example.com/replay{i}.json",
            )
        _register(db, "sim-new", "fresh", 0, env="env3")  # registered, no episode yet


def test_listings_read_the_simulations_policy(tmp_path: Path) -> None:
    """Guards issue 15 fault 5: get_all_policy_uris() read agent_policies only, missing a
    policy whose simulation was registered with no episodes yet; get_replay_urls filtered
    through per-agent rows instead of the simulation's policy (0 results where the old DB
    gave 2), and policy_version= alone raised."""
    _old_replay_layout(tmp_path / "r.duckdb")
    replay = [f"https://example.com/replay{i}.json" for i in range(3)]
    with SimulationStatsDB(tmp_path / "r.duckdb", read_only=True) as db:
        assert db.get_all_policy_uris() == [
            "fresh:v0",
            "policy1:v1",
            "policy1:v2",
            "policy2:v1",
            "policy2:v2",
        ]
        assert db.get_replay_urls() == replay
        assert db.get_replay_urls(policy_key="policy1") == replay[:2]
        assert db.get_replay_urls(policy_version=1) == [replay[0], replay[2]]
        assert db.get_replay_urls(policy_key="policy2", policy_version=1) == [replay[2]]
        assert db.get_replay_urls(policy_key="policy2", policy_version=2) == []  # opponent only
        assert db.get_replay_urls(env="env1") == [replay[0], replay[2]]
        assert db.get_replay_urls("policy1", 1, "env1") == [replay[0]]
        assert db.get_replay_urls("fresh") == []


@pytest.mark.parametrize("key, version", [("k", -1), ("k", True), ("file:///x.pt", None)])
def test_replay_url_filters_validated_before_sql(
    ref_path: Path, monkeypatch: pytest.MonkeyPatch, key: Any, version: Any
) -> None:
    """Guards invalid replay filters reaching SQL (a URI as key, a negative or bool epoch)."""
    with SimulationStatsDB(ref_path) as db:
        _forbid_sql(db, monkeypatch)
        with pytest.raises(StatsDBError):
            db.get_replay_urls(key, version)


def test_ghost_episodes_do_not_dilute_averages(tmp_path: Path) -> None:
    """Guards issue 15 fault 6 (Metta's num-episodes regression, fixed in its DB in August
    2025): 5 episodes registered, 2 finished with reward 1.0 for both agents; the 3 that
    never finished (no completed_at, no metric for any agent) must not count, so the
    average is 1.0, not 0.4. An agent missing a metric in a finished episode still counts
    as 0 (potential samples)."""
    path = tmp_path / "ghosts.duckdb"
    with SimulationStatsDB(path) as db:
        _register(db, "sim", *POLICY)
        for _ in range(2):
            db.record_policy_episode(
                "sim", *POLICY, None, {0: {"reward": 1.0}, 1: {"reward": 1.0}}, step_count=100
            )
        # Requested but never finished: rows as a crashed or cut-short worker left them.
        for i in range(3):
            db.query(
                "INSERT INTO episodes (id, simulation_id, step_count) VALUES (?, 'sim', 100)",
                [f"ghost-{i}"],
            )
            for agent in range(2):
                db.query(
                    "INSERT INTO agent_policies VALUES (?, ?, ?, ?, NULL)",
                    [f"ghost-{i}", agent, *POLICY],
                )
        db.record_policy_episode("sim", *POLICY, None, {0: {"reward": 1.0}, 1: {}}, step_count=100)
    with EvalStatsDB(path, read_only=True) as db:
        assert db.potential_samples_for_metric(*POLICY) == 6  # 3 finished x 2 agents
        assert db.get_average_metric_by_filter("reward", POLICY) == pytest.approx(5 / 6)
        assert db.sample_count(POLICY) == 6
        assert db.count_metric_agents(*POLICY, "reward") == 5
        assert db.simulation_scores(POLICY, "reward") == {
            ("test_sim", "test_env"): pytest.approx(5 / 6)
        }


# ----------------------------------------------------------------- issue 15: old calls


def test_query_answers_the_old_dataframe_spellings(eval_db: EvalStatsDB) -> None:
    """Guards issue 15's missing ``query() -> DataFrame``: old callers wrote
    ``db.query(sql)["n"][0]``, ``.empty``, ``.iloc`` and ``.shape``; ckptcompat's own callers
    index rows (``[0]["n"]``). Both spellings answer from one result."""
    pytest.importorskip("pandas", reason="the DataFrame spellings need the stats extra")
    result = eval_db.query("SELECT COUNT(*) AS n FROM episodes")
    assert result[0]["n"] == 5 and result == [{"n": 5}]  # the list of dicts, unchanged
    assert result["n"][0] == 5 and not result.empty and result.shape == (1, 1)
    rows = eval_db.query("SELECT id, step_count FROM episodes ORDER BY id")
    assert list(rows["id"]) == [f"ep-{i}" for i in range(5)]
    assert rows.iloc[0]["step_count"] == 100 and rows.loc[4, "id"] == "ep-4"
    none = eval_db.query("SELECT id FROM episodes WHERE id = 'nope'")
    assert none == [] and none.empty and list(none.columns) == ["id"]


def test_query_dataframe_spellings_without_pandas_say_so(
    eval_db: EvalStatsDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards a bare ModuleNotFoundError (or AttributeError) when pandas is absent: the
    DataFrame spellings raise MissingDependencyError naming the extra; rows still work."""
    from ckptcompat.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "pandas", None)
    result = eval_db.query("SELECT COUNT(*) AS n FROM episodes")
    assert result[0]["n"] == 5
    with pytest.raises(MissingDependencyError, match=r"ckptcompat\[stats\]"):
        result["n"]
    with pytest.raises(MissingDependencyError):
        result.empty  # noqa: B018
    assert not hasattr(result, "iloc")  # probing libraries see "no such attribute"


def test_merge_in_accepts_an_open_db_object(tmp_path: Path) -> None:
    """Guards issue 15's missing ``merge_in(db)``: the old API merged DB objects, e.g.
    ``merged.merge_in(policy_db); policy_db.close()``; the object stays usable after."""
    shard = tmp_path / "x.duckdb"
    _write_shard(shard, "sim-x", "policy_X", 1.0)
    with SimulationStatsDB(tmp_path / "merged.duckdb") as merged:
        with SimulationStatsDB(shard) as open_shard:
            merged.merge_in(open_shard)
            merged.merge_in(open_shard)  # idempotent
            assert open_shard.get_all_policy_uris() == ["policy_X:v1"]  # reopened
            open_shard.record_policy_episode("sim-x", "policy_X", 1, None, {0: {}}, step_count=1)
        assert merged.get_all_policy_uris() == ["policy_X:v1"]
        with pytest.raises(StatsDBError, match="into itself"):
            merged.merge_in(merged)


def test_export_merges_into_dest(tmp_path: Path) -> None:
    """Guards issue 15's missing ``SimulationStatsDB.export(dest)``: exporting into an
    existing DB keeps its policies and adds ours (the old export merged, then uploaded);
    remote destinations are refused, naming what is supported."""
    dest = tmp_path / "out" / "all.duckdb"
    for name in "XYZ":
        _write_shard(tmp_path / f"{name}.duckdb", f"sim-{name}", f"policy_{name}", 1.0)
        with SimulationStatsDB(tmp_path / f"{name}.duckdb") as db:
            assert db.export(dest) == dest
            assert db.get_all_policy_uris() == [f"policy_{name}:v1"]  # still open and usable
    with SimulationStatsDB(dest, read_only=True) as db:
        assert db.get_all_policy_uris() == ["policy_X:v1", "policy_Y:v1", "policy_Z:v1"]
    with SimulationStatsDB(tmp_path / "X.duckdb") as db:
        db.export(f"file://{dest}")  # again: idempotent
        for remote in ("s3://bucket/all.duckdb", "wandb://run/x"):
            with pytest.raises(StatsDBError, match="local"):
                db.export(remote)
        with pytest.raises(StatsDBError, match="onto itself"):
            db.export(tmp_path / "X.duckdb")


def test_from_uri_and_con_for_old_callers(ref_path: Path, tmp_path: Path) -> None:
    """Guards the old ``with SimulationStatsDB.from_uri(path) as db:`` and ``db.con``
    (raw SQL of the period): a local path opens and closes; the connection is reachable
    with a DeprecationWarning; remote URIs are refused naming the supported form."""
    with SimulationStatsDB.from_uri(f"file://{ref_path}", read_only=True) as db:
        with pytest.deprecated_call():
            rows = db.con.execute("SELECT COUNT(*) FROM episodes").fetchall()
        assert rows == [(5,)]
    assert db._con is None  # closed on leaving the block
    with pytest.raises(StatsDBError, match="local"), SimulationStatsDB.from_uri("s3://b/s.duckdb"):
        pass


def test_from_shards_and_context_old_positional_call(tmp_path: Path) -> None:
    """Guards the period's call: from_shards_and_context(sim_id, dir, agent_map, sim_name,
    sim_env, policy_record) positionally, with MockPolicyRecords for the agents; it was
    keyword-only, so the old call raised TypeError."""
    from ckptcompat.policy import MockPolicyRecord

    shards = tmp_path / "shards"
    shards.mkdir()
    with EpisodeStatsDB(shards / "w.duckdb") as db:
        db.record_episode("ep", {"seed": "0"}, {0: {"reward": 1.0}}, {0: 0}, 0)
    with pytest.deprecated_call():
        record = MockPolicyRecord.from_key_and_version("test_policy", 1)
    merged = SimulationStatsDB.from_shards_and_context(
        "sim_id", shards, {0: record}, "test_sim", "env_test", record
    )
    with merged:
        assert merged.query("SELECT simulation_id FROM episodes") == [{"simulation_id": "sim_id"}]
        assert merged.query("SELECT policy_key, policy_version FROM agent_policies") == [
            {"policy_key": "test_policy", "policy_version": 1}
        ]
    SimulationStatsDB.from_shards_and_context(
        "s2", shards, {0: POLICY}, "n", "e", policy_record=POLICY
    ).close()
    with pytest.raises(StatsDBError, match="exactly once"):
        SimulationStatsDB.from_shards_and_context("s3", shards, {}, "n", "e")


def test_new_db_creates_its_directories(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Guards issue 15b bug 10: EpisodeStatsDB(Path('.../newdir/a/b/x.duckdb')) raised
    StatsDBError "cannot open the stats DB ... IO Error" where Metta's class made the parent
    directories; from_shards_and_context over a missing shard directory failed the same
    way, where Metta answered an empty DB and a warning."""
    with EpisodeStatsDB(tmp_path / "newdir" / "a" / "b" / "x.duckdb") as db:
        assert "episodes" in db.tables()
    with caplog.at_level(logging.WARNING):
        merged = SimulationStatsDB.from_shards_and_context(
            "sim", tmp_path / "no_shards_here", {}, "n", "e", POLICY
        )
    with merged:
        assert merged.query("SELECT COUNT(*) AS n FROM episodes") == [{"n": 0}]
    assert "did not exist" in caplog.text
    with pytest.raises(StatsDBError, match="does not exist"):
        EpisodeStatsDB(tmp_path / "elsewhere" / "y.duckdb", read_only=True)
    assert not (tmp_path / "elsewhere").exists()
