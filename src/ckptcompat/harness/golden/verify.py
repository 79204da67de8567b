"""Checking a golden: each file loaded the way a user of this cell would, probed, replayed.

The safe format goes through :class:`SimpleCheckpointManager` (no allowlist); G1, G2 and
bare state_dicts through the allowlist reader. The stored PPO update is replayed and
compared within the manifest's tolerances (records of each check:
:mod:`ckptcompat.harness.golden.records`). The writer (:mod:`ckptcompat.harness.golden.produce`)
reuses :func:`replay_ppo_update`, :func:`probe_outputs` and :func:`greedy_returns`, so
producer and consumer run the same code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ckptcompat.agents.probe import run_probe
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.harness.golden.read import Golden, GoldenError
from ckptcompat.rl.ppo import PPOConfig, RolloutBatch, ppo_update
from ckptcompat.rl.trainer import evaluate_greedy

__all__ = [
    "compare_state_dicts",
    "finite",
    "greedy_returns",
    "load_legacy_agent",
    "load_safe_agent",
    "probe_outputs",
    "probe_problems",
    "replay_ppo_update",
    "single_thread",
]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block (the producer's setting), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- loading
def load_safe_agent(data_dir: str | os.PathLike[str], run: str, epoch: int) -> nn.Module:
    """The agent of safe-format checkpoint ``run`` ``epoch`` under ``data_dir``, via the manager.

    No allowlist is involved (safe format v1); the digest is checked against index.json.

    Raises:
        CheckpointError and subclasses: see :meth:`SimpleCheckpointManager.load_agent`.
    """
    return SimpleCheckpointManager(run, data_dir, cache_size=0).load_agent(epoch)


def load_legacy_agent(golden: Golden, name: str, kind: str) -> nn.Module:
    """Agent ``name``'s G1, G2 or bare state_dict file, read by the allowlist reader.

    A state_dict holds no class, so the agent is rebuilt from the manifest's class_path
    and config and loaded strictly.

    Raises:
        UnsafeCheckpointError, IncompatibleCheckpointError (e.g. a numpy-1 pickle on torch
        < 2.6, which has no allowlist aliases): see :func:`legacy.read_checkpoint`.
        GoldenError: the file's generation is not ``kind``.
    """
    ckpt = legacy.read_checkpoint(golden.path(name, kind))
    if ckpt.generation != kind:
        raise GoldenError(f"{golden.path(name, kind)} read as {ckpt.generation}, not {kind}")
    if ckpt.agent is not None:
        return ckpt.agent
    info = golden.agent(name)
    agent = build_agent(info["class_path"], info["config"])
    agent.load_state_dict(ckpt.state_dict, strict=True)
    return agent


# --------------------------------------------------------------------------- probe, eval
def probe_outputs(agent: nn.Module, obs: torch.Tensor, done: torch.Tensor) -> dict[str, Any]:
    """Greedy outputs on the probe batch as lists: actions, logprobs, entropy, values ``(T, B)``."""
    with single_thread():
        out = run_probe(agent, obs, done)
    return {
        "actions": out.actions.tolist(),
        "logprobs": out.logprobs.tolist(),
        "entropy": out.entropy.tolist(),
        "values": out.values.tolist(),
    }


def probe_problems(golden: Golden, name: str, agent: nn.Module) -> list[str]:
    """How ``agent``'s greedy probe outputs differ from the manifest's (empty: within tolerance).

    Greedy actions must be identical; logprobs, entropy and values within ``rtol``/``atol``.
    """
    probe = golden.agent(name)["probe"]
    obs = torch.tensor(probe["obs"], dtype=getattr(torch, probe["obs_dtype"]))
    done = torch.tensor(probe["done"], dtype=torch.float32)
    got = probe_outputs(agent, obs, done)
    tol = golden.tolerances
    problems = []
    if got["actions"] != probe["actions"]:
        problems.append(f"greedy actions {got['actions']} != expected {probe['actions']}")
    for key in ("logprobs", "entropy", "values"):
        actual, expected = torch.tensor(got[key]), torch.tensor(probe[key])
        if not torch.allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"]):
            worst = float((actual - expected).abs().max())
            problems.append(
                f"{key}: max |diff| {worst:.3g} beyond rtol {tol['rtol']}, atol {tol['atol']}"
            )
    return problems


def greedy_returns(agent: nn.Module, env_id: str, seeds: list[int]) -> list[float]:
    """Return of one greedy episode per seed (:func:`evaluate_greedy`), on one thread."""
    with single_thread():
        return evaluate_greedy(agent, env_id, list(seeds))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PPO replay
def replay_ppo_update(
    data_dir: str | os.PathLike[str], run: str, rollout: Mapping[str, Any]
) -> tuple[nn.Module, dict[str, float]]:
    """One PPO update on a stored rollout, from the stored agent and trainer state.

    Loads agent ``run`` at ``rollout["epoch"]`` via the manager, builds Adam as the trainer
    does (``lr``, ``eps`` from the stored PPO config), restores its state from the trainer
    state (RNG streams untouched), sets the epoch's learning rate and runs
    :func:`ppo_update` with a fresh generator seeded ``rollout["update_seed"]``, on one thread.

    Args:
        data_dir: the directory holding the run directory.
        run: the run (agent) name.
        rollout: the loaded rollout payload (see :mod:`ckptcompat.harness.golden.generate`).

    Returns:
        The updated agent and the update's loss statistics.
    """
    epoch = int(rollout["epoch"])
    ppo = PPOConfig(**rollout["ppo"])
    manager = SimpleCheckpointManager(run, data_dir, cache_size=0)
    agent = manager.load_agent(epoch)
    optimizer = torch.optim.Adam(agent.parameters(), lr=ppo.learning_rate, eps=ppo.adam_eps)
    manager.load_trainer_state(epoch, optimizer=optimizer, restore_rng=False)
    for group in optimizer.param_groups:
        group["lr"] = ppo.learning_rate_at(epoch)
    stored = rollout["batch"]
    batch = RolloutBatch(
        **{k: v for k, v in stored.items() if k != "initial_state"},
        initial_state=tuple(stored["initial_state"]),
    )
    generator = torch.Generator().manual_seed(int(rollout["update_seed"]))
    with single_thread():
        stats = ppo_update(agent, optimizer, batch, ppo, generator)  # type: ignore[arg-type]
    return agent, stats


def compare_state_dicts(
    actual: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    rtol: float,
    atol: float,
) -> list[str]:
    """Keys, dtypes and values (``allclose``) that differ; empty when within tolerance."""
    if set(actual) != set(expected):
        return [f"keys differ: {sorted(set(actual) ^ set(expected))}"]
    problems = []
    for key, want in expected.items():
        got = actual[key]
        if got.dtype != want.dtype or got.shape != want.shape:
            problems.append(
                f"{key}: {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}"
            )
        elif not torch.allclose(got, want, rtol=rtol, atol=atol):
            worst = float((got.double() - want.double()).abs().max())
            problems.append(f"{key}: max |diff| {worst:.3g}")
    return problems


def finite(stats: Mapping[str, float]) -> bool:
    """True when every value of a loss-statistics mapping is a finite number."""
    return all(math.isfinite(float(v)) for v in stats.values())
