"""Tests of ckptcompat.rl.trainer: bitwise resume across processes, cadence, learning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ckptcompat.agents.mock import MockAgent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import CheckpointError, CheckpointNotFoundError
from ckptcompat.rl.envs import make_vector_env
from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer import Trainer, evaluate_greedy, resume, train
from ckptcompat.rl.trainer_config import TrainerConfig

MOCK = "ckptcompat.agents.mock.MockAgent"
RECURRENT = "ckptcompat.agents.recurrent.RecurrentAgent"
MLP = "ckptcompat.agents.mlp.MLPAgent"
SMALL_PPO = PPOConfig(
    num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2, anneal_lr_epochs=10
)

#: Resume cases: stop at K epochs, resume to 2K; checkpoints every 2 epochs, so the runs
#: cross checkpoint epochs (env resets) and non-checkpoint epochs (envs carried over).
K = 4
CASES: dict[str, TrainerConfig] = {
    "mock-cartpole": TrainerConfig(
        env_id="CartPole-v1", seed=11, checkpoint_every=2, agent_class_path=MOCK, ppo=SMALL_PPO
    ),
    "mlp-cartpole": TrainerConfig(
        env_id="CartPole-v1",
        seed=14,
        checkpoint_every=2,
        agent_class_path=MLP,
        agent_kwargs={"hidden_sizes": [32, 32]},
        ppo=SMALL_PPO,
    ),
    "recurrent-cartpole": TrainerConfig(
        env_id="CartPole-v1",
        seed=12,
        checkpoint_every=2,
        agent_class_path=RECURRENT,
        agent_kwargs={"hidden_size": 16, "encoder_size": 16},
        ppo=SMALL_PPO,
    ),
    "recurrent-minigrid": TrainerConfig(
        env_id="MiniGrid-Empty-5x5-v0",
        seed=13,
        checkpoint_every=2,
        agent_class_path=RECURRENT,
        agent_kwargs={"hidden_size": 16, "encoder_size": 16, "cnn_channels": [8, 8]},
        ppo=SMALL_PPO,
    ),
}

_STOP_SCRIPT = """
import json, sys
from ckptcompat.rl.trainer import train
from ckptcompat.rl.trainer_config import TrainerConfig
data_dir, epochs, cases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
for run, config in cases.items():
    train(TrainerConfig.from_json(config), run, data_dir, epochs, progress=False)
