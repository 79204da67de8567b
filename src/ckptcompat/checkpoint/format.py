"""Safe format v1: build and validate the payloads SimpleCheckpointManager writes.

A payload is what goes through ``torch.save``: nested dict/list/str/int/float/bool/None
and tensors only (plus the tuples inside optimizer state_dicts, e.g. Adam's ``betas``,
which pickle as a plain TUPLE opcode and need no global), so
``torch.load(weights_only=True)`` reads it with no allowlist on every torch cell.

Agent payload (``<run>_v<epoch>.pt``)::

    {"format": "ckptcompat.agent", "format_version": 1,
     "agent": {"class_path": str, "config": {...JSON primitives...}},
     "state_dict": {name: tensor},
     "metadata": {"run", "epoch", "agent_step", "total_time_s", "score" (float|None),
                  "saved_by": {torch, numpy, python, ckptcompat}, "created_at", "extra"}}

Trainer payload (``<run>_v<epoch>.trainer.pt``)::

    {"format": "ckptcompat.trainer_state", "format_version": 1, "run", "epoch",
     "agent_step", "optimizer": state_dict, "scheduler": state_dict | None,
     "rng": {"torch": uint8 tensor, "numpy": {...}, "python": [...]}, "extra": {...},
     "saved_by": {...}, "created_at": str,
     "rng_ranks": [rng of rank 0, rng of rank 1, ...]}     # only from a distributed run

``rng_ranks`` holds every rank's streams (rank 0's equal ``rng``); a single process writes
no such key, so its files are byte for byte what they were before ranks existed.

``created_at`` is ISO 8601 UTC (``2025-01-31T12:00:00Z``), taken from ``SOURCE_DATE_EPOCH``
when set so that regenerated goldens are byte-identical.
"""

from __future__ import annotations

import math
import numbers
import os
import platform
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

import ckptcompat
from ckptcompat.agents.registry import class_path_of, validate_config
from ckptcompat.checkpoint.key_prefixes import unwrap_module
from ckptcompat.checkpoint.layout import validate_run_name
from ckptcompat.checkpoint.rng import capture_rng_state, validate_rng_state
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
)

__all__ = [
    "AGENT_FORMAT",
    "FORMAT_VERSION",
    "TRAINER_FORMAT",
    "build_agent_payload",
    "build_trainer_payload",
    "created_at_now",
    "saved_by",
    "validate_agent_payload",
    "validate_trainer_payload",
]

AGENT_FORMAT = "ckptcompat.agent"
TRAINER_FORMAT = "ckptcompat.trainer_state"
#: The newest safe-format version this ckptcompat reads and the one it writes.
FORMAT_VERSION = 1

_SCALARS = (str, int, float, bool, type(None))


def saved_by() -> dict[str, str]:
    """Versions of torch, numpy, python and ckptcompat in this process."""
    return {
        # str(): torch.__version__ is a TorchVersion, a global weights_only refuses.
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
        "ckptcompat": ckptcompat.__version__,
    }


