"""A checked safetensors file -> a state_dict of CPU tensors, with ``torch.frombuffer``.

Nothing is unpickled: the header is checked by :mod:`.safetensors_header` first, then each
tensor is a copy of its byte range viewed with the dtype the header names (little-endian;
``torch.frombuffer`` exists in every torch this project supports, 1.10+). A dtype the
running torch lacks (``float8_e8m0fnu`` before 2.7, ``float4_e2m1fn_x2`` before 2.8: the
``dtypes`` rows of :mod:`ckptcompat.versions_facts`) is an
:class:`~ckptcompat.errors.IncompatibleCheckpointError`.
"""

from __future__ import annotations

import sys

import torch

from ckptcompat.errors import IncompatibleCheckpointError
from ckptcompat.generations.safetensors_header import SafetensorsHeader, TensorEntry, parse_header

__all__ = ["load_safetensors"]


def _torch_dtype(entry: TensorEntry, path: str | None) -> torch.dtype:
    dtype = getattr(torch, entry.dtype.torch_name, None)
    if not isinstance(dtype, torch.dtype) or entry.dtype.bits < 8:
        raise IncompatibleCheckpointError(
            f"tensor {entry.name!r} has dtype {entry.dtype.name}, which this torch cannot build",
            path=path,
            expected=f"torch.{entry.dtype.torch_name} (with byte-sized elements)",
            found=f"torch {torch.__version__}",
            fix="load it with a newer torch, or convert the tensor before exporting",
        )
    return dtype


def _tensor(buffer: bytearray, start: int, entry: TensorEntry, path: str | None) -> torch.Tensor:
    dtype = _torch_dtype(entry, path)
    if entry.numel == 0:
        return torch.empty(entry.shape, dtype=dtype)
    flat = torch.frombuffer(buffer, dtype=dtype, count=entry.numel, offset=start + entry.begin)
    return flat.reshape(entry.shape).clone()


def load_safetensors(
    data: bytes, *, path: str | None = None, header: SafetensorsHeader | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a whole safetensors file, by name, in the header's data order.

    Args:
        data: the file's bytes.
        path: for error messages.
        header: ``data``'s header if already checked (it is checked again against ``data``'s
            length either way).

    Returns:
        ``{name: tensor}``: CPU tensors of the header's shapes and dtypes, each owning its
        memory (no view of ``data`` survives).

    Raises:
        CorruptCheckpointError, LimitExceededError: see
            :func:`~ckptcompat.generations.safetensors_header.parse_header`.
        IncompatibleCheckpointError: an unknown dtype, one this torch lacks, the packed
            ``F4`` (not built by this reader), or a big-endian machine.
    """
    checked = parse_header(data, len(data), path=path)
    if header is not None and header != checked:
        raise IncompatibleCheckpointError("the weights changed since their header was read")
    if sys.byteorder != "little":
        raise IncompatibleCheckpointError(
            "safetensors data is little-endian; this machine is not",
            path=path,
            fix="convert the file on a little-endian machine",
        )
    buffer = bytearray(data)  # writable: frombuffer warns on a read-only buffer
    return {e.name: _tensor(buffer, checked.data_start, e, path) for e in checked.tensors}
