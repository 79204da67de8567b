"""``migrate``: any checkpoint generation -> the safe format, verified equal.

The source is read with ``weights_only=True`` and the curated allowlist
(:func:`.legacy.read_checkpoint`). Only when that is refused *and* the user passed
``trust=True`` (``ckptcompat migrate --trust``) does it fall back to
:func:`ckptcompat.torch_compat.trusted_load`, the one audited ``weights_only=False``.
The agent is rebuilt from ``class_path`` + config, the weights loaded strictly (a DDP
``module.`` or torch.compile ``_orig_mod.`` prefix on every key is stripped first and
reported, :mod:`.key_prefixes`), the result
written in the safe format, read back, and its greedy outputs on a probe batch compared
bitwise with the source's (:mod:`.verified_write`); a mismatch removes the new file and
raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ckptcompat import torch_compat
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.key_prefixes import load_error, strip_wrapper_prefix
from ckptcompat.checkpoint.layout import parse_filename, run_dir_of
from ckptcompat.checkpoint.uri import file_uri
from ckptcompat.checkpoint.verified_write import write_verified
from ckptcompat.errors import (
    AgentMismatchError,
    InputError,
    UnsafeCheckpointError,
)
from ckptcompat.scan.torch_names import WEIGHTS_ONLY_GLOBALS

__all__ = ["UNKNOWN_RUN_EPOCH", "MigrationReport", "migrate"]

#: The problem of the InputError raised when neither the file's name, its metadata nor the
#: caller gives a run name and epoch (a directory migration rewords its fix).
UNKNOWN_RUN_EPOCH = "cannot tell the run name and epoch of this checkpoint"


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did.

    Attributes:
        source: the file read.
        destination: ``file://`` URI of the safe-format file written.
        generation: the source's generation (``g1``, ``g2``, ``state_dict``, ``safe_v1``;
            ``dcp`` for a DCP directory, :mod:`.dcp_migrate`).
        loader: ``allowlist`` (weights_only + curated entries), ``safe`` (no allowlist)
            or ``trusted`` (``weights_only=False``, only with ``trust=True``).
        allowlist: the curated names the read needed.
        run, epoch: the destination's run name and epoch.
        outputs_equal: greedy probe outputs of source and destination are bitwise equal.
        stripped_prefix: the wrapper prefix removed from every state_dict key (DDP's
            ``module.``, torch.compile's ``_orig_mod.``; :mod:`.key_prefixes`), ``""`` when
            the keys fit the agent as saved.
    """

    source: str
    destination: str
    generation: str
    loader: Literal["allowlist", "safe", "trusted"]
    allowlist: tuple[str, ...]
    run: str
    epoch: int
    outputs_equal: bool
    stripped_prefix: str = ""


def _read(src: Path, trust: bool) -> tuple[legacy.LegacyCheckpoint, str]:
    try:
        ckpt = legacy.read_checkpoint(src)
    except UnsafeCheckpointError:
        if not trust:
            raise
        return legacy.interpret(torch_compat.trusted_load(src, map_location="cpu"), src), "trusted"
    needs_allowlist = any(n not in WEIGHTS_ONLY_GLOBALS for n in ckpt.allowlist)
    return ckpt, "allowlist" if needs_allowlist else "safe"


def _run_and_epoch(
    ckpt: legacy.LegacyCheckpoint, run: str | None, epoch: int | None
) -> tuple[str, int]:
    name = parse_filename(ckpt.path.name)
    meta = ckpt.metadata
    if run is None and name is not None and name.kind == "g1":
        # The key scheme (docs/design.md section 6): model_NNNN.pt -> (run directory name, NNNN).
        run = run_dir_of(ckpt.path).name
    if run is None:
        run = meta.get("run") or (name.run if name is not None and name.run else None)
    if epoch is None:
        epoch = name.epoch if name is not None else meta.get("epoch")
    if not run or epoch is None:
        raise InputError(  # a missing argument: the command line exits 2
            UNKNOWN_RUN_EPOCH,
            path=ckpt.path,
            expected="a name like model_<NNNN>.pt, <run>:v<E>.pt, <run>__e<E>__...pt or metadata",
            found=f"run={run!r}, epoch={epoch!r}",
            fix="pass run= and epoch= (--run/--epoch on the command line)",
        )
    return str(run), int(epoch)


