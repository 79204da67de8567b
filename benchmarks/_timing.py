"""Interleaved timing: run A, B, C, ... in turn, ``runs`` rounds, and summarise as ratios.

These machines are shared and noisy, so every figure is paired with its baseline from the
same round (A then B, again and again) and reported as the median of the per-round ratios,
with min and max; absolute seconds are kept for reference only.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["interleaved", "ratio", "summary"]


def interleaved(
    fns: dict[str, Callable[[], Any]],
    runs: int,
    *,
    setup: Callable[[str], None] | None = None,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, the calls interleaved round by round.

    ``setup(name)`` runs untimed before each call (e.g. to drop the file a save replaces).
    The first ``warmup`` rounds are discarded (imports, first allocations).
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + runs):
        for name, fn in fns.items():
            if setup is not None:
                setup(name)
            gc.collect()
            started = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - started
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Per-round ratios ``numerator[i] / denominator[i]``, summarised."""
    return summary([n / d for n, d in zip(numerator, denominator, strict=True)])
