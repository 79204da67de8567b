"""Files other libraries write, recognised from their structure alone (issue 16 item 4).

Without the libraries installed and without unpickling anything:

* **stable-baselines3** ``.zip`` (``BaseAlgorithm.save`` ->
  ``stable_baselines3/common/save_util.py: save_to_zip_file``): a plain zip (no
  ``data.pkl``: not a ``torch.save`` file) of ``data`` (JSON; every value that is not JSON
  is ``{":type:", ":serialized:": base64(cloudpickle)}``), one ``<name>.pth`` per
  state_dict (``policy.pth``, ``policy.optimizer.pth``, each a ``torch.save`` file),
  ``pytorch_variables.pth``, ``_stable_baselines3_version`` and ``system_info.txt``.
  ``PPO.load`` runs every ``:serialized:`` entry with ``cloudpickle.loads``.
* **Lightning** ``.ckpt`` (``_CheckpointConnector.dump_checkpoint``): a dict with
  ``pytorch-lightning_version``, ``epoch``, ``global_step``, ``state_dict``, ``loops``, and
  unless ``weights_only`` ``callbacks``, ``optimizer_states``, ``lr_schedulers``; with
  ``save_hyperparameters`` ``hparams_name`` and ``hyper_parameters`` (Namespace,
  DictConfig, dataclasses, even modules).
* **Hugging Face** ``transformers.Trainer`` files by name: ``pytorch_model.bin`` (a
  state_dict), ``training_args.bin`` (a pickled ``TrainingArguments``), ``optimizer.pt``,
  ``scheduler.pt`` (state_dicts), ``rng_state.pth`` (``python``/``numpy``/``cpu``/``cuda``
  generator states).

:func:`recognise` says what the file is, which part blocks a weights-only load (the globals
under each top-level key, from the inert rebuild of :func:`ckptcompat.doctor.pickle_walk.
root_object`) and that library's fix. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import pickletools
from dataclasses import dataclass
from typing import Any

from ckptcompat.doctor.pickle_walk import _Sym
from ckptcompat.errors import CheckpointError
from ckptcompat.scan.archive_reader import ArchiveReader, BadZip
from ckptcompat.scan.danger import is_dangerous
from ckptcompat.scan.torch_names import WEIGHTS_ONLY_GLOBALS

__all__ = ["Family", "recognise"]

_MAX_MEMBERS = 64  # an SB3 archive has about six
_MAX_JSON_BYTES = 16 << 20
#: ``.pth`` members scanned for dangerous globals in memory (a policy of a few MB is usual).
_MAX_MEMBER_BYTES = 256 << 20
_SB3_MARKERS = ("_stable_baselines3_version", "policy.pth", "pytorch_variables.pth")
_LIGHTNING_KEYS = ("pytorch-lightning_version", "lightning_version")
_HF_FILES = {
    "pytorch_model.bin": "model weights written by PreTrainedModel.save_pretrained "
    "(safe_serialization=False)",
    "training_args.bin": "the TrainingArguments the Trainer saves next to each checkpoint",
    "optimizer.pt": "the optimizer state_dict of a transformers.Trainer checkpoint",
    "scheduler.pt": "the LR scheduler state_dict of a transformers.Trainer checkpoint",
    "rng_state.pth": "the RNG states (python, numpy, cpu, cuda) of a transformers.Trainer "
    "checkpoint",
}


@dataclass(frozen=True)
class Family:
    """A file another library wrote, as far as its structure tells.

    Attributes:
        library: ``"stable-baselines3"``, ``"Lightning"`` or ``"Hugging Face transformers"``.
        what: one phrase: what the file is.
        parts: the parts found (zip members, top-level keys), in file order.
        blockers: which part blocks a weights-only load and why; empty when none does.
        fix: what to do about it with that library (or without it).
        risks: parts that can run code or reach the system when that library loads the
            file (a dangerous global in a cloudpickle entry or in a ``.pth`` member of a
            stable-baselines3 zip, which torch's scan of the zip itself never sees); the
            doctor adds them to the file's risks.
    """

    library: str
    what: str
    parts: tuple[str, ...]
    blockers: tuple[str, ...]
    fix: str
    risks: tuple[str, ...] = ()


def _pickle_globals(blob: bytes) -> list[str]:
    """Globals a pickle names (GLOBAL/INST inline, STACK_GLOBAL from the last two strings)."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(blob):
            if op.name in ("GLOBAL", "INST"):
                names.append(".".join(str(arg).split(" ", 1)))
            elif isinstance(arg, str):
                strings = [*strings[-1:], arg]
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                names.append(".".join(strings))
    except (ValueError, EOFError, OverflowError):
        names.append("<unreadable pickle>")
    return list(dict.fromkeys(names))


def _sb3(path: str) -> Family | None:
    try:
        reader = ArchiveReader(path)
    except (BadZip, OSError, ValueError):
        return None
    try:
        entries = reader.zip_entries()
        names = [e.name for e in entries]
        if (
            len(entries) > _MAX_MEMBERS
            or "data" not in names
            or not any(m in names for m in _SB3_MARKERS)
            or any(n.endswith("data.pkl") for n in names)
        ):
            return None
        by_name = {e.name: e for e in entries}
        version = "?"
        marker = by_name.get("_stable_baselines3_version")
        if marker is not None and marker.file_size < 64:
            version = reader.read_entry(marker).decode("utf-8", "replace").strip()
        member_risks = _member_risks(reader, [e for e in entries if e.name.endswith(".pth")])
        data_entry = by_name["data"]
        data: Any = None
        if data_entry.file_size <= _MAX_JSON_BYTES:
            try:
                data = json.loads(reader.read_entry(data_entry))
            except (ValueError, BadZip):
                data = None
    except BadZip:
        return None
    finally:
        reader.close()
    serialized: list[str] = []
    keys: list[str] = []
    risks = list(member_risks)
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict) and ":serialized:" in value:
                try:
                    blob = base64.b64decode(str(value[":serialized:"]), validate=False)
                except (binascii.Error, ValueError):
                    blob = b""
                named = _pickle_globals(blob)
                keys.append(str(key))
                serialized.append(f"{key} ({', '.join(named[:3]) or value.get(':type:', '?')})")
                bad = [g for g in named if is_dangerous(g)]
                if bad:
                    risks.append(
                        f"'data' entry {key!r} is a cloudpickle naming {', '.join(bad[:5])}, "
                        "which SB3's load runs: it can run code or reach the system"
                    )
    blockers = []
    if serialized:
        blockers.append(
            f"'data' holds {len(serialized)} cloudpickle entries that SB3's load runs with "
            f"cloudpickle.loads (code from the file, whatever torch's weights_only says): "
            + _listed(serialized, "; ")
        )
    if data is None:
        blockers.append("'data' is not readable JSON")
    pth = [n for n in names if n.endswith(".pth")]
    fix = (
        "for the weights only, no code: with zipfile.ZipFile(FILE) as z: "
        "state = torch.load(z.open('policy.pth'), weights_only=True) (each .pth member is a "
        "torch.save state_dict); with stable-baselines3, only for a file you trust: "
        "PPO.load(FILE, custom_objects={...}) with every serialized key replaced "
        f"({_listed(keys, ', ') or 'none'}) skips its cloudpickle; it still unpickles the "
        ".pth members with torch.load"
    )
    what = (
        f"a stable-baselines3 model archive (BaseAlgorithm.save, sb3 {version}): a zip of JSON "
        f"'data' and {len(pth)} torch.save member(s) ({', '.join(pth)}), not a torch.save file "
        "(torch.load(FILE) fails on every torch)"
    )
    return Family("stable-baselines3", what, tuple(names), tuple(blockers), fix, tuple(risks))