"""


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case trained for K epochs in one *separate* Python process, which then exits."""
    data_dir = tmp_path_factory.mktemp("stopped")
    cases = json.dumps({name: config.to_json() for name, config in CASES.items()})
    subprocess.run(
        [sys.executable, "-c", _STOP_SCRIPT, str(data_dir), str(K), cases],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return data_dir


def _assert_nested_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_nested_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_nested_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_in_new_process_is_bitwise_equal_to_straight_run(
    case: str, stopped_runs: Path, tmp_path: Path
) -> None:
    """Guards the resume contract (docs/design.md sec. 7): train K epochs in one process, resume in
    another to 2K == train 2K straight, bit for bit (parameters, buffers, Adam state). Faults
    it catches: an RNG stream not restored (or restored before the agent's rebuild consumed
    it), envs not reset at the checkpoint epoch, the lr schedule tied to the --epochs
    target, optimizer state lost, obs-normaliser buffers not saved."""
    straight = train(CASES[case], "straight", tmp_path, 2 * K, progress=False)
    resumed = resume(case, stopped_runs, 2 * K, progress=False)
    assert (resumed.epoch, resumed.agent_step) == (straight.epoch, straight.agent_step)
    assert resumed.agent_step == 2 * K * SMALL_PPO.batch_size
    assert resumed.stats == straight.stats

    a = SimpleCheckpointManager("straight", tmp_path)
    b = SimpleCheckpointManager(case, stopped_runs)
    assert [e.epoch for e in a.list_checkpoints()] == [2, 4, 6, 8]
    assert [e.epoch for e in b.list_checkpoints()] == [2, 4, 6, 8]
    _assert_nested_equal(a.load_agent(2 * K).state_dict(), b.load_agent(2 * K).state_dict())
    state_a = a.load_trainer_state(2 * K, restore_rng=False)
    state_b = b.load_trainer_state(2 * K, restore_rng=False)
    assert state_a is not None and state_b is not None
    _assert_nested_equal(state_a.optimizer_state, state_b.optimizer_state)
    # The runs did learn something: the parameters moved away from the epoch-2 checkpoint.
    early, late = a.load_agent(2).state_dict(), a.load_agent(2 * K).state_dict()
    assert any(not torch.equal(early[k], late[k]) for k in early)


def test_fresh_start_refuses_a_run_with_checkpoints(tmp_path: Path) -> None:
    """Guards against a fresh `train` silently overwriting (mixing into) an existing run."""
    config = CASES["mock-cartpole"]
    train(config, "run", tmp_path, 2, progress=False)
    with pytest.raises(CheckpointError, match="already has checkpoints"):
        Trainer.start(config, "run", tmp_path)


def test_resume_without_trainer_state_says_how_to_start(tmp_path: Path) -> None:
    """Guards against a resume of an unknown run starting from scratch without a word."""
    with pytest.raises(CheckpointNotFoundError, match="no trainer state"):
        Trainer.resume("nothing", tmp_path)


def test_end_of_run_checkpoint_off_cadence_is_resumable(tmp_path: Path) -> None:
    """Guards against losing the last epochs of a run whose target is not a multiple of
    checkpoint_every: the final epoch is saved, and resume continues from it."""
    first = train(CASES["mock-cartpole"], "run", tmp_path, 3, progress=False)
    assert first.uri is not None and first.uri.endswith("run_v3.pt")
    second = resume("run", tmp_path, 5, progress=False)
    assert second.epoch == 5
    epochs = [e.epoch for e in SimpleCheckpointManager("run", tmp_path).list_checkpoints()]
    assert epochs == [2, 3, 4, 5]


def test_progress_display_turns_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards against progress output that cannot be silenced (it would corrupt the CLI's
    one-record stdout) and against the rich display crashing when enabled."""
    train(CASES["mock-cartpole"], "quiet", tmp_path, 1, progress=False)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    train(CASES["mock-cartpole"], "loud", tmp_path, 1, progress=True)
    loud = capsys.readouterr()
    assert loud.out == ""
    assert "loud" in loud.err


def test_evaluate_greedy_is_deterministic_and_draws_no_randomness() -> None:
    """Guards against evaluation that samples actions (noisy learning checks) or advances
    torch's global generator (which would shift a training run that evaluates)."""
    torch.manual_seed(0)
    agent = MockAgent()
    before = torch.get_rng_state()
    first = evaluate_greedy(agent, "CartPole-v1", [1, 2, 3])
    assert torch.equal(torch.get_rng_state(), before)
    assert first == evaluate_greedy(agent, "CartPole-v1", [1, 2, 3])
    assert len(first) == 3 and all(1.0 <= r <= 500.0 for r in first)


def _random_policy_mean_return(seeds: list[int]) -> float:
    """Mean CartPole-v1 return of uniformly random actions, one episode per seed."""
    envs = make_vector_env("CartPole-v1", len(seeds), 0)
    _obs, _ = envs.reset(seed=seeds)
    rng = np.random.default_rng(0)
    totals, running = np.zeros(len(seeds)), np.ones(len(seeds), dtype=bool)
    while running.any():
        _, reward, terminated, truncated, _ = envs.step(rng.integers(0, 2, size=len(seeds)))
        totals += np.where(running, reward, 0.0)
        running &= ~(terminated | truncated)
    envs.close()
    return float(totals.mean())


#: Learning check: CleanRL's CartPole PPO settings, constant lr. Their early greedy returns
#: are steadier than the default config's (lr 1e-3, 20 update epochs), whose greedy policy
#: still flips between near-uniform argmax choices in its first ~5k steps.
LEARN_PPO = PPOConfig(
    num_envs=4,
    num_steps=128,
    num_minibatches=4,
    update_epochs=4,
    learning_rate=2.5e-4,
    anneal_lr_epochs=None,
    gamma=0.99,
    gae_lambda=0.95,
    clip_vloss=True,
    ent_coef=0.01,
)
#: Budget: 8 epochs = 4,096 env steps per seed.
LEARN_EPOCHS = 8
#: Stated margin: the trained greedy policy's mean return must be at least this multiple of
#: the random policy's (measured on t24 and t215, seeds 0-5: random 20.2; trained 55-80).
LEARN_MARGIN = 2.0


#: Seed 0 learns in every cell: a torch release whose kernels or autograd break learning
#: fails there. Seeds 1 and 2 check that learning is not one lucky seed, a property of the
#: PPO code and its settings, not of torch's version: they run in one cell (issue 21 item
#: 4, "running cells' slow training once"; ~14 s of a worker per cell).
LEARN_SEEDS = [
    0,
    pytest.param(1, marks=pytest.mark.one_cell),
    pytest.param(2, marks=pytest.mark.one_cell),
]


@pytest.mark.slow
@pytest.mark.parametrize("seed", LEARN_SEEDS)
@pytest.mark.parametrize("agent", [RECURRENT, MLP], ids=["recurrent", "mlp"])
def test_ppo_learns_cartpole_beyond_random(agent: str, seed: int, tmp_path: Path) -> None:
    """Guards against PPO that runs but does not learn (a sign error in the surrogate,
    advantages not bootstrapped, done masks misaligned, lr never applied): with a tiny budget
    each agent's greedy return beats a random policy's by LEARN_MARGIN times (the MLP agent
    trains on flat minibatches, the recurrent one on whole env sequences). Seed 0 in every
    cell, seeds 1 and 2 in one (:data:`LEARN_SEEDS`)."""
    eval_seeds = list(range(1000, 1010))
    random_mean = _random_policy_mean_return(eval_seeds)
    config = TrainerConfig(
        env_id="CartPole-v1",
        seed=seed,
        checkpoint_every=LEARN_EPOCHS,
        agent_class_path=agent,
        ppo=LEARN_PPO,
    )
    trainer = Trainer.start(config, "learn", tmp_path, progress=False)
    trainer.train(LEARN_EPOCHS)
    greedy_mean = float(np.mean(evaluate_greedy(trainer.agent, "CartPole-v1", eval_seeds)))
    assert greedy_mean >= LEARN_MARGIN * random_mean, (greedy_mean, random_mean)
