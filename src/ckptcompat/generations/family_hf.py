"""Hugging Face transformers files by name: the model weights, and the Trainer's others.

``PreTrainedModel.save_pretrained(safe_serialization=False)`` writes ``pytorch_model.bin``
(a plain state_dict) beside ``config.json``; ``Trainer._save_checkpoint`` adds
``training_args.bin`` (a pickled ``TrainingArguments``), ``optimizer.pt``, ``scheduler.pt``,
``scaler.pt`` (state_dicts) and ``rng_state.pth`` (``rng_state_<rank>.pth`` per process:
python/numpy/cpu/cuda generator states). Only the first holds a model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ckptcompat import torch_compat
from ckptcompat.generations.family_read import (
    MAX_JSON_BYTES,
    FamilyRead,
    load_scanned,
    read_pickled,
    tensors_of,
)
from ckptcompat.generations.family_values import is_kept, json_primitive
from ckptcompat.scan import scan
from ckptcompat.scan.inert_placeholders import describe_root

__all__ = ["HF_MODEL", "not_a_model", "read_hf_model"]

#: The weights file of ``save_pretrained(safe_serialization=False)``.
HF_MODEL = "pytorch_model.bin"
#: transformers.Trainer files that hold no model (``Trainer._save_checkpoint``).
_HF_OTHER = {
    "training_args.bin": "the TrainingArguments a transformers.Trainer saves next to each "
    "checkpoint (a pickled transformers.training_args.TrainingArguments)",
    "optimizer.pt": "the optimizer state_dict of a transformers.Trainer checkpoint",
    "scheduler.pt": "the LR scheduler state_dict of a transformers.Trainer checkpoint",
    "scaler.pt": "the GradScaler state_dict of a transformers.Trainer checkpoint",
    "rng_state.pth": "the RNG states (python, numpy, cpu, cuda) of a transformers.Trainer "
    "checkpoint",
}
_RNG_SHARD = re.compile(r"^rng_state_\d+\.pth$")


def not_a_model(path: str | os.PathLike[str]) -> str | None:
    """What a Hugging Face Trainer file that holds no model is ("the optimizer state_dict
    of a transformers.Trainer checkpoint"); None when ``path`` is not one (another name, or
    its content is a state_dict of tensors after all)."""
    path = Path(path)
    what = _HF_OTHER.get(path.name)
    if what is None and _RNG_SHARD.match(path.name):
        what = _HF_OTHER["rng_state.pth"]
    if what is None:
        return None
    try:
        found = read_pickled(path)
    except OSError:
        return None
    if found is None:
        return what  # not a torch zip: still no model of ours to migrate
    shape = describe_root(found.root) if found.root is not None else None
    return None if shape is not None and shape.tensor_mapping else what


def read_hf_model(path: Path, trust: bool) -> FamilyRead:
    """The weights of a ``pytorch_model.bin`` and, as hyperparameters, the JSON object of
    the ``config.json`` beside it (a regular file; unread when absent or not an object).

    Raises:
        IncompatibleCheckpointError: not a state_dict of tensors.
        UnsafeCheckpointError, CorruptCheckpointError, LimitExceededError: see
            ``load_tensors``.
    """
    torch_compat.check_path(path)
    loaded, loader, stand_ins = load_scanned(path, scan.scan(path), trust)
    state_dict, dropped = tensors_of(loaded, "pytorch_model.bin", path)
    hparams: dict[str, Any] = {}
    reported: list[str] = []
    config = path.parent / "config.json"
    if config.is_file() and not config.is_symlink():
        if config.stat().st_size > MAX_JSON_BYTES:
            reported.append(f"config.json: over {MAX_JSON_BYTES} bytes, not read")
        else:
            try:
                parsed = json.loads(config.read_bytes())
            except (ValueError, RecursionError):
                parsed = None
            converted = json_primitive(parsed) if type(parsed) is dict else None
            if converted is None or not is_kept(converted):
                reported.append("config.json: not a JSON object, not read")
            else:
                hparams = converted
    return FamilyRead(
        "hf_model",
        "Hugging Face transformers",
        "model weights written by PreTrainedModel.save_pretrained(safe_serialization=False)"
        + (" with config.json" if hparams else ""),
        path,
        state_dict,
        hparams,
        tuple(reported),
        (),
        dropped,
        loader,
        stand_ins,
        None,
        None,
        path.parent.name or path.stem,
    )
