"""Weights and plain hyperparameters out of files other libraries write, no code run.

Issue 16 ("Deliver" item 2). Three families, recognised from their structure (as
:mod:`ckptcompat.doctor.families` does for the doctor), each read without its library:

* **Lightning** ``.ckpt`` (``_CheckpointConnector.dump_checkpoint``): a dict with
  ``pytorch-lightning_version`` and ``state_dict``. Its tensors come from
  :func:`~ckptcompat.generations.stand_ins.load_tensors` (weights_only, inert stand-ins
  for the classes it names); ``hyper_parameters`` whose values are JSON primitives are
  kept, other values (Namespace, DictConfig, dataclasses, modules) are reported by the
  globals they name, read from the inert rebuild of the pickle
  (:func:`ckptcompat.scan.inert_unpickler.inert_load`), never built. ``optimizer_states``,
  ``lr_schedulers``, ``loops``, ``callbacks`` are trainer state: left behind, named.
* **stable-baselines3** ``.zip`` (``save_util.save_to_zip_file``): the weights are the
  ``policy.pth`` member (a ``torch.save`` state_dict); the JSON ``data`` entries that are
  not ``:serialized:`` are the hyperparameters; each ``:serialized:`` entry is cloudpickle
  (``PPO.load`` runs it): reported with the globals it names, never decoded further.
* **Hugging Face** ``pytorch_model.bin`` (``save_pretrained(safe_serialization=False)``): a
  plain state_dict, with ``config.json`` beside it as the hyperparameters. The Trainer's
  other files (``training_args.bin``, ``optimizer.pt``, ``scheduler.pt``,
  ``rng_state.pth``, ``scaler.pt``) are no model: :func:`not_a_model` says what each is.

This module recognises and dispatches, and reads Lightning; :mod:`.family_sb3` and
:mod:`.family_hf` read the other two, :mod:`.family_read` holds what they share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ckptcompat.errors import CheckpointError, CorruptCheckpointError, IncompatibleCheckpointError
from ckptcompat.generations.family_hf import HF_MODEL, not_a_model, read_hf_model
from ckptcompat.generations.family_read import (
    FamilyRead,
    count_or_none,
    load_scanned,
    read_pickled,
    tensors_of,
)
from ckptcompat.generations.family_sb3 import is_sb3, read_sb3
from ckptcompat.generations.family_values import describe_objects, is_kept, json_primitive

__all__ = ["FamilyRead", "detect_family", "not_a_model", "read_family"]

_LIGHTNING_KEYS = ("pytorch-lightning_version", "lightning_version")
#: Top-level Lightning keys that are not trainer state (the rest is left behind).
_LIGHTNING_META = frozenset(
    {"epoch", "global_step", "state_dict", "hyper_parameters", "hparams_name", *_LIGHTNING_KEYS}
)


def detect_family(path: str | os.PathLike[str]) -> str | None:
    """``"lightning"``, ``"sb3"``, ``"hf_model"`` or ``"hf_other"`` (a Trainer file that
    holds no model) for a file one of those libraries wrote; None for anything else.

    Reads the zip directory and, for a torch zip, its object pickle (bounded, nothing run).
    Never raises for the file's content; OSError for the path itself propagates.
    """
    path = Path(path)
    if not path.is_file():
        return None
    if path.name == HF_MODEL:
        return "hf_model"
    if not_a_model(path) is not None:
        return "hf_other"
    if is_sb3(path):
        return "sb3"
    found = read_pickled(path, tuple(k.encode() for k in _LIGHTNING_KEYS))
    if found is not None and _is_lightning(found.root):
        return "lightning"
    return None


def _is_lightning(root: Any) -> bool:
    return type(root) is dict and "state_dict" in root and any(k in root for k in _LIGHTNING_KEYS)


def _lightning(path: Path, trust: bool) -> FamilyRead:
    """Weights through inert stand-ins; hyperparameters and reports from the inert root."""
    found = read_pickled(path)
    if found is None or not _is_lightning(found.root):
        raise CorruptCheckpointError(
            "the Lightning checkpoint's object pickle cannot be read",
            path=path,
            expected="a torch.save zip whose pickle holds a dict with state_dict",
            fix="run `ckptcompat doctor FILE`",
        )
    root = found.root
    loaded, loader, stand_ins = load_scanned(found.path, found.result, trust)
    state_dict, dropped = tensors_of(
        loaded.get("state_dict") if isinstance(loaded, dict) else None, "state_dict", path
    )
    hparams, reported = {}, []
    given = root.get("hyper_parameters")
    if type(given) is dict:
        for key, value in given.items():
            converted = json_primitive(value)
            if type(key) is str and is_kept(converted):
                hparams[key] = converted
            else:
                reported.append(describe_objects(f"hyper_parameters[{key!r}]", value))
    elif given is not None:
        reported.append(describe_objects("hyper_parameters", given))
    for key, value in root.items():
        if key not in _LIGHTNING_META:
            line = describe_objects(str(key), value)
            if line is not None and "a tensor" not in line.split(": ", 1)[1].split(", "):
                reported.append(line)
    version = next((root[k] for k in _LIGHTNING_KEYS if k in root), "?")
    return FamilyRead(
        "lightning",
        "Lightning",
        f"a Lightning checkpoint (Trainer.save_checkpoint, lightning {version})",
        path,
        state_dict,
        hparams,
        tuple(r for r in reported if r is not None),
        tuple(str(k) for k in root if k not in _LIGHTNING_META),
        dropped,
        loader,
        stand_ins,
        count_or_none(root.get("epoch")),
        count_or_none(root.get("global_step")),
        path.stem,
    )


def read_family(path: str | os.PathLike[str], family: str, *, trust: bool = False) -> FamilyRead:
    """Read the weights and JSON-primitive hyperparameters of ``path``, of ``family``
    (from :func:`detect_family`); nothing the file names is imported or run unless
    ``trust`` and the weights-only read is refused.

    Raises:
        IncompatibleCheckpointError: a Trainer file holding no model ("not a model: this
            is ..."), a state_dict that is not one, an archive without ``policy.pth``.
        UnsafeCheckpointError: dangerous globals, or a read torch refuses, without
            ``trust`` (``.globals`` names them).
        CorruptCheckpointError, LimitExceededError: unreadable or oversized parts.
        CheckpointError: ``family`` is unknown.
    """
    path = Path(path)
    if family == "hf_other":
        what = not_a_model(path) or "a file with no model in it"
        raise IncompatibleCheckpointError(
            f"not a model: this is {what}",
            path=path,
            expected="model weights (pytorch_model.bin or model.safetensors)",
            found=path.name,
            fix="migrate the pytorch_model.bin of the same checkpoint folder; "
            "`ckptcompat doctor FILE` explains this file",
        )
    readers = {"lightning": _lightning, "sb3": read_sb3, "hf_model": read_hf_model}
    if family not in readers:
        raise CheckpointError(
            f"unknown file family {family!r}",
            expected=", ".join(readers),
            fix="pass what detect_family returned",
        )
    return readers[family](path, trust)
