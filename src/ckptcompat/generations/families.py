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
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptcompat import torch_compat
from ckptcompat.errors import (
    CheckpointError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    LimitExceededError,
)
from ckptcompat.generations.family_values import describe_objects, is_kept, json_primitive
from ckptcompat.generations.stand_ins import load_tensors
from ckptcompat.scan import scan
from ckptcompat.scan.archive_reader import ArchiveReader, BadZip, ZipEntry
from ckptcompat.scan.inert_placeholders import describe_root
from ckptcompat.scan.inert_unpickler import inert_load
from ckptcompat.scan.limits import (
    MAX_COMPRESSION_RATIO,
    MAX_INFLATED_BYTES,
    MAX_PICKLE_BYTES,
    limit_error,
)
from ckptcompat.scan.pickle_scan import scan_pickle

__all__ = ["FamilyRead", "detect_family", "not_a_model", "read_family"]

_LIGHTNING_KEYS = ("pytorch-lightning_version", "lightning_version")
#: Top-level Lightning keys that are not trainer state (the rest is left behind).
_LIGHTNING_META = frozenset(
    {"epoch", "global_step", "state_dict", "hyper_parameters", "hparams_name", *_LIGHTNING_KEYS}
)
_SB3_MARKERS = ("_stable_baselines3_version", "policy.pth", "pytorch_variables.pth")
_MAX_JSON_BYTES = 16 << 20
_MAX_MEMBERS = 64  # an SB3 archive has about six
_HF_MODEL = "pytorch_model.bin"
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


@dataclass(frozen=True)
class FamilyRead:
    """What :func:`read_family` took from a file another library wrote.

    Attributes:
        family: ``"lightning"``, ``"sb3"`` or ``"hf_model"``.
        library: ``"Lightning"``, ``"stable-baselines3"``, ``"Hugging Face transformers"``.
        what: one phrase: what the file is (library version when it says).
        path: the file read.
        state_dict: the weights, name -> CPU tensor, as saved (no prefix stripped).
        hyperparameters: the JSON-primitive hyperparameters, by the file's own names.
        reported: pickled objects found and not run, ``"where: globals"`` each.
        left_behind: parts that are not weights or hyperparameters (trainer state).
        dropped: state_dict entries that are not tensors, ``"key: what"`` each.
        loader: ``"safe"``, ``"allowlist"`` (inert stand-ins) or ``"trusted"``.
        stand_ins: the globals read as inert stand-ins.
        epoch, agent_step: what the file says of training, None when it says nothing.
        run: a run name from the file's name (its folder for Hugging Face's fixed names).
    """

    family: str
    library: str
    what: str
    path: Path
    state_dict: dict[str, torch.Tensor]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    reported: tuple[str, ...] = ()
    left_behind: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    loader: str = "safe"
    stand_ins: tuple[str, ...] = ()
    epoch: int | None = None
    agent_step: int | None = None
    run: str | None = None


@dataclass(frozen=True)
class _Pickled:
    """A ``torch.save`` zip, scanned, and its object pickle rebuilt inertly."""

    path: Path
    result: Any  # ScanResult
    root: Any  # the inert root object (plain data and placeholders), None if unreadable


def _data_pkl(reader: ArchiveReader, prefix: str | None) -> bytes | None:
    wanted = f"{prefix}/data.pkl" if prefix else "data.pkl"
    entry = next((e for e in reader.zip_entries() if e.name == wanted), None)
    if entry is None or entry.file_size > MAX_PICKLE_BYTES:
        return None
    return reader.read_entry(entry)


def _pickled(path: Path, markers: tuple[bytes, ...] = ()) -> _Pickled | None:
    """Scan ``path``; rebuild its object pickle inertly when it is a torch zip (and, with
    ``markers``, only when the pickle holds one of them). None otherwise."""
    result = scan.scan(path)
    if result.kind != "zip" or "limit_exceeded" in result.codes():
        return None
    reader = ArchiveReader(path)
    try:
        data = _data_pkl(reader, result.prefix)
    except BadZip:
        data = None
    finally:
        reader.close()
    if data is None or (markers and not any(m in data for m in markers)):
        return None
    vetted = scan_pickle(data)  # the same bytes the inert pass reads: EXT, memo, depth
    if not vetted.completed or vetted.end is None:
        return _Pickled(path, result, None)
    _rec, root, error = inert_load(data[vetted.start : vetted.end])
    return _Pickled(path, result, None if error is not None else root)


