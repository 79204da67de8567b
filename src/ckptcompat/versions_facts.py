"""ONE table of torch-version facts: what changed in which torch release, and where from.

:data:`FACTS` is the only place that says "from torch 2.6 on ...". :mod:`ckptcompat.torch_compat`
(its version cutoffs), :mod:`ckptcompat.load_errors` (the weights-only error wordings it
parses), :mod:`ckptcompat.scan` (torch's default globals, the SETITEM rule) and
:mod:`ckptcompat.doctor` (a profile per torch minor) read it; none of them compares version
numbers of its own. Supporting a new torch means adding rows, not editing code.

Each row is one change, holding from its ``since`` minor on, and cites the torch
``release`` it comes from and its ``source``: the pull request or advisory where one is
known, otherwise the file diff between releases that shows it (``reference/torch_versions.md``
of the shared notes lists the readings). ``names`` carries what a row adds (globals,
modules, dtypes); wording rows carry a failure kind in ``names`` and a regex in ``value``.

Keys:

* defaults and API: ``weights_only_default``, ``safe_globals_context``,
  ``aliased_safe_globals``, ``unsafe_globals_scan``, ``user_allowlist_qualname``,
  ``serialization_config``;
* security fixes: ``advisory`` (``since`` is the first fixed minor; ``names`` the advisory
  id, ``note`` what it means for a load on older releases);
* pickle rules: ``blocked_modules``, ``setitem_restricted`` (``names``: the non-dict targets
  still allowed), ``refuses_legacy_tar``, ``refuses_torchscript``;
* allowlist changes: ``globals_added``, ``globals_removed`` (weights-only default globals);
  ``dtypes`` (``torch.<name>`` dtypes that exist);
* other formats: ``torch_load_safetensors`` (``torch.load`` hands a ``.safetensors`` path to
  safetensors);
* error wordings: ``wording`` (first match wins, in table order).

Standard library only, next to :mod:`ckptcompat.errors` at the bottom of the imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FACTS",
    "Fact",
    "advisories",
    "all_names",
    "first_minor",
    "holds",
    "minor_tuple",
    "names_after",
    "names_through",
    "wordings",
]


@dataclass(frozen=True)
class Fact:
    """One torch-version fact.

    Attributes:
        key: what the row is about (see the module docstring).
        since: the first torch minor where it holds, ``"2.6"``.
        release: the torch release it comes from, ``"2.6.0"``.
        source: the PR, advisory or file diff it was read from.
        names: what the row adds (globals, modules, dtypes, an advisory id, a failure kind).
        value: a wording row's regex.
        note: why it matters for loading.
    """

    key: str
    since: str
    release: str
    source: str
    names: tuple[str, ...] = ()
    value: str = ""
    note: str = ""


_WO = "torch/_weights_only_unpickler.py"
_SER = "torch/serialization.py"


def _diff(path: str, old: str, new: str) -> str:
    return f"diff of {path} {old} -> {new}"


_CLASS_IN_REPR = r"<class '([^']+)'>"

FACTS: tuple[Fact, ...] = (
    # ------------------------------------------------------------------ defaults and API
    Fact(
        "weights_only_default",
        "2.6",
        "2.6.0",
        "pytorch/pytorch#137602",
        note="torch.load(f) with weights_only omitted is weights-only (_default_to_weights_only)",
    ),
    Fact(
        "safe_globals_context",
        "2.5",
        "2.5.0",
        _diff(_SER, "2.4.1", "2.5.1"),
        note="torch.serialization.safe_globals context manager",
    ),
    Fact(
        "aliased_safe_globals",
        "2.6",
        "2.6.0",
        _diff(_SER, "2.5.1", "2.6.0"),
        note="add_safe_globals takes (object, 'dotted.name') tuples",
    ),
    Fact(
        "unsafe_globals_scan",
        "2.6",
        "2.6.0",
        _diff(_SER, "2.5.1", "2.6.0"),
        note="torch.serialization.get_unsafe_globals_in_checkpoint",
    ),
    Fact(
        "user_allowlist_qualname",
        "2.7",
        "2.7.0",
        _diff(_WO, "2.6.0", "2.7.1"),
        note="plain allowlist entries are keyed by __qualname__ (was __name__)",
    ),
    Fact(
        "serialization_config",
        "2.7",
        "2.7.0",
        _diff("torch/utils/serialization/config.py", "2.6.0", "2.7.1"),
        note="torch.utils.serialization.config",
    ),
    # ------------------------------------------------------------------ security fixes
    Fact(
        "advisory",
        "2.6",
        "2.6.0",
        "GHSA-53q9-r3pm-6pq6",
        ("CVE-2025-32434",),
        note="weights_only=True is not a security boundary here (code execution through the "
        "legacy loader); fixed in 2.6.0",
    ),
    Fact(
        "advisory",
        "2.10",
        "2.10.0",
        "GHSA-63cw-57p8-fm3p",
        ("CVE-2026-24747",),
        note="the weights-only unpickler can corrupt memory via SETITEM on non-dicts and "
        "storage size mismatches; fixed in 2.10.0",
    ),
    # ------------------------------------------------------------------ pickle rules
    Fact(
        "blocked_modules",
        "2.5",
        "2.5.0",
        _diff(_WO, "2.4.1", "2.5.1"),
        ("nt", "os", "posix", "sys"),
        note="_blocklisted_modules: refused even when allowlisted",
    ),
    Fact(
        "setitem_restricted",
        "2.10",
        "2.10.0",
        "GHSA-63cw-57p8-fm3p (CVE-2026-24747 fix)",
        ("collections.OrderedDict", "collections.Counter"),
        note="_check_set_item_target: SETITEM(S) only on dict and these classes",
    ),
    Fact(
        "refuses_legacy_tar",
        "2.6",
        "2.6.0",
        "pytorch/pytorch#145020",
        note="the pre-1.6 .tar container is refused under weights_only",
    ),
    Fact(
        "refuses_torchscript",
        "2.6",
        "2.6.0",
        _diff(_SER, "2.5.1", "2.6.0"),
        note="TorchScript archives are refused under weights_only (before: torch.jit.load)",
    ),
    # ------------------------------------------------------------------ allowlist changes
    Fact(
        "globals_added",
        "2.5",
        "2.5.0",
        "pytorch/pytorch#133163 (issue); " + _diff(_WO, "2.4.1", "2.5.1"),
        ("_codecs.encode", "builtins.bytearray", "torch._utils._rebuild_device_tensor_from_numpy"),
    ),
    Fact(
        "globals_added",
        "2.6",
        "2.6.0",
        "pytorch/pytorch#138866 (set); " + _diff(_WO, "2.5.1", "2.6.0"),
        (
            "builtins.set",
            "builtins.complex",
            "torch._utils._rebuild_device_tensor_from_cpu_tensor",
            "torch.uint16",
            "torch.uint32",
            "torch.uint64",
        ),
    ),
    Fact(
        "globals_added",
        "2.7",
        "2.7.0",
        _diff(_WO, "2.6.0", "2.7.1"),
        (
            *(f"torch.uint{i}" for i in range(1, 8)),
            *(f"torch.int{i}" for i in range(1, 8)),
            "torch.float8_e8m0fnu",
        ),
    ),
    Fact(
        "globals_added", "2.8", "2.8.0", _diff(_WO, "2.7.1", "2.8.0"), ("torch.float4_e2m1fn_x2",)
    ),
    Fact("globals_added", "2.14", "2.14.0", _diff(_WO, "2.13.0", "2.14.1"), ("torch.bcomplex32",)),
    Fact(
        "globals_removed",
        "2.15",
        "2.15.0",
        "fixtures/torch_allowlists/2.15.0.json (probe)",
        ("torch._utils._rebuild_nested_tensor",),
        note="in the 2.6.0 probe, absent from 2.15.0's: dropped at the first release known "
        "without it",
    ),
    Fact(
        "dtypes",
        "2.4",
        "2.4.1",
        "torch/__init__.py of 2.4.1",
        (
            *("bfloat16", "bit", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8", "bool"),
            *("cdouble", "cfloat", "chalf", "complex128", "complex32", "complex64", "double"),
            *("float", "float16", "float32", "float64", "float8_e4m3fn", "float8_e4m3fnuz"),
            *("float8_e5m2", "float8_e5m2fnuz", "half", "int", "int16", "int32", "int64"),
            *("int8", "long", "short", "qint32", "qint8", "quint2x4", "quint4x2", "quint8"),
            *(f"uint{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64)),
        ),
    ),
    Fact(
        "dtypes",
        "2.6",
        "2.6.0",
        "torch/__init__.py diff 2.5.1 -> 2.6.0",
        tuple(f"int{i}" for i in range(1, 8)),
        note="exist from 2.6, weights-only default from 2.7",
    ),
    Fact(
        "dtypes",
        "2.7",
        "2.7.0",
        "pytorch PR #147466 (merged Feb 2025); " + _diff(_WO, "2.6.0", "2.7.1"),
        ("float8_e8m0fnu",),
    ),
    Fact(
        "dtypes",
        "2.8",
        "2.8.0",
        "pytorch PR #148791 (not in 2.7.1); " + _diff(_WO, "2.7.1", "2.8.0"),
        ("float4_e2m1fn_x2",),
    ),
    Fact("dtypes", "2.14", "2.14.0", _diff(_WO, "2.13.0", "2.14.1"), ("bcomplex32",)),
    Fact(
        "torch_load_safetensors",
        "2.13",
        "2.13.0",
        "pytorch PR #170592; torch/serialization.py of 2.13.0 and 2.15.0; probed on the 2.13.0 "
        "CPU wheel (torch.load of a save_file output returned its dict, 2026-12-06)",
        note="torch.load(PATH) of a path ending in .safetensors returns "
        "safetensors.torch.load_file(PATH) when safetensors is installed (RuntimeError when "
        "it is not); 2.4.1-2.6.0 raise UnpicklingError (probed, issue 22); 2.7-2.12 were not "
        "probed (shared/reference/torch_versions.md lists it as new in 2.13)",
    ),
    # ------------------------------------------------------------------ error wordings
    Fact(
        "wording",
        "2.5",
        "2.5.0",
        _diff(_WO, "2.4.1", "2.5.1"),
        ("blocked_module",),
        r"unsupported GLOBAL (\S+) whose module (\S+) is blocked",
    ),
    Fact(
        "wording",
        "2.4",
        "2.4.0",
        _diff(_SER, "2.3.1", "2.4.1") + " (_get_wo_message's regex)",
        ("unsupported_global",),
        r"GLOBAL (\S+) was not an allowed global by default",
        note="2.7+ strips builtins. from the name",
    ),
    Fact(
        "wording",
        "2.3",
        "2.3.1",
        f"{_WO} of 2.3.1",
        ("unsupported_global",),
        r"Unsupported class (\S+)",
        note="kept so error logs of old runs still parse",
    ),
    Fact(
        "wording",
        "2.4",
        "2.4.1",
        f"{_WO} of 2.4.1",
        ("unsupported_operand",),
        r"Unsupported operand (\d+)",
    ),
    Fact(
        "wording",
        "2.10",
        "2.10.0",
        "GHSA-63cw-57p8-fm3p (CVE-2026-24747 fix)",
        ("setitem_restriction",),
        r"Can only SETITEMS? for .*?but got " + _CLASS_IN_REPR,
    ),
    Fact(
        "wording",
        "2.4",
        "2.4.1",
        f"{_WO} of 2.4.1 and 2.5.1 (BUILD)",
        ("can_only_build",),
        r"(?s)Can only build .*?but got " + _CLASS_IN_REPR,
        note="2.4 'Tensor, parameter or OrderedDict objects', 2.5+ '... or types allowlisted'",
    ),
    Fact(
        "wording",
        "2.4",
        "2.4.1",
        f"{_WO} of 2.4.1 (NEWOBJ)",
        ("can_only_build",),
        r"Trying to instantiate unsupported class " + _CLASS_IN_REPR,
    ),
    Fact(
        "wording",
        "2.5",
        "2.5.0",
        _diff(_WO, "2.4.1", "2.5.1") + " (NEWOBJ)",
        ("can_only_build",),
        r"Can only create new object for .*?but got " + _CLASS_IN_REPR,
    ),
    Fact(
        "wording",
        "2.6",
        "2.6.0",
        _diff(_SER, "2.5.1", "2.6.0"),
        ("torchscript",),
        r"TorchScript archives",
    ),
    Fact(
        "wording",
        "2.6",
        "2.6.0",
        "pytorch/pytorch#145020",
        ("legacy_tar",),
        r"legacy \.tar format",
    ),
)

_RELEASE = re.compile(r"(\d+)\.(\d+)")


def minor_tuple(version: str) -> tuple[int, int]:
    """``"2.9.1+cu128"`` (or ``"2.9"``) -> ``(2, 9)``.

    Raises:
        ValueError: not a version.
    """
    match = _RELEASE.match(version)
    if match is None:
        raise ValueError(f"not a torch version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def _rows(key: str) -> tuple[Fact, ...]:
    rows = tuple(f for f in FACTS if f.key == key)
    if not rows:
        raise KeyError(f"no torch-version fact {key!r}")
    return rows


def holds(key: str, version: str) -> bool:
    """True if fact ``key`` holds on torch ``version`` (any patch of a minor).

    Raises:
        KeyError: no such fact.
    """
    v = minor_tuple(version)
    return any(minor_tuple(f.since) <= v for f in _rows(key))


def first_minor(key: str) -> str:
    """The first minor where fact ``key`` holds, ``"2.6"``.

    Raises:
        KeyError: no such fact.
    """
    return min((f.since for f in _rows(key)), key=minor_tuple)


def names_through(key: str, version: str) -> frozenset[str]:
    """The names of ``key``'s rows that hold on torch ``version``."""
    v = minor_tuple(version)
    return frozenset(n for f in _rows(key) if minor_tuple(f.since) <= v for n in f.names)


def names_after(key: str, version: str) -> frozenset[str]:
    """The names of ``key``'s rows of releases after ``version``'s minor."""
    v = minor_tuple(version)
    return frozenset(n for f in _rows(key) if minor_tuple(f.since) > v for n in f.names)


def all_names(key: str) -> frozenset[str]:
    """The names of every row of ``key``."""
    return frozenset(n for f in _rows(key) for n in f.names)


def advisories(version: str) -> tuple[tuple[str, str], ...]:
    """``(advisory id, what it means)`` for each security fix torch ``version`` lacks."""
    v = minor_tuple(version)
    return tuple((f.names[0], f.note) for f in _rows("advisory") if v < minor_tuple(f.since))


def wordings() -> tuple[tuple[str, str], ...]:
    """``(failure kind, regex)`` of every weights-only error wording, first match wins."""
    return tuple((f.names[0], f.value) for f in _rows("wording"))