def _listed(items: list[str], sep: str, limit: int = 64) -> str:
    """Every item up to ``limit`` (a zip's ``data`` is bounded, but a line need not be)."""
    more = len(items) - limit
    return sep.join(items[:limit]) + (f"{sep}and {more} more" if more > 0 else "")


def _member_risks(reader: ArchiveReader, members: list[Any]) -> list[str]:
    """Dangerous globals in the ``.pth`` members of a stable-baselines3 zip (each a
    ``torch.save`` file SB3 loads with ``torch.load``), from the static scan of each
    member; a member past :data:`_MAX_MEMBER_BYTES` is reported as not scanned."""
    from ckptcompat.scan import scan as scan_module

    out = []
    for entry in members[:_MAX_MEMBERS]:
        if entry.file_size > _MAX_MEMBER_BYTES:
            out.append(
                f"member {entry.name} ({entry.file_size} bytes) was not scanned for "
                "dangerous globals: load it only if you trust the file"
            )
            continue
        try:
            result = scan_module.scan(io.BytesIO(reader.read_entry(entry)))
        except (BadZip, OSError, ValueError, CheckpointError) as exc:
            out.append(f"member {entry.name} could not be scanned ({type(exc).__name__})")
            continue
        bad = [g for g in result.globals if is_dangerous(g)]
        if bad:
            out.append(
                f"member {entry.name} names {', '.join(bad[:5])}: SB3's torch.load of it "
                "(and migrate --trust) can run code or reach the system"
            )
    return out


