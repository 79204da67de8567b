"""Section 5: what checking the zip CRC-32s costs a load (issue 23).

``torch_compat.load`` checks the CRC-32 of every record torch reads, in the same pass
(torch checks none). Measured against the same load with ``check_crc=False``, on the
manager's files (few large tensors) and a 4096-tensor file, interleaved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _bench_io import MB, make_agent, row
from _timing import interleaved

from ckptcompat import torch_compat
from ckptcompat.checkpoint.saving import save_agent_file

__all__ = ["bench_crc"]


def bench_crc(sizes: list[tuple[str, int]], work: Path, runs: int) -> list[dict[str, Any]]:
    """Rows: torch_compat.load (CRC-32s checked) / the same load unchecked, per file."""
    files = [(label, size, 8) for label, size in sizes] + [("4096 tensors (1 MB)", MB, 4096)]
    rows = []
    for label, size, tensors in files:
        path = work / "crc" / label.replace(" ", "").replace("(", "").replace(")", "") / "b_v0.pt"
        save_agent_file(make_agent(size, tensors), path, run="b", epoch=0)
        times = interleaved(
            {
                "checked": lambda path=path: torch_compat.load(path, map_location="cpu"),
                "unchecked": lambda path=path: torch_compat.load(
                    path, map_location="cpu", check_crc=False
                ),
            },
            runs,
        )
        rows.append(
            row(
                "5 crc",
                label,
                "load, CRC-32s checked",
                times["checked"],
                times["unchecked"],
                "torch_compat.load(check_crc=False)",
                None,  # no goal: zlib's CRC-32 runs ~4 GB/s here, a fixed cost per byte
            )
        )
        path.unlink()
    return rows
