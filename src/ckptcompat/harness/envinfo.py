"""Print a cell's environment facts without importing torch.

Run as ``python -m ckptcompat.harness.envinfo [CELL]``.

Every nox session prints these first so that a CI log explains itself. Versions come from
installed distribution metadata (``importlib.metadata``), which costs milliseconds where
``import torch`` costs seconds.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

__all__ = ["facts", "main"]

_DISTRIBUTIONS = ("torch", "numpy", "gymnasium", "minigrid", "duckdb", "ckptcompat")


def facts() -> dict[str, str]:
    """Return ``{name: version}`` for python, the platform and the key distributions.

    A distribution that is not installed is reported as ``"absent"``.
    """
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def main() -> int:
    """Print one ``name=version`` line per fact, prefixed with the cell id if given."""
    cell = sys.argv[1] if len(sys.argv) > 1 else "?"
    print(f"ckptcompat cell {cell}: " + "  ".join(f"{k}={v}" for k, v in facts().items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
