"""Result records (harness/verdict/records.py): schema, keys, JSONL round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckptcompat.harness.verdict import records as results

pytestmark = pytest.mark.one_cell  # JSON and jsonschema only; no torch involved


def _record(**overrides):
    fields = dict(
        scenario="golden",
        artifact="g2",
        agent="mock",
        loader="allowlist",
        outcome="pass",
        producer_torch="2.4.1+cu121",
        consumer_torch="2.6.0",
    )
    fields.update(overrides)
    return results.make_record(**fields)


def test_cell_key_uses_base_versions_and_dashes_for_absent_stages() -> None:
    """Guards '+cu121' suffixes or a missing stage splitting one matrix cell into two."""
    assert _record()["cell_key"] == "golden/g2/mock/allowlist/2.4.1->2.6.0->-"
    assert _record()["producer_torch"] == "2.4.1"


@pytest.mark.parametrize(
    ("field", "value"), [("outcome", "ok"), ("loader", "pickle"), ("producer_torch", "2.6")]
)
def test_invalid_records_are_refused(field: str, value: str) -> None:
    """Guards malformed records reaching the report (unknown outcome, loader, version)."""
    with pytest.raises(ValueError, match=field):
        _record(**{field: value})


@pytest.mark.parametrize(
    "change",
    [
        {"outcome": "ok"},
        {"cell_key": 3},
        {"outputs": "not an object"},
        {"numerics": None},
        {"extra_field": 1},
        {"duration_s": "fast"},
    ],
)
def test_validation_checks_the_schema_once_and_reports_what_jsonschema_validate_does(
    change: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the per-record cost of ``jsonschema.validate`` (it checked the schema against
    its metaschema on every call: 4.4 of an evaluate phase's 17.4 s) and the cached validator
    reporting a different error than ``jsonschema.validate`` would: over many records the
    schema is checked at most once, and a bad record gets the field and message that
    ``jsonschema.validate``'s own error names."""
    import jsonschema

    good = _record().to_dict()
    bad = {**good, **change}
    with pytest.raises(jsonschema.ValidationError) as expected:
        jsonschema.validate(bad, results.SCHEMA)
    where = "/".join(str(p) for p in expected.value.absolute_path) or "(record)"
    cls = jsonschema.validators.validator_for(results.SCHEMA)
    checked = []
    original = cls.check_schema.__func__
    monkeypatch.setattr(
        cls, "check_schema", classmethod(lambda c, s: checked.append(1) or original(c, s))
    )
    results._validator.cache_clear()
    for _ in range(20):
        results.validate_record(good)
    with pytest.raises(ValueError) as got:
        results.validate_record(bad)
    assert str(got.value) == f"invalid result record at {where}: {expected.value.message}"
    assert len(checked) == 1
    results._validator.cache_clear()


def test_jsonl_round_trip_and_bad_lines_named(tmp_path: Path, monkeypatch) -> None:
    """Guards records lost or corrupted between processes and the report."""
    monkeypatch.setenv("CKPTCOMPAT_RUN_ID", "run-1")
    monkeypatch.setenv("CKPTCOMPAT_GIT_SHA", "abc")
    path = tmp_path / "records" / "t24.jsonl"
    first, second = _record(), _record(outcome="fail", detail="refused", outputs={"epoch": 0})
    results.append_record(path, first)
    results.append_record(path, second)
    assert list(results.read_records([tmp_path / "records"])) == [first, second]
    assert first["run_id"] == "run-1" and first["git_sha"] == "abc"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"t24\.jsonl:3"):
        list(results.read_records([path]))