def created_at_now() -> str:
    """Now, or ``SOURCE_DATE_EPOCH`` (seconds) when set, as ``YYYY-MM-DDTHH:MM:SSZ``.

    Raises:
        ValueError: ``SOURCE_DATE_EPOCH`` is set but not an integer.
    """
    source = os.environ.get("SOURCE_DATE_EPOCH")
    if source:
        try:
            moment = datetime.fromtimestamp(int(source), tz=UTC)
        except ValueError as exc:
            raise ValueError(f"SOURCE_DATE_EPOCH={source!r} is not an integer (seconds)") from exc
    else:
        moment = datetime.now(tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- save side
def _where(root: str, keys: list[Any]) -> str:
    return root + "".join(f"[{k!r}]" for k in keys)


def _check_saveable(
    value: Any, root: str, keys: list[Any] | None = None, *, tensors: bool = True
) -> None:
    """Refuse anything a weights-only load could not read back without an allowlist."""
    keys = keys or []
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) not in (str, int):
                raise CheckpointError(
                    f"cannot save {_where(root, keys)}: key {key!r} is not a str or int",
                    expected="dict keys of type str or int",
                    found=type(key).__qualname__,
                    fix="convert the key to a str",
                )
            _check_saveable(item, root, [*keys, key], tensors=tensors)
    elif kind in (list, tuple):
        for index, item in enumerate(value):
            _check_saveable(item, root, [*keys, index], tensors=tensors)
    elif kind is torch.Tensor and tensors:
        return
    elif kind not in _SCALARS:
        allowed = "dict/list/tuple/str/int/float/bool/None"
        raise CheckpointError(
            f"cannot save {_where(root, keys)} in the safe format",
            expected=allowed + (" or a plain torch.Tensor" if tensors else ""),
            found=f"{kind.__module__}.{kind.__qualname__}",
            fix="convert it to primitives (e.g. .item(), .tolist(), str()) before saving",
        )


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise CheckpointError(
            f"{name} must be a non-negative int",
            expected="an int >= 0" + (" (0 is a valid epoch)" if name == "epoch" else ""),
            found=repr(value),
            fix=f"pass {name} as a Python int",
        )
    return int(value)


def _check_score(score: Any) -> float | None:
    if score is None:
        return None
    # numbers.Real: numpy scalars (np.float32(0.5)) too, as agent_step takes np.int64.
    if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
        raise CheckpointError(
            "score must be a finite number or None",
            expected="a finite float, or None when no score exists yet",
            found=repr(score),
            fix="pass score=None when no episode has finished (a mean of nothing is nan)",
        )
    return float(score)


def _check_seconds(total_time_s: Any) -> float:
    if isinstance(total_time_s, bool) or not isinstance(total_time_s, numbers.Real):
        raise CheckpointError(
            "total_time_s must be a number of seconds",
            expected="an int or float >= 0",
            found=repr(total_time_s),
        )
    if not (math.isfinite(total_time_s) and total_time_s >= 0):
        raise CheckpointError("total_time_s must be finite and >= 0", found=repr(total_time_s))
    return float(total_time_s)


def _check_extra(extra: Any) -> dict[str, Any]:
    if extra is None:
        return {}
    if type(extra) is not dict:
        raise CheckpointError(
            "extra must be a dict of primitives",
            expected="a dict (or None)",
            found=type(extra).__qualname__,
        )
    _check_saveable(extra, "extra", tensors=False)
    return extra


