"""Where the Metta G3/G4 goldens live and which files each agent has (one owner of the layout).

``<golden root>/metta/<cell>/`` per producer cell, beside ``gen2/`` and ``dcp/`` (not in a
``gen<N>`` folder: those are golden generations of our own safe format, each a complete
MANIFEST of their kinds)::

    g3/<agent>_v1.mpt        G3 .mpt
    g4/<agent>_v1/           G4 bundle directory
    g4/<agent>_v1.zip        the same bundle zipped
    MANIFEST.json
"""

from __future__ import annotations

import os
from pathlib import Path

from ckptcompat.harness.golden.read import GOLDEN_ROOT, MANIFEST_NAME

__all__ = ["EPOCH", "KINDS", "METTA_DIRNAME", "file_paths", "metta_golden_dir", "metta_golden_dirs"]

#: The folder under the golden root holding one directory per producer cell.
METTA_DIRNAME = "metta"
#: The epoch every file is named after (``<agent>_v1``).
EPOCH = 1
#: The file kinds per agent, as the manifest's ``agents.<name>.files`` keys.
KINDS: tuple[str, ...] = ("g3_mpt", "g4_dir", "g4_zip")


def file_paths(agent: str) -> dict[str, str]:
    """Agent ``agent``'s files by kind, relative to its cell's directory."""
    stem = f"{agent}_v{EPOCH}"
    return {"g3_mpt": f"g3/{stem}.mpt", "g4_dir": f"g4/{stem}", "g4_zip": f"g4/{stem}.zip"}


def metta_golden_dir(root: str | os.PathLike[str], cell: str) -> Path:
    """``root/metta/<cell>``: where ``cell``'s Metta G3/G4 goldens live under a golden root."""
    return Path(root) / METTA_DIRNAME / cell


def metta_golden_dirs(root: str | os.PathLike[str] = GOLDEN_ROOT) -> list[Path]:
    """Every Metta golden directory (holding a MANIFEST.json) under ``root``, by cell id."""
    base = Path(root) / METTA_DIRNAME
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / MANIFEST_NAME).is_file())
