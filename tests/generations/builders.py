"""Tiny G3 (``.mpt``) and G4 (bundle) files written in code, per the formats' descriptions.

The safetensors bytes follow the specification (an 8-byte little-endian header length, the
JSON header, the row-major little-endian data buffer); the architecture string is the Python
call ``ckptcompat.agents.mlp.MLPAgent(**config)`` of a tiny agent of ours, written with
``repr`` of each keyword's value, as Metta writes its own.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckptcompat.agents.mlp import MLPAgent

__all__ = ["architecture_of", "safetensors_bytes", "tiny_agent", "write_bundle", "write_mpt"]

_NAMES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip


def tiny_agent(seed: int = 0) -> MLPAgent:
    """An MLPAgent over a Box(4,) observation and Discrete(3) action, hidden width 8."""
    torch.manual_seed(seed)
    agent = MLPAgent(
        {"type": "Box", "low": -1.0, "high": 1.0, "shape": [4], "dtype": "float32"},
        {"type": "Discrete", "n": 3},
        hidden_sizes=[8],
    )
    with torch.no_grad():  # non-trivial normaliser buffers, so a lost buffer shows
        agent.obs_mean.add_(0.25)
        agent.obs_count.add_(7)
    return agent


def safetensors_bytes(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> bytes:
    """The safetensors file of ``tensors`` (CPU, contiguous), offsets in the given order."""
    header: dict[str, Any] = {}
    chunks = []
    offset = 0
    for name, tensor in tensors.items():
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the reference writer pads to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def architecture_of(agent: nn.Module, name: str | None = None) -> str:
    """``pkg.Class(key=repr(value), ...)`` of the agent's config."""
    cls = type(agent)
    callee = name or f"{cls.__module__}.{cls.__qualname__}"
    args = ", ".join(f"{k}={v!r}" for k, v in agent.config.items())  # type: ignore[union-attr]
    return f"{callee}({args})"


def write_mpt(path: Path, agent: nn.Module, *, architecture: str | None = None) -> Path:
    """A G3 ``.mpt``: a zip of ``weights.safetensors`` and ``modelarchitecture.txt``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("weights.safetensors", safetensors_bytes(agent.state_dict()))
        zf.writestr("modelarchitecture.txt", architecture or architecture_of(agent))
    return path


def write_bundle(
    path: Path,
    agent: nn.Module,
    *,
    as_zip: bool = False,
    architecture: str | None = None,
    trainer_state: bytes | None = None,
    spec: dict[str, Any] | None = None,
) -> Path:
    """A G4 bundle (a directory, or a zip when ``as_zip``): weights, spec, trainer state."""
    spec = spec or {
        "class_path": "metta.agent.policy.CheckpointPolicy",
        "data_path": "weights.safetensors",
        "init_kwargs": {"architecture_spec": architecture or architecture_of(agent)},
    }
    members = {
        "weights.safetensors": safetensors_bytes(agent.state_dict()),
        "policy_spec.json": json.dumps(spec).encode(),
    }
    if trainer_state is not None:
        members["trainer_state.pt"] = trainer_state
    if as_zip:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        path.mkdir()
        for name, data in members.items():
            (path / name).write_bytes(data)
    return path
