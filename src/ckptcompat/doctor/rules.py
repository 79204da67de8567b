"""What each torch 2.4 ... 2.15 does when loading, as data the doctor can reason with.

One :class:`Profile` per torch minor. Versions with a committed probe
(``fixtures/torch_allowlists/<release>.json``, written by
:mod:`ckptcompat.harness.snapshots` inside that cell) take the probed facts from it
(``basis="snapshot"``); the others (2.7 ... 2.14 today) take them from the rows of
:mod:`ckptcompat.versions_facts` (``basis="rules"``). Facts a snapshot does not probe (the
legacy ``.tar``/TorchScript refusals, the security advisories) always come from the rows.
torch_versions.md's "2.14 allows APPEND on allowlisted list subclasses" is not modelled:
2.15.0's unpickler still accepts APPEND(S) on exact lists only.

Standard library only: the doctor imports neither torch nor numpy.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ckptcompat import locator
from ckptcompat import versions_facts as facts
from ckptcompat.scan.opcode_walk import WEIGHTS_ONLY_OPCODES
from ckptcompat.scan.torch_names import WEIGHTS_ONLY_GLOBALS

__all__ = [
    "ALL_DTYPE_GLOBALS",
    "MINORS",
    "SNAPSHOT_DIR",
    "Basis",
    "Profile",
    "minor_of",
    "profiles",
    "rules_profile",
]

Basis = Literal["snapshot", "rules"]

#: Where the probed snapshots live in a source checkout (the package is installed editable).
SNAPSHOT_DIR: Path = locator.TORCH_ALLOWLISTS_DIR


#: ``torch.<dtype>`` globals of every dtype some torch 2.4-2.15 knows.
ALL_DTYPE_GLOBALS: frozenset[str] = frozenset(f"torch.{d}" for d in facts.all_names("dtypes"))

#: The minors the doctor predicts, oldest first.
MINORS: tuple[str, ...] = tuple(f"2.{m}" for m in range(4, 16))


def _release_tuple(release: str) -> tuple[int, ...]:
    """``"2.9.1+cu128"`` -> ``(2, 9, 1)``; pre-release suffixes (``0a0``) are dropped."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if match is None:
        raise ValueError(f"not a torch version: {release!r}")
    return tuple(int(p or 0) for p in match.groups())


@dataclass(frozen=True)
class Profile:
    """Loading behaviour of one torch minor.

    Attributes:
        minor: ``"2.6"``.
        release: the release a snapshot was probed on (``"2.6.0"``), or ``"2.7.x"`` for
            rules, which hold for every patch of the minor.
        basis: ``"snapshot"`` (probed in that cell) or ``"rules"`` (torch_versions.md).
        weights_only_default: a plain ``torch.load(f)`` is weights-only (2.6+).
        default_globals: globals the weights-only unpickler accepts with no allowlist.
        blocked_modules: modules refused even when allowlisted (2.5+: sys, os, posix, nt).
        implemented_opcodes: opcodes the weights-only unpickler implements (protocol 2).
        dtypes: ``torch.<name>`` dtype globals that exist in this torch.
        setitem_restricted: SETITEM(S) only on dict/OrderedDict/Counter (2.10+).
        aliases: ``add_safe_globals`` takes ``(obj, "dotted.name")`` tuples (2.6+).
        user_allowlist_key: ``"name"`` or ``"qualname"`` (2.7+) keying plain entries.
        refuses_legacy_tar: the pre-1.6 ``.tar`` container is refused under weights_only
            (2.6+; earlier it is the CVE-2025-32434 path).
        refuses_torchscript: TorchScript archives are refused under weights_only (2.6+;
            earlier ``torch.load`` hands them to ``torch.jit.load``).
        advisories: ``(advisory id, meaning)`` for security fixes this release lacks.
    """

    minor: str
    release: str
    basis: Basis
    weights_only_default: bool
    default_globals: frozenset[str]
    blocked_modules: frozenset[str]
    implemented_opcodes: frozenset[str]
    dtypes: frozenset[str]
    setitem_restricted: bool
    aliases: bool
    user_allowlist_key: Literal["name", "qualname"]
    refuses_legacy_tar: bool
    refuses_torchscript: bool
    advisories: tuple[tuple[str, str], ...]


