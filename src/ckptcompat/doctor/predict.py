"""Predict one torch version's ``torch.load`` outcome from the static scan; never loads.

Two loads per version (:func:`predict`): a plain ``torch.load(FILE)`` (``weights_only``
omitted: False on 2.4/2.5, True from 2.6) and ``torch.load(FILE, weights_only=True)``.
Each gets a :class:`~ckptcompat.doctor.verdict.Verdict` with one outcome:

* ``loads`` -- loads as is; only torch's rebuild machinery and plain data run.
* ``runs_code`` -- loads, but only by importing and calling globals from the file (the full
  unpickler of a plain load on torch <= 2.5): unsafe unless you trust the file.
* ``fixable_by_allowlist`` -- refused, and loads with exactly the listed allowlist entries
  (numpy dtype classes the pickle never names included; dangerous entries flagged).
* ``not_fixable`` -- refused whatever is allowlisted (protocol > 2, dict subclass with
  items on 2.10+, blocked module, dtype unknown to that torch, numpy-1 names without
  aliases, TorchScript, corrupt or non-torch files).
* ``refused`` -- refused, but the static scan could not model the whole pickle (calls on
  call results, odd persistent ids, a failed inert pass), so no complete allowlist is
  claimed: the verdict names what torch refuses.

Standard library only.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass, field

from ckptcompat.doctor.numpy_consumer import NumpyFacts, numpy2_ctor_error
from ckptcompat.doctor.pickle_walk import PickleFacts
from ckptcompat.doctor.rules import ALL_DTYPE_GLOBALS, Profile
from ckptcompat.doctor.verdict import Entry, Verdict, entry, numpy_dtype_class
from ckptcompat.scan.danger import is_dangerous
from ckptcompat.scan.scan_result import ScanResult
from ckptcompat.scan.torch_names import SETITEM_TARGETS, WEIGHTS_ONLY_GLOBALS

__all__ = ["numpy_major_matters", "predict"]

_NUMPY_CORES = ("numpy.core.", "numpy._core.")
_CORRUPT_KINDS = {
    "empty": "an empty (zero-byte) file",
    "truncated_zip": "a zip archive without its central directory (truncated)",
    "git_lfs_pointer": "a Git-LFS pointer, not the file (run `git lfs pull`)",
    "html": "an HTML page, not a checkpoint (download it again)",
    "unknown": "bytes that are neither a zip archive nor a pickle",
}
_CORRUPT_CODES = frozenset(
    {
        "truncated_pickle",
        "malformed_pickle",
        "missing_pickle",
        "prefix_mismatch",
        "unreadable_record",
        "missing_storage_record",
        "truncated_storage",
        "legacy_bad_header",
        "storage_size_mismatch",
        "inconsistent_storage",
        "limit_exceeded",
        "pickle_too_large",
        "damaged_record",
    }
)
_UNMODELLED_CODES = frozenset({"call_on_result", "non_storage_persistent_id", "unpickle_failed"})
_OPCODE_BYTE = {op.name: ord(op.code) for op in pickletools.opcodes}


def _ordered(names: tuple[str, ...] | list[str], facts: PickleFacts) -> list[str]:
    """``names`` in stream order when the facts know it (else as given)."""
    index = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (facts.global_pos.get(n, 1 << 62), index[n]))


def _kind_verdict(result: ScanResult, profile: Profile, weights_only: bool) -> Verdict | None:
    """Verdicts decided by the container kind alone (None for zip and legacy pickles)."""
    kind = result.kind
    if kind in _CORRUPT_KINDS:
        return Verdict(
            "not_fixable",
            f"not a torch checkpoint: {_CORRUPT_KINDS[kind]}",
            blockers=(_CORRUPT_KINDS[kind],),
        )
    if kind == "torchscript":
        if weights_only and profile.refuses_torchscript:
            why = "TorchScript archives are refused under weights_only (torch >= 2.6)"
            return Verdict(
                "not_fixable",
                why,
                blockers=(why + "; use torch.jit.load",),
                first_error="Cannot use weights_only=True with TorchScript archives",
            )
        return Verdict(
            "loads",
            "torch <= 2.5 hands TorchScript archives to torch.jit.load (a ScriptModule, not a "
            "checkpoint)",
            notes=("ckptcompat's own load refuses TorchScript on every torch",),
        )
    if kind == "legacy_tar":
        if weights_only and profile.refuses_legacy_tar:
            why = "the legacy .tar container is refused under weights_only (torch >= 2.6)"
            return Verdict(
                "not_fixable",
                why,
                blockers=(why,),
                first_error=(
                    "Cannot use weights_only=True with files saved in the legacy .tar format"
                ),
            )
        return Verdict(
            "runs_code",
            "the pre-1.6 .tar container is read with the full unpickler path "
            + ("(CVE-2025-32434: even with weights_only=True)" if weights_only else ""),
            notes=("the .tar container is not scanned; treat it as untrusted code",),
        )
    return None


def _corrupt_content(result: ScanResult) -> Verdict | None:
    bad = [f for f in result.findings if f.code in _CORRUPT_CODES]
    if not bad:
        return None
    reasons = tuple(
        f"{f.message} ({', '.join(f.names[:3])})" if f.names else f.message for f in bad
    )
    return Verdict("not_fixable", f"the file is corrupt: {reasons[0]}", blockers=reasons)


def _plain_full_unpickler(
    result: ScanResult, profile: Profile, numpy: NumpyFacts, numpy_major: int
) -> Verdict:
    """torch 2.4/2.5 without weights_only: the full pickle machinery."""
    if numpy_major < 2 and numpy.numpy2_bit_generators:
        why = (
            f"numpy 1's __bit_generator_ctor takes a name, and this numpy-2 pickle passes the "
            f"class {numpy.numpy2_bit_generators[0]}"
        )
        return Verdict(
            "not_fixable",
            why,
            first_error=numpy2_ctor_error(numpy),
            blockers=(why + ": load it under numpy 2, or re-save the state as primitives",),
        )
    unknown = [g for g in result.globals if g in ALL_DTYPE_GLOBALS and g not in profile.dtypes]
    if unknown:
        why = f"dtype {', '.join(unknown)} does not exist in torch {profile.release}"
        return Verdict(
            "not_fixable",
            why,
            blockers=(why + " (AttributeError)",),
            first_error=f"module 'torch' has no attribute '{unknown[0][6:]}'",
        )
    foreign = [g for g in result.globals if g not in WEIGHTS_ONLY_GLOBALS]
    notes: tuple[str, ...] = (
        "a plain torch.load warns FutureWarning about the coming weights_only flip",
    )
    if numpy_major < 2 and any(g.startswith("numpy._core.") for g in foreign):
        notes += (
            "numpy-2 names (numpy._core.*) import under numpy 1.26, which has numpy._core; "
            "numpy < 1.26 fails with ModuleNotFoundError",
        )
    if not foreign:
        return Verdict(
            "loads", "only tensors and plain containers; no code from the file runs", notes=notes
        )
    dangerous = [g for g in foreign if is_dangerous(g)]
    if dangerous:
        notes = (f"DANGEROUS globals run: {', '.join(dangerous)}", *notes)
    return Verdict(
        "runs_code",
        f"weights_only defaults to False on torch {profile.minor}: the full unpickler imports "
        f"and calls {len(foreign)} global(s) from the file: {', '.join(foreign)}",
        refused_globals=(),
        notes=notes,
    )


def _numpy_spelling_mismatch(name: str, numpy_major: int) -> str | None:
    """The running numpy's spelling of a numpy-core global spelled for the other major."""
    wrong, right = ("numpy.core.", "numpy._core.") if numpy_major >= 2 else _NUMPY_CORES[::-1]
    return right + name[len(wrong) :] if name.startswith(wrong) else None