def _is_sb3(path: Path) -> bool:
    try:
        reader = ArchiveReader(path)
    except (BadZip, OSError, ValueError):
        return False
    try:
        names = [e.name for e in reader.zip_entries()]
    except BadZip:
        return False
    finally:
        reader.close()
    return (
        len(names) <= _MAX_MEMBERS
        and "data" in names
        and any(m in names for m in _SB3_MARKERS)
        and not any(n.endswith("data.pkl") for n in names)
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
    if path.name == _HF_MODEL:
        return "hf_model"
    if path.name in _HF_OTHER or _RNG_SHARD.match(path.name):
        return "hf_other" if not_a_model(path) is not None else None
    if _is_sb3(path):
        return "sb3"
    found = _pickled(path, tuple(k.encode() for k in _LIGHTNING_KEYS))
    if found is not None and _is_lightning(found.root):
        return "lightning"
    return None


def _is_lightning(root: Any) -> bool:
    return type(root) is dict and "state_dict" in root and any(k in root for k in _LIGHTNING_KEYS)


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
        found = _pickled(path)
    except OSError:
        return None
    if found is None:
        return what  # not a torch zip: still no model of ours to migrate
    shape = describe_root(found.root) if found.root is not None else None
    return None if shape is not None and shape.tensor_mapping else what


def _tensors(obj: Any, where: str, path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The tensor entries of a loaded mapping, and the dropped ones (``"key: type"``)."""
    if not isinstance(obj, dict):  # OrderedDict too
        raise IncompatibleCheckpointError(
            f"the file's {where} is not a state_dict",
            path=path,
            expected="a mapping of parameter names to tensors",
            found=f"{type(obj).__module__}.{type(obj).__qualname__}",
            fix="run `ckptcompat doctor FILE` to see what it holds",
        )
    kept, dropped = {}, []
    for key, value in obj.items():
        if type(key) is str and isinstance(value, torch.Tensor):
            kept[key] = value
        else:
            dropped.append(f"{key!r}: {type(value).__qualname__}")
    if not kept:
        raise IncompatibleCheckpointError(
            f"the file's {where} holds no tensors",
            path=path,
            expected="a mapping of parameter names to tensors",
            found=f"{len(dropped)} entries, none a tensor",
            fix="run `ckptcompat doctor FILE` to see what it holds",
        )
    return kept, tuple(dropped)


def _int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _read_torch(found: _Pickled, trust: bool) -> tuple[Any, str, tuple[str, ...]]:
    result = found.result
    return load_tensors(
        found.path,
        result.globals,
        dict_like=result.setitem_targets,
        append_targets=result.append_targets,
        trust=trust,
    )


def _lightning(path: Path, trust: bool) -> FamilyRead:
    found = _pickled(path)
    if found is None or not _is_lightning(found.root):
        raise CorruptCheckpointError(
            "the Lightning checkpoint's object pickle cannot be read",
            path=path,
            expected="a torch.save zip whose pickle holds a dict with state_dict",
            fix="run `ckptcompat doctor FILE`",
        )
    root = found.root
    loaded, loader, stand_ins = _read_torch(found, trust)
    state_dict, dropped = _tensors(
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
        _int(root.get("epoch")),
        _int(root.get("global_step")),
        path.stem,
    )


def _member(reader: ArchiveReader, entry: ZipEntry, path: Path) -> bytes:
    if entry.method == 8 and (
        entry.file_size > MAX_INFLATED_BYTES
        or entry.file_size > MAX_COMPRESSION_RATIO * max(entry.compress_size, 1)
    ):
        raise limit_error(
            "max_inflated_bytes",
            f"{entry.name} inflates to {entry.file_size} bytes from {entry.compress_size}",
            path=str(path),
        )
    try:
        return reader.read_entry(entry)
    except BadZip as exc:
        raise CorruptCheckpointError(
            "a member of the stable-baselines3 archive cannot be read",
            path=path,
            found=str(exc),
            fix="restore the file from its source",
        ) from exc


def _serialized(value: Any) -> bool:
    if isinstance(value, dict):
        return ":serialized:" in value or any(_serialized(v) for v in value.values())
    if isinstance(value, list):
        return any(_serialized(v) for v in value)
    return False


def _cloudpickle_globals(entry: Any) -> str:
    blob = entry.get(":serialized:") if isinstance(entry, dict) else None
    try:
        raw = base64.b64decode(str(blob or ""), validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    names = list(scan_pickle(raw).globals[:4]) if raw else []
    kind = entry.get(":type:") if isinstance(entry, dict) else None
    return ", ".join(names) or str(kind or "unreadable")


def _sb3(path: Path, trust: bool) -> FamilyRead:
    reader = ArchiveReader(path)
    try:
        entries = {e.name: e for e in reader.zip_entries()}
        missing = [n for n in ("data", "policy.pth") if n not in entries]
        if missing:
            raise IncompatibleCheckpointError(
                "the stable-baselines3 archive has no " + " and no ".join(missing),
                path=path,
                expected="the members BaseAlgorithm.save writes: data, policy.pth, ...",
                found=", ".join(sorted(entries)[:10]),
                fix="save the model again with model.save(PATH)",
            )
        if entries["data"].file_size > _MAX_JSON_BYTES:
            raise LimitExceededError(
                f"the archive's 'data' member is over {_MAX_JSON_BYTES} bytes",
                limit="max_json_bytes",
                path=path,
                found=f"{entries['data'].file_size} bytes",
                fix="do not load it: SB3's own 'data' is a few kB",
            )
        raw_data = _member(reader, entries["data"], path)
        policy = _member(reader, entries["policy.pth"], path)
        version = entries.get("_stable_baselines3_version")
        sb3_version = (
            _member(reader, version, path).decode("utf-8", "replace").strip()[:32]
            if version is not None and version.file_size < 64
            else "?"
        )
        left = tuple(n for n in entries if n.endswith(".pth") and n != "policy.pth")
    except BadZip as exc:
        raise CorruptCheckpointError(
            "the stable-baselines3 archive's zip directory cannot be read",
            path=path,
            found=str(exc),
            fix="restore the file from its source",
        ) from exc
    finally:
        reader.close()
    try:
        data = json.loads(raw_data)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(
            "the archive's 'data' member is not JSON",
            path=path,
            found=f"{type(exc).__name__}: {str(exc)[:200]}",
            fix="restore the file from its source",
        ) from exc
    if type(data) is not dict:
        raise CorruptCheckpointError(
            "the archive's 'data' member is not a JSON object",
            path=path,
            found=type(data).__name__,
            fix="restore the file from its source",
        )
    hparams = {k: v for k, v in data.items() if not _serialized(v)}
    reported = tuple(
        f"data[{k!r}]: cloudpickle of {_cloudpickle_globals(v)} (not run)"
        for k, v in data.items()
        if _serialized(v)
    )
    member = io.BytesIO(policy)
    result = scan.scan(member)
    loaded, loader, stand_ins = load_tensors(
        member,
        result.globals,
        dict_like=result.setitem_targets,
        append_targets=result.append_targets,
        trust=trust,
    )
    state_dict, dropped = _tensors(loaded, "policy.pth", path)
    return FamilyRead(
        "sb3",
        "stable-baselines3",
        f"a stable-baselines3 model archive (BaseAlgorithm.save, sb3 {sb3_version})",
        path,
        state_dict,
        hparams,
        reported,
        left,
        dropped,
        loader,
        stand_ins,
        None,
        _int(data.get("num_timesteps")),
        path.stem,
    )


def _hf_model(path: Path, trust: bool) -> FamilyRead:
    torch_compat.check_path(path)
    result = scan.scan(path)
    loaded, loader, stand_ins = load_tensors(
        path,
        result.globals,
        dict_like=result.setitem_targets,
        append_targets=result.append_targets,
        trust=trust,
    )
    state_dict, dropped = _tensors(loaded, "pytorch_model.bin", path)
    hparams: dict[str, Any] = {}
    reported: list[str] = []
    config = path.parent / "config.json"
    if config.is_file() and not config.is_symlink():
        if config.stat().st_size > _MAX_JSON_BYTES:
            reported.append(f"config.json: over {_MAX_JSON_BYTES} bytes, not read")
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
    readers = {"lightning": _lightning, "sb3": _sb3, "hf_model": _hf_model}
    if family not in readers:
        raise CheckpointError(
            f"unknown file family {family!r}",
            expected=", ".join(readers),
            fix="pass what detect_family returned",
        )
    return readers[family](path, trust)
