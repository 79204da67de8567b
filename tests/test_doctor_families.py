"""Regression tests of ckptcompat.doctor.families: other libraries' files, by structure.

Issue 16 item 4: a stable-baselines3 ``.zip`` was called corrupt, Lightning ``.ckpt`` and
Hugging Face Trainer files were only "a dict". The libraries are not installed: each file
is built here with the same layout their save code writes (read in stable-baselines3's
``common/save_util.py: save_to_zip_file``, Lightning's ``_CheckpointConnector.
dump_checkpoint``, transformers' ``Trainer._save_checkpoint``), with real ``torch.save``
members, a real optimizer and scheduler; the library's own classes are stand-ins pickled
under the library's module names. The printed fixes are applied through
:mod:`ckptcompat.torch_compat`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import enum
import io
import json
import random
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ckptcompat import doctor, torch_compat
from ckptcompat.harness.fixtures.numpy_random import safe_globals_for


def _trained() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _tsave(obj: object) -> bytes:
    buf = io.BytesIO()
    torch_compat.save(obj, buf)
    return buf.getvalue()


def _sb3_zip(path: Path) -> Path:
    """A PPO.save archive: JSON data with a cloudpickle entry, .pth members, version files."""
    model, opt, _ = _trained()
    # cloudpickle of a class by reference is a protocol-5 pickle naming it (STACK_GLOBAL).
    blob = b"\x80\x05\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c!stable_baselines3.common.policies"
    blob += b"\x94\x8c\x11ActorCriticPolicy\x94\x93\x94."
    data = {
        "policy_class": {
            ":type:": "<class 'abc.ABCMeta'>",
            ":serialized:": base64.b64encode(blob).decode(),
            "__module__": "stable_baselines3.common.policies",
        },
        "learning_rate": 0.0003,
        "n_steps": 8,
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps(data, indent=4))
        archive.writestr("pytorch_variables.pth", _tsave({}))
        archive.writestr("policy.pth", _tsave(model.state_dict()))
        archive.writestr("policy.optimizer.pth", _tsave(opt.state_dict()))
        archive.writestr("_stable_baselines3_version", "2.3.2")
        archive.writestr("system_info.txt", "- OS: Linux\n- Python: 3.11\n")
    return path


def test_sb3_archive_is_recognised_and_its_fix_loads(tmp_path: Path) -> None:
    """Guards an SB3 .zip being called corrupt: the doctor names the archive, the
    cloudpickle entry of 'data' that blocks (naming the class it pickles), and the fix
    (policy.pth from the zip, weights-only) really loads the state_dict."""
    path = _sb3_zip(tmp_path / "ppo_cartpole.zip")
    diag = doctor.diagnose(path)
    fam = diag.family
    assert fam is not None and fam.library == "stable-baselines3"
    assert "sb3 2.3.2" in fam.what and "policy.pth" in fam.what
    assert len(fam.blockers) == 1 and "policy_class" in fam.blockers[0]
    assert "stable_baselines3.common.policies.ActorCriticPolicy" in fam.blockers[0]
    assert "z.open('policy.pth')" in fam.fix and "custom_objects" in fam.fix
    assert doctor.verdict_line(diag).startswith("a stable-baselines3 model archive")
    assert "library      stable-baselines3" in doctor.render_text(diag)
    assert doctor.to_json(diag)["family"]["library"] == "stable-baselines3"
    with zipfile.ZipFile(path) as z:  # the printed fix, torch.load through torch_compat
        state = torch_compat.load(z.open("policy.pth"))
    assert set(state) == {"weight", "bias"}


class _Namespaced:
    """Swaps in stand-in classes under a library's module name for one save."""

    def __init__(self, module: str, **classes: type) -> None:
        self.module, self.classes = module, classes

    def __enter__(self) -> None:
        fake = types.ModuleType(self.module)
        for name, cls in self.classes.items():
            cls.__module__, cls.__qualname__ = self.module, name
            setattr(fake, name, cls)
        parts = self.module.split(".")
        self.added = [".".join(parts[: i + 1]) for i in range(len(parts))]
        self.added = [m for m in self.added if m not in sys.modules]
        for m in self.added:
            sys.modules[m] = types.ModuleType(m)
        sys.modules[self.module] = fake

    def __exit__(self, *exc: object) -> None:
        for m in self.added:
            sys.modules.pop(m, None)


