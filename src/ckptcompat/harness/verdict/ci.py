"""CI job matrices from ``nox -l --json``.

``python src/ckptcompat/harness/verdict/ci.py SESSIONS.json``.

The workflow (``.github/workflows/compat.yml``) lists the sessions with
``nox -l --json -s tests phase dcp remote`` and this script turns them into one JSON job list per
workflow job, written as ``name=value`` lines for ``$GITHUB_OUTPUT``::

    tests=[{"session": "tests(t24)", "cell": "t24"}, ...]
    train=[{"session": "phase(train, t24)", "cell": "t24"}, ...]
    resume=[...]
    evaluate=[...]
    dcp=[{"session": "dcp(t24)", "cell": "t24"}, ...]
    remote=[{"session": "remote(t24)", "cell": "t24"}, ...]

So the cells come from ``harness/versions.py`` through the noxfile, never from a second
list in YAML. Standard library only: the CI job runs it by path before installing anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["JOBS", "job_matrix", "main"]

#: Workflow job -> (nox session name, call_spec filter). The phase jobs mirror
#: ckptcompat.harness.run.scenarios.PHASES (tests/harness/test_workflow.py checks it);
#: ``dcp`` is the matrix's DCP phase, which needs only the committed DCP goldens;
#: ``remote`` the remote-evaluation phase per consumer cell, after evaluate.
JOBS: dict[str, tuple[str, dict[str, str]]] = {
    "tests": ("tests", {}),
    "train": ("phase", {"phase": "train"}),
    "resume": ("phase", {"phase": "resume"}),
    "evaluate": ("phase", {"phase": "evaluate"}),
    "dcp": ("dcp", {}),
    "remote": ("remote", {}),
}


def job_matrix(sessions: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """``nox -l --json`` entries -> ``{job: [{"session", "cell"}, ...]}`` in nox's order.

    Raises:
        ValueError: a job would get no session (the noxfile and the workflow disagree).
    """
    listed = list(sessions)
    jobs: dict[str, list[dict[str, str]]] = {}
    for job, (name, wanted) in JOBS.items():
        jobs[job] = [
            {"session": s["session"], "cell": s["call_spec"]["cell"]}
            for s in listed
            if s["name"] == name and all(s["call_spec"].get(k) == v for k, v in wanted.items())
        ]
        if not jobs[job]:
            raise ValueError(
                f"no nox session {name}{wanted or ''} for CI job {job!r}; "
                "list them with `nox -l --json -s tests phase dcp remote`"
            )
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """Print the ``$GITHUB_OUTPUT`` lines for the sessions JSON file given (``-``: stdin)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python src/ckptcompat/harness/verdict/ci.py SESSIONS.json", file=sys.stderr)
        return 2
    text = sys.stdin.read() if args[0] == "-" else Path(args[0]).read_text(encoding="utf-8")
    try:
        jobs = job_matrix(json.loads(text))
    except ValueError as exc:
        print(f"ci: {exc}", file=sys.stderr)
        return 1
    for job, entries in jobs.items():
        print(f"{job}={json.dumps(entries, separators=(',', ':'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
