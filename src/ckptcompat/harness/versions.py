"""The one table of torch cells that every session, test and report reads.

A *cell* is one virtual environment: an exact torch pin plus the shared pins of
``constraints.txt`` (and, for the golden-only producer ``t24np1``, a numpy override).
The noxfile loads this module by path (it runs outside the package's venvs), so this
file imports nothing but the standard library.

Cells (docs/design.md section 2):

* default ``t24`` 2.4.1, ``t25`` 2.5.1, ``t26`` 2.6.0, ``t215`` 2.15.0 -- ``nox -s tests``;
* extended 2.7 ... 2.14, one each -- ``nox -s tests_extended``;
* golden-only ``t24np1``: torch 2.4.1 with numpy 1.26, because numpy-1 pickles name
  ``numpy.core.*`` where numpy-2 ones name ``numpy._core.*``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

__all__ = [
    "CELLS",
    "DEFAULT",
    "EXTENDED",
    "GOLDEN_PRODUCERS",
    "Cell",
    "by_id",
    "cell_for_torch",
    "cell_python_arg",
    "cells_arg",
]

DEFAULT_TAG = "default"
EXTENDED_TAG = "extended"
GOLDEN_ONLY_TAG = "golden-only"


@dataclass(frozen=True)
class Cell:
    """One torch environment of the matrix.

    Attributes:
        id: short session parameter, e.g. ``"t26"`` (used as ``tests(t26)``).
        torch: exact torch release pinned in this cell, e.g. ``"2.6.0"``.
        tags: ``"default"``, ``"extended"`` and/or ``"golden-only"``.
        numpy: exact numpy pin overriding ``constraints.txt``, or None to use it.
    """

    id: str
    torch: str
    tags: tuple[str, ...]
    numpy: str | None = None

    @property
    def is_default(self) -> bool:
        """True for the four cells that ``nox -s tests`` runs."""
        return DEFAULT_TAG in self.tags

    @property
    def torch_requirement(self) -> str:
        """The pip requirement string for this cell's torch, e.g. ``"torch==2.6.0"``."""
        return f"torch=={self.torch}"


CELLS: tuple[Cell, ...] = (
    Cell("t24", "2.4.1", (DEFAULT_TAG,)),
    Cell("t25", "2.5.1", (DEFAULT_TAG,)),
    Cell("t26", "2.6.0", (DEFAULT_TAG,)),
    Cell("t27", "2.7.1", (EXTENDED_TAG,)),
    Cell("t28", "2.8.0", (EXTENDED_TAG,)),
    Cell("t29", "2.9.1", (EXTENDED_TAG,)),
    Cell("t210", "2.10.0", (EXTENDED_TAG,)),
    Cell("t211", "2.11.0", (EXTENDED_TAG,)),
    Cell("t212", "2.12.1", (EXTENDED_TAG,)),
    Cell("t213", "2.13.0", (EXTENDED_TAG,)),
    Cell("t214", "2.14.1", (EXTENDED_TAG,)),
    Cell("t215", "2.15.0", (DEFAULT_TAG,)),
    Cell("t24np1", "2.4.1", (GOLDEN_ONLY_TAG,), numpy="1.26.4"),
)

DEFAULT: tuple[Cell, ...] = tuple(c for c in CELLS if DEFAULT_TAG in c.tags)
EXTENDED: tuple[Cell, ...] = tuple(c for c in CELLS if EXTENDED_TAG in c.tags)
GOLDEN_PRODUCERS: tuple[Cell, ...] = DEFAULT + tuple(c for c in CELLS if GOLDEN_ONLY_TAG in c.tags)

#: The zoo's producer cells (``fixtures/zoo/<cell>/``, issue 16) -> the torchvision release
#: built for that cell's torch (torchvision's compatibility table), or None where the zoo
#: writes only files that need no other library (the numpy-1 cell). The other libraries'
#: pins are resolved per cell into ``constraints-zoo-<cell>.txt`` (``nox -s zoo_constraints``).
ZOO_PRODUCERS: dict[str, str | None] = {"t24": "0.19.1", "t26": "0.21.0", "t24np1": None}


def by_id(cell_id: str) -> Cell:
    """Return the cell called ``cell_id``.

    Raises:
        KeyError: no such cell; the message lists the known ids.
    """
    for cell in CELLS:
        if cell.id == cell_id:
            return cell
    known = ", ".join(c.id for c in CELLS)
    raise KeyError(f"unknown torch cell {cell_id!r}; known cells: {known}")


def _known(cell_id: str) -> str:
    try:
        by_id(cell_id)
    except KeyError as exc:  # argparse shows ArgumentTypeError as a usage error, not a trace
        raise argparse.ArgumentTypeError(str(exc).strip("'\"")) from exc
    return cell_id


def cell_python_arg(text: str) -> tuple[str, str]:
    """An argparse ``type``: ``CELL=PYTHON`` -> ``(cell id, interpreter path)``, the cell
    checked against :data:`CELLS` (the matrix driver's and the remote phase's ``--python``).

    Raises:
        argparse.ArgumentTypeError: no ``=``, an empty path, or an unknown cell.
    """
    cell, sep, python = text.partition("=")
    if not sep or not python:
        raise argparse.ArgumentTypeError(f"expected CELL=PYTHON, got {text!r}")
    return _known(cell), python


def cells_arg(text: str) -> list[str]:
    """An argparse ``type``: ``t24,t26`` -> ``["t24", "t26"]``, each checked against
    :data:`CELLS`.

    Raises:
        argparse.ArgumentTypeError: no cell named, or an unknown one.
    """
    cells = [c.strip() for c in text.split(",") if c.strip()]
    if not cells:
        raise argparse.ArgumentTypeError(f"expected cells like t24,t26, got {text!r}")
    return [_known(cell) for cell in cells]


def cell_for_torch(torch_version: str, numpy_major: int | None = None) -> Cell | None:
    """Return the cell whose pin equals the base of ``torch_version`` (e.g. ``"2.6.0+cu124"``).

    ``numpy_major`` picks between cells sharing a torch pin (``t24`` vs ``t24np1``); None
    prefers the cell without a numpy override. Returns None when no cell pins that torch.
    """
    base = torch_version.split("+", 1)[0]
    matches = [c for c in CELLS if c.torch == base]
    if numpy_major is not None:
        wanted = [c for c in matches if (c.numpy is not None) == (numpy_major < 2)]
        matches = wanted or matches
    else:
        matches = sorted(matches, key=lambda c: c.numpy is not None)
    return matches[0] if matches else None
