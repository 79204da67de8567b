"""The doctor's text report: the verdict line, facts, a per-version table, details per range.

Versions whose two verdicts are identical are described once, as a range (``2.6-2.9``);
the table keeps one row per version with its basis (snapshot or rules). A file that is no
checkpoint at all gets its short answer and its size, nothing more. No allowlist snippet
is ever printed for a file with a code risk or for an allowlist holding a dangerous entry:
the report says why the file must not be loaded instead. Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckptcompat.doctor.summary import not_a_checkpoint, verdict_line
from ckptcompat.doctor.verdict import Entry, Verdict, numpy_dtype_class

if TYPE_CHECKING:
    from ckptcompat.doctor import Diagnosis, VersionReport

__all__ = ["render_text"]

_LABELS = {"plain": "torch.load(FILE)", "weights_only": "weights_only=True"}
_MAX_LISTED = 12


def _short(names: tuple[str, ...] | list[str]) -> str:
    listed = ", ".join(names[:_MAX_LISTED])
    return listed + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _cell(verdict: Verdict) -> str:
    if verdict.outcome == "fixable_by_allowlist":
        if any(e.dangerous for e in verdict.allowlist):
            return "unsafe: dangerous allowlist"
        return f"fixable_by_allowlist ({len(verdict.allowlist)})"
    return verdict.outcome


def _head(diag: Diagnosis) -> list[str]:
    lines = [f"ckptcompat doctor: {diag.path}", f"  verdict      {verdict_line(diag)}"]
    # The verdict line names the first risk; the others get a line each.
    return lines + [f"  unsafe       {risk}" for risk in diag.risks if len(diag.risks) > 1]


def _summary(diag: Diagnosis) -> list[str]:
    lines = _head(diag)
    container = {"zip": "torch.save zip", "legacy_pickle": "legacy (non-zip) torch.save"}.get(
        diag.kind, diag.kind.replace("_", " ")
    )
    facts = [f"{diag.size_bytes} bytes", container]
    if diag.protocol is not None:
        facts.append(f"pickle protocol {diag.protocol}")
    if diag.writer_hint:
        facts.append(f"written by {diag.writer_hint}")
    lines.append(f"  file         {'; '.join(facts)}")
    lines.append(f"  generation   {diag.generation}: {diag.generation_detail}")
    if diag.storages:
        lines.append(
            f"  tensors      {diag.storages} storage(s), {diag.storage_bytes} bytes: "
            f"{', '.join(diag.tensor_dtypes)}"
        )
    if diag.globals:
        outside = _short(list(diag.nondefault_globals)) if diag.nondefault_globals else "none"
        lines.append(
            f"  globals      {len(diag.globals)}; outside torch's weights-only defaults: {outside}"
        )
    if diag.consumer.packages:
        missing = ", ".join(diag.consumer.missing) or "none"
        lines.append(
            f"  packages     {', '.join(diag.consumer.packages)}; not importable in "
            f"{diag.consumer.label}: {missing}"
        )
    if diag.consumer.main_globals:
        lines.append(
            f"  __main__     {_short(list(diag.consumer.main_globals))}: defined by the saving "
            "script; a plain load elsewhere fails"
        )
    if diag.numpy_dtypes:
        pairs = [f"{c} -> {numpy_dtype_class(c) or '?'}" for c in diag.numpy_dtypes]
        lines.append(f"  numpy dtypes {', '.join(pairs)} (never named by the pickle)")
    serious = [f for f in diag.findings if f.code not in ("setitem_non_dict",)]
    for finding in serious[:5]:
        lines.append(f"  finding      {finding.code}: {finding.message}")
    off_cpu = diag.devices.off_cpu
    if off_cpu:
        saved = ", ".join(f"{tag} ({n} storage(s))" for tag, n in off_cpu.items())
        lines.append(
            f"  devices      saved on {saved}; {diag.devices.cuda_devices} CUDA device(s) here"
        )
        if diag.devices.problem is not None:
            lines.append(f"               {diag.devices.problem}")
            lines.append(f"               fix: {diag.devices.fix}")
    if diag.key_prefix is not None:
        kp = diag.key_prefix
        where = "" if kp.where == "root" else f" (under {kp.where!r})"
        lines.append(
            f"  keys         all {kp.keys} state_dict keys{where} start with {kp.prefix!r}, "
            f"added by {' + '.join(kp.wrappers)}: load_state_dict(strict=True) into the "
            "bare agent fails"
        )
        lines.append(f"               fix: {kp.fix}")
    lines.append(f"  data         {diag.data.note}")
    lines += [f"  crc mismatch {problem}" for problem in diag.data.problems[:5]]
    here = ", ".join(f"{k} {v or 'absent'}" for k, v in diag.installed.items())
    lines.append(f"  this machine {here}; predictions assume numpy {diag.numpy_major} when loading")
    return lines


def _table(diag: Diagnosis) -> list[str]:
    """One row per torch version. The cells judge the file's pickle; where this machine
    cannot restore a storage's location (saved on ``cuda:0``, no CUDA here), a cell that
    would load is starred and a footnote says it needs ``map_location`` here: the table
    said "loads" for a file that fails on this machine (new-user trial, 2026-12-06)."""
    star = "*" if diag.devices.problem is not None else ""

    def cell(verdict: Verdict) -> str:
        return _cell(verdict) + (star if verdict.outcome != "not_fixable" else "")

    rows = [("torch", "release", "basis", _LABELS["plain"], _LABELS["weights_only"])]
    rows += [
        (v.torch, v.release, v.basis, cell(v.plain), cell(v.weights_only)) for v in diag.versions
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, [*widths, 0], strict=True)).rstrip()
        for r in rows
    ]
    if star:
        saved = ", ".join(diag.devices.off_cpu)
        lines.append(
            f'  * here only with map_location="cpu": saved on {saved}, which this machine '
            "cannot restore (see devices)"
        )
    return lines


def _shown(entry: Entry) -> str:
    return f"({entry.target}, {entry.name!r})" if entry.alias else entry.name


def _entry_line(entry: Entry, width: int) -> str:
    flags = ["DANGEROUS"] if entry.dangerous else []
    if not entry.curated:
        flags.append("not curated")
    tail = f"  [{', '.join(flags)}]" if flags else ""
    return f"        {_shown(entry).ljust(width)}  {entry.reason}{tail}"


def _python(entries: tuple[Entry, ...]) -> str:
    objs = [_shown(e) for e in entries]
    return f"torch.serialization.add_safe_globals([{', '.join(objs)}])"


def _allowlist_lines(verdict: Verdict, risks: tuple[str, ...]) -> list[str]:
    dangerous = [e.name for e in verdict.allowlist if e.dangerous]
    if dangerous or risks:
        why = (
            f"allowlisting {', '.join(dangerous)} would let the file run code"
            if dangerous
            else risks[0]
        )
        return [f"      must not be loaded: {why}; no allowlist makes it safe"]
    width = max(len(_shown(e)) for e in verdict.allowlist)
    return [
        "      allowlist (exactly these entries):",
        *(_entry_line(e, width) for e in verdict.allowlist),
        f"      python: {_python(verdict.allowlist)}",
    ]


def _verdict_lines(label: str, verdict: Verdict, risks: tuple[str, ...]) -> list[str]:
    lines = [f"    {label:<18} {verdict.outcome}: {verdict.why}"]
    if verdict.first_error:
        lines.append(f"        torch reports first: {verdict.first_error}")
    if verdict.outcome in ("not_fixable", "refused") and verdict.refused_globals:
        lines.append(f"        refused globals: {_short(list(verdict.refused_globals))}")
    for blocker in verdict.blockers[1:]:
        lines.append(f"        also: {blocker}")
    if verdict.allowlist and verdict.outcome == "fixable_by_allowlist":
        lines += _allowlist_lines(verdict, risks)
    lines += [f"        note: {n}" for n in verdict.notes]
    return lines


def _same(plain: Verdict, wo: Verdict) -> bool:
    """Both loads get the same verdict (2.6+, where plain is weights-only; corrupt files)."""
    return (plain.outcome, plain.why, plain.allowlist, plain.blockers, plain.first_error) == (
        wo.outcome,
        wo.why,
        wo.allowlist,
        wo.blockers,
        wo.first_error,
    )


def _groups(diag: Diagnosis) -> list[list[VersionReport]]:
    groups: list[list[VersionReport]] = []
    for report in diag.versions:
        key = (report.plain, report.weights_only)
        if groups and (groups[-1][0].plain, groups[-1][0].weights_only) == key:
            groups[-1].append(report)
        else:
            groups.append([report])
    return groups


def render_text(diag: Diagnosis) -> str:
    """The human report of :func:`ckptcompat.doctor.diagnose` (ends with a newline)."""
    if not_a_checkpoint(diag) is not None:
        return "\n".join([*_head(diag), f"  file         {diag.size_bytes} bytes"]) + "\n"
    lines = [*_summary(diag), "", *_table(diag), ""]
    for group in _groups(diag):
        span = group[0].torch if len(group) == 1 else f"{group[0].torch}-{group[-1].torch}"
        lines.append(f"  torch {span}")
        plain, wo = group[0].plain, group[0].weights_only
        if _same(plain, wo):
            lines.append(f"    {_LABELS['plain']:<18} the same verdict as weights_only=True")
        else:
            lines += _verdict_lines(_LABELS["plain"], plain, diag.risks)
        lines += _verdict_lines(_LABELS["weights_only"], wo, diag.risks)
    advisories: dict[str, list[str]] = {}
    for report in diag.versions:
        for advisory in report.advisories:
            advisories.setdefault(advisory, []).append(report.torch)
    lines.append("")
    for advisory, minors in advisories.items():
        span = minors[0] if len(minors) == 1 else f"{minors[0]}-{minors[-1]}"
        lines.append(f"  security     torch {span}: {advisory}")
    migration = diag.migration
    lines.append(f"  migrate      {migration.command or 'not applicable'}")
    lines.append(f"               {migration.note}")
    return "\n".join(lines) + "\n"
