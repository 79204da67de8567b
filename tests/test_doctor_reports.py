"""The per-version rows and their cache (:mod:`ckptcompat.doctor.reports`).

Static (files are scanned, never unpickled), so ``one_cell``: nothing depends on the
installed torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ckptcompat import doctor
from ckptcompat.doctor import reports
from ckptcompat.doctor.packages import with_consumer
from ckptcompat.doctor.predict import predict
from ckptcompat.doctor.rules import profiles
from ckptcompat.errors import CheckpointError
from ckptcompat.harness import corpus
from ckptcompat.harness.malicious import files as malicious

pytestmark = pytest.mark.one_cell

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FILES = sorted(
    [
        *corpus.CORPUS_DIR.glob("*.pt"),
        *malicious.CORPUS_DIR.glob("*.pt"),
        *(p for p in (FIXTURES / "zoo" / "t26").iterdir() if p.suffix != ".json"),
        *(FIXTURES / "numpy_random").rglob("*.pt"),
    ]
)


def _uncached(captured: dict[str, Any], major: int) -> list[tuple[Any, Any]]:
    """The verdicts of every profile from the full scan result and facts, as diagnose
    computed them before the rows were cached."""
    out = []
    for profile in profiles():
        plain, wo = predict(
            captured["result"],
            captured["facts"],
            profile,
            numpy_major=major,
            numpy=captured["numpy"],
        )
        wo = with_consumer(wo, captured["consumer"], full_unpickler=False)
        plain = with_consumer(
            plain, captured["consumer"], full_unpickler=not profile.weights_only_default
        )
        if captured["sb3"]:
            plain, wo = reports._sb3_verdict(plain), reports._sb3_verdict(wo)
        out.append((plain, wo))
    return out


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rows_from_the_key_equal_the_full_predictions(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the cache key (PredictionInputs) against a fact the predictions read but the
    key lacks: the rows are computed from the key alone, so such a fact would make them
    differ from the predictions on the full scan result here, for some fixture."""
    captured: dict[str, Any] = {}
    real = reports.prediction_inputs

    def spy(result: Any, facts: Any, numpy: Any, consumer: Any, *, sb3: bool) -> Any:
        captured.update(result=result, facts=facts, numpy=numpy, consumer=consumer, sb3=sb3)
        return real(result, facts, numpy, consumer, sb3=sb3)

    monkeypatch.setattr(doctor, "prediction_inputs", spy)
    reports._version_rows.cache_clear()
    try:
        diag = doctor.diagnose(path)
    except CheckpointError:
        pytest.skip("the doctor cannot read this file: no rows")
    for row in diag.numpy_rows:
        got = [(v.plain, v.weights_only) for v in row.versions]
        assert got == _uncached(captured, row.numpy_major)


def test_files_alike_share_rows_and_others_do_not(tmp_path: Path) -> None:
    """Guards the cache against answering one file with another's rows: a store's files
    that differ only in values share them; a file with other globals gets its own."""
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes((corpus.CORPUS_DIR / "state_dict.pt").read_bytes())
    second.write_bytes((corpus.CORPUS_DIR / "state_dict.pt").read_bytes())
    reports._version_rows.cache_clear()
    a, b = doctor.diagnose(first), doctor.diagnose(second)
    assert a.numpy_rows == b.numpy_rows
    assert reports._version_rows.cache_info().hits >= 1
    other = doctor.diagnose(corpus.CORPUS_DIR / "set.pt")
    assert other.versions != a.versions
    assert other.versions == doctor.diagnose(corpus.CORPUS_DIR / "set.pt").versions


def test_offsets_are_ranked() -> None:
    """Guards the rank transform: order and ties between global and opcode offsets are
    kept (the predictions compare them to find torch's first error)."""
    ranked = reports._ranked({"a.b": 40, "c.d": 7}, {"BUILD": 40, "INST": 3})
    assert ranked == [(("a.b", 2), ("c.d", 1)), (("BUILD", 2), ("INST", 0))]
