"""PolicyEvaluator: checkpoints evaluated by URI, record or explicit key land in the stats DB
under the one key scheme (docs/design.md section 6), deterministically, on real envs.

Budgets are tiny: an untrained greedy agent ends a CartPole-v1 episode in tens of steps,
and MiniGrid-Empty-5x5-v0 truncates at 100 steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from ckptcompat.agents import AgentOutput, AgentState, MockAgent, RecurrentAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import AgentMismatchError, CheckpointError, InputError
from ckptcompat.evaluation.analysis import summarize
from ckptcompat.evaluation.evaluator import (
    EvaluationResult,
    PolicyEvaluator,
    evaluate_policy,
    run_episode,
)
from ckptcompat.evaluation.stats_db import EvalStatsDB
from ckptcompat.policy.mocks import MockPolicyRecord
from ckptcompat.policy.policy_record import PolicyRecord
from ckptcompat.rl.envs import make_env

CARTPOLE = "CartPole-v1"
MINIGRID = "MiniGrid-Empty-5x5-v0"
EPISODES = 3


def _build(kind: str, env_id: str = CARTPOLE, seed: int = 0) -> nn.Module:
    env = make_env(env_id)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if kind == "mock":
                return MockAgent(env.observation_space, env.action_space)
            return RecurrentAgent(env.observation_space, env.action_space, hidden_size=16)
    finally:
        env.close()


def _save(tmp_path: Path, run: str, agent: nn.Module, epoch: int) -> str:
    return SimpleCheckpointManager(run, tmp_path / "data").save_agent(agent, epoch)


@pytest.fixture
def cart_uri(tmp_path: Path) -> str:
    """A MockAgent of run 'cart' saved at epoch 0."""
    return _save(tmp_path, "cart", _build("mock"), 0)


def _db_rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with EvalStatsDB(db_path, read_only=True) as db:
        return db.query(sql, params)


@pytest.mark.parametrize("kind", ["mock", "recurrent"])
def test_agent_saved_at_epoch_0_lands_under_run_and_epoch(tmp_path: Path, kind: str) -> None:
    """Epoch 0 treated as "no version" (``metadata.epoch or 0`` / ``if version:``), or the
    full URI used as the key: the old DB then hid the rows from queries by run name."""
    uri = _save(tmp_path, "cart", _build(kind), 0)
    db_path = tmp_path / "eval.duckdb"
    result = evaluate_policy(uri, db_path, env_id=CARTPOLE, episodes=EPISODES, seed=7)

    assert (result.policy_key, result.policy_version) == ("cart", 0)
    assert result.policy_uri == uri and uri.startswith("file://")
    assert result.seeds == [7, 8, 9]
    # CartPole pays 1 per step: a return that is not the sum of rewards shows here.
    assert result.episode_returns == [float(n) for n in result.episode_lengths]
    assert all(n > 0 for n in result.episode_lengths)
    assert result.mean_return == pytest.approx(sum(result.episode_returns) / EPISODES)
    with EvalStatsDB(db_path, read_only=True) as db:
        assert db.get_all_policy_uris() == ["cart:v0"]
        assert db.potential_samples_for_metric("cart", 0) == EPISODES
        assert db.get_average_metric_by_filter("reward", ("cart", 0)) == pytest.approx(
            result.mean_return
        )
        assert db.get_average_metric_by_filter("episode_length", ("cart", 0)) == pytest.approx(
            result.mean_return
        )
        policies = db.query("SELECT DISTINCT policy_uri FROM agent_policies")
        episodes = db.query("SELECT seed, step_count FROM episodes ORDER BY seed")
        sims = db.query("SELECT env, policy_key, policy_version, finished_at FROM simulations")
    assert policies == [{"policy_uri": uri}]
    assert [(e["seed"], e["step_count"]) for e in episodes] == list(
        zip(result.seeds, result.episode_lengths, strict=True)
    )
    assert [(s["env"], s["policy_key"], s["policy_version"]) for s in sims] == [
        (CARTPOLE, "cart", 0)
    ]
    assert sims[0]["finished_at"] is not None


@pytest.mark.parametrize("kind", ["mock", "recurrent"])
def test_same_uri_and_seeds_give_identical_returns(tmp_path: Path, kind: str) -> None:
    """Evaluation that samples actions, draws from torch's global generator or reuses an
    env's RNG stream across evaluations: two runs of one checkpoint then disagree."""
    uri = _save(tmp_path, "run", _build(kind, seed=3), 5)
    db_path = tmp_path / "eval.duckdb"
    evaluator = PolicyEvaluator(CARTPOLE, episodes=EPISODES, seed=11)
    first = evaluator.evaluate(uri, db_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)  # another global generator state must not matter
        second = evaluator.evaluate(uri, db_path)

    assert first.episode_returns == second.episode_returns
    assert first.episode_lengths == second.episode_lengths
    assert first.simulation_id != second.simulation_id
    with EvalStatsDB(db_path, read_only=True) as db:
        assert db.potential_samples_for_metric("run", 5) == 2 * EPISODES


