"""Metta's G3 (``.mpt``) and G4 (bundle) files, written the way Metta's own writers write them.

The writers this module follows (Metta-AI/metta, read through the public repository):

* safetensors bytes: ``safetensors.torch.save(state_dict)`` after Metta's
  ``prepare_state_dict_for_save`` (``detach().cpu()``, a tensor sharing another's storage
  cloned). The layout is the reference serializer's (``prepare`` in safetensors'
  ``tensor.rs``): tensors sorted by descending dtype (the ``Dtype`` enum order, i.e.
  alignment), then by name; a compact JSON header (``serde_json``, no spaces) mapping each
  name to ``{"dtype", "shape", "data_offsets"}`` in that order, ``__metadata__`` first when
  given (Metta gives none); the header padded with spaces to a multiple of 8 bytes; the
  8-byte little-endian header length first; then the raw little-endian data.
* the architecture string: ``PolicyArchitecture.to_spec()`` /
  ``policy_architecture_to_string`` (``metta/rl/policy_serialization.py``): the class path,
  then ``key=repr(value)`` for every config key in sorted order, dicts sorted by key at
  every depth, joined by ``", "``.
* G3 ``.mpt`` (``save_policy_artifact``, 6ddad6cebc, October 2025; moved to mettagrid in
  793e02d3fd): a ``ZIP_DEFLATED`` zip with ``writestr("weights.safetensors", ...)`` then
  ``writestr("modelarchitecture.txt", ...)`` at the zip's root.
* G4 bundle (``write_checkpoint_bundle``, 7eb0994b9c, January 2026): a directory
  ``<run>:v<epoch>/`` holding ``weights.safetensors`` and ``policy_spec.json``, the
  pydantic ``SubmissionPolicySpec.model_dump_json()`` of ``{class_path: the architecture
  string up to its first "(", data_path: "weights.safetensors", init_kwargs:
  {architecture_spec: the string}, setup_script: null}`` (compact JSON, fields in that
  order); ``trainer_state.pt`` beside them from 47b0d081ad (``torch.save({"optimizer",
  "epoch", "agent_step"})``). The zip form is ``write_policy_bundle_zip``: every file of
  the directory, ``ZIP_DEFLATED``, at the zip's root.

Two deliberate differences, both for committed goldens: zip members get a fixed timestamp
(:data:`ZIP_DATE_TIME`, ``SOURCE_DATE_EPOCH``'s date) instead of the writing time and are
written in sorted order (Metta's ``rglob`` order is the file system's); and names use
``<run>_v<epoch>`` (which Metta's readers also accept) rather than ``<run>:v<epoch>``, which
a Windows checkout of this repository could not hold.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from ckptcompat import torch_compat

__all__ = [
    "ARCHITECTURE_NAME",
    "SPEC_NAME",
    "TRAINER_STATE_NAME",
    "WEIGHTS_NAME",
    "ZIP_DATE_TIME",
    "architecture_spec",
    "bundle_members",
    "mpt_bytes",
    "policy_spec_json",
    "safetensors_bytes",
    "trainer_state_bytes",
    "zip_bytes",
]

WEIGHTS_NAME = "weights.safetensors"
ARCHITECTURE_NAME = "modelarchitecture.txt"
SPEC_NAME = "policy_spec.json"
TRAINER_STATE_NAME = "trainer_state.pt"
#: The timestamp of every zip member: 2025-01-01 00:00:00, the goldens' SOURCE_DATE_EPOCH.
ZIP_DATE_TIME = (2025, 1, 1, 0, 0, 0)

#: torch dtype -> (safetensors name, rank in safetensors' ``Dtype`` enum: BOOL, U8, I8,
#: F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64).
_DTYPES: dict[torch.dtype, tuple[str, int]] = {
    torch.bool: ("BOOL", 0), torch.uint8: ("U8", 1), torch.int8: ("I8", 2),
    torch.int16: ("I16", 5), torch.float16: ("F16", 7), torch.bfloat16: ("BF16", 8),
    torch.int32: ("I32", 9), torch.float32: ("F32", 11), torch.float64: ("F64", 12),
    torch.int64: ("I64", 13),
}  # fmt: skip


def _prepared(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Metta's ``prepare_state_dict_for_save``: detached CPU tensors, shared storage cloned."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state_dict.items():
        value = tensor.detach().cpu()
        if value.data_ptr() in seen:
            value = value.clone()
        else:
            seen.add(value.data_ptr())
        out[name] = value
    return out


def safetensors_bytes(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """The safetensors file of ``state_dict``, laid out as ``safetensors.torch.save`` does.

    Args:
        state_dict: name -> tensor of a dtype in ``_DTYPES`` (any device; copied to CPU).

    Returns:
        The whole file: ``<u64 LE N><N bytes of JSON, space-padded to 8><data>``.

    Raises:
        TypeError: a value is not a tensor or has a dtype this writer does not emit.
    """
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dtype not in _DTYPES:
            found = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise TypeError(
                f"{name}: cannot write {found} as safetensors; expected a tensor of "
                f"{', '.join(sorted(str(d) for d in _DTYPES))}"
            )
    tensors = _prepared(state_dict)
    order = sorted(tensors, key=lambda n: (-_DTYPES[tensors[n].dtype][1], n))
    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in order:
        tensor = tensors[name].contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": _DTYPES[tensor.dtype][0],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def _sorted_structure(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted_structure(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_structure(item) for item in value]
    return value


def architecture_spec(class_path: str, config: Mapping[str, Any]) -> str:
    """``class_path(key=repr(value), ...)``, keys sorted, as Metta's ``to_spec()``.

    ``config`` holds JSON primitives (our agents' ``config``); an empty one gives the bare
    class path, as Metta's does.
    """
    if not config:
        return class_path
    ordered = _sorted_structure(dict(config))
    return f"{class_path}({', '.join(f'{k}={ordered[k]!r}' for k in sorted(ordered))})"


def policy_spec_json(architecture: str) -> bytes:
    """``policy_spec.json`` as ``SubmissionPolicySpec(...).model_dump_json()`` writes it."""
    spec = {
        "class_path": architecture.split("(", 1)[0].strip(),
        "data_path": WEIGHTS_NAME,
        "init_kwargs": {"architecture_spec": architecture},
        "setup_script": None,
    }
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def trainer_state_bytes(optimizer_state: Mapping[str, Any], epoch: int, agent_step: int) -> bytes:
    """``trainer_state.pt``: ``torch.save({"optimizer", "epoch", "agent_step"})`` (Metta's
    ``save_trainer_state``), written to a file object so its records sit under ``archive/``."""
    buffer = io.BytesIO()
    state = {"optimizer": dict(optimizer_state), "epoch": epoch, "agent_step": agent_step}
    torch_compat.save(state, buffer)
    return buffer.getvalue()


def zip_bytes(members: Mapping[str, bytes], *, file_mode: int | None = None) -> bytes:
    """A ``ZIP_DEFLATED`` zip of ``members`` at its root, in the given order.

    Args:
        members: member name -> bytes.
        file_mode: the Unix mode recorded per member: ``None`` for ``writestr``'s
            (``0o600``), or e.g. ``0o100644`` for ``ZipFile.write`` of a regular file.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o600 if file_mode is None else file_mode) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def mpt_bytes(weights: bytes, architecture: str) -> bytes:
    """A G3 ``.mpt``: ``weights.safetensors`` then ``modelarchitecture.txt``, via ``writestr``."""
    return zip_bytes({WEIGHTS_NAME: weights, ARCHITECTURE_NAME: architecture.encode("utf-8")})


def bundle_members(
    weights: bytes, architecture: str, trainer_state: bytes | None = None
) -> dict[str, bytes]:
    """The files of a G4 bundle directory, by name, sorted (the zip's member order)."""
    members = {SPEC_NAME: policy_spec_json(architecture), WEIGHTS_NAME: weights}
    if trainer_state is not None:
        members[TRAINER_STATE_NAME] = trainer_state
    return dict(sorted(members.items()))