def _lightning_ckpt(path: Path) -> Path:
    model, opt, sched = _trained()
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': None, 'mode': 'min'}": {"best_model_score": None}
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"args": argparse.Namespace(lr=0.001, layers=2), "seed": 0},
    }
    path.write_bytes(_tsave(ckpt))
    return path


def test_lightning_ckpt_names_the_blocking_part_and_the_allowlist_loads(tmp_path: Path) -> None:
    """Guards a Lightning .ckpt being only 'a dict': the doctor names it, says that
    hyper_parameters (argparse.Namespace) blocks weights_only, and its allowlist loads it."""
    path = _lightning_ckpt(tmp_path / "epoch=3-step=120.ckpt")
    diag = doctor.diagnose(path)
    fam = diag.family
    assert fam is not None and fam.library == "Lightning" and "lightning 2.4.0" in fam.what
    assert "optimizer_states" in fam.what and "hyper_parameters" in fam.what
    assert fam.blockers == (
        "hyper_parameters: argparse.Namespace (refused by weights_only unless allowlisted)",
    )
    assert "save_hyperparameters" in fam.fix
    wo = diag.for_torch(str(torch.__version__)).weights_only
    assert wo.outcome == "fixable_by_allowlist"
    loaded = torch_compat.load(path, safe_globals=safe_globals_for(wo.allowlist))
    assert loaded["hyper_parameters"]["args"].lr == 0.001


class _IntervalStrategy(enum.Enum):
    NO = "no"
    STEPS = "steps"


@dataclasses.dataclass
class _TrainingArguments:
    output_dir: str = "out"
    learning_rate: float = 5e-5
    eval_strategy: _IntervalStrategy = _IntervalStrategy.STEPS


@pytest.fixture
def hf_checkpoint(tmp_path: Path) -> Iterator[Path]:
    """A transformers.Trainer checkpoint-N directory with its five torch files."""
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    model, opt, sched = _trained()
    (folder / "pytorch_model.bin").write_bytes(_tsave(model.state_dict()))
    (folder / "optimizer.pt").write_bytes(_tsave(opt.state_dict()))
    (folder / "scheduler.pt").write_bytes(_tsave(sched.state_dict()))
    rng = {
        "python": random.Random(0).getstate(),
        "numpy": np.random.RandomState(0).get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    (folder / "rng_state.pth").write_bytes(_tsave(rng))
    with (
        _Namespaced("transformers.trainer_utils", IntervalStrategy=_IntervalStrategy),
        _Namespaced("transformers.training_args", TrainingArguments=_TrainingArguments),
    ):
        (folder / "training_args.bin").write_bytes(_tsave(_TrainingArguments()))
    yield folder


def test_hugging_face_trainer_files_are_recognised(hf_checkpoint: Path) -> None:
    """Guards Hugging Face Trainer files being only 'a dict': each is named; the ones
    weights_only refuses say what blocks (TrainingArguments; rng_state's numpy state) and
    the rng_state allowlist the doctor prints makes it load."""
    found = {p.name: doctor.diagnose(p) for p in sorted(hf_checkpoint.iterdir())}
    for name, diag in found.items():
        assert diag.family is not None and diag.family.library == "Hugging Face transformers"
        assert diag.family.what.split(" ")[0] in ("model", "the"), name
    assert found["pytorch_model.bin"].family.blockers == ()  # type: ignore[union-attr]
    assert found["optimizer.pt"].family.blockers == ()  # type: ignore[union-attr]
    args = found["training_args.bin"].family
    assert args is not None and "transformers.training_args.TrainingArguments" in args.blockers[0]
    rng = found["rng_state.pth"].family
    assert rng is not None and rng.blockers and rng.blockers[0].startswith("numpy:")
    wo = found["rng_state.pth"].for_torch(str(torch.__version__)).weights_only
    assert wo.outcome == "fixable_by_allowlist"
    loaded = torch_compat.load(
        hf_checkpoint / "rng_state.pth", safe_globals=safe_globals_for(wo.allowlist)
    )
    assert loaded["numpy"][0] == "MT19937"


def test_plain_dicts_and_other_zips_are_no_family(tmp_path: Path) -> None:
    """Guards false recognition: a dict with a state_dict but no Lightning version, a
    state_dict named like nothing, and a zip without SB3's members have no family."""
    model, _, _ = _trained()
    plain = tmp_path / "model.pt"
    plain.write_bytes(_tsave({"state_dict": model.state_dict(), "epoch": 1}))
    assert doctor.diagnose(plain).family is None
    other = tmp_path / "bundle.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("data", "{}")
    assert doctor.diagnose(other).family is None
