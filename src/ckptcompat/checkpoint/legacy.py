"""Older checkpoint generations: write them (for goldens and tests), read them safely.

Generations (docs/design.md section 4):

* **G1** ``model_<NNNN>.pt``: a whole pickled PolicyRecord holding the agent.
* **G2** ``<run>__e<E>__s<S>__t<T>__sc<SC>.pt`` or ``<run>:v<E>.pt``: a whole pickled agent.
* **state_dict**: a bare ``OrderedDict`` of tensors.
* **safe_v1**: what :class:`SimpleCheckpointManager` writes (not legacy; recognised here).

Reading never calls ``weights_only=False``: the static scan lists every global the file
names, each must be on the curated allowlist (:mod:`.allowlist`), and the file is loaded
with ``weights_only=True`` plus exactly those entries. Anything else raises
UnsafeCheckpointError naming every offender. :func:`migrate` (in :mod:`.migrate`) turns any
generation into the safe format.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ckptcompat import torch_compat
from ckptcompat.checkpoint.atomic import make_dirs, write_atomic
from ckptcompat.errors import IncompatibleCheckpointError, UnsafeCheckpointError
from ckptcompat.scan import allowlist, scan
from ckptcompat.scan.danger import is_dangerous
from ckptcompat.scan.torch_names import WEIGHTS_ONLY_GLOBALS

__all__ = [
    "Generation",
    "LegacyCheckpoint",
    "g1_filename",
    "g2_filename",
    "interpret",
    "read_checkpoint",
    "required_allowlist",
    "write_g1",
    "write_g2",
    "write_state_dict",
]

Generation = Literal["g1", "g2", "state_dict", "safe_v1"]

_SAFE_FORMATS = ("ckptcompat.agent", "ckptcompat.trainer_state")


def g1_filename(epoch: int) -> str:
    """``model_<NNNN>.pt``, zero-padded to four digits as the old CheckpointManager wrote."""
    return f"model_{epoch:04d}.pt"


def g2_filename(
    run: str,
    epoch: int,
    *,
    agent_step: int = 0,
    total_time_s: float = 0.0,
    score: float | None = None,
    scheme: Literal["dunder", "colon"] = "dunder",
) -> str:
    """A G2 file name: ``<run>__e<E>__s<S>__t<T>__sc<int(score*10000)>.pt`` or ``<run>:v<E>.pt``."""
    if scheme == "colon":
        return f"{run}:v{epoch}.pt"
    sc = round((score or 0.0) * 10000)
    return f"{run}__e{epoch}__s{agent_step}__t{int(total_time_s)}__sc{sc}.pt"


def _write(obj: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    make_dirs(path.parent)
    write_atomic(path, lambda writer: torch_compat.save(obj, writer))  # type: ignore[arg-type]
    return path


def write_g1(record: Any, path: str | os.PathLike[str]) -> Path:
    """Pickle a whole PolicyRecord (agent inside, as ``_cached_policy``) the way G1 did.

    The record's own ``__getstate__`` drops its store. Written atomically, protocol 2.
    """
    return _write(record, path)


def write_g2(agent: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Pickle a whole agent object the way G2 did (``torch.save(agent)``)."""
    return _write(agent, path)