def rules_profile(minor: str) -> Profile:
    """The profile of torch ``minor`` (``"2.8"``, any patch) from the facts table alone."""
    later = facts.names_after("globals_added", minor)
    defaults = set(WEIGHTS_ONLY_GLOBALS) - later - facts.names_through("globals_removed", minor)
    return Profile(
        minor=minor,
        release=f"{minor}.x",
        basis="rules",
        weights_only_default=facts.holds("weights_only_default", minor),
        default_globals=frozenset(defaults),
        blocked_modules=facts.names_through("blocked_modules", minor),
        implemented_opcodes=WEIGHTS_ONLY_OPCODES,
        dtypes=frozenset(f"torch.{d}" for d in facts.names_through("dtypes", minor)),
        setitem_restricted=facts.holds("setitem_restricted", minor),
        aliases=facts.holds("aliased_safe_globals", minor),
        user_allowlist_key="qualname" if facts.holds("user_allowlist_qualname", minor) else "name",
        refuses_legacy_tar=facts.holds("refuses_legacy_tar", minor),
        refuses_torchscript=facts.holds("refuses_torchscript", minor),
        advisories=facts.advisories(minor),
    )


def _snapshot_profile(rules: Profile, data: dict[str, object]) -> Profile:
    def names(key: str) -> frozenset[str]:
        value = data[key]
        if not isinstance(value, list):
            raise TypeError(f"{key} is not a list")
        return frozenset(str(v) for v in value)

    key = data["user_allowlist_key"]
    return Profile(
        minor=rules.minor,
        release=str(data["torch"]),
        basis="snapshot",
        weights_only_default=bool(data["weights_only_default"]),
        default_globals=names("default_globals") | names("preregistered_safe_globals"),
        blocked_modules=names("blocked_modules"),
        implemented_opcodes=names("implemented_opcodes"),
        dtypes=names("dtypes"),
        setitem_restricted=bool(data["setitem_restricted"]),
        aliases=bool(data["aliased_safe_globals"]),
        user_allowlist_key="qualname" if key == "qualname" else "name",
        refuses_legacy_tar=rules.refuses_legacy_tar,
        refuses_torchscript=rules.refuses_torchscript,
        advisories=rules.advisories,
    )


def _snapshot_file(folder: Path, minor: str) -> Path | None:
    """The probe of the newest patch of ``minor`` in ``folder`` (``2.6.0.json``), if any."""
    found = [p for p in folder.glob(f"{minor}.*.json") if re.fullmatch(r"\d+\.\d+\.\d+", p.stem)]
    return max(found, key=lambda p: _release_tuple(p.stem)) if found else None


def profiles(snapshot_dir: str | Path | None = SNAPSHOT_DIR) -> tuple[Profile, ...]:
    """One profile per torch minor 2.4 ... 2.15, snapshot-based where a probe is committed.

    Args:
        snapshot_dir: folder of ``<release>.json`` probes (the newest patch of a minor is
            used); None (or a missing folder, as in an installed wheel) gives rules for
            every version.

    Raises:
        ValueError: a snapshot file that is not valid JSON of the probe schema.
    """
    return _profiles(str(snapshot_dir) if snapshot_dir is not None else None)


@functools.lru_cache(maxsize=4)
def _profiles(snapshot_dir: str | None) -> tuple[Profile, ...]:
    # Cached: the snapshots are committed files, read once per process.
    out = []
    folder = Path(snapshot_dir) if snapshot_dir is not None else None
    for minor in MINORS:
        rules = rules_profile(minor)
        path = _snapshot_file(folder, minor) if folder is not None and folder.is_dir() else None
        if path is not None:
            try:
                out.append(_snapshot_profile(rules, json.loads(path.read_text())))
            except (KeyError, TypeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: not a torch allowlist snapshot ({exc})") from None
        else:
            out.append(rules)
    return tuple(out)


def minor_of(torch_version: str) -> str:
    """``"2.6.0+cu124"`` -> ``"2.6"``.

    Raises:
        ValueError: not a version.
    """
    major, minor = _release_tuple(torch_version)[:2]
    return f"{major}.{minor}"
