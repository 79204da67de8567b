"""Why loading a file could run its code: the static facts that make a file unsafe to load.

One list, :func:`code_risks`, read by the doctor (its verdict line, its allowlist and
``migrate`` suggestions) and by ``repro`` (which loads nothing a risk is named for unless
the user passes ``--allow-code-execution``). A risk is a fact the static scan established:

* globals that run code or reach the system (``os.system``, ``builtins.exec`` ...): a plain
  ``torch.load`` on torch 2.4/2.5 (``weights_only=False``) calls them;
* calls the scan cannot name (a call on a call's result: ``getattr(...)(...)`` chains) and
  EXT opcodes (they call whatever ``copyreg``'s registry holds);
* more than one object pickle in one archive (loaders disagree on which one they read);
* a storage record shorter than its tensor claims (torch <= 2.9 reads past it,
  CVE-2026-24747);
* the pre-1.6 ``.tar`` container (never scanned; read with the full unpickler on <= 2.5);
* bytes without torch's header that are a complete pickle naming globals: torch <= 2.5's
  legacy loader unpickles them with the full unpickler before it checks the magic number.

Standard library only; nothing is unpickled or imported.
"""

from __future__ import annotations

import os
import pickletools
from typing import TYPE_CHECKING

from ckptcompat.doctor.bounded_file import BoundedFile
from ckptcompat.scan.danger import is_dangerous
from ckptcompat.scan.limits import MAX_PICKLE_BYTES

if TYPE_CHECKING:
    from ckptcompat.scan.scan_result import ScanResult

__all__ = ["code_risks"]

_FINDING_RISKS = {
    "call_on_result": "it calls the result of a call (a getattr-style chain), so the scan "
    "cannot name what runs",
    "extension_opcode": "it uses EXT opcodes, which call whatever copyreg's registry holds",
    "multiple_pickles": "it holds more than one object pickle; loaders disagree on which "
    "one they read",
    "duplicate_record": "it holds duplicate archive records; loaders disagree on which one "
    "they read",
    "storage_size_mismatch": "a storage record is shorter than its tensor claims; torch <= "
    "2.9 reads past it (CVE-2026-24747)",
}
_MAX_RAW_OPS = 1_000_000  # opcodes read from a headerless file before giving up
_NAMING_OPS = frozenset({"GLOBAL", "INST"})
_CALLING_OPS = frozenset({"STACK_GLOBAL", "REDUCE", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})


def _listed(names: list[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _raw_pickle_names(path: str) -> list[str] | None:
    """The globals a headerless file names if it is one complete pickle, else None.

    Only GLOBAL/INST carry their names inline; a pickle that reaches STOP with other
    calling opcodes but no inline name is reported as ``["<unnamed>"]``.
    """
    names: list[str] = []
    calls = False
    try:
        with open(path, "rb") as raw:
            fh = BoundedFile(raw, MAX_PICKLE_BYTES)
            for count, (op, arg, _pos) in enumerate(pickletools.genops(fh)):  # type: ignore[arg-type]
                if count > _MAX_RAW_OPS:
                    return None
                if op.name in _NAMING_OPS:
                    names.append(".".join(str(arg).split(" ", 1)))
                elif op.name in _CALLING_OPS:
                    calls = True
                elif op.name == "STOP":
                    break
            else:
                return None
    except (ValueError, EOFError, OverflowError):
        return None  # not a pickle: text, or bytes of another format
    if names:
        return list(dict.fromkeys(names))
    return ["<unnamed>"] if calls else None


def code_risks(path: str | os.PathLike[str], result: ScanResult) -> tuple[str, ...]:
    """Every reason loading ``path`` could run code from it (empty: none the scan found).

    Args:
        path: the file ``result`` describes (read again only for headerless bytes).
        result: its static scan.

    Raises:
        OSError: ``path`` cannot be read (only for headerless bytes).
    """
    risks: list[str] = []
    if result.kind == "legacy_tar":
        risks.append(
            "it is a pre-1.6 .tar checkpoint, which the scan cannot read; torch <= 2.5 "
            "reads it with the full unpickler (CVE-2025-32434)"
        )
    elif result.kind == "unknown":
        names = _raw_pickle_names(os.fspath(path))
        if names is not None:
            risks.append(
                f"it is a bare pickle without torch's header naming {_listed(names)}; "
                "torch <= 2.5's legacy loader unpickles it with the full unpickler"
            )
    dangerous = [g for g in result.globals if is_dangerous(g)]
    if dangerous:
        risks.append(f"it names {_listed(dangerous)}, which can run code or reach the system")
    codes = {f.code for f in result.findings}
    risks += [text for code, text in _FINDING_RISKS.items() if code in codes]
    return tuple(risks)
