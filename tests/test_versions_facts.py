"""The torch-version facts table (src/ckptcompat/versions_facts.py)."""

from __future__ import annotations

import re

import pytest

from ckptcompat import versions_facts as facts
from ckptcompat.versions_facts import FACTS

one_cell = pytest.mark.one_cell


@one_cell
def test_every_row_cites_its_release_and_source() -> None:
    """Guards a fact nobody can check: each row names the torch release it comes from
    (of its own minor) and a PR, advisory or file diff. Pure data: one cell suffices."""
    for fact in FACTS:
        assert re.fullmatch(r"\d+\.\d+\.\d+", fact.release), fact
        assert facts.minor_tuple(fact.release) == facts.minor_tuple(fact.since), fact
        assert fact.source.strip(), fact
        if fact.key in ("wording", "advisory"):
            assert len(fact.names) == 1, fact
        if fact.key == "wording":
            re.compile(fact.value)


@one_cell
def test_queries_read_rows_by_minor() -> None:
    """Guards the reading of the table: a fact holds from its minor on, for every patch.
    Pure data: one cell suffices."""
    assert not facts.holds("weights_only_default", "2.5.1")
    assert facts.holds("weights_only_default", "2.6.0+cu124")
    assert facts.holds("weights_only_default", "2.16")
    assert facts.first_minor("setitem_restricted") == "2.10"
    assert [a for a, _ in facts.advisories("2.5.1")] == ["CVE-2025-32434", "CVE-2026-24747"]
    assert [a for a, _ in facts.advisories("2.9.1")] == ["CVE-2026-24747"]
    assert facts.advisories("2.10.0") == ()
    assert "builtins.set" in facts.names_after("globals_added", "2.5")
    assert "builtins.set" in facts.names_through("globals_added", "2.6")
    with pytest.raises(KeyError):
        facts.holds("no_such_fact", "2.6")
    with pytest.raises(ValueError):
        facts.minor_tuple("latest")


def test_live_torch_agrees_with_the_table() -> None:
    """Guards the table against the running torch: every feature torch_compat detects
    live (hasattr probes) starts where the table says. Runs in every cell: each cell's
    torch checks its own rows."""
    import importlib.util

    import torch

    from ckptcompat import torch_compat as tc

    v = str(tc.TORCH_VERSION)
    ser = torch.serialization
    assert hasattr(ser, "_default_to_weights_only") == facts.holds("weights_only_default", v)
    assert tc.WEIGHTS_ONLY_IS_DEFAULT == facts.holds("weights_only_default", v)
    assert tc.HAS_SAFE_GLOBALS_CONTEXT == facts.holds("safe_globals_context", v)
    assert tc.HAS_UNSAFE_GLOBALS_SCAN == facts.holds("unsafe_globals_scan", v)
    assert tc.HAS_ALIASED_SAFE_GLOBALS == facts.holds("aliased_safe_globals", v)
    assert tc.SETITEM_RESTRICTED == facts.holds("setitem_restricted", v)
    assert tc.NEEDS_STATIC_PRESCAN == bool(facts.advisories(v))
    config = importlib.util.find_spec("torch.utils.serialization") is not None
    assert config == facts.holds("serialization_config", v)
    blocked = getattr(torch._weights_only_unpickler, "_blocklisted_modules", [])
    assert set(blocked) == set(facts.names_through("blocked_modules", v))
