"""Tests of ckptcompat.checkpoint.key_prefixes: DDP / torch.compile prefixes in migrate and
the manager's save (issue 16 item 5).

The prefixed state_dicts come from the real wrappers' own ``state_dict()``:
``torch.nn.DataParallel`` (the same ``module.`` attribute and keys as
DistributedDataParallel, which needs a process group) and ``torch.compile`` (an
``OptimizedModule`` holding ``_orig_mod``; nothing is compiled until it is called).
Runs in every cell: the wrappers' key names are each torch's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint.key_prefixes import (
    load_error,
    split_prefix,
    strip_wrapper_prefix,
    unwrap_module,
    wrapper_prefix,
)
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.migrate import migrate
from ckptcompat.cli import main
from ckptcompat.errors import AgentMismatchError
from ckptcompat.generations.migrate import migrate_generation
from tests.generations.builders import architecture_of, tiny_agent, write_mpt

MLP = "ckptcompat.agents.mlp.MLPAgent"


def _wrapped(kind: str, agent: torch.nn.Module) -> torch.nn.Module:
    if kind == "ddp":
        return torch.nn.DataParallel(agent)
    if kind == "compile":
        return torch.compile(agent)
    return torch.compile(torch.nn.DataParallel(agent))


EXPECTED_PREFIX = {"ddp": "module.", "compile": "_orig_mod.", "both": "_orig_mod.module."}


def test_prefix_rules() -> None:
    """Guards stripping what is not a wrapper prefix: every key must carry it and go on
    after it; stacked wrappers split into one prefix each."""
    assert wrapper_prefix(["module.a", "module.b.c"]) == (
        "module.",
        ("DistributedDataParallel / DataParallel",),
    )
    assert wrapper_prefix(["module.a", "b"]) == ("", ())
    assert wrapper_prefix(["module."]) == ("", ())
    assert wrapper_prefix([]) == ("", ())
    assert split_prefix("_orig_mod.module.") == ["_orig_mod.", "module."]
    sd = {"module.w": 1, "module.b": 2}
    assert strip_wrapper_prefix(sd, ["w", "b"]) == ({"w": 1, "b": 2}, "module.")
    # the target itself is wrapped, or the stripped keys do not fit: unchanged
    assert strip_wrapper_prefix(sd, ["module.w", "module.b"]) == (sd, "")
    assert strip_wrapper_prefix(sd, ["w", "c"]) == (sd, "")


@pytest.mark.parametrize("kind", ["ddp", "compile", "both"])
def test_migrate_strips_a_wrapper_prefix_and_reports_it(kind: str, tmp_path: Path) -> None:
    """Guards migrate failing on a state_dict saved from a wrapped agent (issue 16 item 5:
    "load_state_dict(strict=True) into the bare agent fails"): the prefix is stripped,
    reported, and the migrated agent equals the bare agent on the probe batch."""
    agent = tiny_agent(seed=11)
    state = _wrapped(kind, agent).state_dict()
    assert all(k.startswith(EXPECTED_PREFIX[kind]) for k in state)
    source = legacy.write_state_dict(state, tmp_path / "team_v3.pt")
    report = migrate(source, tmp_path / "data", class_path=MLP, config=agent.config)
    assert report.stripped_prefix == EXPECTED_PREFIX[kind]
    migrated = SimpleCheckpointManager.load_from_uri(report.destination)
    for name, tensor in agent.state_dict().items():
        assert torch.equal(migrated.state_dict()[name], tensor), name


def test_the_cli_says_what_it_renamed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards a silent rename: `ckptcompat migrate` prints the prefix it stripped."""
    import json

    agent = tiny_agent(seed=12)
    source = legacy.write_state_dict(
        torch.nn.DataParallel(agent).state_dict(), tmp_path / "team_v1.pt"
    )
    argv = ["migrate", str(source), str(tmp_path / "data"), "--class-path", MLP]
    assert main([*argv, "--config", json.dumps(agent.config)]) == 0
    assert "renamed: stripped 'module.' from every state_dict key" in capsys.readouterr().out


def test_a_g3_file_of_compiled_weights_migrates(tmp_path: Path) -> None:
    """Guards the same fault in the G3/G4 path: safetensors weights named
    ``_orig_mod.<name>`` (a compiled policy's state_dict) fit the rebuilt agent."""
    agent = tiny_agent(seed=13)
    source = tmp_path / "team:v2.mpt"
    write_mpt(source, torch.compile(agent), architecture=architecture_of(agent))
    report = migrate_generation(source, tmp_path / "data")
    assert (report.stripped_prefix, report.outputs_equal) == ("_orig_mod.", True)


def test_a_mismatch_names_the_keys(tmp_path: Path) -> None:
    """Guards the migrate error that said only "Error(s) in loading state_dict for
    MLPAgent:" (the first line of torch's message): the missing and unexpected keys are in
    the error. A prefix that strips to keys the agent does not have is left alone."""
    agent = tiny_agent(seed=14)
    state = {f"module.extra_{k}": v for k, v in agent.state_dict().items()}
    source = legacy.write_state_dict(state, tmp_path / "team_v4.pt")
    with pytest.raises(AgentMismatchError) as info:
        migrate(source, tmp_path / "data", class_path=MLP, config=agent.config)
    assert "Missing key(s)" in str(info.value) and "module.extra_" in str(info.value)
    try:
        torch.nn.Linear(2, 2).load_state_dict({"x": torch.ones(1)})
    except RuntimeError as exc:
        assert load_error(exc).startswith("Missing key(s)")


@pytest.mark.parametrize("kind", ["ddp", "compile", "both"])
def test_the_manager_saves_the_bare_agent_of_a_wrapper(kind: str, tmp_path: Path) -> None:
    """Guards save_agent on a wrapped agent (issue 16 item 5, "the manager's state_dict
    paths"): it was refused as "has no config" (DataParallel, OptimizedModule), and its
    keys would carry the prefix. The bare agent is saved and loads strictly."""
    agent = tiny_agent(seed=15)
    wrapped = _wrapped(kind, agent)
    assert unwrap_module(wrapped)[0] is agent and len(unwrap_module(wrapped)[1]) >= 1
    uri = SimpleCheckpointManager("team", tmp_path).save_agent(wrapped, 1)
    loaded = SimpleCheckpointManager.load_from_uri(uri)
    assert type(loaded) is type(agent)
    assert list(loaded.state_dict()) == list(agent.state_dict())