@dataclass
class _Problems:
    """What one weights-only load would meet, accumulated check by check."""

    blockers: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (stream offset, torch's words)


def _check_opcodes(
    out: _Problems, result: ScanResult, facts: PickleFacts, profile: Profile
) -> None:
    unsupported = sorted(result.opcodes - profile.implemented_opcodes)
    if unsupported:
        out.blockers.append(
            f"pickle protocol {result.protocol}: opcodes {', '.join(unsupported)} are outside "
            "the protocol-2 set the weights-only unpickler implements (re-save with protocol 2)"
        )
    for op in unsupported:
        out.errors.append((facts.opcode_pos.get(op, -1), f"Unsupported operand {_OPCODE_BYTE[op]}"))


def _check_global(out: _Problems, name: str, pos: int, profile: Profile, numpy_major: int) -> None:
    """One global this torch refuses by default: allowlistable, or why not."""
    module = name.rsplit(".", 1)[0]
    if module in profile.blocked_modules:
        out.blockers.append(f"{name}: module {module} is blocked even when allowlisted (2.5+)")
        out.errors.append((pos, f"GLOBAL {name} whose module {module} is blocked"))
        return
    out.errors.append((pos, f"Unsupported global: {name}"))
    running = _numpy_spelling_mismatch(name, numpy_major)
    spelled = "1" if numpy_major >= 2 else "2"
    if name.startswith(_MAIN):
        out.entries.append(_main_entry(name, profile))
    elif name in ALL_DTYPE_GLOBALS and name not in profile.dtypes:
        out.blockers.append(f"dtype {name} does not exist in torch {profile.release}")
    elif name in ALL_DTYPE_GLOBALS:
        out.blockers.append(
            f"dtype {name} is not allowed by default before torch 2.6 and a dtype cannot be "
            "allowlisted"
        )
    elif name.startswith("torch.") and name in WEIGHTS_ONLY_GLOBALS:
        out.blockers.append(f"{name} is only known to newer torch releases")
    elif running is not None and profile.aliases:
        out.entries.append(entry(name, f"numpy-{spelled} spelling: an alias of {running}", running))
    elif running is not None:
        out.blockers.append(
            f"{name} is spelled for numpy {spelled}; matching it needs an (object, name) alias, "
            "which torch < 2.6 lacks"
        )
    else:
        out.entries.append(entry(name, "named by the pickle"))


_MAIN = "__main__."


def _main_entry(name: str, profile: Profile) -> Entry:
    """A class of the saving script (``__main__.Cfg``): torch keys the allowlist by
    ``module.name``, so the class imported from anywhere else does not match it."""
    cls = name[len(_MAIN) :]
    if profile.aliases:
        why = (
            f"defined by the saving script: pass the class (import it from where it lives now, "
            f"or define it) under the name {name!r}"
        )
        return entry(name, why, python=f"({cls}, {name!r})")
    why = (
        f"defined by the saving script: torch {profile.minor} takes no (object, name) alias, "
        f"so {cls} must be defined in the loading script itself, run as the main program "
        f"({cls}.__module__ == '__main__'), before loading"
    )
    return entry(name, why, python=cls)


def _check_numpy_random(out: _Problems, numpy: NumpyFacts, numpy_major: int) -> None:
    """numpy.random classes the BUILD check needs; numpy-2 bit generators under numpy 1."""
    named = {e.name for e in out.entries}
    for cls, why in numpy.unnamed_classes:
        if cls not in named:
            out.entries.append(entry(cls, why))
    if numpy_major < 2 and numpy.numpy2_bit_generators:
        out.blockers.append(
            f"numpy 1's __bit_generator_ctor takes a name, and this numpy-2 pickle passes the "
            f"class {numpy.numpy2_bit_generators[0]} ({numpy2_ctor_error(numpy)}, even when "
            "allowlisted): load it under numpy 2"
        )
        out.errors.append((1 << 62, numpy2_ctor_error(numpy)))


def _check_numpy_dtypes(out: _Problems, result: ScanResult, facts: PickleFacts) -> None:
    if "numpy.dtype" not in result.globals:
        return
    for code in facts.numpy_dtypes:
        cls = numpy_dtype_class(code)
        if cls is None:
            out.blockers.append(f"numpy dtype {code!r}: its class is unknown to the doctor")
        elif cls not in {e.name for e in out.entries}:
            why = (
                f"class of numpy.dtype({code!r}): torch's BUILD check needs it and the pickle "
                "never names it"
            )
            out.entries.append(entry(cls, why))


def _check_structure(out: _Problems, result: ScanResult, profile: Profile) -> None:
    if profile.setitem_restricted:
        out.blockers += [
            f"SETITEM(S) on {t} (a dict subclass with items) is refused since torch 2.10 even "
            "when allowlisted"
            for t in result.setitem_targets
            if t not in SETITEM_TARGETS
        ]
    out.blockers += [
        f"APPEND(S) on {t} (not a list) is refused on every torch" for t in result.append_targets
    ]


def _weights_only(
    result: ScanResult,
    facts: PickleFacts,
    profile: Profile,
    numpy_major: int,
    numpy: NumpyFacts,
) -> Verdict:
    out = _Problems()
    _check_opcodes(out, result, facts, profile)
    refused = _ordered([g for g in result.globals if g not in profile.default_globals], facts)
    for name in refused:
        _check_global(out, name, facts.global_pos.get(name, 1 << 61), profile, numpy_major)
    _check_numpy_dtypes(out, result, facts)
    _check_numpy_random(out, numpy, numpy_major)
    _check_structure(out, result, profile)
    uncertain = [f.message for f in result.findings if f.code in _UNMODELLED_CODES]
    if numpy.unknown:
        uncertain.append(numpy.unknown)
    if not facts.complete and "numpy.dtype" in result.globals:
        uncertain.append("the numpy dtypes could not be read from the pickle")
    first = min(out.errors)[1] if out.errors else None
    names, entries = tuple(refused), tuple(out.entries)
    if out.blockers:
        return Verdict("not_fixable", out.blockers[0], names, first, blockers=tuple(out.blockers))
    if uncertain:
        why = f"refused; the scan cannot model the whole pickle: {'; '.join(uncertain)}"
        return Verdict("refused", why, names, first, entries)
    if not entries:
        return Verdict("loads", "only globals torch's weights-only unpickler allows by default")
    dangerous = [e.name for e in entries if e.dangerous]
    notes = (
        (f"DANGEROUS entries: {', '.join(dangerous)}: allowlisting them lets the file run code",)
        if dangerous
        else ()
    )
    plural = "entry" if len(entries) == 1 else "entries"
    why = f"refused by default; loads with {len(entries)} allowlist {plural}"
    return Verdict("fixable_by_allowlist", why, names, first, entries, notes=notes)


def _with_notes(verdict: Verdict, *notes: str) -> Verdict:
    extra = tuple(n for n in notes if n)
    if not extra:
        return verdict
    v = verdict  # field by field: dataclasses.replace costs more than the rest of predict
    return Verdict(
        v.outcome, v.why, v.refused_globals, v.first_error, v.allowlist, v.blockers, v.notes + extra
    )


def _ckptcompat_note(result: ScanResult, profile: Profile) -> str:
    """How ckptcompat's own load differs from torch's here (its static precheck, < 2.10)."""
    if profile.setitem_restricted:
        return ""
    odd = [t for t in result.setitem_targets if t not in SETITEM_TARGETS]
    dangerous = [g for g in result.globals if is_dangerous(g)]
    parts = []
    if odd:
        parts.append(f"SETITEM on {', '.join(odd)} unless that class is allowlisted")
    if dangerous:
        parts.append(f"{', '.join(dangerous)} even when allowlisted")
    return ("ckptcompat's load also refuses, on torch < 2.10: " + "; ".join(parts)) if parts else ""


def predict(
    result: ScanResult,
    facts: PickleFacts,
    profile: Profile,
    *,
    numpy_major: int = 2,
    numpy: NumpyFacts | None = None,
) -> tuple[Verdict, Verdict]:
    """Predict ``(plain torch.load(FILE), torch.load(FILE, weights_only=True))`` on ``profile``.

    Args:
        result: the static scan of the file.
        facts: :func:`ckptcompat.doctor.pickle_walk.pickle_facts` of the same file.
        profile: the torch version's loading behaviour.
        numpy_major: the numpy major the load runs under (1 means numpy 1.26): decides
            the numpy-1/2 aliases and whether numpy-2 bit generators load at all.
        numpy: :func:`ckptcompat.doctor.numpy_consumer.numpy_facts` of the same file
            (None: no numpy.random facts, as for a file without numpy.random globals).
    """
    numpy = numpy or NumpyFacts()
    wo = _kind_verdict(result, profile, True) or _corrupt_content(result)
    if wo is None:
        wo = _with_notes(
            _weights_only(result, facts, profile, numpy_major, numpy),
            _ckptcompat_note(result, profile),
        )
    if profile.weights_only_default:
        plain = _with_notes(wo, "torch >= 2.6 defaults to weights_only=True")
    else:
        plain = (
            _kind_verdict(result, profile, False)
            or _corrupt_content(result)
            or _plain_full_unpickler(result, profile, numpy, numpy_major)
        )
    silent = _silent_damage(result)
    return _with_notes(plain, silent), _with_notes(wo, silent)


def _silent_damage(result: ScanResult) -> str:
    """The note for records torch reads without an error as other values (``--verify-data``'s
    ``crc_mismatch``): torch checks no zip CRC-32 on any version (measured per cell), so the
    outcome stands and the tensors are wrong."""
    for finding in result.findings:
        if finding.code == "crc_mismatch":
            return (
                f"CORRUPT DATA: {len(finding.names)} record(s) differ from what was saved "
                f"({', '.join(finding.names[:3])}); torch checks no CRC-32 and returns the "
                "damaged tensors without an error; ckptcompat's loader refuses the file "
                "(CorruptCheckpointError)"
            )
    return ""


def numpy_major_matters(result: ScanResult, numpy: NumpyFacts) -> bool:
    """Whether :func:`predict` can answer differently for numpy 1 and numpy 2 on the loading
    side. ``numpy_major`` reaches a verdict only through numpy-core globals (spelled
    ``numpy.core.*`` or ``numpy._core.*``: :func:`_numpy_spelling_mismatch` and the plain
    load's note) and numpy-2 bit generators (:attr:`NumpyFacts.numpy2_bit_generators`);
    without either, both majors get the same predictions and the doctor computes them once.
    """
    return bool(numpy.numpy2_bit_generators) or any(
        g.startswith(_NUMPY_CORES) for g in result.globals
    )