def test_episode_i_uses_seed_plus_i(tmp_path: Path) -> None:
    """Episodes seeded from one stream (or all with ``seed``) instead of ``seed + i``:
    episode 1 of an evaluation at seed s must be the episode of an evaluation at s + 1."""
    uri = _save(tmp_path, "run", _build("recurrent", seed=1), 1)
    whole = evaluate_policy(uri, tmp_path / "a.duckdb", env_id=CARTPOLE, episodes=3, seed=20)
    single = evaluate_policy(uri, tmp_path / "b.duckdb", env_id=CARTPOLE, episodes=1, seed=21)

    assert single.seeds == [21]
    assert single.episode_returns == whole.episode_returns[1:2]
    assert single.episode_lengths == whole.episode_lengths[1:2]


class _StateProbe(nn.Module):
    """A stateless-looking duck-typed agent whose state counts the steps it has seen."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, bool, tuple[int, ...], bool]] = []

    def initial_state(self, batch_size: int) -> AgentState:
        return (torch.zeros(1, batch_size, 1),)

    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        (count,) = state
        self.calls.append((float(count.item()), bool(done.any()), tuple(obs.shape), deterministic))
        zeros = torch.zeros(1, 1)
        return AgentOutput(torch.zeros(1, 1, dtype=torch.int64), zeros, zeros, zeros, (count + 1,))


def test_recurrent_state_is_carried_within_and_reset_between_episodes(tmp_path: Path) -> None:
    """State dropped between steps (the LSTM sees every step as a first step), state
    leaking from one episode into the next, or sampled (non-greedy) actions."""
    probe = _StateProbe()
    result = evaluate_policy(
        probe,
        tmp_path / "eval.duckdb",
        env_id=CARTPOLE,
        episodes=2,
        policy_key="probe",
        policy_version=0,
    )

    expected = [float(t) for n in result.episode_lengths for t in range(n)]
    assert [c[0] for c in probe.calls] == expected
    assert {c[1:] for c in probe.calls} == {(False, (1, 1, 4), True)}


def test_latest_uri_is_keyed_and_stored_as_its_concrete_epoch(tmp_path: Path) -> None:
    """``:latest`` stored as the key/URI, or resolved twice (keying one file, loading
    another): the DB must hold the concrete epoch and its ``file://`` URI."""
    manager = SimpleCheckpointManager("run", tmp_path / "data")
    manager.save_agent(_build("mock"), 0)
    newest = manager.save_agent(_build("mock", seed=1), 2)
    result = evaluate_policy(
        f"{tmp_path / 'data'}/run:latest", tmp_path / "eval.duckdb", env_id=CARTPOLE, episodes=1
    )

    assert (result.policy_key, result.policy_version, result.policy_uri) == ("run", 2, newest)
    rows = _db_rows(tmp_path / "eval.duckdb", "SELECT policy_key, policy_version FROM simulations")
    assert rows == [{"policy_key": "run", "policy_version": 2}]


def test_mock_uri_is_keyed_by_its_key_and_version(tmp_path: Path) -> None:
    """A ``mock://KEY:vN`` keyed as the whole URI (the stub fault that made every query for
    'test_policy' return NaN) instead of (KEY, N)."""
    result = evaluate_policy(
        "mock://test_policy:v4", tmp_path / "eval.duckdb", env_id=CARTPOLE, episodes=1
    )
    assert (result.policy_key, result.policy_version) == ("test_policy", 4)
    assert result.policy_uri == "mock://test_policy:v4"


