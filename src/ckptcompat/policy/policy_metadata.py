"""Deprecated ``PolicyMetadata``: the old dict of training facts, kept working while warning.

Contract (../shared/reference/metta_policy_api.md section 1): a ``dict`` subclass with
the required keys ``agent_step``, ``epoch``, ``generation``, ``train_time`` (defaults 0);
keys readable and writable as attributes (names starting with ``_`` are real attributes);
required keys cannot be deleted (``del``, ``pop``, ``delattr``); ``from_dict`` validates;
``repr`` lists the required keys first, then the rest sorted.

Mapping to the safe format's metadata (docs/design.md section 4): ``train_time`` <->
``total_time_s``; ``generation`` defaults to 0. Replacement: the ``metadata`` mapping of
:class:`ckptcompat.checkpoint.manager.SimpleCheckpointManager` checkpoints.
"""

from __future__ import annotations

import copyreg
from collections.abc import Mapping
from typing import Any

from ckptcompat.policy._deprecation import warn_deprecated

__all__ = ["REQUIRED_KEYS", "SAVED_KEY", "PolicyMetadata"]

REQUIRED_KEYS: tuple[str, ...] = ("agent_step", "epoch", "generation", "train_time")
#: Key of ``metadata["extra"]`` under which ``PolicyStore.save`` keeps every PolicyMetadata
#: key, so that ``generation``, ``action_names``, ``evals`` ... survive save -> load.
SAVED_KEY = "policy_metadata"
_REPLACEMENT = "the metadata dict of SimpleCheckpointManager.save_agent"


class PolicyMetadata(dict[str, Any]):
    """Deprecated: training facts of a policy; a dict with attribute access.

    Args:
        agent_step: environment steps trained (steps).
        epoch: training epoch (0 is a valid epoch).
        generation: policy generation (lineage counter).
        train_time: wall-clock training time (seconds).
        **kwargs: any further keys (``score``, ``evals``, ``run`` ...).

    Raises:
        KeyError / AttributeError: deleting a required key.
    """

    def __init__(
        self,
        agent_step: int = 0,
        epoch: int = 0,
        generation: int = 0,
        train_time: float = 0.0,
        **kwargs: Any,
    ) -> None:
        warn_deprecated("PolicyMetadata", _REPLACEMENT)
        super().__init__(
            agent_step=agent_step, epoch=epoch, generation=generation, train_time=train_time
        )
        self.update(kwargs)

    # -- attribute access ---------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"PolicyMetadata has no key {name!r}; keys: {sorted(self)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            object.__delattr__(self, name)
            return
        if name in REQUIRED_KEYS:
            raise AttributeError(f"cannot delete required PolicyMetadata key {name!r}")
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    # -- required keys stay ---------------------------------------------------------
    def __delitem__(self, key: str) -> None:
        if key in REQUIRED_KEYS:
            raise KeyError(f"cannot delete required PolicyMetadata key {key!r}")
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        """``dict.pop``, except that required keys raise KeyError."""
        if key in REQUIRED_KEYS:
            raise KeyError(f"cannot pop required PolicyMetadata key {key!r}")
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        """Remove and return a non-required item; KeyError when only required keys remain."""
        for key in reversed(list(self)):
            if key not in REQUIRED_KEYS:
                return key, super().pop(key)
        raise KeyError("PolicyMetadata holds only required keys")

    def clear(self) -> None:
        """Remove every non-required key (required keys cannot be removed)."""
        for key in [k for k in self if k not in REQUIRED_KEYS]:
            super().__delitem__(key)

    # -- construction and conversion ------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyMetadata:
        """Build from a mapping holding every required key.

        Raises:
            ValueError: a required key is missing (the message lists which).
        """
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(
                f"PolicyMetadata.from_dict needs the keys {list(REQUIRED_KEYS)}; "
                f"missing {missing}; add them (0 is a valid value)"
            )
        warn_deprecated("PolicyMetadata.from_dict", _REPLACEMENT)
        obj = dict.__new__(cls)
        dict.update(obj, data)
        return obj

    @classmethod
    def from_checkpoint_metadata(cls, metadata: Mapping[str, Any]) -> PolicyMetadata:
        """Map safe-format checkpoint metadata to the old keys.

        A file written by ``PolicyStore.save`` carries the whole PolicyMetadata in
        ``metadata["extra"]["policy_metadata"]``: that is returned, key for key. Otherwise
        ``total_time_s`` becomes ``train_time`` and missing required keys default to 0.
        """
        extra = metadata.get("extra")
        saved = extra.get(SAVED_KEY) if isinstance(extra, Mapping) else None
        if isinstance(saved, Mapping):
            obj = dict.__new__(cls)
            dict.update(obj, {"agent_step": 0, "epoch": 0, "generation": 0, "train_time": 0.0})
            dict.update(obj, saved)
            return obj
        data = {k: v for k, v in metadata.items() if k != "total_time_s"}
        data["train_time"] = metadata.get("total_time_s", 0.0)
        data.setdefault("generation", 0)
        data.setdefault("agent_step", 0)
        data.setdefault("epoch", 0)
        obj = dict.__new__(cls)
        dict.update(obj, data)
        return obj

    def to_checkpoint_metadata(self) -> dict[str, Any]:
        """The safe-format spelling: ``train_time`` becomes ``total_time_s``."""
        out = {k: v for k, v in self.items() if k != "train_time"}
        out["total_time_s"] = float(self["train_time"])
        return out

    def __repr__(self) -> str:
        required = [f"{k}={self[k]!r}" for k in REQUIRED_KEYS]
        rest = [f"{k}={self[k]!r}" for k in sorted(k for k in self if k not in REQUIRED_KEYS)]
        return f"PolicyMetadata({', '.join(required + rest)})"

    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        # Pickle as NEWOBJ + BUILD(state), never SETITEMS: torch >= 2.10's weights-only
        # unpickler refuses SETITEM(S) on dict subclasses even when allowlisted, and old
        # whole-pickle (G1) files must stay loadable through the allowlist there.
        return (copyreg.__newobj__, (type(self),), {"items": dict(self), "attrs": vars(self)})

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        dict.update(self, state["items"])
        for name, value in state.get("attrs", {}).items():
            object.__setattr__(self, name, value)
