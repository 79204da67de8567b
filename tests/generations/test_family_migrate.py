"""Tests of ckptcompat.generations.family_migrate and its dispatch: ``ckptcompat migrate``
of Lightning, stable-baselines3 and Hugging Face files into the safe format (issue 16).

The agent is our tiny MLPAgent, its state_dict saved inside each library's layout
(:mod:`tests.generations.family_builders`); a LightningModule holding it as ``self.agent``
saves its keys as ``agent.<name>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckptcompat import cli, torch_compat
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import AgentMismatchError, IncompatibleCheckpointError, InputError
from ckptcompat.generations.batch import migrate_checkpoint, migrate_directory, render_report
from ckptcompat.generations.family_migrate import (
    FamilyMigrationReport,
    key_prefixes,
    migrate_family,
)
from tests.generations.builders import tiny_agent
from tests.generations.family_builders import hf_checkpoint, lightning_ckpt, sb3_zip, tsave


def _prefixed(prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in tiny_agent().state_dict().items()}


def _equal_weights(uri: str) -> bool:
    loaded = SimpleCheckpointManager.load_from_uri(uri.removeprefix("file://"))
    expected = tiny_agent().state_dict()
    return all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_lightning_submodule_is_selected_stripped_and_reported(tmp_path: Path) -> None:
    """Guards a LightningModule's 'agent.' keys not fitting the agent: --submodule agent
    keeps them, strips the prefix and reports it; the JSON-primitive hyperparameters land
    in metadata.extra of a file that loads weights-only with no allowlist; the objects are
    reported; run and epoch come from the file."""
    agent = tiny_agent()
    src = lightning_ckpt(tmp_path / "epoch=3-step=120.ckpt", _prefixed("agent."), rich=True)
    report = migrate_family(
        src, tmp_path / "data", class_path=agent.class_path, config=agent.config,
        submodule="agent",
    )  # fmt: skip
    assert isinstance(report, FamilyMigrationReport)
    assert (report.run, report.epoch, report.stripped_prefix) == ("epoch-3-step-120", 3, "agent.")
    assert report.generation == "lightning" and report.outputs_equal
    assert report.hyperparameters == ("lr", "hidden", "name", "betas")
    assert _equal_weights(report.destination)
    payload = torch_compat.load(report.destination.removeprefix("file://"))
    extra = payload["metadata"]["extra"]
    assert extra["hyperparameters"]["betas"] == [0.9, 0.999]
    assert extra["migrated_from"] == "lightning" and payload["metadata"]["agent_step"] == 120
    assert "hyper_parameters['args']: argparse.Namespace" in extra["not_migrated_objects"]
    text = render_report(report)
    assert "renamed: stripped 'agent.' from every state_dict key" in text
    assert "hyper_parameters['cfg']: omegaconf.dictconfig.DictConfig" in text
    assert "left behind (not weights): loops, callbacks, optimizer_states" in text


def test_key_mismatch_names_the_prefixes_and_the_fitting_submodule(tmp_path: Path) -> None:
    """Guards a key-mismatch error that only listed missing keys: it names the prefixes
    the file's keys have and the --submodule that fits; a --submodule with no keys under it
    lists the prefixes there are; nothing is written."""
    agent = tiny_agent()
    sd = {**_prefixed("agent."), "critic_head.weight": torch.ones(1)}
    src = lightning_ckpt(tmp_path / "m.ckpt", sd)
    kwargs = {"class_path": agent.class_path, "config": agent.config}
    with pytest.raises(AgentMismatchError) as info:
        migrate_family(src, tmp_path / "data", **kwargs)
    assert "'agent.' (11 keys), 'critic_head.' (1 key)" in str(info.value)
    assert "--submodule agent" in str(info.value)
    with pytest.raises(AgentMismatchError, match=r"no state_dict key lies under 'model\.'"):
        migrate_family(src, tmp_path / "data", submodule="model", **kwargs)
    assert not (tmp_path / "data").exists()
    assert key_prefixes(["a.b", "a.c", "d"]) == "'a.' (2 keys), '(none)' (1 key)"


def test_submodule_then_wrapper_prefix(tmp_path: Path) -> None:
    """Guards a compiled net inside a LightningModule ('agent._orig_mod.'): the submodule
    and torch.compile's prefix are both stripped and reported together."""
    agent = tiny_agent()
    src = lightning_ckpt(tmp_path / "c.ckpt", _prefixed("agent._orig_mod."))
    report = migrate_family(
        src, tmp_path / "x.pt", class_path=agent.class_path, config=agent.config,
        submodule="agent", run="r", epoch=0,
    )  # fmt: skip
    assert report.stripped_prefix == "agent._orig_mod." and _equal_weights(report.destination)


def test_agent_class_and_config_are_required(tmp_path: Path) -> None:
    """Guards a migration guessing the agent: these files name none of ours."""
    src = sb3_zip(tmp_path / "ppo.zip", tiny_agent().state_dict())
    with pytest.raises(AgentMismatchError, match="name no ckptcompat agent"):
        migrate_checkpoint(src, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_sb3_and_hugging_face_migrate(tmp_path: Path) -> None:
    """Guards the SB3 archive (policy.pth) and pytorch_model.bin (config.json beside it):
    both migrate through the dispatch with their hyperparameters; the Trainer's other
    files answer "not a model"."""
    agent = tiny_agent()
    kwargs = {"class_path": agent.class_path, "config": agent.config}
    src = sb3_zip(tmp_path / "ppo.zip", agent.state_dict())
    sb3 = migrate_checkpoint(src, tmp_path / "d", **kwargs)
    assert isinstance(sb3, FamilyMigrationReport) and sb3.generation == "sb3"
    assert sb3.hyperparameters == ("learning_rate", "n_steps", "num_timesteps")
    assert _equal_weights(sb3.destination)
    folder = hf_checkpoint(tmp_path / "checkpoint-7", agent.state_dict(), {"hidden_size": 8})
    hf = migrate_checkpoint(folder / "pytorch_model.bin", tmp_path / "d", **kwargs)
    assert (hf.run, hf.generation, hf.loader) == ("checkpoint-7", "hf_model", "safe")
    with pytest.raises(IncompatibleCheckpointError, match="not a model: this is the TrainingArg"):
        migrate_checkpoint(folder / "training_args.bin", tmp_path / "d", **kwargs)


def test_directory_skips_trainer_files_as_no_model(tmp_path: Path) -> None:
    """Guards a directory migrate reporting HF Trainer files as failures: the model is
    migrated, the other four are skipped with "not a model: this is ..."."""
    agent = tiny_agent()
    store = tmp_path / "store"
    hf_checkpoint(store / "checkpoint-9", agent.state_dict())
    results = migrate_directory(
        store, tmp_path / "data", class_path=agent.class_path, config=agent.config
    )
    outcome = {r.name.split("/")[-1]: (r.outcome, r.detail) for r in results}
    assert outcome["pytorch_model.bin"][0] == "migrated"
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        assert outcome[name][0] == "skipped" and outcome[name][1].startswith("not a model"), name


def test_submodule_is_refused_for_other_files(tmp_path: Path) -> None:
    """Guards --submodule silently ignored on a file of none of these libraries."""
    plain = tmp_path / "r_v1.pt"
    plain.write_bytes(tsave(tiny_agent().state_dict()))
    with pytest.raises(InputError, match="--submodule selects"):
        migrate_checkpoint(plain, tmp_path / "d", submodule="agent")


def test_cli_migrates_a_lightning_ckpt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards the command line: --submodule is accepted, its help says the default, and
    the printed report names the family, the rename and the reported objects."""
    agent = tiny_agent()
    src = lightning_ckpt(tmp_path / "last.ckpt", _prefixed("agent."), rich=True)
    code = cli.main([
        "migrate", str(src), str(tmp_path / "data"), "--class-path", agent.class_path,
        "--config", json.dumps(agent.config), "--submodule", "agent",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(lightning, loader=allowlist)" in out and "stripped 'agent.'" in out
    assert "read as inert stand-ins (nothing imported or run)" in out
    assert cli.main(["migrate", "--help"]) == 0
    assert "--submodule NAME" in capsys.readouterr().out
