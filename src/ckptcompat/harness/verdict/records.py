"""Result records: one per check, one JSONL file per process (docs/design.md section 8).

Every check of the matrix -- and every ``ckptcompat run`` step -- emits one :class:`Record`
(its outcome an :class:`Outcome`) whose JSON form validates against :data:`SCHEMA`.
``report`` merges them; ``gate`` compares them with the committed baseline. Versions are
torch *base* versions (``"2.6.0"``, no ``+cu124``).

``cell_key`` identifies a matrix cell independently of when it ran:
``scenario/artifact/agent/loader/producer->consumer->evaluator`` (``-`` for an absent
stage), e.g. ``golden/g2/mock/allowlist/2.4.1->2.6.0->-``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from ckptcompat import numerics

__all__ = [
    "LOADERS",
    "OUTCOMES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Outcome",
    "Record",
    "append_record",
    "cell_key",
    "git_sha",
    "make_record",
    "read_records",
    "run_id",
    "validate_record",
]

#: 2: every record carries the numerics fingerprint of the process that made it.
SCHEMA_VERSION = 2


class Outcome(StrEnum):
    """How one check ended, best first (the order the gate ranks by)."""

    PASS = "pass"
    SKIP = "skip"
    FAIL = "fail"
    ERROR = "error"


OUTCOMES = tuple(o.value for o in Outcome)
LOADERS = ("safe", "allowlist", "naive", "trusted", "dcp")

_VERSION = {"type": ["string", "null"], "pattern": r"^\d+\.\d+\.\d+$"}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ckptcompat result record",
    "type": "object",
    "required": [
        "schema_version", "run_id", "git_sha", "cell_key", "scenario", "artifact", "agent",
        "loader", "producer_torch", "consumer_torch", "evaluator_torch", "producer_numpy",
        "consumer_numpy", "outcome", "detail", "duration_s", "numerics",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "run_id": {"type": "string", "minLength": 1},
        "git_sha": {"type": "string", "minLength": 1},
        "cell_key": {"type": "string", "minLength": 1},
        "scenario": {"type": "string", "minLength": 1},
        "artifact": {"type": "string", "minLength": 1},
        "agent": {"type": "string", "minLength": 1},
        "loader": {"enum": list(LOADERS)},
        "producer_torch": _VERSION,
        "consumer_torch": _VERSION,
        "evaluator_torch": _VERSION,
        "producer_numpy": _VERSION,
        "consumer_numpy": _VERSION,
        "outcome": {"enum": list(OUTCOMES)},
        "detail": {"type": "string"},
        "duration_s": {"type": "number", "minimum": 0},
        "outputs": {"type": "object"},
        "numerics": {"type": "object", "required": ["machine", "cpu_model", "reproducible"]},
    },
}  # fmt: skip


@dataclass(frozen=True)
class Record:
    """One check's result; :meth:`to_dict` is its JSON form (:data:`SCHEMA`).

    Versions are base versions; ``outputs`` is absent from the JSON when None.
    """

    schema_version: int
    run_id: str
    git_sha: str
    cell_key: str
    scenario: str
    artifact: str
    agent: str
    loader: str
    producer_torch: str | None
    consumer_torch: str | None
    evaluator_torch: str | None
    producer_numpy: str | None
    consumer_numpy: str | None
    outcome: Outcome
    detail: str
    duration_s: float
    numerics: dict[str, Any]
    outputs: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, keys in :data:`SCHEMA` order (``outputs`` only when set)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["outcome"] = self.outcome.value
        if self.outputs is None:
            del out["outputs"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        """The record of a JSON form.

        Raises:
            ValueError: ``data`` does not validate against :data:`SCHEMA`.
        """
        validate_record(data)
        values = dict(data)
        values["outcome"] = Outcome(values["outcome"])
        return cls(**values)

    def __getitem__(self, name: str) -> Any:
        """Read-only field access by JSON key, as ``to_dict()[name]``."""
        return self.to_dict()[name]

    def __or__(self, changes: Mapping[str, Any]) -> Record:
        """A copy with ``changes`` applied to the JSON form (validated again)."""
        return Record.from_dict(self.to_dict() | dict(changes))


def _base(version: str | None) -> str | None:
    return None if version is None else version.split("+", 1)[0]


def cell_key(
    scenario: str,
    artifact: str,
    agent: str,
    loader: str,
    producer: str | None,
    consumer: str | None,
    evaluator: str | None = None,
) -> str:
    """The stable identity of a matrix cell (see the module docstring)."""
    chain = "->".join(_base(v) or "-" for v in (producer, consumer, evaluator))
    return f"{scenario}/{artifact}/{agent}/{loader}/{chain}"


def git_sha(root: str | os.PathLike[str] | None = None) -> str:
    """``CKPTCOMPAT_GIT_SHA`` if set, else ``git rev-parse HEAD``, else ``"unknown"``."""
    env = os.environ.get("CKPTCOMPAT_GIT_SHA")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_id() -> str:
    """``CKPTCOMPAT_RUN_ID`` if set (one id shared by every process of a matrix run)."""
    return os.environ.get("CKPTCOMPAT_RUN_ID") or uuid.uuid4().hex


def make_record(
    *,
    scenario: str,
    artifact: str,
    agent: str,
    loader: str,
    outcome: Outcome | str,
    producer_torch: str | None,
    consumer_torch: str | None,
    evaluator_torch: str | None = None,
    producer_numpy: str | None = None,
    consumer_numpy: str | None = None,
    detail: str = "",
    duration_s: float = 0.0,
    outputs: Mapping[str, Any] | None = None,
) -> Record:
    """Build and validate one record (``run_id``/``git_sha`` from the environment).

    ``numerics`` is this process's fingerprint (:func:`ckptcompat.numerics.fingerprint`):
    which CPU, kernel path and BLAS branch produced the outcome.

    Raises:
        ValueError: the record does not validate against :data:`SCHEMA`.
    """
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id(),
        "git_sha": git_sha(),
        "cell_key": cell_key(
            scenario, artifact, agent, loader, producer_torch, consumer_torch, evaluator_torch
        ),
        "scenario": scenario,
        "artifact": artifact,
        "agent": agent,
        "loader": loader,
        "producer_torch": _base(producer_torch),
        "consumer_torch": _base(consumer_torch),
        "evaluator_torch": _base(evaluator_torch),
        "producer_numpy": _base(producer_numpy),
        "consumer_numpy": _base(consumer_numpy),
        "outcome": str(outcome),
        "detail": detail,
        "duration_s": round(float(duration_s), 6),
        "numerics": numerics.fingerprint(),
    }
    if outputs is not None:
        record["outputs"] = dict(outputs)
    return Record.from_dict(record)


@functools.cache
def _validator() -> Any:
    """jsonschema's validator of :data:`SCHEMA`, the schema itself checked once per process.

    ``jsonschema.validate(instance, schema)`` checks the schema against its metaschema on
    every call: ~97% of the validation under cProfile, and 4.4 of the 17.4 s of t24's
    evaluate phase (~900 records; 17.4 -> 13.0 s, back to back; issue 21 item 4).
    jsonschema's docs advise a validator built once for many instances; errors are picked
    by ``best_match`` as ``validate`` does."""
    import jsonschema

    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(SCHEMA)


def validate_record(record: Mapping[str, Any]) -> None:
    """Validate against :data:`SCHEMA` with jsonschema.

    Raises:
        ValueError: naming the first failing field and why.
    """
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(dict(record)))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(record)"
        raise ValueError(f"invalid result record at {where}: {error.message}")


def append_record(path: str | os.PathLike[str], record: Record) -> None:
    """Append ``record`` as one line to the JSONL file ``path`` (one file per process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_records(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Record]:
    """Yield every record of the given JSONL files (or of ``*.jsonl`` in given folders).

    Raises:
        ValueError: a line that is not JSON or not a valid record (file and line named).
    """
    for name in paths:
        given = Path(name)
        files = sorted(given.glob("*.jsonl")) if given.is_dir() else [given]
        for file in files:
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = Record.from_dict(json.loads(line))
                except (json.JSONDecodeError, ValueError) as exc:
                    raise ValueError(f"{file}:{number}: {exc}") from None
                yield record
