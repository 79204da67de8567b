"""A checked safetensors file -> a state_dict of CPU tensors, with ``torch.frombuffer``.

Nothing is unpickled: the header is checked by :mod:`.safetensors_header` first, then each
tensor is a copy of its byte range viewed with the dtype the header names (little-endian;
``torch.frombuffer`` exists in every torch this project supports, 1.10+). A dtype the
running torch lacks (``float8_e8m0fnu`` before 2.7, ``float4_e2m1fn_x2`` before 2.8: the
``dtypes`` rows of :mod:`ckptcompat.versions_facts`; torch PRs #147466 and #148791) is an
:class:`~ckptcompat.errors.IncompatibleCheckpointError`, as is ``F6_*`` (no torch dtype).

``F4`` (two 4-bit values a byte) is built as ``safetensors.torch.load_file`` builds it
(safetensors 0.6.1 ... 0.8.0 on torch 2.15, probed in issue 22): header shape ``[..., n]``
becomes a ``float4_e2m1fn_x2`` tensor of shape ``[..., n / 2]`` over the same bytes; an odd
``n`` or a scalar is refused.
"""

from __future__ import annotations

import sys

import torch

from ckptcompat.errors import IncompatibleCheckpointError
from ckptcompat.generations.safetensors_header import SafetensorsHeader, TensorEntry, parse_header

__all__ = ["load_safetensors"]


def _incompatible(entry: TensorEntry, path: str | None, why: str) -> IncompatibleCheckpointError:
    return IncompatibleCheckpointError(
        f"tensor {entry.name!r} has dtype {entry.dtype.name}, which this torch cannot build",
        path=path,
        expected=f"torch.{entry.dtype.torch_name or entry.dtype.name.lower()} ({why})",
        found=f"torch {torch.__version__}",
        fix="load it with a newer torch, or convert the tensor before exporting",
    )


def _torch_dtype(entry: TensorEntry, path: str | None) -> torch.dtype:
    dtype = getattr(torch, entry.dtype.torch_name, None) if entry.dtype.torch_name else None
    if not isinstance(dtype, torch.dtype):
        raise _incompatible(entry, path, "a torch dtype of that name")
    return dtype


def _shape(entry: TensorEntry, path: str | None) -> tuple[int, ...]:
    """The torch shape: the header's, with F4's last dimension halved (two a byte)."""
    if entry.dtype.bits >= 8:
        return entry.shape
    if entry.dtype.bits != 4 or not entry.shape or entry.shape[-1] % 2:
        raise _incompatible(entry, path, "F4 with an even last dimension")
    return (*entry.shape[:-1], entry.shape[-1] // 2)


def _tensor(buffer: bytearray, start: int, entry: TensorEntry, path: str | None) -> torch.Tensor:
    dtype = _torch_dtype(entry, path)
    shape = _shape(entry, path)
    if entry.end == entry.begin:
        return torch.empty(shape, dtype=dtype)
    if entry.dtype.bits < 8:  # frombuffer needs a dtype it can count: view the bytes
        raw = torch.frombuffer(buffer, dtype=torch.uint8, count=entry.end - entry.begin,
                               offset=start + entry.begin)  # fmt: skip
        return raw.view(dtype).reshape(shape).clone()
    flat = torch.frombuffer(buffer, dtype=dtype, count=entry.numel, offset=start + entry.begin)
    return flat.reshape(shape).clone()


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
        IncompatibleCheckpointError: an unknown dtype, one this torch lacks (``F6_*``: every
            torch), ``F4`` with an odd last dimension, or a big-endian machine.
    """
    checked = parse_header(data, len(data), path=path)  # duplicate keys: refused
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
