"""What the numpy of the LOADING side changes, and the numpy.random classes a pickle never names.

Measured with real files (``torch.save`` of ``np.random.default_rng(0)``, ``PCG64(0)``,
``MT19937(0)``, ``RandomState(0)``, ``RandomState(0).get_state()`` and a bit generator's
``state`` dict) written under numpy 1.26.4 (cell t24np1) and numpy 2.4.6 (t24, t26), loaded
for real under torch 2.4.1, 2.6.0 and 2.15.0 with numpy 1.26.4 and 2.4.6 (``issue 16``):

* numpy's pickling helpers (``numpy.random._pickle.__generator_ctor``,
  ``__randomstate_ctor``, ``__bit_generator_ctor``) return an object whose state a BUILD
  opcode then sets. torch's weights-only BUILD accepts only allowlisted types, so the
  CLASS of that object must be allowlisted although the pickle never names it:
  ``numpy.random._generator.Generator`` (a numpy-1 ``Generator``: its state is BUILT onto
  the generator), ``numpy.random.mtrand.RandomState`` (either major) and, for a numpy-1 bit
  generator (the ctor gets the NAME ``"PCG64"``), ``numpy.random._pcg64.PCG64`` etc.
  numpy 2 passes the class itself, so the pickle names it.
* numpy 2 pickles a bit generator as ``__bit_generator_ctor(<class PCG64>)``; numpy 1.26's
  ctor only takes a name and raises ``ValueError: <class 'numpy.random._pcg64.PCG64'> is
  not a known BitGenerator module.`` -- under a plain load and under weights_only with
  every entry allowlisted, on every torch (seen on 2.4.1, 2.6.0, 2.15.0).
* numpy 1.26 has ``numpy._core`` (a plain load of numpy-2 arrays works); numpy 2 still
  has ``numpy.core`` (with a DeprecationWarning). Under weights_only the spelling must
  match the allowlisted object's own name, which needs an ``(object, name)`` alias
  (torch >= 2.6); :mod:`ckptcompat.doctor.predict` handles that per numpy major.

Standard library only: reads the object pickle's strings, imports nothing it names.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckptcompat.doctor import pickle_walk

if TYPE_CHECKING:
    from ckptcompat.scan.scan_result import ScanResult

__all__ = [
    "BIT_GENERATORS",
    "NUMPY_MAJORS",
    "NumpyFacts",
    "numpy2_ctor_error",
    "numpy_facts",
]

#: The consumer numpy majors the doctor predicts for (1 means numpy 1.26, the last 1.x).
NUMPY_MAJORS: tuple[int, ...] = (1, 2)
_PICKLE = "numpy.random._pickle."
_BIT_CTOR = _PICKLE + "__bit_generator_ctor"
#: numpy's registered bit generators: name -> class (numpy 1.26 and 2.x, same modules).
BIT_GENERATORS: dict[str, str] = {
    "MT19937": "numpy.random._mt19937.MT19937",
    "PCG64": "numpy.random._pcg64.PCG64",
    "PCG64DXSM": "numpy.random._pcg64.PCG64DXSM",
    "Philox": "numpy.random._philox.Philox",
    "SFC64": "numpy.random._sfc64.SFC64",
}
# ctor -> the class of what it returns (when a BUILD follows, that class needs allowlisting).
_BUILT_BY = {
    _PICKLE + "__generator_ctor": "numpy.random._generator.Generator",
    _PICKLE + "__randomstate_ctor": "numpy.random.mtrand.RandomState",
}
_MAX_STRINGS = 100_000  # strings read from one object pickle before giving up


@dataclass(frozen=True)
class NumpyFacts:
    """numpy.random facts of one object pickle, for the weights-only allowlist.

    Attributes:
        unnamed_classes: ``(class, why)`` the BUILD check needs and the pickle never names.
        numpy2_bit_generators: bit generator classes the pickle passes to
            ``__bit_generator_ctor`` (a numpy-2 pickle): numpy 1 refuses them.
        unknown: a reason the facts are incomplete (the bit generator name a numpy-1
            ctor gets could not be read), else None.
    """

    unnamed_classes: tuple[tuple[str, str], ...] = ()
    numpy2_bit_generators: tuple[str, ...] = ()
    unknown: str | None = None


def _strings(path: str, result: ScanResult) -> set[str] | None:
    """Every short str constant of the object pickle (None: it cannot be read)."""
    found: set[str] = set()
    with pickle_walk._object_pickle(path, result) as ops:
        if ops is None:
            return None
        with contextlib.suppress(ValueError, EOFError, OverflowError):
            for count, (op, arg, _pos) in enumerate(ops[0]):
                if count > 50_000_000 or len(found) > _MAX_STRINGS:
                    return None
                if isinstance(arg, str) and len(arg) < 32 and "UNICODE" in op.name:
                    found.add(arg)
            return found
    return None


def numpy_facts(path: str | os.PathLike[str], result: ScanResult) -> NumpyFacts:
    """The numpy.random facts of the file ``result`` describes (see the module docstring).

    Reads the object pickle again only when a numpy-1 bit generator ctor is built (to
    read the generator's name). Never raises for the file's content; OSError for the
    path itself propagates.
    """
    names = set(result.globals)
    built = {g for g, ops in result.applied.items() if "BUILD" in ops}
    unnamed: list[tuple[str, str]] = []
    for ctor, cls in _BUILT_BY.items():
        if ctor in built and cls not in names:
            unnamed.append((cls, f"made by {ctor}; torch's BUILD check needs its class"))
    classes = [c for c in BIT_GENERATORS.values() if c in names]
    numpy2 = tuple(classes) if _BIT_CTOR in names else ()
    unknown = None
    if _BIT_CTOR in built and not classes:
        strings = _strings(os.fspath(path), result)
        wanted = sorted(n for n in BIT_GENERATORS if strings and n in strings)
        if not wanted:
            unknown = "the bit generator numpy's __bit_generator_ctor builds could not be read"
        for name in wanted:
            why = f"the numpy-1 {_BIT_CTOR} builds {name!r}; torch's BUILD check needs its class"
            unnamed.append((BIT_GENERATORS[name], why))
    return NumpyFacts(tuple(unnamed), numpy2, unknown)


def numpy2_ctor_error(facts: NumpyFacts) -> str:
    """The ValueError numpy 1.26 raises on the first numpy-2 bit generator of ``facts``."""
    cls = facts.numpy2_bit_generators[0]
    return f"ValueError: <class '{cls}'> is not a known BitGenerator module."
