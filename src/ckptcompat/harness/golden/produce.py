"""Producing one agent's golden files (the writer side of :mod:`ckptcompat.harness.golden`).

How the files come about mirrors the trainer (:mod:`ckptcompat.rl.trainer`) with
``checkpoint_every=1``: seed everything with :data:`SEED`, build the agent for
:data:`ENV_ID`, collect one rollout, one PPO update -> epoch 1, saved through
:class:`SimpleCheckpointManager` (agent + trainer state, no wall-clock times) and as G1, G2
and a bare state_dict. The rollout of epoch 1 is then collected and stored, and the update
on it is replayed from the *saved* files with
:func:`~ckptcompat.harness.golden.verify.replay_ppo_update`, the function consumers run.
Probe outputs and greedy returns are measured on the agent loaded back from its safe file.
"""

from __future__ import annotations

import copy
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ckptcompat import torch_compat
from ckptcompat.agents.probe import params_digest, probe_batch
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.atomic import write_atomic
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.harness.golden.verify import (
    greedy_returns,
    load_safe_agent,
    probe_outputs,
    replay_ppo_update,
)
from ckptcompat.rl.envs import make_vector_env, reset_all
from ckptcompat.rl.ppo import PPOConfig, RolloutBatch, RolloutStorage, ppo_update
from ckptcompat.rl.trainer import TrainerConfig
from ckptcompat.rl.trainer_setup import env_space_configs

__all__ = [
    "AGENTS",
    "ENV_ID",
    "EPOCH",
    "EVAL_SEEDS",
    "GENERATION_AGENTS",
    "GOLDEN_PPO",
    "SEED",
    "UPDATE_SEED",
    "GoldenAgent",
    "produce_agent",
]

#: Seeds torch, numpy and python before each agent is built; env resets use ``SEED + epoch``.
SEED = 0
#: Seed of the generator that draws the stored update's minibatch permutations.
UPDATE_SEED = 1234
ENV_ID = "CartPole-v1"
#: The epoch of every stored checkpoint (one rollout + one update after the start).
EPOCH = 1
#: One greedy episode per seed; CartPole-v1 episodes of an untrained agent are short.
EVAL_SEEDS: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004)
#: Small PPO: 4 envs x 32 steps = 128 samples, 2 minibatches, 2 passes.
#: Every field explicit: the goldens must not change when PPOConfig's defaults are tuned.
GOLDEN_PPO = PPOConfig(
    num_envs=4,
    num_steps=32,
    num_minibatches=2,
    update_epochs=2,
    learning_rate=2.5e-4,
    anneal_lr_epochs=None,
    adam_eps=1e-5,
    gamma=0.99,
    gae_lambda=0.95,
    clip_coef=0.2,
    clip_vloss=True,
    norm_adv=True,
    ent_coef=0.01,
    vf_coef=0.5,
    max_grad_norm=0.5,
    target_kl=None,
)

_PROBE = {"steps": 4, "batch": 3, "seed": 0}


@dataclass(frozen=True)
class GoldenAgent:
    """An agent the goldens cover.

    Attributes:
        name: run name and directory, e.g. ``"mock"``.
        class_path: the agent class, ``"package.module.Class"``.
        kwargs: constructor arguments besides the spaces (JSON primitives).
    """

    name: str
    class_path: str
    kwargs: dict[str, Any] = field(default_factory=dict)