def _origins(obj: Any, out: list[str], depth: int = 0) -> None:
    """Globals of the inert objects inside ``obj`` (outermost first), bounded depth."""
    if depth > 50 or len(out) > 200:
        return
    if isinstance(obj, _Sym):
        if obj.kind != "global" or obj.origin not in out:
            out.append(obj.origin)
        for child in (*obj.keys, *obj.items):
            _origins(child, out, depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _origins(key, out, depth + 1)
            _origins(value, out, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for child in obj:
            _origins(child, out, depth + 1)


def _blocking_parts(root: dict[Any, Any], default_globals: frozenset[str]) -> list[str]:
    """``"hyper_parameters: argparse.Namespace"`` for each top-level key holding globals
    that torch's weights-only unpickler refuses by default."""
    out = []
    for key, value in root.items():
        found: list[str] = []
        _origins(value, found)
        refused = [g for g in dict.fromkeys(found) if g not in default_globals and "<" not in g]
        if refused:
            out.append(f"{key}: {', '.join(refused[:5])}")
    return out


def _lightning(root: dict[Any, Any], default_globals: frozenset[str]) -> Family:
    version = next((root[k] for k in _LIGHTNING_KEYS if k in root), "?")
    parts = tuple(str(k) for k in root)
    blocking = _blocking_parts(root, default_globals)
    trainer_keys = [
        k for k in ("optimizer_states", "lr_schedulers", "loops", "callbacks") if k in root
    ]
    what = (
        f"a Lightning checkpoint (Trainer.save_checkpoint, lightning {version}): state_dict"
        + (f" plus {', '.join(trainer_keys)}" if trainer_keys else "")
        + (" and hyper_parameters" if "hyper_parameters" in root else "")
    )
    blockers = tuple(f"{b} (refused by weights_only unless allowlisted)" for b in blocking)
    fix = (
        "allowlist those classes if you trust them and load with "
        "Model.load_from_checkpoint(FILE) (or torch.load(FILE, weights_only=True)); better, "
        "save JSON-primitive hyperparameters (save_hyperparameters() of plain values, "
        "vars(namespace), OmegaConf.to_container(cfg)) or take only checkpoint['state_dict'] "
        "through `ckptcompat migrate`"
        if blockers
        else "loads with weights_only=True as is (Model.load_from_checkpoint(FILE))"
    )
    return Family("Lightning", what, parts, blockers, fix)


def _huggingface(
    name: str, root: Any, globals_: tuple[str, ...], default_globals: frozenset[str]
) -> Family | None:
    refused = [g for g in globals_ if g not in default_globals]
    hf = any(g.startswith("transformers.") for g in globals_)
    if name == "training_args.bin" and not hf:
        return None
    if name == "rng_state.pth" and not (isinstance(root, dict) and "python" in root):
        return None
    parts = tuple(str(k) for k in root) if isinstance(root, dict) else ()
    if name == "rng_state.pth" and isinstance(root, dict):
        blockers = tuple(f"{b}" for b in _blocking_parts(root, default_globals))
    else:
        blockers = (f"the pickle names {', '.join(refused[:5])}",) if refused else ()
    fixes = {
        "training_args.bin": "the Trainer does not need it to resume (your script builds the "
        "TrainingArguments); to read it, allowlist transformers.training_args."
        "TrainingArguments and the enums it names if you trust the file, or read "
        "trainer_state.json / the args' to_json_string() instead",
        "rng_state.pth": "newer transformers load it inside their safe_globals() context "
        "(the numpy classes); with an older transformers on torch >= 2.6, allowlist the "
        "entries the doctor lists below before trainer.train(resume_from_checkpoint=...)",
        "pytorch_model.bin": "loads with weights_only=True (from_pretrained does); re-save "
        "with save_pretrained(safe_serialization=True) for model.safetensors",
    }
    fix = fixes.get(name, "loads with weights_only=True as is")
    if blockers and name not in fixes:
        fix = "allowlist the entries below if you trust the file"
    return Family("Hugging Face transformers", _HF_FILES[name], parts, blockers, fix)


def recognise(
    path: str | os.PathLike[str],
    kind: str,
    root: Any,
    globals_: tuple[str, ...],
    default_globals: frozenset[str] = WEIGHTS_ONLY_GLOBALS,
    records: tuple[str, ...] | None = None,
) -> Family | None:
    """Which library wrote ``path``, from its structure alone; None when none is recognised.

    Args:
        path: the file.
        kind: its container kind from the scan (``zip``, ``legacy_pickle`` ...).
        root: its top-level object, rebuilt inertly (:func:`~ckptcompat.doctor.pickle_walk.
            root_object`); None when unknown.
        globals_: every global its pickle names.
        default_globals: what torch's weights-only unpickler allows without an allowlist
            (default: the union over 2.4-2.15, :data:`~ckptcompat.scan.torch_names.
            WEIGHTS_ONLY_GLOBALS`).
        records: the zip's record names when the caller has read them (the scan's
            ``records``): a zip holding a ``data.pkl`` record is not a stable-baselines3
            archive (:func:`_sb3` refuses it on that very test), so it is not opened again.
            None: open it and look.

    Raises:
        OSError: the path itself cannot be read.
    """
    name = os.path.basename(os.fspath(path))
    torch_zip = records is not None and any(n.endswith("data.pkl") for n in records)
    if kind == "zip" and root is None and not torch_zip:
        found = _sb3(os.fspath(path))
        if found is not None:
            return found
    if isinstance(root, dict) and any(k in root for k in _LIGHTNING_KEYS) and "state_dict" in root:
        return _lightning(root, default_globals)
    if name in _HF_FILES:
        return _huggingface(name, root, globals_, default_globals)
    return None
