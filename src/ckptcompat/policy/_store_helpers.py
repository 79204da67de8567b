"""Helpers of the deprecated PolicyStore: old config objects, save-time names and values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckptcompat.checkpoint.layout import RUN_NAME_RE, parse_filename
from ckptcompat.errors import InvalidArgumentError

__all__ = ["cfg_get", "plain", "run_for"]


def cfg_get(cfg: Any, *path: str) -> Any:
    """``cfg.a.b`` or ``cfg["a"]["b"]``; None when any step is missing."""
    node = cfg
    for name in path:
        if isinstance(node, Mapping) or hasattr(node, "get"):
            node = node.get(name)
        else:
            node = getattr(node, name, None)
        if node is None:
            return None
    return node


def run_for(run_name: str | None, metadata_run: Any, target: Path, epoch: int) -> str:
    """The run name a file saved by :meth:`PolicyStore.save` records (see there).

    Args:
        run_name: the record's ``run_name`` (may be a path or None).
        metadata_run: the record's ``metadata.get("run")`` (any type; used if a valid name).
        target: the file saved to; a ``<run>_v<epoch>.pt`` name wins.
        epoch: the record's epoch.

    Raises:
        InvalidArgumentError: the file name names another epoch than ``epoch``.
    """
    name = parse_filename(target.name)
    if name is not None and name.kind == "agent":
        if name.epoch != epoch:
            raise InvalidArgumentError(
                "the file name names another epoch than the record's metadata",
                path=target,
                expected=f"a name ending _v{epoch}.pt, or a name outside <run>_v<epoch>.pt",
                found=f"epoch {name.epoch} in the name, {epoch} in pr.metadata",
                fix="save to another file name, or set pr.metadata.epoch",
            )
        return str(name.run)
    for candidate in (run_name, metadata_run):
        if isinstance(candidate, str) and RUN_NAME_RE.match(candidate):
            return candidate
    # The run name made valid keeps what the caller meant; a path-named record (old
    # create_empty_policy_record(name=path)) gives its file's stem.
    stem = Path(run_name or target.name).name.removesuffix(".pt")
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-") or "policy"


def plain(value: Any) -> Any:
    """Mappings as plain dicts and numpy scalars as Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()  # a numpy scalar
    return value