#: The agents of generation 2 (and, produced before the reproducible mode, generation 1).
AGENTS: tuple[GoldenAgent, ...] = (
    GoldenAgent("mock", "ckptcompat.agents.mock.MockAgent"),
    # Small LSTM (hidden 16) keeps each file a few kB; the code paths are the full agent's.
    GoldenAgent(
        "recurrent",
        "ckptcompat.agents.recurrent.RecurrentAgent",
        {"hidden_size": 16, "encoder_size": 16},
    ),
)
#: The agents of every generation this code writes (``read.GENERATIONS``), append-only: a
#: committed generation's agents never change; a new agent gets a new generation.
GENERATION_AGENTS: dict[int, tuple[GoldenAgent, ...]] = {
    2: AGENTS,
    # The default agent since issue 21, small as above (two LSTMs, two 16 x 16 heads).
    3: (
        GoldenAgent(
            "split_lstm",
            "ckptcompat.agents.split_lstm.SplitLSTMAgent",
            {"hidden_size": 16, "encoder_size": 16, "head_sizes": [16, 16]},
        ),
    ),
}


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@torch.no_grad()
def _rollout(
    agent: nn.Module, envs: Any, epoch: int, ppo: PPOConfig
) -> tuple[RolloutBatch, list[float]]:
    """The rollout the trainer collects at checkpoint epoch ``epoch``.

    Every sub-env ``i`` is reset with ``SEED + epoch + i`` and the recurrent state zeroed,
    as :class:`~ckptcompat.rl.trainer.Trainer` does at a checkpoint epoch; actions are
    sampled from torch's global generator. Returns the batch ``(T, B)`` with GAE and the
    returns of the episodes that ended in it.
    """
    obs = torch.as_tensor(reset_all(envs, SEED + epoch))
    done = torch.zeros(ppo.num_envs)
    state = initial_state = agent.initial_state(ppo.num_envs)
    storage = RolloutStorage(ppo.num_steps, ppo.num_envs, tuple(obs.shape[1:]), obs.dtype)
    episode_return = np.zeros(ppo.num_envs)
    finished: list[float] = []
    for t in range(ppo.num_steps):
        storage.obs[t] = obs
        storage.dones[t] = done
        out = agent(obs[None], state, done[None])
        state = out.state
        storage.actions[t] = out.actions[0]
        storage.logprobs[t] = out.logprobs[0]
        storage.values[t] = out.values[0]
        next_obs, reward, terminated, truncated, _ = envs.step(out.actions[0].numpy())
        ended = np.logical_or(terminated, truncated)
        storage.rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
        episode_return += reward
        finished += [float(r) for r in episode_return[ended]]
        episode_return[ended] = 0.0
        obs = torch.as_tensor(next_obs)
        done = torch.as_tensor(ended, dtype=torch.float32)
    next_value = agent(obs[None], state, done[None], deterministic=True).values[0]
    return storage.finish(initial_state, next_value, done, ppo), finished


def _policy_record(agent: nn.Module, run: str, agent_step: int, score: float | None) -> Any:
    """A G1 PolicyRecord holding ``agent``; its URI is a fixed path, not this machine's."""
    from ckptcompat.policy.policy_metadata import PolicyMetadata
    from ckptcompat.policy.policy_record import PolicyRecord

    with warnings.catch_warnings():
        # G1 *is* the deprecated API; building one to pickle is not a use to warn about.
        warnings.simplefilter("ignore", DeprecationWarning)
        metadata = PolicyMetadata(
            agent_step=agent_step, epoch=EPOCH, generation=0, train_time=0.0, score=score
        )
        record = PolicyRecord(
            None, run, f"file:///golden/{run}/{legacy.g1_filename(EPOCH)}", metadata
        )
    record.policy = agent
    return record


def _save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda writer: torch_compat.save(obj, writer))  # type: ignore[arg-type]


def _batch_payload(batch: RolloutBatch) -> dict[str, Any]:
    fields = {k: v for k, v in batch._asdict().items() if k != "initial_state"}
    return {**fields, "initial_state": list(batch.initial_state)}


