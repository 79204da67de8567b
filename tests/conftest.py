"""Suite-wide pytest configuration: the cell banner and the ``one_cell`` marker.

``CKPTCOMPAT_CELL`` is set by the noxfile to the id of the torch cell running the suite
(``t24`` ...). A test marked ``one_cell`` does not depend on torch's version and runs only
in :data:`ONE_CELL`; its docstring says why. Outside nox (no ``CKPTCOMPAT_CELL``) every
test runs.

The suite runs in the reproducible-numerics mode (:mod:`ckptcompat.numerics`): its
bitwise checks -- golden replays and regeneration, bitwise resume -- must hold on any x86-64
CPU, not only on the one that made the goldens. The mode's variables are set here, before
any test imports torch, and inherited by every process a test starts. ``CKPTCOMPAT_NUMERICS
=native`` keeps this machine's own kernel paths (the emulation's control runs use it).
"""

from __future__ import annotations

import os

import pytest

from ckptcompat import numerics
from ckptcompat.harness import envinfo

if os.environ.get(numerics.MODE_ENV) != "native":
    os.environ.update(numerics.REPRODUCIBLE_ENV)

#: The cell that runs version-independent tests: the newest default release.
ONE_CELL = "t215"


def pytest_configure(config: pytest.Config) -> None:
    numerics.apply()


def pytest_report_header(config: pytest.Config) -> list[str]:
    facts = envinfo.facts()
    cell = os.environ.get("CKPTCOMPAT_CELL", "(none: not run by nox)")
    return [
        f"ckptcompat cell: {cell}",
        "versions: " + ", ".join(f"{k}={facts[k]}" for k in ("torch", "numpy", "python")),
        f"numerics: {numerics.describe(numerics.fingerprint())}",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Slow tests first (stable sort: otherwise collection order). The cells run xdist with
    # ``--dist loadscope --no-loadscope-reorder`` (noxfile): a module (or class) at a time,
    # in order of its first test here, so the modules holding the slow tests start first
    # and a minute-long test no longer starts last and idles the other worker. Every xdist
    # worker sorts the same collection the same way, as xdist requires.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    cell = os.environ.get("CKPTCOMPAT_CELL")
    if cell is None or cell == ONE_CELL:
        return
    skip = pytest.mark.skip(reason=f"version-independent; runs only in cell {ONE_CELL}")
    for item in items:
        if item.get_closest_marker("one_cell") is not None:
            item.add_marker(skip)
