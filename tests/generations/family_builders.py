"""Files with the layouts Lightning, stable-baselines3 and Hugging Face write, built in code.

The libraries are not installed: each file is built with the layout their save code
writes (read in stable-baselines3's ``common/save_util.py: save_to_zip_file``, Lightning's
``_CheckpointConnector.dump_checkpoint``, transformers' ``Trainer._save_checkpoint``), with
real ``torch.save`` members, a real optimizer and scheduler; the libraries' own classes are
stand-ins pickled under the libraries' module names (:class:`Namespaced`). Shared by the
doctor's tests (tests/test_doctor_families.py) and migrate's (tests/generations/).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import enum
import io
import json
import random
import sys
import types
import typing
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ckptcompat import torch_compat

__all__ = [
    "Namespaced",
    "hf_checkpoint",
    "lightning_ckpt",
    "rich_hyper_parameters",
    "sb3_zip",
    "trained",
    "tsave",
]


def trained() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """A Linear(3, 2), its Adam after one step and a StepLR after one step."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def tsave(obj: object) -> bytes:
    """``torch.save`` bytes of ``obj`` (protocol 2, as torch writes)."""
    buf = io.BytesIO()
    torch_compat.save(obj, buf)
    return buf.getvalue()


class Namespaced:
    """Swaps in stand-in classes under a library's module name for one save."""

    def __init__(self, module: str, **classes: type) -> None:
        self.module, self.classes = module, classes

    def __enter__(self) -> None:
        self.previous = sys.modules.get(self.module)
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
        if self.previous is not None:
            sys.modules[self.module] = self.previous


#: A cloudpickle of a class by reference: a protocol-5 pickle naming it (STACK_GLOBAL).
SB3_POLICY_CLASS_BLOB = (
    b"\x80\x05\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c!stable_baselines3.common.policies"
    b"\x94\x8c\x11ActorCriticPolicy\x94\x93\x94."
)


def sb3_zip(path: Path, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """A PPO.save archive: JSON data with a cloudpickle entry, .pth members, version files."""
    model, opt, _ = trained()
    data = {
        "policy_class": {
            ":type:": "<class 'abc.ABCMeta'>",
            ":serialized:": base64.b64encode(SB3_POLICY_CLASS_BLOB).decode(),
            "__module__": "stable_baselines3.common.policies",
        },
        "learning_rate": 0.0003,
        "n_steps": 8,
        "num_timesteps": 2048,
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps(data, indent=4))
        archive.writestr("pytorch_variables.pth", tsave({}))
        archive.writestr("policy.pth", tsave(state_dict or model.state_dict()))
        archive.writestr("policy.optimizer.pth", tsave(opt.state_dict()))
        archive.writestr("_stable_baselines3_version", "2.3.2")
        archive.writestr("system_info.txt", "- OS: Linux\n- Python: 3.11\n")
    return path


class AttributeDict(dict):  # type: ignore[type-arg]
    """Lightning's ``lightning.fabric.utilities.data.AttributeDict``: a dict subclass
    (pickled by NEWOBJ then SETITEMS on the instance)."""


@dataclasses.dataclass
class ContainerMetadata:
    """omegaconf's ``omegaconf.base.ContainerMetadata`` (a dataclass naming typing.Any)."""

    ref_type: Any = typing.Any
    key_type: Any = typing.Any
    element_type: Any = typing.Any


class DictConfig:
    """omegaconf's ``DictConfig`` as pickled: ``__getstate__`` state with ``_content``."""

    def __init__(self, content: dict[str, Any]) -> None:
        self._metadata = ContainerMetadata()
        self._parent = None
        self._content = content


@dataclasses.dataclass
class TrainConfig:
    """A training script's config dataclass, pickled as ``__main__.TrainConfig``."""

    lr: float = 0.001
    layers: int = 2


def rich_hyper_parameters() -> dict[str, Any]:
    """Lightning hyper_parameters holding plain values and the objects teams put there
    (Namespace, AttributeDict, DictConfig, a ``__main__`` dataclass, a module class);
    :func:`lightning_ckpt` with ``rich=True`` saves them under the libraries' names."""
    return {
        "lr": 0.001,
        "hidden": [8],
        "name": "ppo",
        "betas": (0.9, 0.999),
        "args": argparse.Namespace(lr=0.001, layers=2),
        "attrs": AttributeDict(gamma=0.99),
        "cfg": DictConfig({"batch": 32}),
        "train": TrainConfig(),
        "activation": nn.Tanh,
    }


def _lightning_namespaces() -> list[Namespaced]:
    return [
        Namespaced("lightning.fabric.utilities.data", AttributeDict=AttributeDict),
        Namespaced("omegaconf.base", ContainerMetadata=ContainerMetadata),
        Namespaced("omegaconf.dictconfig", DictConfig=DictConfig),
        Namespaced("__main__", TrainConfig=TrainConfig),
    ]


def lightning_ckpt(
    path: Path,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    hyper_parameters: Any = None,
    *,
    rich: bool = False,
    **more: Any,
) -> Path:
    """A Trainer.save_checkpoint file: state_dict, loops, callbacks, optimizer and LR
    scheduler states, hyper_parameters (default: one holding an argparse.Namespace;
    ``rich``: :func:`rich_hyper_parameters`); ``more`` adds top-level keys."""
    model, opt, sched = trained()
    if rich:
        hyper_parameters = rich_hyper_parameters()
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state_dict if state_dict is not None else model.state_dict(),
        "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': None, 'mode': 'min'}": {"best_model_score": None}
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters
        if hyper_parameters is not None
        else {"args": argparse.Namespace(lr=0.001, layers=2), "seed": 0},
        **more,
    }
    # The fake modules only around the save: torch's optimizer imports dynamo, which
    # looks up every module's spec.
    with contextlib.ExitStack() as stack:
        for namespace in _lightning_namespaces() if rich else ():
            stack.enter_context(namespace)
        path.write_bytes(tsave(ckpt))
    return path


class IntervalStrategy(enum.Enum):
    """transformers' ``trainer_utils.IntervalStrategy``."""

    NO = "no"
    STEPS = "steps"


@dataclasses.dataclass
class TrainingArguments:
    """transformers' ``training_args.TrainingArguments``, three of its fields."""

    output_dir: str = "out"
    learning_rate: float = 5e-5
    eval_strategy: IntervalStrategy = IntervalStrategy.STEPS


def hf_checkpoint(
    folder: Path,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """A transformers.Trainer checkpoint-N directory with its five torch files (and
    ``config.json`` when ``config`` is given)."""
    folder.mkdir(parents=True, exist_ok=True)
    model, opt, sched = trained()
    (folder / "pytorch_model.bin").write_bytes(tsave(state_dict or model.state_dict()))
    (folder / "optimizer.pt").write_bytes(tsave(opt.state_dict()))
    (folder / "scheduler.pt").write_bytes(tsave(sched.state_dict()))
    rng = {
        "python": random.Random(0).getstate(),
        "numpy": np.random.RandomState(0).get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    (folder / "rng_state.pth").write_bytes(tsave(rng))
    with (
        Namespaced("transformers.trainer_utils", IntervalStrategy=IntervalStrategy),
        Namespaced("transformers.training_args", TrainingArguments=TrainingArguments),
    ):
        (folder / "training_args.bin").write_bytes(tsave(TrainingArguments()))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder
