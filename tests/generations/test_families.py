"""Tests of ckptcompat.generations.families: weights and plain hyperparameters out of
Lightning, stable-baselines3 and Hugging Face files, nothing of them run (issue 16).

The files come from :mod:`tests.generations.family_builders` (the libraries' layouts, their
classes as stand-ins under their module names). What is read must be the same on every
torch 2.4-2.15: the hyperparameters and the reports come from the inert rebuild of the
pickle, not from torch.
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import pytest
import torch

from ckptcompat.errors import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    LimitExceededError,
    UnsafeCheckpointError,
)
from ckptcompat.generations.families import detect_family, not_a_model, read_family
from tests.generations.family_builders import (
    hf_checkpoint,
    lightning_ckpt,
    sb3_zip,
    trained,
    tsave,
)


def test_each_family_is_detected_and_plain_files_are_not(tmp_path: Path) -> None:
    """Guards migrate treating another library's file as a bare pickle (or a plain one as
    a library's): each layout is named; a dict with a state_dict but no Lightning version,
    a bare state_dict and a zip without SB3's members are no family."""
    model, _, _ = trained()
    folder = hf_checkpoint(tmp_path / "checkpoint-5")
    assert detect_family(lightning_ckpt(tmp_path / "a.ckpt")) == "lightning"
    assert detect_family(sb3_zip(tmp_path / "ppo.zip")) == "sb3"
    assert detect_family(folder / "pytorch_model.bin") == "hf_model"
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        assert detect_family(folder / name) == "hf_other", name
    plain = tmp_path / "model.pt"
    plain.write_bytes(tsave({"state_dict": model.state_dict(), "epoch": 1}))
    bare = tmp_path / "optimizer.pt"  # HF's name, but a state_dict of tensors
    bare.write_bytes(tsave(model.state_dict()))
    other = tmp_path / "bundle.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("data", "{}")
    assert [detect_family(p) for p in (plain, bare, other, tmp_path)] == [None] * 4
    assert not_a_model(bare) is None


def test_lightning_keeps_plain_hyperparameters_and_names_the_objects(tmp_path: Path) -> None:
    """Guards hyperparameters lost or objects built: JSON-primitive values are kept (a
    tuple as a list), every other value is reported by key and global, the trainer state
    is named as left behind, epoch and global_step are read, the weights are exact."""
    model, _, _ = trained()
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    read = read_family(lightning_ckpt(tmp_path / "e.ckpt", sd, rich=True), "lightning")
    assert read.hyperparameters == {
        "lr": 0.001, "hidden": [8], "name": "ppo", "betas": [0.9, 0.999]
    }  # fmt: skip
    assert read.reported == (
        "hyper_parameters['args']: argparse.Namespace",
        "hyper_parameters['attrs']: lightning.fabric.utilities.data.AttributeDict",
        "hyper_parameters['cfg']: omegaconf.dictconfig.DictConfig",
        "hyper_parameters['train']: __main__.TrainConfig",
        "hyper_parameters['activation']: torch.nn.modules.activation.Tanh",
    )
    assert read.left_behind == ("loops", "callbacks", "optimizer_states", "lr_schedulers")
    assert (read.epoch, read.agent_step, read.loader) == (3, 120, "allowlist")
    assert set(read.state_dict) == set(sd)
    assert all(torch.equal(read.state_dict[k], v) for k, v in sd.items())


def test_lightning_hyper_parameters_as_one_object_are_reported(tmp_path: Path) -> None:
    """Guards a DictConfig (or Namespace) as the whole hyper_parameters: reported, none
    kept, and the weights still read."""
    import argparse

    path = lightning_ckpt(tmp_path / "n.ckpt", hyper_parameters=argparse.Namespace(lr=1.0))
    read = read_family(path, "lightning")
    assert read.hyperparameters == {}
    assert read.reported == ("hyper_parameters: argparse.Namespace",)


def test_sb3_reads_policy_pth_and_the_plain_data(tmp_path: Path) -> None:
    """Guards the SB3 archive: weights from policy.pth, the JSON data entries that are
    not :serialized: as hyperparameters, each cloudpickle entry reported with the class it
    names and never decoded further, the optimizer member left behind."""
    model, _, _ = trained()
    read = read_family(sb3_zip(tmp_path / "ppo.zip", model.state_dict()), "sb3")
    assert read.hyperparameters == {"learning_rate": 0.0003, "n_steps": 8, "num_timesteps": 2048}
    assert read.reported == (
        "data['policy_class']: cloudpickle of "
        "stable_baselines3.common.policies.ActorCriticPolicy (not run)",
    )
    assert read.left_behind == ("pytorch_variables.pth", "policy.optimizer.pth")
    assert (read.agent_step, read.loader, read.run) == (2048, "safe", "ppo")
    assert all(torch.equal(read.state_dict[k], v) for k, v in model.state_dict().items())


