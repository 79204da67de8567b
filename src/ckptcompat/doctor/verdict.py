"""The doctor's verdict types: outcomes, allowlist entries, and the numpy dtype table.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ckptcompat.scan import allowlist
from ckptcompat.scan.danger import is_dangerous

__all__ = [
    "OUTCOMES",
    "Entry",
    "Outcome",
    "Verdict",
    "entry",
    "numpy_dtype_class",
]

#: See :mod:`ckptcompat.doctor.predict` for what each outcome means.
Outcome = Literal["loads", "runs_code", "refused", "fixable_by_allowlist", "not_fixable"]
OUTCOMES: tuple[Outcome, ...] = (
    "loads",
    "runs_code",
    "refused",
    "fixable_by_allowlist",
    "not_fixable",
)


@dataclass(frozen=True)
class Entry:
    """One allowlist entry a weights-only load needs.

    Attributes:
        name: the key torch looks up: the global as the file spells it.
        target: the object to pass, as its own dotted name; differs from ``name`` for a
            numpy-1/numpy-2 alias, passed as ``(target, "name")`` (torch 2.6+).
        reason: why it is needed.
        dangerous: it can run code or reach the system; do not allowlist it.
        curated: on ckptcompat's curated allowlist (``ckptcompat migrate`` accepts it).
        python: how to write the entry in ``add_safe_globals([...])`` when neither the
            dotted name nor the ``(target, "name")`` alias says it: a class of the saving
            script (``__main__.Cfg``) is ``(Cfg, '__main__.Cfg')`` on torch 2.6+, ``Cfg``
            defined in the loading script itself on 2.4/2.5; empty otherwise.
    """

    name: str
    target: str
    reason: str
    dangerous: bool
    curated: bool
    python: str = ""

    @property
    def alias(self) -> bool:
        """True when the entry must be passed as ``(target, name)``."""
        return self.name != self.target


@dataclass(frozen=True)
class Verdict:
    """The predicted outcome of one load on one torch version.

    Attributes:
        outcome: see the module docstring.
        why: one sentence.
        refused_globals: globals this torch refuses with no allowlist, in stream order.
        first_error: what torch's error names first (its unpickler stops at one problem).
        allowlist: for ``fixable_by_allowlist``, exactly the entries that make it load.
        blockers: for ``not_fixable``, every reason allowlisting cannot help.
        notes: caveats (advisories, ckptcompat's own loader, dangerous entries).
    """

    outcome: Outcome
    why: str
    refused_globals: tuple[str, ...] = ()
    first_error: str | None = None
    allowlist: tuple[Entry, ...] = ()
    blockers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# numpy dtype code (``numpy.dtype(code)`` as pickled) -> class, numpy >= 1.25, LP64.
_NUMPY_DTYPE_CLASSES = {
    "b1": "BoolDType",
    "i1": "Int8DType",
    "i2": "Int16DType",
    "i4": "Int32DType",
    "i8": "Int64DType",
    "u1": "UInt8DType",
    "u2": "UInt16DType",
    "u4": "UInt32DType",
    "u8": "UInt64DType",
    "f2": "Float16DType",
    "f4": "Float32DType",
    "f8": "Float64DType",
    "f16": "LongDoubleDType",
    "c8": "Complex64DType",
    "c16": "Complex128DType",
    "c32": "CLongDoubleDType",
}
_NUMPY_DTYPE_KINDS = {
    "O": "ObjectDType",
    "U": "StrDType",
    "S": "BytesDType",
    "V": "VoidDType",
    "M": "DateTime64DType",
    "m": "TimeDelta64DType",
}
# The dtype classes allowlist.resolve() adds with numpy.dtype (its _NUMPY_DTYPES).
_CURATED_CODES = ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
_CURATED_DTYPE_CLASSES = frozenset(
    f"numpy.dtypes.{_NUMPY_DTYPE_CLASSES[code]}" for code in (*_CURATED_CODES, "c8", "c16")
)


def numpy_dtype_class(code: str) -> str | None:
    """``"f4"`` -> ``"numpy.dtypes.Float32DType"``: the class of ``numpy.dtype(code)``.

    The class torch's BUILD check meets when a numpy dtype is unpickled (numpy >= 1.25,
    64-bit Linux). None for codes this table does not know.
    """
    name = _NUMPY_DTYPE_CLASSES.get(code) or _NUMPY_DTYPE_KINDS.get(code[:1])
    return f"numpy.dtypes.{name}" if name else None


def _curated(name: str) -> bool:
    return name in _CURATED_DTYPE_CLASSES or bool(allowlist.partition([name])[0])


def entry(name: str, reason: str, target: str | None = None, python: str = "") -> Entry:
    """An :class:`Entry` for ``name`` (``target`` for an alias), flagged dangerous/curated."""
    return Entry(name, target or name, reason, is_dangerous(name), _curated(name), python)