def build_agent_payload(
    agent: torch.nn.Module,
    *,
    run: str,
    epoch: int,
    agent_step: int,
    total_time_s: float,
    score: float | None,
    created_at: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The safe-format v1 agent payload for ``agent``.

    Args:
        agent: an agent implementing the protocol (``config``, a module-level class).
        run: run name; epoch: >= 0; agent_step: environment steps so far, >= 0.
        total_time_s: training wall time in seconds; score: finite float or None.
        created_at: ISO 8601 UTC; default :func:`created_at_now`.
        extra: more metadata, JSON primitives.

    The state_dict becomes a plain dict of detached CPU tensors (an ``OrderedDict``
    would pickle its ``_metadata`` attribute; tied weights stay tied through shared
    storage). An agent inside DistributedDataParallel, DataParallel or torch.compile is
    saved as the bare agent (:func:`.key_prefixes.unwrap_module`): its class path, config
    and unprefixed keys, which any process rebuilds (the wrapper was refused as "has no
    config", and its ``module.``/``_orig_mod.`` keys fit no bare agent).

    Raises:
        AgentMismatchError: the class cannot be found again by class_path, or its config
            is not JSON primitives (naming the field).
        CheckpointError: an invalid run name, a metadata field of the wrong type, a
            non-tensor state_dict entry that is not primitives.
    """
    agent, _ = unwrap_module(agent)
    class_path = class_path_of(agent)
    if not hasattr(agent, "config"):
        raise AgentMismatchError(
            "this policy cannot be saved in the safe format: it has no config",
            expected="an agent whose class has a `config` dict of its constructor arguments "
            "and a `from_config` (the safe format rebuilds it from class_path + config)",
            found=f"a {class_path} without a `config` attribute",
            fix="give the class a config dict and a from_config, or save an agent from "
            "ckptcompat.agents",
        )
    config = agent.config
    validate_config(config)
    extra = _check_extra(extra)
    state_dict: dict[str, Any] = {}
    for name, value in agent.state_dict().items():
        if isinstance(value, torch.Tensor):
            state_dict[name] = value.detach().cpu()
        else:  # get_extra_state() may return anything; only primitives can be kept
            _check_saveable(value, f"state_dict[{name!r}]")
            state_dict[name] = value
    payload = {
        "format": AGENT_FORMAT,
        "format_version": FORMAT_VERSION,
        "agent": {"class_path": class_path, "config": config},
        "state_dict": state_dict,
        "metadata": {
            "run": validate_run_name(run),
            "epoch": _check_count("epoch", epoch),
            "agent_step": _check_count("agent_step", agent_step),
            "total_time_s": _check_seconds(total_time_s),
            "score": _check_score(score),
            "saved_by": saved_by(),
            "created_at": created_at or created_at_now(),
            "extra": extra,
        },
    }
    # Exact-type walk of the whole payload: a str or float subclass (TorchVersion, a str
    # Enum) pickles as a global that the weights-only load would refuse.
    _check_saveable(payload, "payload")
    return payload


def build_trainer_payload(
    optimizer: torch.optim.Optimizer,
    *,
    run: str,
    epoch: int,
    agent_step: int,
    scheduler: Any = None,
    extra: dict[str, Any] | None = None,
    created_at: str | None = None,
    rng_ranks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The safe-format v1 trainer payload: optimizer, scheduler, RNG streams, extra.

    The RNG states are captured now: torch's global CPU generator, numpy's global
    ``np.random`` and Python's ``random``. ``rng_ranks`` (a distributed run's rank 0 passes
    every rank's :func:`~ckptcompat.checkpoint.rng.capture_rng_state`, in rank order) is
    validated and stored under ``"rng_ranks"``; None stores no such key.

    Raises:
        CheckpointError: optimizer/scheduler state or ``extra`` holds a non-primitive,
            a count is not a non-negative int, or the run name is invalid.
    """
    optimizer_state = optimizer.state_dict()
    _check_saveable(optimizer_state, "optimizer.state_dict()")
    scheduler_state = None if scheduler is None else scheduler.state_dict()
    if scheduler_state is not None:
        _check_saveable(scheduler_state, "scheduler.state_dict()")
    extra = _check_extra(extra)
    payload = {
        "format": TRAINER_FORMAT,
        "format_version": FORMAT_VERSION,
        "run": validate_run_name(run),
        "epoch": _check_count("epoch", epoch),
        "agent_step": _check_count("agent_step", agent_step),
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "rng": capture_rng_state(),
        "extra": extra,
        "saved_by": saved_by(),
        "created_at": created_at or created_at_now(),
    }
    if rng_ranks is not None:
        _check_rng_ranks(rng_ranks, None)
        payload["rng_ranks"] = list(rng_ranks)
    _check_saveable(payload, "payload")
    return payload


def _check_rng_ranks(rng_ranks: Any, path: str | os.PathLike[str] | None) -> None:
    if type(rng_ranks) is not list or not rng_ranks:
        raise _corrupt(path, "rng_ranks", f"a {type(rng_ranks).__qualname__}: {rng_ranks!r:.60}")
    for rng in rng_ranks:
        validate_rng_state(rng, path)


# --------------------------------------------------------------------------- load side
def _corrupt(path: str | os.PathLike[str] | None, what: str, found: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"the checkpoint's {what} is missing or malformed",
        path=path,
        expected=f"{what} as safe format v1 defines it",
        found=found,
        fix="restore the file from its source or pick another checkpoint",
    )


def _check_header(obj: Any, path: str | os.PathLike[str] | None, fmt: str) -> dict[str, Any]:
    if type(obj) is not dict or "format" not in obj:
        found = f"a {type(obj).__qualname__}"
        if isinstance(obj, dict):
            found += f" with keys {sorted(map(str, obj))[:8]}"
        raise IncompatibleCheckpointError(
            f"not a {fmt} checkpoint",
            path=path,
            expected=f'a dict with format="{fmt}" written by SimpleCheckpointManager',
            found=found,
            fix="convert it with `ckptcompat migrate` (a bare state_dict or a legacy file)",
        )
    if obj["format"] != fmt:
        raise IncompatibleCheckpointError(
            f"not a {fmt} checkpoint",
            path=path,
            expected=f"format={fmt!r}",
            found=f"format={obj['format']!r}",
            fix="load it with the matching method (agent vs trainer state)",
        )
    version = obj.get("format_version")
    if type(version) is not int or version < 1:
        raise _corrupt(path, "format_version", repr(version))
    if version > FORMAT_VERSION:
        raise IncompatibleCheckpointError(
            f"checkpoint format_version {version} is newer than this ckptcompat supports "
            f"(<= {FORMAT_VERSION})",
            path=path,
            fix=f"upgrade ckptcompat or re-save with format_version={FORMAT_VERSION}",
        )
    return obj


def _field(obj: dict[str, Any], key: str, types: tuple[type, ...], path: Any, where: str) -> Any:
    if key not in obj:
        raise _corrupt(path, f"{where}{key!r}", "no such key")
    value = obj[key]
    if type(value) not in types:
        raise _corrupt(path, f"{where}{key!r}", f"a {type(value).__qualname__}: {value!r:.60}")
    if type(value) is int and key in ("epoch", "agent_step") and value < 0:
        raise _corrupt(path, f"{where}{key!r}", repr(value))
    return value


def validate_agent_payload(obj: Any, path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Check a loaded agent payload; return it unchanged.

    Raises:
        IncompatibleCheckpointError: not a ckptcompat agent payload (a bare state_dict,
            a trainer state), or a newer ``format_version``.
        CorruptCheckpointError: a required key missing or of the wrong type.
        AgentMismatchError: the saved config is not JSON primitives.
    """
    payload = _check_header(obj, path, AGENT_FORMAT)
    agent = _field(payload, "agent", (dict,), path, "")
    _field(agent, "class_path", (str,), path, "agent.")
    validate_config(_field(agent, "config", (dict,), path, "agent."), name="saved config")
    state_dict = _field(payload, "state_dict", (dict,), path, "")
    for name in state_dict:
        if type(name) is not str:
            raise _corrupt(path, "state_dict", f"a key {name!r} that is not a str")
    meta = _field(payload, "metadata", (dict,), path, "")
    _field(meta, "run", (str,), path, "metadata.")
    _field(meta, "epoch", (int,), path, "metadata.")
    _field(meta, "agent_step", (int,), path, "metadata.")
    _field(meta, "total_time_s", (float, int), path, "metadata.")
    _field(meta, "score", (float, int, type(None)), path, "metadata.")
    _field(meta, "saved_by", (dict,), path, "metadata.")
    _field(meta, "created_at", (str,), path, "metadata.")
    return payload


def validate_trainer_payload(obj: Any, path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Check a loaded trainer payload (including its RNG states); return it unchanged.

    Raises:
        IncompatibleCheckpointError: not a trainer payload, or a newer ``format_version``.
        CorruptCheckpointError: a required key missing or of the wrong type.
    """
    payload = _check_header(obj, path, TRAINER_FORMAT)
    _field(payload, "run", (str,), path, "")
    _field(payload, "epoch", (int,), path, "")
    _field(payload, "agent_step", (int,), path, "")
    _field(payload, "optimizer", (dict,), path, "")
    _field(payload, "scheduler", (dict, type(None)), path, "")
    _field(payload, "extra", (dict,), path, "")
    validate_rng_state(_field(payload, "rng", (dict,), path, ""), path)
    if "rng_ranks" in payload:
        _check_rng_ranks(payload["rng_ranks"], path)
    return payload
