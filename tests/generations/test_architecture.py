"""Tests of ckptcompat.generations.architecture: the architecture string parsed as data.

Pure ``ast`` work: nothing depends on torch's version (one cell).
"""

from __future__ import annotations

import pytest

from ckptcompat.errors import AgentMismatchError, CorruptCheckpointError, UnsafeCheckpointError
from ckptcompat.generations.architecture import (
    ArchCall,
    parse_architecture,
    resolve_class_path,
)

pytestmark = pytest.mark.one_cell

METTA_LIKE = (
    "metta.agent.policies.fast.FastConfig(action_probs_config={'temperature': 1.0}, "
    "components=[metta.agent.components.ObsShim(in_key='env_obs', out_key='obs', dims=(1, -2)),"
    " metta.agent.components.LSTM(hidden=128, bias=None, tied=False)], scale=-0.5)"
)


def test_a_metta_like_string_parses_to_data() -> None:
    """Guards the shape of Metta's strings: nested calls, tuples, negatives, None, bools."""
    call = parse_architecture(METTA_LIKE)
    assert call.name == "metta.agent.policies.fast.FastConfig"
    assert call.names() == (
        "metta.agent.policies.fast.FastConfig",
        "metta.agent.components.ObsShim",
        "metta.agent.components.LSTM",
    )
    config = call.to_config()
    assert config["scale"] == -0.5
    assert config["components"][0] == {
        "_target_": "metta.agent.components.ObsShim",
        "in_key": "env_obs",
        "out_key": "obs",
        "dims": [1, -2],
    }


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo pwned')",
        "__import__('os')",
        "pkg.__class__(x=1)",
        "pkg.A(x=__import__('os').system('echo pwned'))",
        "pkg.A(x=os.environ)",
        "pkg.A(x=lambda: 1)",
        "pkg.A(x=[1][0])",
        "pkg.A(**{'x': 1})",
        "pkg.A(*[1])",
        "pkg.A(x=1 + 2)",
        "pkg.A(x=f'{1}')",
        "pkg.A(x={1: 2})",
        "pkg.A(x=b'bytes')",
        "pkg.A(x=1j)",
        "pkg.A(x=(yield))",
        "pkg.A().b()",
        "pkg.A",
        "[pkg.A()]",
        "getattr(pkg, 'A')(x=[i for i in range(3)])",
    ],
)
def test_anything_but_literal_calls_is_refused(text: str) -> None:
    """Guards code smuggled into an architecture string (the reason the string is never
    eval'd): every non-literal construct is an UnsafeCheckpointError naming it."""
    with pytest.raises((UnsafeCheckpointError, CorruptCheckpointError)):
        parse_architecture(text)


def test_syntax_errors_and_deep_nesting_are_corrupt() -> None:
    """Guards the parser itself: bad syntax and 10000-deep lists fail typed, never with a
    RecursionError or a MemoryError."""
    for text in ("pkg.A(", "pkg.A(x=[" * 10_000 + "]" * 10_000 + ")", "x" * 1_000_001):
        with pytest.raises(CorruptCheckpointError):
            parse_architecture(text)


def test_class_resolution_needs_the_allowlist_or_a_class_path() -> None:
    """Guards resolving an arbitrary name from a file: off-allowlist names need --class-path."""
    foreign = ArchCall("metta.agent.Fast")
    with pytest.raises(UnsafeCheckpointError) as info:
        resolve_class_path(foreign, None)
    assert info.value.globals == ("metta.agent.Fast",)
    assert resolve_class_path(foreign, "my.Agent") == "my.Agent"
    ours = ArchCall("ckptcompat.agents.mlp.MLPAgent")
    assert resolve_class_path(ours, None) == "ckptcompat.agents.mlp.MLPAgent"


def test_positional_arguments_have_no_config() -> None:
    """Guards to_config on a call with positional arguments (a config is a dict)."""
    with pytest.raises(AgentMismatchError):
        parse_architecture("pkg.A(1, x=2)").to_config()
