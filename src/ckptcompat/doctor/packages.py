"""Which packages a pickle's globals need, and whether the consumer can import them.

A plain ``torch.load`` on torch <= 2.5 (``weights_only=False``) imports the module of every
global the pickle names; where that package is not installed it fails with
``ModuleNotFoundError`` before any tensor is read (issue 22: a trainer state naming
``heavyball.ForeachMuon`` was predicted to load on 2.4). A class pickled from a script is
named ``__main__.<Class>``: loaded from any other script, the unpickler's
``getattr(__main__, "<Class>")`` fails with ``AttributeError``.

The check never runs the package's code: in the doctor's own environment it is
``importlib.util.find_spec`` on the TOP-LEVEL name only (no parent package to import);
for another environment (``--python PATH``) that interpreter runs the same stdlib-only
look-up, fed the names as JSON on stdin, from an empty temporary directory. ``torch`` is
assumed present (each prediction is for a torch version); names that are not identifiers
can never be imported and count as missing without a look-up. Standard library only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from ckptcompat.doctor.verdict import Verdict
from ckptcompat.errors import InputError

__all__ = ["MAIN", "Consumer", "check_here", "check_python", "packages_of", "with_consumer"]

#: The module a script's own classes are pickled under.
MAIN = "__main__"
_ASSUMED = frozenset({"torch"})
_FIND_SPEC = (
    "import importlib.util, json, sys\n"
    "out = {}\n"
    "for name in json.load(sys.stdin):\n"
    "    try:\n"
    "        out[name] = importlib.util.find_spec(name) is not None\n"
    "    except (ImportError, ValueError):\n"
    "        out[name] = False\n"
    "print(json.dumps(out))\n"
)
_TIMEOUT_S = 60


@dataclass(frozen=True)
class Consumer:
    """Where the file would be loaded, and what it lacks.

    Attributes:
        label: ``"this environment (python 3.11.9)"`` or ``"--python /venv/bin/python"``.
        packages: the top-level packages the pickle needs, first-appearance order (``torch``
            and ``__main__`` included).
        missing: those not importable there (``__main__`` never counts as missing).
        main_globals: globals defined in ``__main__`` (fail outside their script).
    """

    label: str
    packages: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    main_globals: tuple[str, ...] = ()


def packages_of(globals_: tuple[str, ...]) -> tuple[str, ...]:
    """Top-level package of each ``"module.name"`` global, unique, first-appearance order."""
    return tuple(dict.fromkeys(g.split(".", 1)[0] for g in globals_ if g))


def _to_check(packages: tuple[str, ...]) -> list[str]:
    return [p for p in packages if p != MAIN and p not in _ASSUMED and p.isidentifier()]


def _consumer(label: str, globals_: tuple[str, ...], found: dict[str, bool]) -> Consumer:
    packages = packages_of(globals_)
    missing = tuple(
        p for p in packages if p != MAIN and p not in _ASSUMED and not found.get(p, False)
    )
    main = tuple(g for g in globals_ if g.startswith(MAIN + "."))
    return Consumer(label, packages, missing, main)


def check_here(globals_: tuple[str, ...]) -> Consumer:
    """The doctor's own environment: ``find_spec`` of each top-level name (no import)."""
    found = {}
    for name in _to_check(packages_of(globals_)):
        try:
            found[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found[name] = False
    python = ".".join(map(str, sys.version_info[:3]))
    return _consumer(f"this environment (python {python})", globals_, found)


def check_python(python: str, globals_: tuple[str, ...]) -> Consumer:
    """Another environment: run ``python`` on a stdlib-only ``find_spec`` script.

    Args:
        python: path of that environment's interpreter (``/venv/bin/python``).
        globals_: the pickle's globals.

    Raises:
        InputError: ``python`` does not exist, does not run, or answers something other
            than the JSON map the script prints.
    """
    names = _to_check(packages_of(globals_))
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise InputError(
            "--python does not name an interpreter",
            path=python,
            expected="an executable python, e.g. /path/to/venv/bin/python",
            found="no executable file",
            fix="pass the consumer venv's bin/python",
        )
    try:
        with tempfile.TemporaryDirectory(prefix="ckptcompat-find-spec-") as cwd:
            done = subprocess.run(
                [python, "-c", _FIND_SPEC],
                input=json.dumps(names),
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
                cwd=cwd,
                check=True,
            )
        found = json.loads(done.stdout.strip().splitlines()[-1]) if names else {}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise InputError(
            "--python could not check which packages it can import",
            path=python,
            expected="a python that runs a stdlib-only importlib.util.find_spec script",
            found=f"{type(exc).__name__}: {str(exc)[:200]}",
            fix="check the interpreter runs: PATH -c 'import importlib.util'",
        ) from exc
    if type(found) is not dict:
        raise InputError("--python answered something unexpected", path=python, found=repr(found))
    return _consumer(f"--python {python}", globals_, {k: v is True for k, v in found.items()})


def with_consumer(verdict: Verdict, consumer: Consumer, *, full_unpickler: bool) -> Verdict:
    """``verdict`` adjusted for what ``consumer`` can import.

    With the full unpickler (a plain load on torch <= 2.5) a ``loads``/``runs_code`` verdict
    becomes ``not_fixable``: the first missing package (or ``__main__`` class) in stream
    order stops the load. Under weights_only, a missing package only matters for allowlist
    entries (torch imports what is allowlisted): a note says so.
    """
    missing = set(consumer.missing)
    if not missing and not consumer.main_globals:
        return verdict
    if full_unpickler and verdict.outcome in ("loads", "runs_code"):
        blockers = [
            f"package {p!r} is not importable in {consumer.label} (install it there)"
            for p in consumer.missing
        ]
        blockers += [
            f"{g} was defined in the script that saved it; {MAIN} of another script lacks it"
            for g in consumer.main_globals
        ]
        first = consumer.missing[0] if consumer.missing else None
        error = (
            f"ModuleNotFoundError: No module named '{first}'"
            if first is not None
            else f"AttributeError: Can't get attribute '{consumer.main_globals[0][9:]}' on "
            f"<module '{MAIN}'>"
        )
        why = (
            f"the full unpickler imports {', '.join(consumer.missing)}, missing in {consumer.label}"
            if first is not None
            else f"the pickle needs classes of the saving script's {MAIN}"
        )
        notes = ()
        if consumer.main_globals:
            classes = [g[len(MAIN) + 1 :] for g in consumer.main_globals]
            register = "; ".join(f"{MAIN}.{c} = {c}" for c in classes)
            notes = (
                "the full unpickler looks the classes up as attributes of the LOADING "
                f"script's {MAIN}: `import {MAIN}; {register}` (each class imported from "
                "where it lives now) before torch.load lets a trusted file load; or load "
                "with weights_only=True and the allowlist below",
            )
        return Verdict("not_fixable", why, first_error=error, blockers=tuple(blockers), notes=notes)
    needing = [e.name for e in verdict.allowlist if e.name.split(".", 1)[0] in missing]
    if not needing:
        return verdict
    note = f"allowlisting {', '.join(needing)} needs its package importable in {consumer.label}"
    return dataclasses.replace(verdict, notes=(*verdict.notes, note))
