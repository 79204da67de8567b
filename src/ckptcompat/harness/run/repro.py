"""``python -m ckptcompat.harness.run.repro FILE``: real loads here next to the doctor's prediction.

Run inside a cell (``nox -s "repro(t26)" -- FILE``). The doctor's prediction for the
installed torch (read from package metadata: this process never imports torch) is put next
to what really happens with :func:`ckptcompat.torch_compat.naive_load` (a user's plain
``torch.load``) and :func:`ckptcompat.torch_compat.load` (``weights_only=True``, with
``check_crc=False``: torch's own load checks no zip CRC-32), each run in its own subprocess
so that a code-executing pickle cannot touch this process or the other load. When the
doctor says an allowlist fixes the weights-only load, a third subprocess loads with
exactly those entries; when it says nothing can, the third load allowlists every refused
global and must still fail (skipped for dangerous globals). The doctor reads every record
(``--verify-data``); when a record differs from its CRC-32 (torch loads it as wrong
tensors), one more row checks that ckptcompat's loader, which checks CRCs, refuses it.

Safety: on torch 2.4/2.5 a plain ``torch.load`` is the full unpickler, so it runs whatever
code the file names. ``repro`` therefore loads nothing at all, on every torch, from a file
the static scan flags (:func:`ckptcompat.doctor.safety.code_risks`: dangerous globals,
calls the scan cannot name, EXT opcodes, duplicate pickles, storage records torch reads
past, the ``.tar`` container, headerless pickles): it says why and exits 2. Only
``--allow-code-execution`` makes it load such a file, in the subprocesses, where its code
then runs with the user's rights.

Exit status: 0 when every real outcome agrees with the prediction, 1 when one differs,
2 when FILE is missing, torch is not installed, or FILE is refused as unsafe.

The subprocess side (``--worker``) reads a JSON list of jobs on stdin and prints one JSON
result per job; :func:`run_loads` drives it, and the tests use it for the whole corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, Literal

from ckptcompat import doctor
from ckptcompat.doctor.verdict import Entry, Verdict
from ckptcompat.errors import CheckpointError
from ckptcompat.scan.allowlist import import_dotted
from ckptcompat.scan.danger import is_dangerous

__all__ = [
    "Comparison",
    "LoadJob",
    "LoadOutcome",
    "allowlist_pairs",
    "compare",
    "main",
    "run_loads",
]

Loader = Literal["naive", "load"]
_TIMEOUT_S = 600.0
_LOADS = ("loads", "runs_code")


@dataclass(frozen=True)
class LoadJob:
    """One real load to run in the worker.

    Attributes:
        path: the file.
        loader: ``"naive"`` (:func:`torch_compat.naive_load`) or ``"load"``
            (:func:`torch_compat.load`).
        allowlist: ``(name, target)`` pairs to resolve and pass as ``safe_globals``
            (``load`` only); a pair whose parts differ is an alias ``(target obj, name)``.
        check_crc: ``load`` only: check the zip CRC-32s as ckptcompat's loader does
            (False: what torch's own ``weights_only=True`` load does, which checks none).
    """

    path: str
    loader: Loader
    allowlist: tuple[tuple[str, str], ...] = ()
    check_crc: bool = True


@dataclass(frozen=True)
class LoadOutcome:
    """What a real load did.

    Attributes:
        ok: it returned an object.
        result_type: ``module.Qualname`` of the returned object.
        error_type: the exception's class name (a ckptcompat error, normally).
        globals: the error's ``.globals`` (what was refused), if any.
        cause: the class name of the chained torch exception, if any.
        message: the error text (first 600 characters).
    """

    ok: bool
    result_type: str | None = None
    error_type: str | None = None
    globals: tuple[str, ...] = ()
    cause: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Comparison:
    """One prediction next to one real outcome.

    Attributes:
        label: e.g. ``"torch.load(FILE)"``.
        predicted: the doctor's outcome.
        actual: ``"loaded"`` or ``"refused: <error type>"``.
        agrees: the two match (outcome category and, where torch names them, the globals).
        detail: why they do not agree, or what was refused.
    """

    label: str
    predicted: str
    actual: str
    agrees: bool
    detail: str = ""


# --------------------------------------------------------------------------- worker side


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    from ckptcompat import torch_compat

    try:
        if job["loader"] == "naive":
            obj = torch_compat.naive_load(job["path"], map_location="cpu")
        else:
            entries = [
                import_dotted(target) if name == target else (import_dotted(target), name)
                for name, target in job.get("allowlist", [])
            ]
            obj = torch_compat.load(
                job["path"],
                safe_globals=entries,
                map_location="cpu",
                check_crc=job.get("check_crc", True),
            )
    except Exception as exc:  # every failure is the result being reported
        cause = exc.__cause__
        return asdict(
            LoadOutcome(
                ok=False,
                error_type=type(exc).__name__,
                globals=tuple(getattr(exc, "globals", ()) or ()),
                cause=type(cause).__name__ if cause is not None else None,
                message=str(exc)[:600],
            )
        )
    kind = type(obj)
    return asdict(LoadOutcome(ok=True, result_type=f"{kind.__module__}.{kind.__qualname__}"))


def _worker() -> int:
    jobs = json.loads(sys.stdin.read())
    warnings.simplefilter("ignore")  # 2.4/2.5's FutureWarning etc.: outcomes are what count
    results = [_run_job(job) for job in jobs]
    print(json.dumps(results))
    return 0


# --------------------------------------------------------------------------- driver side
def run_loads(jobs: Sequence[LoadJob], *, python: str = sys.executable) -> list[LoadOutcome]:
    """Run ``jobs`` in one fresh ``python`` subprocess and return their outcomes, in order.

    Only give several jobs to one call for files you trust not to tamper with the process
    (the corpus); :func:`main` starts one subprocess per load.

    Raises:
        RuntimeError: the worker crashed or printed no result (its stderr is included).
    """
    payload = json.dumps([{**asdict(j), "allowlist": [list(p) for p in j.allowlist]} for j in jobs])
    proc = subprocess.run(
        [python, "-m", "ckptcompat.harness.run.repro", "--worker"],
        input=payload,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"repro worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return [LoadOutcome(**{**r, "globals": tuple(r["globals"])}) for r in json.loads(lines[-1])]


def allowlist_pairs(entries: Sequence[Entry]) -> tuple[tuple[str, str], ...]:
    """``(name, target)`` pairs of doctor entries, as :class:`LoadJob` takes them."""
    return tuple((e.name, e.target) for e in entries)


def compare(label: str, verdict: Verdict, outcome: LoadOutcome) -> Comparison:
    """Does ``outcome`` agree with ``verdict``?

    Agreement: ``loads``/``runs_code`` predicted and the load returned; any refusal
    predicted and it raised. When it raised naming globals, each must be among the
    globals the doctor predicts this torch refuses (torch names one, ckptcompat's static
    precheck on torch < 2.10 names all); the one torch's own unpickler names must be the
    one the doctor says it reports first (``first_error``).
    """
    actual = "loaded" if outcome.ok else f"refused: {outcome.error_type}"
    predicted_load = verdict.outcome in _LOADS
    if predicted_load != outcome.ok:
        why = outcome.message.splitlines()[0] if outcome.message else ""
        return Comparison(label, verdict.outcome, actual, False, why)
    torch_named = outcome.cause is not None and len(outcome.globals) == 1
    if (
        torch_named
        and verdict.first_error
        and outcome.globals[0] not in verdict.first_error.split()
    ):
        detail = (
            f"torch refused {outcome.globals[0]} first; the doctor said {verdict.first_error!r}"
        )
        return Comparison(label, verdict.outcome, actual, False, detail)
    if not outcome.ok and outcome.globals:
        unexpected = [g for g in outcome.globals if g not in verdict.refused_globals]
        if unexpected:
            detail = f"torch refused {', '.join(unexpected)}; the doctor predicted " + (
                ", ".join(verdict.refused_globals) or "no refused globals"
            )
            return Comparison(label, verdict.outcome, actual, False, detail)
        return Comparison(
            label, verdict.outcome, actual, True, f"refused {', '.join(outcome.globals)}"
        )
    return Comparison(label, verdict.outcome, actual, True)


def _allowlistable(names: tuple[str, ...]) -> bool:
    """Worth a load with ``names`` allowlisted: some, and none that could run code."""
    return bool(names) and not any(is_dangerous(n) for n in names)


def _table(rows: list[Comparison]) -> str:
    head = ("load", "doctor predicts", "really", "agrees")
    cells = [head] + [(r.label, r.predicted, r.actual, "yes" if r.agrees else "NO") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    out += [f"  {r.label}: {r.detail}" for r in rows if r.detail]
    return "\n".join(out)


_EPILOG = """\
exit status:
  0  every real load agrees with the doctor's prediction for this torch
  1  one disagrees
  2  FILE is missing or unreadable, torch is not installed here, or FILE is refused as
     unsafe (the static scan flags it and --allow-code-execution was not given)"""


def _refuse(path: str, risks: tuple[str, ...]) -> int:
    lines = [f"repro: refusing to load {path}: the static scan says loading it can run code."]
    lines += [f"  - {risk}" for risk in risks]
    lines += [
        "Nothing was loaded. A plain torch.load on torch 2.4/2.5 (weights_only=False) would "
        "run that code.",
        "Explain it without loading: ckptcompat doctor FILE. Load it anyway, only in a "
        "throwaway environment: add --allow-code-execution.",
    ]
    print("\n".join(lines), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """CLI; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m ckptcompat.harness.run.repro",
        description="Load FILE for real in this cell (each load in its own subprocess) next "
        "to the doctor's prediction for this torch.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="the checkpoint to load")
    parser.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="load FILE even when the static scan says it can run code: its code then runs "
        "in the load subprocesses with your rights (default: refuse, exit 2)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker()
    if args.file is None:
        parser.error("FILE is required")
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        print("repro: torch is not installed in this environment", file=sys.stderr)
        return 2
    try:
        diag = doctor.diagnose(args.file, read_data=True)  # every record is read below anyway
        report = diag.for_torch(torch_version)
    except (CheckpointError, KeyError, ValueError) as exc:
        print(f"repro: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if diag.risks:
        if not args.allow_code_execution:
            return _refuse(args.file, diag.risks)
        print(
            f"repro: --allow-code-execution: {args.file} may run code in the load subprocesses",
            file=sys.stderr,
        )
    path = os.path.abspath(args.file)
    # The weights_only row is torch's own check (no CRC-32: torch checks none); ckptcompat's
    # loader, which checks them, gets its own row when --verify-data's check found damage.
    wo_job = LoadJob(path, "load", check_crc=False)
    rows = [
        compare("torch.load(FILE)", report.plain, run_loads([LoadJob(path, "naive")])[0]),
        compare("weights_only=True", report.weights_only, run_loads([wo_job])[0]),
    ]
    if any(f.code == "crc_mismatch" for f in diag.findings):
        refuses = Verdict("not_fixable", "a record differs from its zip CRC-32")
        outcome = run_loads([LoadJob(path, "load")])[0]
        rows.append(compare("ckptcompat's load (CRC-32)", refuses, outcome))
    wo = report.weights_only
    if wo.outcome == "fixable_by_allowlist" and not any(e.dangerous for e in wo.allowlist):
        job = LoadJob(path, "load", allowlist_pairs(wo.allowlist), check_crc=False)
        loads = Verdict("loads", "with the doctor's allowlist")
        rows.append(compare("with the allowlist", loads, run_loads([job])[0]))
    elif wo.outcome == "not_fixable" and _allowlistable(wo.refused_globals):
        job = LoadJob(path, "load", tuple((g, g) for g in wo.refused_globals), check_crc=False)
        still = Verdict("not_fixable", "whatever is allowlisted", wo.refused_globals)
        rows.append(compare("refused allowlisted", still, run_loads([job])[0]))
    print(f"repro: {args.file} on torch {torch_version} ({report.basis} prediction)")
    print(_table(rows))
    return 0 if all(r.agrees for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
