"""Which resume contract applies to a resumed run, and each rank's RNG streams on resume.

Two contracts (docs/design.md section 7):

* ``bitwise``: the same world size, the same torch version and numerics fingerprints that
  :func:`ckptcompat.numerics.compare` allows to be compared bit for bit. Then "train k,
  stop, resume to 2k" equals "train 2k" bit for bit, parameters and optimizer state, for
  any world size: every rank restores its own saved streams.
* ``exact_state``: anything else (another world size, another torch, another kernel path,
  or a trainer state saved before ranks and fingerprints were recorded). The loaded
  parameters and optimizer state equal the saved ones exactly and training continues with
  finite losses, but the future differs: a rank that did not exist when the run was saved
  has no saved stream and is seeded with :func:`~ckptcompat.rl.distributed.rank_seed`
  ``(seed, rank, epoch)``, and the ranks' sub-envs cover other env seeds.

The trainer state's ``extra`` records what the decision needs: ``world_size`` and the
``numerics`` fingerprint of the saving rank 0 (whose ``torch`` is the version).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from ckptcompat import numerics
from ckptcompat.checkpoint.rng import restore_rng_state
from ckptcompat.rl.distributed import rank_seed
from ckptcompat.rl.trainer_setup import seed_everything

if TYPE_CHECKING:
    from torch import nn

    from ckptcompat.checkpoint.trainer_state import TrainerState
    from ckptcompat.rl.distributed import DistContext

__all__ = ["ContractKind", "ResumeContract", "decide", "restore_rank_streams", "state_digest"]

ContractKind = Literal["bitwise", "exact_state"]


@dataclass(frozen=True)
class ResumeContract:
    """The contract a resume runs under, and why.

    Attributes:
        kind: ``"bitwise"`` or ``"exact_state"`` (module docstring).
        reason: why not bitwise; empty when bitwise.
        saved_world_size, world_size: ranks of the saving run and of this one.
        saved_torch: the torch that saved the run (None when not recorded).
        source: ``"safe"`` (rank 0's files) or ``"dcp"`` (the DCP directory).
        loaded_digest: :func:`state_digest` of the parameters, buffers and optimizer
            state just after loading, before any training (compare it with the saved
            files' to check "equal to the saved ones exactly").
    """

    kind: ContractKind
    reason: str
    saved_world_size: int
    world_size: int
    saved_torch: str | None
    source: str
    loaded_digest: str

    def to_json(self) -> dict[str, Any]:
        """JSON primitives, for a result record's outputs."""
        return asdict(self)


def state_digest(agent: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str:
    """``sha256:<hex>`` over the agent's state_dict and (optionally) the optimizer's state.

    Tensors contribute name, dtype, shape and bytes (CPU, contiguous); optimizer state is
    walked in its ``state_dict()`` order (parameter index, then field name), non-tensor
    values by ``repr``. Equal digests mean bitwise-equal states.
    """
    h = hashlib.sha256()

    def feed(name: str, value: Any) -> None:
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value).encode())

    for name, value in agent.state_dict().items():
        feed(name, value)
    if optimizer is not None:
        state = optimizer.state_dict()
        for index in sorted(state["state"]):
            for field in sorted(state["state"][index]):
                feed(f"state.{index}.{field}", state["state"][index][field])
        for i, group in enumerate(state["param_groups"]):
            feed(f"group.{i}", sorted((k, repr(v)) for k, v in group.items()))
    return "sha256:" + h.hexdigest()


def decide(
    extra: dict[str, Any], dist: DistContext, source: str, loaded_digest: str
) -> ResumeContract:
    """The contract of resuming a trainer state whose ``extra`` is given, here.

    ``extra["world_size"]`` missing means 1 (states saved before ranks were recorded);
    ``extra["numerics"]`` missing means no bitwise claim (no fingerprint to compare).
    """
    saved_world = int(extra.get("world_size", 1))
    saved_fp = extra.get("numerics")
    saved_torch = saved_fp.get("torch") if isinstance(saved_fp, dict) else None
    here = numerics.fingerprint()
    reasons = []
    if saved_world != dist.world_size:
        reasons.append(f"world size {saved_world} -> {dist.world_size}")
    if saved_torch != here.get("torch"):
        reasons.append(f"torch {saved_torch} -> {here.get('torch')}")
    comparison = numerics.compare(saved_fp if isinstance(saved_fp, dict) else None, here)
    if not comparison.bitwise:
        reasons.append(comparison.reason)
    return ResumeContract(
        kind="exact_state" if reasons else "bitwise",
        reason="; ".join(reasons),
        saved_world_size=saved_world,
        world_size=dist.world_size,
        saved_torch=saved_torch,
        source=source,
        loaded_digest=loaded_digest,
    )


def restore_rank_streams(state: TrainerState, dist: DistContext, seed: int) -> None:
    """Give rank ``dist.rank > 0`` its own streams; rank 0 keeps the restored ``rng``.

    The manager has restored the trainer state's ``rng`` (rank 0's streams) on every rank.
    A rank the saving run had takes its saved streams from ``rng_ranks``; a rank it did
    not have is seeded with ``rank_seed(seed, rank, epoch)`` (torch, numpy and python).
    """
    if dist.rank == 0:
        return
    if state.rng_ranks is not None and dist.rank < len(state.rng_ranks):
        restore_rng_state(state.rng_ranks[dist.rank])
        return
    seed_everything(rank_seed(seed, dist.rank, state.epoch))
