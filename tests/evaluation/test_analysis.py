"""analysis.summarize / to_markdown / to_rich_table on a hand-built stats DB.

Data: ``alpha`` v0 ran 3 episodes in ``env_a`` and logged ``reward`` 3.0 and 6.0 in the
first two only (the third logged ``steps`` alone), so its normalised mean is 9 / 3 = 3.0
with population std sqrt(6), while the raw AVG over recorded rows would be 4.5.
``beta`` v2 ran 2 episodes in ``env_b`` with reward 1.0 each.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from ckptcompat.errors import StatsDBError
from ckptcompat.evaluation.analysis import (
    COLUMNS,
    SummaryRow,
    summarize,
    to_markdown,
    to_rich_table,
)
from ckptcompat.evaluation.stats_db import EvalStatsDB, SimulationStatsDB

# DuckDB and pure Python only: no torch is imported, so one cell suffices.
pytestmark = pytest.mark.one_cell

ALPHA = ("alpha", 0)
BETA = ("beta", 2)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "merged.duckdb"
    with SimulationStatsDB(path) as db:
        for sim, (key, version), env in (("sim-a", ALPHA, "env_a"), ("sim-b", BETA, "env_b")):
            db.register_simulation(sim, "eval", env, policy_key=key, policy_version=version)
        alpha_metrics: list[dict[str, float]] = [{"reward": 3.0}, {"reward": 6.0}, {"steps": 5}]
        for i, metrics in enumerate(alpha_metrics):
            db.record_policy_episode("sim-a", *ALPHA, None, {0: metrics}, step_count=5, seed=i)
        for _ in range(2):
            db.record_policy_episode("sim-b", *BETA, None, {0: {"reward": 1.0}}, step_count=1)
    return path


def _row(rows: list[SummaryRow], key: str, metric: str = "reward") -> SummaryRow:
    [row] = [r for r in rows if r.policy_key == key and r.metric == metric]
    return row


def test_mean_and_std_are_over_potential_samples(db_path: Path) -> None:
    """The raw AVG over recorded rows (4.5 here) reported as the policy's mean, or the
    potential count taken from the rows that logged the metric."""
    rows = summarize(db_path)
    assert [(r.policy_key, r.policy_version, r.metric) for r in rows] == [
        ("alpha", 0, "reward"),
        ("beta", 2, "reward"),
    ]
    alpha = _row(rows, "alpha")
    assert (alpha.recorded, alpha.potential) == (2, 3)
    assert alpha.mean == pytest.approx(3.0)
    assert alpha.std == pytest.approx(math.sqrt(6.0))
    beta = _row(rows, "beta")
    assert (beta.mean, beta.std, beta.recorded, beta.potential) == (1.0, 0.0, 2, 2)


def test_markdown_table_shows_recorded_vs_potential(db_path: Path) -> None:
    """A table that hides how much of a mean rests on recorded values."""
    text = to_markdown(summarize(db_path))
    lines = text.splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    assert "recorded" in lines[0] and "potential" in lines[0]
    assert lines[1] == "|---|---:|---|---:|---:|---:|---:|"
    assert "| alpha | 0 | reward | 3 | 2.44949 | 2 | 3 |" in lines
    assert "| beta | 2 | reward | 1 | 0 | 2 | 2 |" in lines
    assert text.endswith("\n")


def test_unknown_policy_is_none_not_nan(db_path: Path) -> None:
    """A raw AVG over zero rows comes back NaN through pandas (the old audit failure); an
    unknown policy must read None with zero counts."""
    rows = summarize(db_path, ("reward",), policies=[ALPHA, ("ghost", 7)])
    ghost = _row(rows, "ghost")
    assert (ghost.mean, ghost.std, ghost.recorded, ghost.potential) == (None, None, 0, 0)
    text = to_markdown(rows)
    assert "| ghost | 7 | reward | None | None | 0 | 0 |" in text
    assert "nan" not in text.lower()


def test_never_logged_metric_is_zero_with_its_samples(db_path: Path) -> None:
    """Samples exist but the metric was never logged: 0.0 (metrics are logged only when
    non-zero), not None and not a missing row."""
    row = _row(summarize(db_path, ("hearts",), policies=[ALPHA]), "alpha", "hearts")
    assert (row.mean, row.std, row.recorded, row.potential) == (0.0, 0.0, 0, 3)


def test_metric_patterns_and_all_metrics(db_path: Path) -> None:
    """Pattern selection as the old ``analyze`` did (fnmatch over logged metrics)."""
    everything = summarize(db_path, None, policies=[ALPHA])
    assert [r.metric for r in everything] == ["reward", "steps"]
    assert _row(everything, "alpha", "steps").recorded == 1
    assert [r.metric for r in summarize(db_path, ("re*",), policies=[ALPHA])] == ["reward"]
    assert summarize(db_path, ("zz*",), policies=[ALPHA]) == []
    mixed = summarize(db_path, ("st*", "reward", "reward"), policies=[ALPHA])
    assert [r.metric for r in mixed] == ["steps", "reward"]


def test_filter_without_matches_gives_none(db_path: Path) -> None:
    """A filter that excludes a policy's simulations must not give 0.0 (looks measured)."""
    rows = summarize(db_path, filter_condition={"sim_env": "env_b"})
    assert _row(rows, "alpha").mean is None
    assert _row(rows, "beta").mean == 1.0


def test_empty_db_gives_no_rows(tmp_path: Path) -> None:
    """An empty DB must summarise to nothing, and render a header, not crash."""
    path = tmp_path / "empty.duckdb"
    SimulationStatsDB(path).close()
    assert summarize(path) == []
    assert to_markdown([]).count("\n") == 2


def test_missing_db_is_a_typed_error_and_not_created(tmp_path: Path) -> None:
    """A typo in the DB path silently creating an empty DB and reporting nothing."""
    path = tmp_path / "typo.duckdb"
    with pytest.raises(StatsDBError, match="does not exist"):
        summarize(path)
    assert not path.exists()


def test_uri_as_policy_is_refused(db_path: Path) -> None:
    """A URI used as a key (the July-2025 scheme) finds nothing; it must be an error."""
    with pytest.raises(StatsDBError, match="URI"):
        summarize(db_path, policies=[("file:///runs/alpha/checkpoints/alpha_v0.pt", 0)])


def test_open_db_is_used_and_left_open(db_path: Path) -> None:
    """Callers holding an EvalStatsDB must not have it closed under them."""
    with EvalStatsDB(db_path, read_only=True) as db:
        assert len(summarize(db)) == 2
        assert db.potential_samples_for_metric(*ALPHA) == 3


def test_tables_render_odd_keys_literally(db_path: Path) -> None:
    """A '|' ending a Markdown cell early, or rich eating '[bold]' as markup."""
    rows = summarize(db_path, policies=[("a|b", 1), ("odd[bold]x", 1), ALPHA])
    assert "| a\\|b | 1 | reward | None | None | 0 | 0 |" in to_markdown(rows)
    console = Console(record=True, width=200)
    console.print(to_rich_table(rows, title="summary"))
    text = console.export_text()
    for needle in ("odd[bold]x", "a|b", "recorded", "potential", "None", "2.44949"):
        assert needle in text