def test_policy_record_mock_record_and_uri_give_one_key(tmp_path: Path, cart_uri: str) -> None:
    """Three key schemes at once (record: ``(uri, epoch)``, mock: ``mock://key``, URI: run
    name): the same checkpoint then shows up as three policies in the DB."""
    with pytest.deprecated_call():
        record = PolicyRecord(None, "cart", cart_uri)
    record.policy = SimpleCheckpointManager.load_from_uri(cart_uri)
    with pytest.deprecated_call():
        mock = MockPolicyRecord.from_key_and_version("cart", 0)
    db_path = tmp_path / "eval.duckdb"
    evaluator = PolicyEvaluator(CARTPOLE, episodes=2, seed=3)
    by_uri = evaluator.evaluate(cart_uri, db_path)
    by_record = evaluator.evaluate(record, db_path)
    by_mock = evaluator.evaluate(mock, db_path)

    keys = {(r.policy_key, r.policy_version) for r in (by_uri, by_record, by_mock)}
    assert keys == {("cart", 0)}
    assert by_record.policy_uri == cart_uri
    assert by_record.episode_returns == by_uri.episode_returns  # the same agent
    assert by_mock.policy_uri == "mock://cart:v0"
    with EvalStatsDB(db_path, read_only=True) as db:
        assert db.get_all_policy_uris() == ["cart:v0"]
        assert db.potential_samples_for_metric("cart", 0) == 6


@pytest.mark.parametrize(
    ("key", "version"),
    [(None, None), (None, 3), ("run", None), ("file:///data/run/checkpoints/run_v3.pt", 3)],
)
def test_in_memory_agent_needs_a_valid_explicit_key(
    tmp_path: Path, key: str | None, version: int | None
) -> None:
    """An in-memory agent recorded under a guessed key ("unknown", 0) or a URI: rows that
    no query by run name finds. Refused before any DB file is created."""
    db_path = tmp_path / "eval.duckdb"
    with pytest.raises(InputError, match=r"policy_key|policy_version|policy key"):
        evaluate_policy(
            _build("mock"), db_path, env_id=CARTPOLE, policy_key=key, policy_version=version
        )
    assert not db_path.exists()


def test_in_memory_agent_with_explicit_key(tmp_path: Path) -> None:
    """An explicit key dropped, or the caller's agent left in eval mode afterwards."""
    agent = _build("recurrent").train()
    result = evaluate_policy(
        agent,
        tmp_path / "eval.duckdb",
        env_id=CARTPOLE,
        episodes=2,
        policy_key="inmem",
        policy_version=0,
    )
    assert (result.policy_key, result.policy_version, result.policy_uri) == ("inmem", 0, None)
    assert agent.training
    rows = _db_rows(tmp_path / "eval.duckdb", "SELECT DISTINCT policy_key FROM agent_policies")
    assert rows == [{"policy_key": "inmem"}]


def test_explicit_key_disagreeing_with_uri_is_refused(tmp_path: Path, cart_uri: str) -> None:
    """An explicit key silently overriding the key scheme for a checkpoint."""
    db_path = tmp_path / "eval.duckdb"
    with pytest.raises(InputError, match="disagrees") as info:
        evaluate_policy(cart_uri, db_path, env_id=CARTPOLE, policy_key="cart", policy_version=1)
    assert info.value.expected is not None and "cart:v0" in info.value.expected
    assert not db_path.exists()
    # Repeating the scheme's own key is allowed.
    result = evaluate_policy(
        cart_uri, db_path, env_id=CARTPOLE, episodes=1, policy_key="cart", policy_version=0
    )
    assert result.policy_version == 0


