"""Result records of golden checks (docs/design.md sec. 8), written if ``CKPTCOMPAT_RECORDS`` set.

``CKPTCOMPAT_RECORDS`` names the directory receiving one JSONL file per process
(``golden-<cell>-<pid>.jsonl``); ``1``/``true``/``yes`` mean the checkout's
``reports/records``. Unset or empty: no records (plain ``pytest`` runs).

Records use ``scenario="golden"``; ``artifact`` is the artifact kind or check (``safe_v1``,
``g1`` ... ``ppo_update``, ``evaluation``), suffixed ``_numpy1`` for a numpy-1 producer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ckptcompat import locator
from ckptcompat.harness.golden.read import Golden
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.records import Record

__all__ = ["RECORDS_ENV", "artifact_name", "emit_record", "records_dir"]

#: Set to a directory (or ``1`` for the checkout's ``reports/records``) to write records.
RECORDS_ENV = "CKPTCOMPAT_RECORDS"


def records_dir() -> Path | None:
    """Where to write result records: ``$CKPTCOMPAT_RECORDS`` (``1``: ``reports/records``)."""
    value = os.environ.get(RECORDS_ENV, "").strip()
    if not value:
        return None
    if value.lower() in ("1", "true", "yes"):
        return locator.RECORDS_DIR
    return Path(value)


def artifact_name(golden: Golden, kind: str) -> str:
    """The record's artifact: ``kind``, suffixed ``_numpy1`` for a numpy-1 producer and
    ``_gen<N>`` for golden generation N >= 2.

    ``t24`` and ``t24np1`` share torch 2.4.1, and a cell key names torch versions only; the
    suffix keeps their records (which differ: see the allowlist aliases) apart. Likewise the
    generations of one producer (generation 1: made before the reproducible-numerics mode).
    """
    name = kind if golden.numpy_major >= 2 else f"{kind}_numpy1"
    return name if golden.generation == 1 else f"{name}_gen{golden.generation}"


def emit_record(
    golden: Golden,
    name: str,
    kind: str,
    loader: str,
    outcome: results.Outcome,
    *,
    detail: str = "",
    duration_s: float = 0.0,
    evaluator: bool = False,
    outputs: Mapping[str, Any] | None = None,
) -> Record | None:
    """Append one ``golden`` result record for this check when records are enabled.

    Args:
        golden, name, kind: the artifact checked (agent ``name``'s file ``kind``, or a
            check name such as ``ppo_update``/``evaluation``).
        loader: ``safe``, ``allowlist`` or ``naive``.
        outcome: ``pass``, ``fail`` (a refusal or a mismatch) or ``error``.
        evaluator: this process also evaluated (sets ``evaluator_torch``).

    Returns:
        The record written, or None when :func:`records_dir` is None.
    """
    directory = records_dir()
    if directory is None:
        return None
    here = str(torch.__version__)
    record = results.make_record(
        scenario="golden",
        artifact=artifact_name(golden, kind),
        agent=name,
        loader=loader,
        outcome=outcome,
        producer_torch=str(golden.producer["torch"]),
        consumer_torch=here,
        evaluator_torch=here if evaluator else None,
        producer_numpy=str(golden.producer["numpy"]),
        consumer_numpy=np.__version__,
        detail=detail[:2000],
        duration_s=max(0.0, duration_s),
        outputs=outputs,
    )
    cell = os.environ.get("CKPTCOMPAT_CELL", "nocell")
    results.append_record(directory / f"golden-{cell}-{os.getpid()}.jsonl", record)
    return record