def write_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Save a bare state_dict (an OrderedDict of tensors)."""
    return _write(state_dict, path)


@dataclass
class LegacyCheckpoint:
    """What a checkpoint of any generation holds, as far as migration needs it.

    Attributes:
        generation: ``g1``, ``g2``, ``state_dict`` or ``safe_v1``.
        path: the file read.
        agent: the unpickled agent (G1/G2), else None.
        state_dict: the tensors (the agent's ``state_dict()`` for G1/G2).
        metadata: what the file says of training (epoch, agent_step, train_time/score ...).
        class_path: the agent's class path when known (G1/G2/safe_v1).
        config: the agent's JSON config when it has one.
        allowlist: the curated names the load needed (empty for safe_v1/state_dict).
    """

    generation: Generation
    path: Path
    agent: nn.Module | None
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    class_path: str | None = None
    config: dict[str, Any] | None = None
    allowlist: tuple[str, ...] = ()


def required_allowlist(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Statically list what loading ``path`` needs: (curated names, offenders).

    Names torch accepts by default are left out; ``builtins.set`` and ``_codecs.encode``
    stay in (torch 2.4/2.5 refuse them by default) and are curated.

    Raises:
        CheckpointNotFoundError: no file at ``path`` (a FileNotFoundError too).
        CorruptCheckpointError: the file is not a torch checkpoint (see ``scan.precheck``).
    """
    torch_compat.check_path(path)
    scan.precheck(path, full=False)
    curated, rest = allowlist.partition(scan.scan(path).globals)
    # Curated names are passed even when some torch accepts them by default: adding a
    # default to the allowlist is harmless, and 2.4 lacks e.g. builtins.set.
    return curated, [g for g in rest if g not in WEIGHTS_ONLY_GLOBALS]


def interpret(obj: Any, path: Path, names: list[str] | tuple[str, ...] = ()) -> LegacyCheckpoint:
    """Classify an unpickled checkpoint object into a :class:`LegacyCheckpoint`.

    Raises:
        IncompatibleCheckpointError: a trainer state, or no recognisable agent.
    """
    if isinstance(obj, Mapping) and obj.get("format") in _SAFE_FORMATS:
        if obj.get("format") != "ckptcompat.agent":
            raise IncompatibleCheckpointError(
                "this is a trainer state, not an agent checkpoint",
                path=path,
                expected="an agent checkpoint",
                found=str(obj.get("format")),
                fix="pass the <run>_v<epoch>.pt file next to it",
            )
        agent_info = obj.get("agent", {})
        return LegacyCheckpoint(
            "safe_v1",
            path,
            None,
            dict(obj.get("state_dict", {})),
            dict(obj.get("metadata", {})),
            agent_info.get("class_path"),
            agent_info.get("config"),
        )
    if isinstance(obj, nn.Module):
        return _from_agent("g2", obj, path, {}, names)
    policy = getattr(obj, "_cached_policy", None)
    if policy is None and "_cached_policy" in getattr(obj, "__dict__", {}):
        raise IncompatibleCheckpointError(
            "this PolicyRecord was saved without its policy",
            path=path,
            expected="a PolicyRecord (G1) whose _cached_policy holds the agent",
            found=f"{type(obj).__module__}.{type(obj).__qualname__} with _cached_policy None",
            fix="load the checkpoint the record was made from instead",
        )
    if isinstance(policy, nn.Module):
        meta = obj.__dict__.get("_metadata", obj.__dict__.get("checkpoint", {}))
        metadata = dict(meta) if isinstance(meta, Mapping) else {}
        return _from_agent("g1", policy, path, metadata, names)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return LegacyCheckpoint("state_dict", path, None, dict(obj), {}, None, None, tuple(names))
    raise IncompatibleCheckpointError(
        "the file holds no agent ckptcompat can recognise",
        path=path,
        expected="a PolicyRecord (G1), an agent nn.Module (G2), a state_dict or a safe-format file",
        found=f"an object of type {type(obj).__module__}.{type(obj).__qualname__}",
        fix="load it yourself and save the agent with SimpleCheckpointManager",
    )


def _from_agent(
    generation: Generation,
    agent: nn.Module,
    path: Path,
    metadata: dict[str, Any],
    names: list[str] | tuple[str, ...],
) -> LegacyCheckpoint:
    cls = type(agent)
    config = getattr(agent, "config", None)
    return LegacyCheckpoint(
        generation,
        path,
        agent,
        dict(agent.state_dict()),
        metadata,
        f"{cls.__module__}.{cls.__qualname__}",
        dict(config) if isinstance(config, Mapping) else None,
        tuple(names),
    )


def _not_importable(top: str) -> bool:
    """True when the top-level module ``top`` cannot be found on ``sys.path``.

    ``__main__`` is the loading script, not a package to install (``find_spec`` raises
    ValueError for it when the script was run with ``python -c``; the zoo's
    ``main_config.pt`` crashed migrate that way), and a name that is not an identifier can
    never be imported.
    """
    if top == "__main__" or not top.isidentifier():
        return top != "__main__"
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return True


def _install_hint(offenders: list[str]) -> str:
    """The phrase ``"install ... and "`` for offenders whose top-level package is not
    importable here.

    ``find_spec`` of a top-level name only searches ``sys.path``; it runs no code of the
    package (a trusted migration needs the classes importable, e.g. ``metta`` for Metta's
    own ``MettaAgent``).
    """
    missing = sorted({top for n in offenders if _not_importable(top := n.split(".")[0])})
    if not missing:
        return ""
    modules = ", ".join(repr(m) for m in missing)
    return f"install the package that provides {modules} (not importable here), then "


def read_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> LegacyCheckpoint:
    """Read a checkpoint of any generation with ``weights_only=True`` and the curated allowlist.

    Raises:
        UnsafeCheckpointError: the file names globals outside the allowlist; ``.globals``
            lists every offender (not only the first one torch would report).
        IncompatibleCheckpointError: a numpy-1/numpy-2 alias needed on torch < 2.6; a file
            holding no recognisable agent.
        CorruptCheckpointError, CheckpointNotFoundError: as :func:`torch_compat.load`.
    """
    path = Path(path)
    curated, offenders = required_allowlist(path)
    if offenders:
        dangerous = [n for n in offenders if is_dangerous(n)]
        raise UnsafeCheckpointError(
            "loading this checkpoint needs globals outside the curated allowlist",
            path=path,
            globals=offenders,
            expected="only tensors, containers and curated classes (ckptcompat.scan.allowlist)",
            found=", ".join(offenders)
            + (f" (dangerous: {', '.join(dangerous)})" if dangerous else ""),
            fix=(
                f"do not load or migrate it: it names {', '.join(dangerous[:5])}, which runs "
                "code when unpickled (a trusted migration would run it); `ckptcompat doctor "
                "FILE` explains why"
            )
            if dangerous
            else "run `ckptcompat doctor FILE`; if you trust the file, "
            + _install_hint(offenders)
            + "`ckptcompat migrate FILE DST --trust` converts it to the safe format",
        )
    obj = torch_compat.load(
        path, safe_globals=allowlist.resolve(curated), map_location=map_location
    )
    return interpret(obj, path, curated)