def _training_facts(ckpt: legacy.LegacyCheckpoint) -> dict[str, Any]:
    meta = ckpt.metadata
    facts: dict[str, Any] = {
        "agent_step": int(meta.get("agent_step", 0) or 0),
        "total_time_s": float(meta.get("total_time_s", meta.get("train_time", 0.0)) or 0.0),
        "score": meta.get("score"),
    }
    name = parse_filename(ckpt.path.name)
    if name is not None and name.kind == "g2_dunder" and ckpt.generation == "g2":
        facts["agent_step"] = name.agent_step
        facts["total_time_s"] = name.total_time_s
        facts["score"] = name.score
    if facts["score"] is not None:
        facts["score"] = float(facts["score"])
    return facts


def _rebuild(
    ckpt: legacy.LegacyCheckpoint, class_path: str | None, config: Any
) -> tuple[nn.Module, str]:
    """The agent rebuilt and loaded strictly, and the wrapper prefix stripped from the
    saved keys to fit it (``""``: none)."""
    class_path = class_path or ckpt.class_path
    config = config if config is not None else ckpt.config
    if class_path is None or config is None:
        raise AgentMismatchError(
            "cannot rebuild the agent: its class path or config is unknown",
            path=ckpt.path,
            expected="an agent with class_path and a JSON config (or both given explicitly)",
            found=f"class_path={class_path!r}, config={'present' if config else 'absent'}",
            fix="pass class_path= and config= (--class-path/--config on the command line)",
        )
    agent = build_agent(class_path, config)
    state_dict, prefix = strip_wrapper_prefix(ckpt.state_dict, list(agent.state_dict()))
    try:
        agent.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise AgentMismatchError(
            "the saved weights do not fit the rebuilt agent",
            path=ckpt.path,
            expected=f"the state_dict of {class_path} with this config",
            found=load_error(exc),
            fix="check class_path and config",
        ) from exc
    return agent, prefix


def migrate(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    trust: bool = False,
    run: str | None = None,
    epoch: int | None = None,
    class_path: str | None = None,
    config: dict[str, Any] | None = None,
) -> MigrationReport:
    """Convert ``src`` (any generation) into the safe format at ``dst``.

    Args:
        src: the checkpoint to convert.
        dst: a ``.pt`` file path (written standalone) or a data_dir (written through
            SimpleCheckpointManager as ``<dst>/<run>/checkpoints/<run>_v<epoch>.pt``).
        trust: allow ``weights_only=False`` when the allowlist cannot cover ``src``.
        run, epoch: override what the file name or metadata say.
        class_path, config: needed for a bare state_dict or a foreign agent.

    Raises:
        UnsafeCheckpointError: ``src`` needs globals outside the allowlist and ``trust``
            is False (``.globals`` lists them).
        AgentMismatchError: the agent cannot be rebuilt, or the outputs differ.
        CheckpointError: ``dst`` already exists. InputError: run/epoch unknown (exit 2).
    """
    src = Path(src)
    ckpt, loader = _read(src, trust)
    agent, prefix = _rebuild(ckpt, class_path, config)
    run, epoch = _run_and_epoch(ckpt, run, epoch)
    facts = _training_facts(ckpt)
    written = write_verified(
        agent, dst, run=run, epoch=epoch, facts=facts, source=src, reference=ckpt.agent
    )
    return MigrationReport(
        str(src), file_uri(written), ckpt.generation, loader, ckpt.allowlist, run, epoch, True,
        prefix,
    )  # fmt: skip
