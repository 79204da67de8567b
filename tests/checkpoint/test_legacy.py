"""Legacy generations (G1, G2, bare state_dict): written like the old code, read safely."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import MockAgent, RecurrentAgent
from ckptcompat.checkpoint import legacy
from ckptcompat.errors import IncompatibleCheckpointError, UnsafeCheckpointError


def _agents() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "mock": MockAgent(),
        "recurrent_vector": RecurrentAgent(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            action_space=gym.spaces.Discrete(2),
        ),
        "recurrent_image": RecurrentAgent(
            observation_space=gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
            action_space=gym.spaces.Discrete(3),
        ),
    }


def _record(agent: torch.nn.Module, epoch: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ckptcompat.policy.policy_metadata import PolicyMetadata
        from ckptcompat.policy.policy_record import PolicyRecord

        record = PolicyRecord(None, "run", "file:///x", PolicyMetadata(epoch=epoch, score=0.25))
    record.policy = agent
    return record


def _same_weights(a: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = a.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in own)


@pytest.mark.parametrize("name", ["mock", "recurrent_vector", "recurrent_image"])
def test_g2_whole_agent_reads_through_the_allowlist(tmp_path: Path, name: str) -> None:
    """Guards 'Unsupported global: GLOBAL ...MockAgent' on 2.6+ for whole-agent pickles.

    A plain weights-only load refuses the file on every version; the legacy reader loads
    it with weights_only=True and exactly the curated names it needs.
    """
    agent = _agents()[name]
    path = legacy.write_g2(agent, tmp_path / legacy.g2_filename("run", 3, agent_step=10))
    with pytest.raises(UnsafeCheckpointError):
        torch_compat.load(path)
    ckpt = legacy.read_checkpoint(path)
    assert ckpt.generation == "g2"
    assert type(ckpt.agent) is type(agent)
    assert _same_weights(agent, ckpt.state_dict)
    assert ckpt.class_path == agent.class_path
    assert ckpt.config == agent.config
    assert f"ckptcompat.agents.{'mock' if name == 'mock' else 'recurrent'}." in " ".join(
        ckpt.allowlist
    )


@pytest.mark.parametrize("name", ["mock", "recurrent_image"])
def test_g1_policy_record_reads_through_the_allowlist(tmp_path: Path, name: str) -> None:
    """Guards G1 files (a pickled PolicyRecord) being unreadable without weights_only=False.

    On torch >= 2.10 a dict subclass filled by SETITEMS is refused even when allowlisted;
    PolicyMetadata pickles its items as BUILD state so G1 files load there too.
    """
    agent = _agents()[name]
    path = legacy.write_g1(_record(agent, 7), tmp_path / "run" / legacy.g1_filename(7))
    ckpt = legacy.read_checkpoint(path)
    assert ckpt.generation == "g1"
    assert ckpt.metadata["epoch"] == 7 and ckpt.metadata["score"] == 0.25
    assert _same_weights(agent, ckpt.state_dict)
    assert "ckptcompat.policy.policy_record.PolicyRecord" in ckpt.allowlist


def test_bare_state_dict_needs_no_allowlist(tmp_path: Path) -> None:
    """Guards bare state_dicts being treated as unsafe."""
    agent = _agents()["mock"]
    path = legacy.write_state_dict(agent.state_dict(), tmp_path / "sd.pt")
    ckpt = legacy.read_checkpoint(path)
    assert ckpt.generation == "state_dict" and ckpt.agent is None
    assert _same_weights(agent, ckpt.state_dict)


def test_unlisted_globals_are_all_named(tmp_path: Path) -> None:
    """Guards the reader naming only the first offender, as torch's own error does."""
    path = tmp_path / "mixed.pt"
    torch.save({"a": argparse.Namespace(), "b": Path("x"), "m": MockAgent()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        legacy.read_checkpoint(path)
    assert set(info.value.globals) == {"argparse.Namespace", "pathlib.PosixPath"}
    assert "--trust" in str(info.value)


def test_object_without_an_agent_is_incompatible(tmp_path: Path) -> None:
    """Guards a non-agent pickle being returned as if it were a checkpoint."""
    path = tmp_path / "list.pt"
    torch_compat.save([1, 2, 3], path)
    with pytest.raises(IncompatibleCheckpointError, match="no agent"):
        legacy.read_checkpoint(path)


def test_g2_file_names_follow_both_old_schemes() -> None:
    """Guards the golden/legacy names drifting from the old CheckpointManager's."""
    assert legacy.g2_filename("r", 3, agent_step=7, total_time_s=9.7, score=0.5) == (
        "r__e3__s7__t9__sc5000.pt"
    )
    assert legacy.g2_filename("r", 3, scheme="colon") == "r:v3.pt"
    assert legacy.g1_filename(12) == "model_0012.pt"


def _metta_g1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A G1 file as Metta wrote it: metta.agent.policy_record.PolicyRecord holding a
    metta.agent.policy_metadata.PolicyMetadata and a metta.agent.metta_agent.MettaAgent.
    The metta modules exist only while saving, so metta is not importable when reading."""
    import importlib.util
    import sys
    import types

    assert importlib.util.find_spec("metta") is None  # the premise: no metta installed

    class MettaAgent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

    class PolicyMetadata(dict):  # Metta's was a dict subclass
        pass

    class PolicyRecord:
        pass

    path = tmp_path / "oldrun" / "checkpoints" / "model_0004.pt"
    path.parent.mkdir(parents=True)
    with monkeypatch.context() as patch:
        for package in ("metta", "metta.agent"):
            patch.setitem(sys.modules, package, types.ModuleType(package))
        for module_name, cls in (
            ("metta.agent.metta_agent", MettaAgent),
            ("metta.agent.policy_metadata", PolicyMetadata),
            ("metta.agent.policy_record", PolicyRecord),
        ):
            module = types.ModuleType(module_name)
            cls.__module__, cls.__qualname__ = module_name, cls.__name__
            setattr(module, cls.__name__, cls)
            patch.setitem(sys.modules, module_name, module)
        record = PolicyRecord()
        record.__dict__.update(
            _policy_store=None,
            run_name="oldrun",
            uri=f"file://{path}",
            _metadata=PolicyMetadata(agent_step=10, epoch=4, generation=0, train_time=0.0),
            _cached_policy=MettaAgent(),
        )
        torch.save(record, path)
    return path


def test_metta_g1_is_refused_saying_install_metta_and_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 15b bug 3: Metta's own G1 pickles (metta.agent.* globals) were refused
    with advice that cannot work without metta, and `migrate --trust` then died of an
    untyped ModuleNotFoundError: the refusal names every metta class and says to install
    the package providing 'metta' and migrate with --trust; the trusted migration without
    metta is MissingDependencyError naming the module."""
    from ckptcompat.checkpoint.migrate import migrate
    from ckptcompat.errors import MissingDependencyError

    path = _metta_g1(tmp_path, monkeypatch)
    with pytest.raises(UnsafeCheckpointError) as caught:
        legacy.read_checkpoint(path)
    assert set(caught.value.globals) >= {
        "metta.agent.policy_record.PolicyRecord",
        "metta.agent.policy_metadata.PolicyMetadata",
        "metta.agent.metta_agent.MettaAgent",
    }
    assert "install the package that provides 'metta'" in str(caught.value)
    assert "--trust" in str(caught.value)
    with (
        pytest.raises(MissingDependencyError, match="module 'metta'") as missing,
        pytest.warns(torch_compat.TrustedLoadWarning),
    ):
        migrate(path, tmp_path / "out", trust=True)
    assert "the package that provides 'metta'" in str(missing.value)
