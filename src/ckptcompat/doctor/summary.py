"""The doctor's one-line verdict, and the short answer for files that are not checkpoints.

:func:`verdict_line` is what the text report prints first and what ``--json`` gives as
``summary``, e.g. ``needs 3 allowlist entries on 2.4-2.5; loads with weights_only on
2.6-2.15``: the ``weights_only=True`` verdict per run of torch versions, then where a plain
``torch.load`` runs code. Storages saved on a device this machine lacks come first after
any risk (``saved on cuda:0: fails here without map_location="cpu"``): the per-version
verdicts assume the storages can be restored. A file with a code risk starts with
``unsafe, do not load it``. Records ``--verify-data`` found damaged in a way torch does not
notice (a CRC-32 mismatch) come first after the risks, as ``corrupt data: ...``: the
per-version verdicts then say what torch does, which is to load wrong tensors.
Files that are not torch checkpoints at all (empty, text, HTML, a Git LFS pointer, a
truncated zip) get one short answer instead (:func:`not_a_checkpoint`). Standard library
only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckptcompat.doctor.verdict import Verdict

if TYPE_CHECKING:
    from ckptcompat.doctor import Diagnosis

__all__ = ["not_a_checkpoint", "verdict_line"]

# Kinds that are no torch checkpoint at all -> what to do about it.
_FIXES = {
    "empty": "restore it from its source (a crash mid-copy?)",
    "git_lfs_pointer": "run `git lfs pull` to fetch the real file",
    "html": "the download returned a web page; download the file again",
    "truncated_zip": "restore it from its source or pick an earlier checkpoint",
    "unknown": "check that this is the file torch.save wrote",
}


def not_a_checkpoint(diag: Diagnosis) -> str | None:
    """``"a Git LFS pointer, ...: run `git lfs pull` ..."`` for non-checkpoints; else None."""
    fix = _FIXES.get(diag.kind)
    return None if fix is None else f"{diag.generation_detail}: {fix}"


def _span(minors: list[str]) -> str:
    return minors[0] if len(minors) == 1 else f"{minors[0]}-{minors[-1]}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun[:-1]}ies"


def _phrase(verdict: Verdict, unsafe: bool) -> str:
    """The weights_only verdict of one version, as a few words (``unsafe``: refused or not)."""
    if verdict.outcome == "loads":
        return "loads with weights_only"
    if verdict.outcome == "runs_code":
        return "runs code from the file even with weights_only"
    if unsafe:
        return "weights_only refuses it"
    if verdict.outcome == "fixable_by_allowlist":
        dangerous = [e.name for e in verdict.allowlist if e.dangerous]
        if dangerous:
            return f"refused by weights_only unless you allowlist dangerous {', '.join(dangerous)}"
        return f"needs {_plural(len(verdict.allowlist), 'allowlist entry')}"
    if verdict.outcome == "not_fixable":
        return "cannot load with weights_only (no allowlist helps)"
    return "refused by weights_only; no allowlist is known to fix it"


def _runs(diag: Diagnosis, phrases: list[str]) -> list[str]:
    """``"<phrase> on <span>"`` for each run of consecutive versions with one phrase."""
    minors = [v.torch for v in diag.versions][: len(phrases)]
    out: list[str] = []
    start = 0
    for i in range(1, len(phrases) + 1):
        if i == len(phrases) or phrases[i] != phrases[start]:
            span = _span(minors[start:i])
            whole = start == 0 and i == len(phrases)
            out.append(f"{phrases[start]} on {'every torch ' if whole else ''}{span}")
            start = i
    return out


def _other_numpy(diag: Diagnosis) -> list[str]:
    """``"with numpy 1 loading: ..."`` for each other numpy major whose verdicts differ."""
    out = []
    mine = [_phrase(v.weights_only, bool(diag.risks)) for v in diag.versions]
    for row in diag.numpy_rows:
        if row.numpy_major == diag.numpy_major:
            continue
        phrases = [_phrase(v.weights_only, bool(diag.risks)) for v in row.versions]
        plain_fails = [
            v.torch
            for v, m in zip(row.versions, diag.versions, strict=True)
            if v.plain.outcome == "not_fixable" and m.plain.outcome != "not_fixable"
        ]
        if phrases == mine and not plain_fails:
            continue
        text = f"with numpy {row.numpy_major} loading: " + ", ".join(_runs(diag, phrases))
        if plain_fails:
            text += f", and a plain torch.load fails on {_span(plain_fails)}"
        out.append(text)
    return out


def verdict_line(diag: Diagnosis) -> str:
    """One line: is the file safe to load, and where does it load (see the module docstring)."""
    parts = [f"unsafe, do not load it: {diag.risks[0]}"] if diag.risks else []
    short = not_a_checkpoint(diag)
    if short is not None:
        return "; ".join([*parts, short])
    silent = [f for f in diag.findings if f.code == "crc_mismatch"]
    if silent:
        parts.append(
            f"corrupt data: {len(silent[0].names)} record(s) differ from their zip CRC-32 "
            "(torch loads them as wrong tensors without an error; ckptcompat's loader refuses "
            "the file)"
        )
    if diag.family is not None:
        parts.append(diag.family.what.split(":")[0])
    if diag.devices.problem is not None:
        where = ", ".join(diag.devices.off_cpu)
        verb = "fails" if diag.devices.certain else "may fail"
        parts.append(f'saved on {where}: {verb} here without map_location="cpu"')
    parts += _runs(diag, [_phrase(v.weights_only, bool(diag.risks)) for v in diag.versions])
    code = [v.torch for v in diag.versions if v.plain.outcome == "runs_code"]
    if code:
        parts.append(f"a plain torch.load runs code the file names on {_span(code)}")
    parts += _other_numpy(diag)
    if diag.key_prefix is not None:
        wrapper = " + ".join(diag.key_prefix.wrappers)
        parts.append(
            f"every key starts with {diag.key_prefix.prefix!r} ({wrapper}): strip it "
            "before load_state_dict"
        )
    return "; ".join(parts)
