"""The PPO training loop: epochs, checkpoints every ``checkpoint_every`` epochs, exact resume.

Terms. An *epoch* is one rollout of ``num_steps`` steps in each of ``num_envs`` sub-envs
followed by one PPO update (whose inner passes are ``update_epochs``); ``epoch`` counts
completed epochs, so epoch ``e``'s update uses :meth:`PPOConfig.learning_rate_at` ``(e)`` and
the checkpoint written after it is version ``e + 1``. ``agent_step`` counts env steps
(``e * num_steps * num_envs``). The ``epochs`` argument of :meth:`Trainer.train` is the target
total, as the CLI's ``--epochs``.

Cadence. After every epoch whose count is a multiple of ``checkpoint_every`` (and after the
last one) the agent and the trainer state are saved through
:class:`~ckptcompat.checkpoint.manager.SimpleCheckpointManager`. The trainer state holds the
optimizer state, the global torch/numpy/python RNG states (captured by the manager) and, in
``extra``, this run's :class:`TrainerConfig` and counters.

What is reset when. At the start of every *checkpoint epoch* -- an epoch count that is a
multiple of ``checkpoint_every``, including 0 -- and at the first epoch of a resumed process,
every sub-env ``i`` is reset with ``seed + epoch + i``, the recurrent state is zeroed and the
done flags are cleared. Nothing else is ever reseeded: ``seed`` seeds torch, numpy and python
once, at the start of a fresh run, before the agent is built.

Why a resume is bitwise. Between epochs, a run's whole future depends only on: the agent's
parameters and buffers, the optimizer state, the global torch generator (action sampling and
minibatch permutations draw from it; nothing else draws randomness), and the env state plus
the recurrent state. A checkpoint at epoch ``e`` stores the first three exactly; the fourth is
not stored, but it need not be, because *both* the straight run and the resumed one reset it
at epoch ``e`` to the same function of ``(seed, e)``. The learning-rate schedule is a function
of the epoch alone. With ``torch.set_num_threads(1)`` every kernel is deterministic, so
"train k, stop, resume to 2k" equals "train 2k" bit for bit, provided ``k`` is a multiple of
``checkpoint_every`` (the end-of-run save at another ``k`` is resumable, but the straight
run does not reset there, so the two runs diverge from that epoch on).

The price of resetting at checkpoint epochs: a training episode is cut after at most
``checkpoint_every * num_steps`` steps of its sub-env (the cut is bootstrapped like any
rollout end, so the targets stay correct, but states late in long episodes are never seen).
With CartPole's 500-step episodes and a period of 320 steps (10 x 32), one benchmark seed of
three was still below 475 after 102k env steps (its greedy cart drifted off the track after
~100 steps); with the default period of 1,600 steps (50 x 32) all three reached 500.

Several processes (``torchrun --nproc-per-node N``): each rank runs its own sub-envs (rank
``r``'s sub-env ``i`` reset with ``seed + epoch + r * num_envs + i``) and rollout; the update runs
through ``DistributedDataParallel`` (gradients averaged), so the ranks' parameters stay identical;
one epoch counter, ``agent_step`` grows by ``N * batch_size``. Rank 0 writes the safe files from
the unwrapped agent with every rank's RNG streams; ``N = 1`` is untouched (no DDP, no
collective). See :mod:`ckptcompat.rl.distributed` and :mod:`ckptcompat.rl.resume_contract`.

Observation normalisation. An agent with ``update_obs_normalizer(obs)`` (RecurrentAgent,
MLPAgent) has it called with each rollout's observations *after* that rollout's update, so the
rollout and the update see the same normalisation (the PPO ratio starts at exactly 1).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ckptcompat import numerics
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.rng import capture_rng_state
from ckptcompat.rl.distributed import SINGLE, DistContext, rank_seed
from ckptcompat.rl.envs import make_vector_env, reset_all
from ckptcompat.rl.greedy import evaluate_greedy
from ckptcompat.rl.ppo import RolloutBatch, RolloutStorage, ppo_update
from ckptcompat.rl.progress import make_progress
from ckptcompat.rl.resume_contract import (
    ResumeContract,
    decide,
    restore_rank_streams,
    state_digest,
)
from ckptcompat.rl.trainer_config import (
    CHECKPOINT_FORMATS,
    RESUME_SOURCES,
    TrainerConfig,
    TrainResult,
    check_choice,
)
from ckptcompat.rl.trainer_setup import (
    agent_config_for,
    check_fresh,
    latest_trainer_state,
    seed_everything,
)

if TYPE_CHECKING:
    from pathlib import Path

    from ckptcompat.agents.base import Agent

__all__ = ["CHECKPOINT_FORMATS", "RESUME_SOURCES", "Trainer", "evaluate_greedy", "resume", "train"]


class Trainer:
    """PPO training of one run, saved through :class:`SimpleCheckpointManager`.

    Build it with :meth:`start` (a fresh run) or :meth:`resume` (continue the latest trainer
    state), then call :meth:`train` with the target total epochs. Both constructors call
    ``torch.set_num_threads(1)`` (deterministic kernels; see the module docstring).

    Attributes:
        config: the run's settings. manager: its checkpoint manager.
        agent, optimizer: what is being trained (Adam, ``eps=config.ppo.adam_eps``).
        envs: this rank's ``num_envs`` sub-envs (same-step autoreset).
        epoch, agent_step, total_time_s: progress of the run so far (``agent_step``
            counts every rank's env steps).
        dist: this process's rank and the world size (:data:`SINGLE` alone).
        checkpoint_format: one of :data:`CHECKPOINT_FORMATS`.
        contract: the resume contract (:meth:`resume` only; None for a fresh run).
    """

    def __init__(
        self,
        config: TrainerConfig,
        manager: SimpleCheckpointManager,
        agent: Agent,
        *,
        epoch: int = 0,
        agent_step: int = 0,
        total_time_s: float = 0.0,
        progress: bool | None = None,
        dist: DistContext = SINGLE,
        checkpoint_format: str = "safe",
    ) -> None:
        torch.set_num_threads(1)
        self.dist = dist
        self.checkpoint_format = check_choice(
            "checkpoint format", checkpoint_format, CHECKPOINT_FORMATS
        )
        self.contract: ResumeContract | None = None
        self.config = config
        self.manager = manager
        self.agent = agent
        self.optimizer = torch.optim.Adam(
            agent.parameters(), lr=config.ppo.learning_rate, eps=config.ppo.adam_eps
        )
        self.envs = make_vector_env(config.env_id, config.ppo.num_envs, config.seed)
        # The module the update runs through: DDP all-reduces its gradients. The rollout
        # and every save use the unwrapped agent.
        self._module: torch.nn.Module = agent  # type: ignore[assignment]
        if dist.distributed:
            self._module = DistributedDataParallel(agent, broadcast_buffers=False)
        self.epoch = epoch
        self.agent_step = agent_step
        self.total_time_s = total_time_s
        self.progress = progress
        self.uri: str | None = None
        # The rollout carries these across epochs; _reset() sets them. A new process must
        # reset before its first epoch: the env state is not in the checkpoint.
        self._obs = torch.zeros(0)
        self._done = torch.zeros(0)
        self._state: tuple[torch.Tensor, ...] = ()
        self._episode_return = np.zeros(config.ppo.num_envs)
        self._needs_reset = True

    @classmethod
    def start(
        cls,
        config: TrainerConfig,
        run: str,
        data_dir: str | Path,
        *,
        progress: bool | None = None,
        dist: DistContext = SINGLE,
        checkpoint_format: str = "safe",
    ) -> Trainer:
        """A fresh run: seed torch/numpy/python with ``config.seed``, then build the agent.

        Every rank builds the same initial agent; then rank ``r > 0`` reseeds its global
        generators with :func:`~ckptcompat.rl.distributed.rank_seed` ``(seed, r)``.

        Raises:
            InputError: an unknown ``checkpoint_format``.
            CheckpointError: the run already has checkpoints (resume it, or pick a new name).
            AgentMismatchError: the agent class or kwargs do not fit the env.
        """
        torch.set_num_threads(1)  # before the agent's init, which runs kernels too
        manager = SimpleCheckpointManager(run, data_dir)
        check_fresh(manager)
        agent_config = agent_config_for(config)
        seed_everything(config.seed)
        agent = build_agent(config.agent_class_path, agent_config)
        if dist.rank > 0:
            seed_everything(rank_seed(config.seed, dist.rank))
        return cls(
            config,
            manager,
            agent,  # type: ignore[arg-type]
            progress=progress,
            dist=dist,
            checkpoint_format=checkpoint_format,
        )

    @classmethod
    def resume(
        cls,
        run: str,
        data_dir: str | Path,
        *,
        progress: bool | None = None,
        dist: DistContext = SINGLE,
        source: str = "safe",
    ) -> Trainer:
        """Continue a run from its latest trainer state and the agent of the same epoch.

        The optimizer state and the torch/numpy/python RNG states are restored by the
        manager *after* the agent is rebuilt (rebuilding draws from torch's generator for
        the initial weights, which the restore then overwrites). Every rank reads the
        files; each takes its own saved RNG streams (:mod:`.resume_contract`), on any
        world size. ``source="dcp"`` takes the agent's and optimizer's state from the
        epoch's DCP directory instead of the safe files (a collective). The run keeps the
        checkpoint format it was started with. :attr:`contract` says which resume
        contract applies.

        Raises:
            InputError: an unknown ``source``.
            CheckpointNotFoundError: the run has no trainer state, or no agent at its epoch.
            CheckpointError: the trainer state was not written by this trainer.
        """
        torch.set_num_threads(1)
        manager = SimpleCheckpointManager(run, data_dir)
        saved = latest_trainer_state(manager)
        check_choice("resume source", source, RESUME_SOURCES)
        config = TrainerConfig.from_json(saved.extra["trainer_config"])
        agent = manager.load_agent(epoch=saved.epoch)
        trainer = cls(
            config,
            manager,
            agent,  # type: ignore[arg-type]
            epoch=saved.epoch,
            agent_step=saved.agent_step,
            total_time_s=float(saved.extra.get("total_time_s", 0.0)),
            progress=progress,
            dist=dist,
            checkpoint_format=str(saved.extra.get("checkpoint_format", "safe")),
        )
        optimizer = trainer.optimizer if source == "safe" else None
        state = manager.load_trainer_state(saved.epoch, optimizer=optimizer)
        if source == "dcp":
            manager.load_dcp(trainer._module, trainer.optimizer, saved.epoch)
        assert state is not None  # the epoch was just read
        restore_rank_streams(state, dist, config.seed)
        digest = state_digest(agent, trainer.optimizer)
        trainer.contract = decide(saved.extra, dist, source, digest)
        return trainer

    def train(self, epochs: int) -> TrainResult:
        """Train until ``epochs`` epochs are complete (a target total; may be <= ``epoch``).

        Holds the run's writer lock throughout. Saves after every multiple of
        ``checkpoint_every`` and after the last epoch.
        """
        returns: list[float] = []
        stats: dict[str, float] = {}
        since_save: list[float] = []
        progress = make_progress(self.progress) if self.dist.is_main else None
        # Rank 0 holds the run's writer lock for every rank: only it writes the safe files
        # and the index; the others write only their own DCP files, inside the lock's time.
        lock = self.manager if self.dist.is_main else nullcontext()
        with lock, progress if progress is not None else nullcontext():
            task = None
            if progress is not None:
                task = progress.add_task(
                    self.manager.run, total=epochs, completed=self.epoch, info=""
                )
            while self.epoch < epochs:
                started = time.perf_counter()
                if self._needs_reset or self.epoch % self.config.checkpoint_every == 0:
                    self._reset()
                batch, finished = self._rollout()
                for group in self.optimizer.param_groups:
                    group["lr"] = self.config.ppo.learning_rate_at(self.epoch)
                stats = ppo_update(
                    self._module,  # type: ignore[arg-type]
                    self.optimizer,
                    batch,
                    self.config.ppo,
                    torch.default_generator,
                    self.dist.mean if self.dist.distributed else None,
                )
                normalizer = getattr(self.agent, "update_obs_normalizer", None)
                if normalizer is not None:
                    normalizer(self.dist.gather_envs(batch.obs))
                finished = self.dist.gather_list(finished)
                self.epoch += 1
                self.agent_step += self.config.ppo.batch_size * self.dist.world_size
                returns += finished
                since_save += finished
                self.total_time_s += time.perf_counter() - started
                if self.epoch % self.config.checkpoint_every == 0 or self.epoch == epochs:
                    self._save(since_save)
                    since_save = []
                if progress is not None and task is not None:
                    mean = f"{np.mean(returns[-20:]):.1f}" if returns else "-"
                    progress.update(
                        task,
                        completed=self.epoch,
                        info=f"step {self.agent_step}  return(20) {mean}",
                    )
            stats = self.dist.mean_stats(stats)
            self.dist.barrier()  # every rank returns once the last checkpoint is complete
        return TrainResult(
            run=self.manager.run,
            epoch=self.epoch,
            agent_step=self.agent_step,
            uri=self.uri,
            stats=stats,
            episode_returns=returns,
            total_time_s=self.total_time_s,
        )

    def _reset(self) -> None:
        """Reset sub-env ``i`` with ``seed + epoch + rank * num_envs + i``; zero state, dones."""
        num_envs = self.config.ppo.num_envs
        first = self.config.seed + self.epoch + self.dist.rank * num_envs
        self._obs = torch.as_tensor(reset_all(self.envs, first))
        self._done = torch.zeros(num_envs)
        self._state = self.agent.initial_state(num_envs)
        self._episode_return = np.zeros(num_envs)
        self._needs_reset = False

    def _rollout(self) -> tuple[RolloutBatch, list[float]]:
        """One rollout of ``num_steps`` steps; actions sampled from torch's global generator.

        Returns the batch (with GAE) and the returns of the episodes that ended in it.
        Per step, the env's numpy outputs are written straight into numpy views of the
        storage and the agent reads its inputs as views of it, so no tensor is converted or
        allocated per step besides what the agent computes; the agent runs under
        ``torch.inference_mode`` (no autograd bookkeeping at all, about half the cost of a
        small agent's step under ``no_grad``). Its outputs are copied into the storage, and
        :meth:`RolloutStorage.finish` clones the initial state, so no inference tensor
        reaches the update (autograd refuses to save one for backward).
        """
        ppo = self.config.ppo
        storage = RolloutStorage(
            ppo.num_steps, ppo.num_envs, tuple(self._obs.shape[1:]), self._obs.dtype
        )
        obs, dones = storage.obs.numpy(), storage.dones.numpy()
        actions, logprobs = storage.actions.numpy(), storage.logprobs.numpy()
        values, rewards = storage.values.numpy(), storage.rewards.numpy()
        obs[0], dones[0] = self._obs.numpy(), self._done.numpy()
        initial_state = state = self._state
        finished: list[float] = []
        last = ppo.num_steps - 1
        with torch.inference_mode():
            for t in range(ppo.num_steps):
                out = self.agent(storage.obs[t : t + 1], state, storage.dones[t : t + 1])
                state = out.state
                actions[t], logprobs[t], values[t] = (
                    out.actions.numpy()[0],
                    out.logprobs.numpy()[0],
                    out.values.numpy()[0],
                )
                next_obs, reward, terminated, truncated, _ = self.envs.step(actions[t])
                done = np.logical_or(terminated, truncated)
                rewards[t] = reward
                self._episode_return += reward
                if done.any():
                    finished += [float(r) for r in self._episode_return[done]]
                    self._episode_return[done] = 0.0
                if t < last:
                    obs[t + 1], dones[t + 1] = next_obs, done
            self._obs = torch.as_tensor(next_obs)
            self._done = torch.as_tensor(done, dtype=torch.float32)
            self._state = state
            # Greedy, so that bootstrapping draws nothing from the generator.
            next_value = self.agent(
                self._obs[None], self._state, self._done[None], deterministic=True
            ).values[0]
        with torch.no_grad():
            batch = storage.finish(initial_state, next_value, self._done, ppo)
        return batch, finished

    def _save(self, finished: list[float]) -> None:
        """Save the agent (score: mean return of episodes since the last save) and trainer state.

        Every rank: the DCP directory (``checkpoint_format="dcp"``, a collective) and its
        RNG streams, gathered to rank 0. Rank 0 alone: the safe agent file from the
        unwrapped agent and the trainer state, whose ``extra`` records the world size, the
        checkpoint format and the numerics fingerprint (the resume contract reads them).
        """
        if self.checkpoint_format == "dcp":
            self.manager.save_dcp(self._module, self.optimizer, self.epoch, self.agent_step)
        rng_ranks = self.dist.gather_object(capture_rng_state()) if self.dist.distributed else None
        if not self.dist.is_main:
            return
        score = float(np.mean(finished)) if finished else None
        self.uri = self.manager.save_agent(
            self.agent,
            self.epoch,
            metadata={
                "agent_step": self.agent_step,
                "total_time_s": self.total_time_s,
                "score": score,
            },
        )
        self.manager.save_trainer_state(
            self.optimizer,
            self.epoch,
            self.agent_step,
            extra={
                "trainer_config": self.config.to_json(),
                "total_time_s": self.total_time_s,
                "world_size": self.dist.world_size,
                "checkpoint_format": self.checkpoint_format,
                "numerics": numerics.fingerprint(),
            },
            rng_ranks=rng_ranks,
        )


def train(
    config: TrainerConfig,
    run: str,
    data_dir: str | Path,
    epochs: int,
    *,
    progress: bool | None = None,
    dist: DistContext = SINGLE,
    checkpoint_format: str = "safe",
) -> TrainResult:
    """Start run ``run`` with ``config``; train it to ``epochs`` epochs (see :class:`Trainer`)."""
    trainer = Trainer.start(
        config, run, data_dir, progress=progress, dist=dist, checkpoint_format=checkpoint_format
    )
    return trainer.train(epochs)


def resume(
    run: str,
    data_dir: str | Path,
    epochs: int,
    *,
    progress: bool | None = None,
    dist: DistContext = SINGLE,
    source: str = "safe",
) -> TrainResult:
    """Resume run ``run`` from its latest trainer state and train to ``epochs`` in total.

    The result's ``contract`` says which resume contract applied.
    """
    trainer = Trainer.resume(run, data_dir, progress=progress, dist=dist, source=source)
    result = trainer.train(epochs)
    result.contract = trainer.contract
    return result