def produce_agent(spec: GoldenAgent, stage: Path) -> dict[str, Any]:
    """Write agent ``spec``'s golden files under ``stage/<name>/``; return its manifest section.

    Call with ``SOURCE_DATE_EPOCH`` fixed and one torch thread (``golden.generate`` does);
    reseeds torch, numpy and python with :data:`SEED` first.

    Returns:
        ``{class_path, config, run, epoch, agent_step, score, params_digest, files: {kind:
        path relative to stage}, probe, evaluation, ppo_update}``.
    """
    ppo = GOLDEN_PPO
    config = {**spec.kwargs, **env_space_configs(ENV_ID)}
    _seed_everything(SEED)
    agent = build_agent(spec.class_path, config)
    optimizer = torch.optim.Adam(agent.parameters(), lr=ppo.learning_rate, eps=ppo.adam_eps)
    envs = make_vector_env(ENV_ID, ppo.num_envs, SEED)
    run_dir = stage / spec.name
    try:
        batch, finished = _rollout(agent, envs, 0, ppo)
        for group in optimizer.param_groups:
            group["lr"] = ppo.learning_rate_at(0)
        ppo_update(agent, optimizer, batch, ppo, torch.default_generator)  # type: ignore[arg-type]
        normalizer = getattr(agent, "update_obs_normalizer", None)
        if normalizer is not None:
            normalizer(batch.obs)
        agent_step = ppo.batch_size * EPOCH
        score = float(np.mean(finished)) if finished else None
        trainer_config = TrainerConfig(
            env_id=ENV_ID,
            seed=SEED,
            checkpoint_every=1,
            agent_class_path=spec.class_path,
            agent_kwargs=dict(spec.kwargs),
            ppo=ppo,
        )
        manager = SimpleCheckpointManager(spec.name, stage, cache_size=0)
        manager.save_agent(
            agent, EPOCH, metadata={"agent_step": agent_step, "total_time_s": 0.0, "score": score}
        )
        manager.save_trainer_state(
            optimizer,
            EPOCH,
            agent_step,
            extra={"trainer_config": trainer_config.to_json(), "total_time_s": 0.0},
        )
        g2_name = legacy.g2_filename(spec.name, EPOCH, agent_step=agent_step, score=score)
        legacy.write_g1(
            _policy_record(agent, spec.name, agent_step, score), run_dir / legacy.g1_filename(EPOCH)
        )
        legacy.write_g2(agent, run_dir / g2_name)
        legacy.write_state_dict(agent.state_dict(), run_dir / f"state_dict_v{EPOCH}.pt")
        next_batch, _ = _rollout(agent, envs, EPOCH, ppo)
    finally:
        envs.close()

    rollout = {
        "format": "ckptcompat.golden.rollout",
        "format_version": 1,
        "run": spec.name,
        "epoch": EPOCH,
        "update_seed": UPDATE_SEED,
        "ppo": asdict(ppo),
        "batch": _batch_payload(next_batch),
    }
    _save(rollout, run_dir / f"rollout_v{EPOCH}.pt")
    # Replay from the files just written, exactly as a consumer will.
    stored = torch_compat.load(run_dir / f"rollout_v{EPOCH}.pt")
    updated, stats = replay_ppo_update(stage, spec.name, stored)
    _save(
        {
            "format": "ckptcompat.golden.post_update",
            "format_version": 1,
            "run": spec.name,
            "epoch": EPOCH,
            "params_digest": params_digest(updated),
            "state_dict": {k: v.detach().clone() for k, v in updated.state_dict().items()},
            "stats": stats,
        },
        run_dir / f"post_update_v{EPOCH}.pt",
    )

    loaded = load_safe_agent(stage, spec.name, EPOCH)
    # probe_batch seeds the space it samples from; use a copy so `loaded` stays pristine.
    obs, done = probe_batch(copy.deepcopy(loaded), **_PROBE)
    returns = greedy_returns(loaded, ENV_ID, list(EVAL_SEEDS))
    checkpoints = f"{spec.name}/checkpoints"
    return {
        "class_path": spec.class_path,
        "config": config,
        "run": spec.name,
        "epoch": EPOCH,
        "agent_step": agent_step,
        "score": score,
        "params_digest": params_digest(loaded),
        "files": {
            "safe_v1": f"{checkpoints}/{spec.name}_v{EPOCH}.pt",
            "trainer_state": f"{checkpoints}/{spec.name}_v{EPOCH}.trainer.pt",
            "g1": f"{spec.name}/{legacy.g1_filename(EPOCH)}",
            "g2": f"{spec.name}/{g2_name}",
            "state_dict": f"{spec.name}/state_dict_v{EPOCH}.pt",
            "rollout": f"{spec.name}/rollout_v{EPOCH}.pt",
            "post_update": f"{spec.name}/post_update_v{EPOCH}.pt",
        },
        "probe": {
            **_PROBE,
            "obs": obs.tolist(),
            "obs_dtype": str(obs.dtype).removeprefix("torch."),
            "done": done.tolist(),
            **probe_outputs(loaded, obs, done),
        },
        "evaluation": {
            "env_id": ENV_ID,
            "seeds": list(EVAL_SEEDS),
            "returns": returns,
            "mean_return": float(np.mean(returns)),
        },
        "ppo_update": {
            "update_seed": UPDATE_SEED,
            "params_digest": params_digest(updated),
            "stats": stats,
        },
    }