@pytest.mark.parametrize(
    ("agent_spaces", "env_id", "found"),
    [
        (
            (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)),
            MINIGRID,
            "(4,)",
        ),
        (
            (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(3)),
            CARTPOLE,
            "Discrete(3)",
        ),
    ],
    ids=["observation-shape", "action-count"],
)
def test_agent_not_fitting_the_env_is_refused(
    tmp_path: Path, agent_spaces: tuple[gym.Space[Any], gym.Space[Any]], env_id: str, found: str
) -> None:
    """An agent of another env evaluated anyway: a shape traceback deep in the agent, or
    worse, actions the env silently clips. Refused before the DB is created."""
    uri = _save(tmp_path, "other", MockAgent(*agent_spaces), 1)
    db_path = tmp_path / "eval.duckdb"
    with pytest.raises(AgentMismatchError) as info:
        evaluate_policy(uri, db_path, env_id=env_id, episodes=1)
    assert info.value.found is not None and found in info.value.found
    assert info.value.expected is not None and "the env's" in info.value.expected
    assert not db_path.exists()


def test_missing_checkpoint_is_a_typed_error(tmp_path: Path) -> None:
    """A missing file surfacing as a bare OSError/zip traceback, or an empty DB left behind."""
    db_path = tmp_path / "eval.duckdb"
    with pytest.raises(CheckpointError):
        evaluate_policy(tmp_path / "run_v1.pt", db_path, env_id=CARTPOLE, episodes=1)
    assert not db_path.exists()


def test_unsupported_policy_type_is_a_type_error(tmp_path: Path) -> None:
    """Anything else (a state_dict, say) must not be keyed or run."""
    with pytest.raises(TypeError, match="cannot evaluate a dict"):
        evaluate_policy({}, tmp_path / "eval.duckdb", env_id=CARTPOLE)  # type: ignore[arg-type]


def test_minigrid_image_recurrent_agent_runs(tmp_path: Path) -> None:
    """The CNN path: uint8 (7, 7, 3) image observations (read-only array views) through a
    RecurrentAgent loaded from its checkpoint, truncated at MiniGrid's 100 steps."""
    uri = _save(tmp_path, "grid", _build("recurrent", MINIGRID), 0)
    db_path = tmp_path / "eval.duckdb"
    result = evaluate_policy(uri, db_path, env_id=MINIGRID, episodes=2, seed=0)

    assert (result.policy_key, result.policy_version) == ("grid", 0)
    assert all(1 <= n <= 100 for n in result.episode_lengths)
    assert all(0.0 <= r <= 1.0 for r in result.episode_returns)
    with EvalStatsDB(db_path, read_only=True) as db:
        assert db.potential_samples_for_metric("grid", 0, {"sim_env": MINIGRID}) == 2


def test_max_episode_steps_truncates(tmp_path: Path) -> None:
    """An env without a time limit would hang evaluation; the cap must cut and say so."""
    env = make_env(CARTPOLE)
    try:
        outcome = run_episode(_build("mock"), env, seed=0, max_episode_steps=3)
    finally:
        env.close()
    assert (outcome.length, outcome.truncated, outcome.terminated) == (3, True, False)
    assert outcome.episode_return == 3.0


def test_analysis_summarises_the_evaluated_db(tmp_path: Path, cart_uri: str) -> None:
    """The evaluator's rows and the analysis disagreeing (metric names, keys)."""
    db_path = tmp_path / "eval.duckdb"
    result = evaluate_policy(cart_uri, db_path, env_id=CARTPOLE, episodes=EPISODES)
    [row] = summarize(db_path, ("reward",))
    assert (row.policy_key, row.policy_version, row.metric) == ("cart", 0, "reward")
    assert (row.recorded, row.potential) == (EPISODES, EPISODES)
    assert row.mean == pytest.approx(result.mean_return)


def test_result_to_json_is_primitive(tmp_path: Path, cart_uri: str) -> None:
    """The CLI prints the result: a Path or numpy scalar in it breaks json.dumps."""
    result = evaluate_policy(cart_uri, tmp_path / "eval.duckdb", env_id=CARTPOLE, episodes=1)
    data = json.loads(json.dumps(result.to_json()))
    assert data["db_path"] == str(tmp_path / "eval.duckdb")
    assert data["mean_return"] == result.mean_return
    assert isinstance(result, EvaluationResult)


@pytest.fixture(autouse=True)
def _no_global_thread_change() -> Iterator[None]:
    """Library code must leave torch's thread count to the trainer."""
    before = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == before
