"""The trainer's view of ``torch.distributed``: which rank it is, and the few collectives it uses.

A run started by ``torchrun --nproc-per-node N`` (or ``ckptcompat run train --nproc N``,
which starts torchrun itself) has ``N`` processes; torchrun's environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) tells each which one it is, and
:func:`from_environment` joins the default process group over ``gloo`` (the trainer's
tensors are on the CPU; nccl would need them on a GPU). A process not started by torchrun,
or started with ``N = 1``, is :data:`SINGLE`: no process group, no DDP, no collective, so
one process computes exactly what the trainer computed before it knew about ranks.

How one seed becomes ``N`` streams (docs/design.md section 7):

* every rank seeds torch/numpy/python with ``seed`` before building the agent, so the
  initial weights are identical (DDP also broadcasts rank 0's at construction);
* then rank ``r > 0`` reseeds its global generators with :func:`rank_seed` ``(seed, r)``,
  so ranks sample different actions; rank 0 keeps the stream a single process has;
* sub-env ``i`` of rank ``r`` is reset with ``seed + epoch + r * num_envs + i``: the ``N``
  ranks together reset like one process with ``N * num_envs`` sub-envs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist

from ckptcompat.errors import InputError

__all__ = [
    "SINGLE",
    "DistContext",
    "exit_without_teardown",
    "from_environment",
    "rank_seed",
    "session",
]

#: torchrun's variables; a process with ``WORLD_SIZE`` set was started by a launcher.
_WORLD_ENV, _RANK_ENV = "WORLD_SIZE", "RANK"


@dataclass(frozen=True)
class DistContext:
    """This process's place in a run: rank ``0 <= rank < world_size``.

    The collectives below are identities when ``world_size == 1`` (and then never touch
    ``torch.distributed``); otherwise they need the default process group.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the safe format and the index."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains (DDP, collectives)."""
        return self.world_size > 1

    def gather_envs(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``(T, B, ...)`` rollout tensor, concatenated on the env dimension.

        Returns ``(T, world_size * B, ...)`` in rank order, the same on every rank (rank
        ``r``'s sub-env ``i`` is global sub-env ``r * B + i``). Any dtype gloo carries
        (float32 vectors, uint8 images).
        """
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=1)

    def gather_list(self, values: list[Any]) -> list[Any]:
        """Every rank's list (picklable items), concatenated in rank order, on every rank."""
        if not self.distributed:
            return values
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, values)
        return [item for part in out for item in part]

    def gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` alone)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (float64 all-reduce; rank order free)."""
        if not self.distributed:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total[0]) / self.world_size

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Each stat averaged over the ranks (keys in the same order on every rank)."""
        if not self.distributed or not stats:
            return stats
        keys = sorted(stats)
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return {k: float(v) / self.world_size for k, v in zip(keys, values, strict=True)}

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for alone)."""
        if self.distributed:
            dist.barrier()


#: One process, no process group: what the trainer was before it knew about ranks.
SINGLE = DistContext()


def rank_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """The seed of rank ``rank``'s global generators, derived from the run's one ``seed``.

    Rank 0 of epoch 0 gets ``seed`` itself (a single process's stream). Others get 32 bits
    of numpy's ``SeedSequence([seed, rank, epoch])``, so streams of different ranks (and of
    a rank that joins at ``epoch`` with no saved stream, after a world-size change) do not
    overlap the way ``seed + rank`` would with the run of seed ``seed + 1``.
    """
    if rank == 0 and epoch == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InputError(
            f"the environment variable {name} is not an integer",
            expected=f"{name} as torchrun sets it",
            found=repr(raw),
            fix="start the run with `ckptcompat run train --nproc N` or torchrun",
        ) from None


def from_environment() -> DistContext:
    """This process's context, from torchrun's environment; joins the process group.

    No ``WORLD_SIZE`` (not started by a launcher) or ``WORLD_SIZE=1``: :data:`SINGLE`.
    Otherwise the default process group is initialised (``gloo``, ``env://``) unless it
    already is.

    Raises:
        InputError: ``RANK``/``WORLD_SIZE`` malformed or inconsistent.
    """
    world = _env_int(_WORLD_ENV)
    if world is None or world == 1:
        return SINGLE
    rank = _env_int(_RANK_ENV)
    if world < 1 or rank is None or not 0 <= rank < world:
        raise InputError(
            "torchrun's RANK/WORLD_SIZE do not describe a rank of a run",
            expected="0 <= RANK < WORLD_SIZE",
            found=f"RANK={os.environ.get(_RANK_ENV)!r} WORLD_SIZE={world}",
            fix="start the run with `ckptcompat run train --nproc N` or torchrun",
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


@contextmanager
def session() -> Iterator[DistContext]:
    """:func:`from_environment`, and the process group destroyed on the way out."""
    context = from_environment()
    try:
        yield context
    finally:
        if context.distributed and dist.is_initialized():
            dist.destroy_process_group()


def exit_without_teardown(code: int = 0) -> NoReturn:
    """End a torchrun rank now: flush stdout and stderr, then ``os._exit(code)``.

    For a rank that has left its process group and has nothing left to write. On 2.15.0 a
    gloo rank sometimes aborts in the interpreter's teardown after the group was destroyed
    ("terminate called without an active exception", SIGABRT; about 1 two-rank run in 10,
    measured in the matrix's DCP phase and the DCP golden runs), which torchrun reports as
    the whole run failing. Skipping the teardown skips that abort; files must already be
    closed (and fsynced where it matters).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