def test_hf_model_takes_config_json_and_other_files_are_no_model(tmp_path: Path) -> None:
    """Guards Hugging Face files: pytorch_model.bin's weights with config.json beside it
    as hyperparameters, the run named after the checkpoint folder; each Trainer file that
    holds no model gets "not a model: this is ..." naming what it is."""
    folder = hf_checkpoint(tmp_path / "checkpoint-500", config={"hidden_size": 8, "act": "gelu"})
    read = read_family(folder / "pytorch_model.bin", "hf_model")
    assert read.hyperparameters == {"hidden_size": 8, "act": "gelu"}
    assert read.run == "checkpoint-500" and read.loader == "safe"
    wanted = {
        "training_args.bin": "TrainingArguments",
        "optimizer.pt": "optimizer state_dict",
        "scheduler.pt": "LR scheduler",
        "rng_state.pth": "RNG states",
    }
    for name, what in wanted.items():
        with pytest.raises(IncompatibleCheckpointError, match=f"not a model: this is .*{what}"):
            read_family(folder / name, "hf_other")


def _sb3_with(path: Path, **members: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name.replace("_pth", ".pth"), data)
    return path


def test_hostile_sb3_archives_give_typed_errors(tmp_path: Path) -> None:
    """Guards crashes and unbounded work on crafted archives: 'data' that is not JSON or
    nested past Python's recursion limit, a missing policy.pth, a truncated one, and a
    deflate bomb each raise a typed ckptcompat error."""
    model, _, _ = trained()
    policy = tsave(model.state_dict())
    cases = {
        "notjson": (dict(data=b"{nope", policy_pth=policy), CorruptCheckpointError),
        "deep": (dict(data=b"[" * 100_000, policy_pth=policy), CorruptCheckpointError),
        "array": (dict(data=b"[1]", policy_pth=policy), CorruptCheckpointError),
        "nopolicy": (dict(data=b"{}", pytorch_variables_pth=policy), IncompatibleCheckpointError),
        "truncated": (dict(data=b"{}", policy_pth=policy[:200]), CorruptCheckpointError),
    }
    for name, (members, error) in cases.items():
        path = _sb3_with(tmp_path / f"{name}.zip", **members)
        assert detect_family(path) == "sb3", name
        with pytest.raises(error):
            read_family(path, "sb3")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data", "{}")
        archive.writestr("policy.pth", b"\0" * (80 << 20))
    with pytest.raises(LimitExceededError):
        read_family(bomb, "sb3")


def test_cloudpickle_that_is_not_base64_is_still_reported(tmp_path: Path) -> None:
    """Guards a crash on a crafted :serialized: entry: it is reported, never decoded."""
    model, _, _ = trained()
    data = {"policy_class": {":type:": "<class 'x'>", ":serialized:": "%%%"}, "gamma": 0.99}
    raw = base64.b64encode(b"\x80\x02cos\nsystem\n.").decode()
    data["env"] = {":serialized:": raw}
    path = _sb3_with(
        tmp_path / "odd.zip", data=json.dumps(data).encode(), policy_pth=tsave(model.state_dict())
    )
    read = read_family(path, "sb3")
    assert read.hyperparameters == {"gamma": 0.99}
    assert read.reported[0].startswith("data['policy_class']: cloudpickle of <class 'x'>")
    assert "os.system" in read.reported[1]


def test_deep_json_data_is_reported_not_kept(tmp_path: Path) -> None:
    """Guards a RecursionError traceback on 'data' nested as deep as json.loads allows
    (500 levels): the entry is reported, not kept, and the weights are read."""
    model, _, _ = trained()
    raw = b'{"deep": ' + b"[" * 500 + b"]" * 500 + b', "gamma": 0.99}'
    path = _sb3_with(tmp_path / "deep.zip", data=raw, policy_pth=tsave(model.state_dict()))
    read = read_family(path, "sb3")
    assert read.hyperparameters == {"gamma": 0.99}
    assert read.reported == ("data['deep']: deeper than 64 levels or too large, not kept",)


def test_lightning_whose_state_dict_is_not_one(tmp_path: Path) -> None:
    """Guards a Lightning-shaped dict whose state_dict is no mapping of tensors, and one
    naming a dangerous global in its callbacks: typed errors, nothing run."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(tsave({"pytorch-lightning_version": "2.4.0", "state_dict": [1, 2]}))
    with pytest.raises(IncompatibleCheckpointError, match="not a state_dict"):
        read_family(bad, "lightning")
    model, _, _ = trained()
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(
        tsave(
            {
                "pytorch-lightning_version": "2.4.0",
                "state_dict": model.state_dict(),
                "callbacks": {"x": _Reduce()},
            }
        )
    )
    with pytest.raises(UnsafeCheckpointError) as info:
        read_family(evil, "lightning")
    assert "posix.system" in info.value.globals or "os.system" in info.value.globals


class _Reduce:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("true",)
