"""Record what this torch's weights-only unpickler accepts, as JSON the doctor can read.

``python -m ckptcompat.harness.snapshots fixtures/torch_allowlists`` (run inside a cell)
writes ``<torch base version>.json``. Every fact is *probed* from the running torch, not
copied from a table: default globals from ``_weights_only_unpickler._get_allowed_globals``,
implemented opcodes by feeding the unpickler one opcode at a time, the SETITEM rule by
unpickling an allowlisted ``defaultdict`` with items, the user-allowlist key by
registering a nested class. The doctor predicts plain and weights-only loads on versions
with a snapshot from these files, and from its rules table elsewhere.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import pickletools
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from ckptcompat import __version__, torch_compat

__all__ = ["SNAPSHOT_SCHEMA_VERSION", "main", "probe", "snapshot_path", "write_snapshot"]

SNAPSHOT_SCHEMA_VERSION = 1


class _Outer:
    class Inner:
        """Nested class: its ``__qualname__`` differs from its ``__name__``."""


def _unpickle(data: bytes) -> Any:
    """Run torch's weights-only unpickler (not torch.load) on raw pickle bytes."""
    unpickler = torch._weights_only_unpickler.Unpickler(io.BytesIO(data), encoding="ASCII")
    return unpickler.load()


def _implemented_opcodes() -> list[str]:
    """Opcode names the weights-only unpickler implements (probed one opcode at a time).

    An unimplemented opcode fails at once with "Unsupported operand N" before reading any
    argument, so what follows the opcode byte does not matter for the probe.
    """
    implemented = []
    for op in pickletools.opcodes:
        code = op.code.encode("latin-1")
        data = b"\x80\x02" + code + b"\x00" * 16 + b"."
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _unpickle(data)
        except Exception as exc:  # the probe classifies every outcome; nothing is hidden
            if f"Unsupported operand {code[0]}" in str(exc):
                continue
        implemented.append(op.name)
    return sorted(implemented)


def _setitem_restricted() -> bool:
    """True when an allowlisted dict subclass may not be filled by SETITEM(S) (2.10+)."""
    data = pickle.dumps(collections.defaultdict(int, {"k": 1}), protocol=2)
    with torch_compat.scoped_safe_globals([collections.defaultdict, int]):
        try:
            _unpickle(data)
        except Exception as exc:
            if "SETITEM" in str(exc):
                return True
            raise
    return False


def _user_allowlist_key() -> str:
    """``"qualname"`` (2.7+) or ``"name"``: how add_safe_globals keys a plain entry."""
    with torch_compat.scoped_safe_globals([_Outer.Inner]):
        keys = set(torch._weights_only_unpickler._get_user_allowed_globals())
    return "qualname" if any(k.endswith("_Outer.Inner") for k in keys) else "name"


def _name(obj: Any) -> str:
    if isinstance(obj, tuple):
        return obj[1]
    return f"{obj.__module__}.{getattr(obj, '__qualname__', obj.__name__)}"


def probe() -> dict[str, Any]:
    """Return the snapshot of the running torch (see the module docstring for each field)."""
    wo = torch._weights_only_unpickler
    dtypes = sorted(
        f"torch.{name}" for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)
    )
    return {
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
        "torch": str(torch_compat.TORCH_VERSION),
        "generated_by": f"ckptcompat {__version__}",
        "weights_only_default": torch_compat.WEIGHTS_ONLY_IS_DEFAULT,
        "aliased_safe_globals": torch_compat.HAS_ALIASED_SAFE_GLOBALS,
        "unsafe_globals_scan": torch_compat.HAS_UNSAFE_GLOBALS_SCAN,
        "setitem_restricted": _setitem_restricted(),
        "user_allowlist_key": _user_allowlist_key(),
        "blocked_modules": sorted(getattr(wo, "_blocklisted_modules", [])),
        "default_globals": sorted(wo._get_allowed_globals()),
        "preregistered_safe_globals": sorted(
            _name(g) for g in torch.serialization.get_safe_globals()
        ),
        "dtypes": dtypes,
        "implemented_opcodes": _implemented_opcodes(),
    }


def snapshot_path(folder: str | Path, torch_version: str | None = None) -> Path:
    """``<folder>/<torch base version>.json`` (default: the running torch)."""
    return Path(folder) / f"{torch_version or torch_compat.TORCH_VERSION}.json"


def write_snapshot(folder: str | Path) -> Path:
    """Probe the running torch and write its snapshot into ``folder``; returns the path."""
    path = snapshot_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(probe(), indent=1, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m ckptcompat.harness.snapshots FOLDER``."""
    args = sys.argv[1:] if argv is None else argv
    folder = args[0] if args else "fixtures/torch_allowlists"
    print(write_snapshot(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
