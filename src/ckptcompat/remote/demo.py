"""Fixed demo policies for remote evaluation, and where their committed baseline lives.

Six untrained agents, built the same on every torch cell (each from its own seed, under a
forked RNG; none is trained, so their weights depend on the seed and the agent code only),
saved as safe-format runs ``demo0`` ... ``demo5`` at epoch 0: MLPAgents (hidden (16,)) at
even indices, RecurrentAgents (hidden 16) at odd ones. ``benchmarks/remote_demo.py`` and
the tests (tests/remote/test_demo_baseline.py) evaluate them through the queue on
CartPole-v1, :data:`DEMO_EPISODES` greedy episodes from env seed :data:`DEMO_SEED`, and
``ckptcompat eval report --baseline fixtures/remote_baseline.json`` checks the mean returns
against the committed ones (written once by ``eval report --write-baseline``, under torch
2.6.0; greedy episodes on fixed seeds give the same returns in every default cell).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DEMO_BASELINE",
    "DEMO_ENV",
    "DEMO_EPISODES",
    "DEMO_POLICIES",
    "DEMO_SEED",
    "demo_policies",
]

DEMO_ENV = "CartPole-v1"
DEMO_EPISODES = 5
DEMO_SEED = 0
DEMO_POLICIES = 6
#: The committed baseline of the demo policies' mean returns (a source checkout's file).
DEMO_BASELINE = Path(__file__).resolve().parents[3] / "fixtures" / "remote_baseline.json"


def demo_policies(data_dir: str | os.PathLike[str], count: int = DEMO_POLICIES) -> list[str]:
    """Save demo policies ``demo0`` ... ``demo<count-1>`` under ``data_dir``; their URIs.

    Raises:
        CheckpointError: as :meth:`SimpleCheckpointManager.save_agent` (an unwritable dir).
    """
    import torch

    from ckptcompat.agents import RecurrentAgent
    from ckptcompat.agents.mlp import MLPAgent
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.rl.envs import make_env

    env = make_env(DEMO_ENV)
    try:
        spaces = env.observation_space, env.action_space
    finally:
        env.close()
    uris = []
    for index in range(count):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(index)
            agent = (
                MLPAgent(*spaces, hidden_sizes=(16,))
                if index % 2 == 0
                else RecurrentAgent(*spaces, hidden_size=16)
            )
        manager = SimpleCheckpointManager(f"demo{index}", data_dir)
        uris.append(manager.save_agent(agent, epoch=0))
    return uris
