"""What torch's weights-only refusals mean, and the ckptcompat error each load failure becomes.

:func:`parse_weights_only_error` gives a structured :class:`WeightsOnlyFailure` across the
message wordings of torch 2.4-2.15 (the wordings are rows of :mod:`ckptcompat.versions_facts`);
:func:`translate` turns anything ``torch.load`` raised into the matching typed error of
:mod:`ckptcompat.errors`. Only :mod:`ckptcompat.torch_compat` calls ``torch.load``; this module
reads exceptions and text only and never imports torch, so the doctor can use it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import Literal

from ckptcompat import versions_facts
from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
)

__all__ = [
    "FailureKind",
    "WeightsOnlyFailure",
    "parse_weights_only_error",
    "translate",
]

FailureKind = Literal[
    "unsupported_global",
    "unsupported_operand",
    "can_only_build",
    "setitem_restriction",
    "blocked_module",
    "torchscript",
    "legacy_tar",
    "other",
]


@dataclass(frozen=True)
class WeightsOnlyFailure:
    """Why torch's weights-only unpickler refused a file.

    Attributes:
        kind: the category, stable across torch 2.4-2.15 wordings.
        globals: offending fully-qualified names (``builtins.`` restored where 2.7+ strips it).
        operand: the opcode byte for ``unsupported_operand`` (149 = protocol-4 FRAME).
        message: torch's inner message, without its wrapper text.
    """

    kind: FailureKind
    globals: tuple[str, ...] = ()
    operand: int | None = None
    message: str = ""


_WRAPPER_SPLIT = re.compile(r"WeightsUnpickler error:\s*")
_DOCS_TAIL = re.compile(r"\s*Check the documentation of torch\.load.*\Z", re.S)
# Every wording of torch 2.3-2.15, with the release each comes from, is a row of
# versions_facts; the first pattern that matches decides the kind.
_PATTERNS: tuple[tuple[FailureKind, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in versions_facts.wordings()  # type: ignore[misc]
)


def _qualify(name: str) -> str:
    # 2.7+ prints builtins without their module ("GLOBAL getattr"); restore it so names
    # compare equal across versions and with get_unsafe_globals_in_checkpoint.
    return name if "." in name else f"builtins.{name}"


def parse_weights_only_error(exc: BaseException) -> WeightsOnlyFailure:
    """Classify a weights-only failure raised by ``torch.load`` on torch 2.4-2.15.

    Handles the outer wrapper of every version (2.4's two variants, 2.5's ANSI-bold
    warning, 2.6+'s "In PyTorch 2.6 ..." sentence, 2.9+'s blank line before the inner
    message), short vs dotted names in suggestions, and 2.7+'s stripped ``builtins.``.
    Never raises: anything unrecognised is ``kind="other"`` with the text kept.
    """
    text = str(exc)
    parts = _WRAPPER_SPLIT.split(text, maxsplit=1)
    inner = parts[1] if len(parts) == 2 else text
    inner = _DOCS_TAIL.sub("", inner).strip()
    for kind, pattern in _PATTERNS:
        match = pattern.search(inner)
        if match is None:
            continue
        if kind == "unsupported_operand":
            return WeightsOnlyFailure(kind, operand=int(match.group(1)), message=inner)
        if kind in ("torchscript", "legacy_tar"):
            return WeightsOnlyFailure(kind, message=inner)
        return WeightsOnlyFailure(kind, globals=(_qualify(match.group(1)),), message=inner)
    return WeightsOnlyFailure("other", message=inner)


_NOT_A_TORCH_FILE = {118: "a Git-LFS pointer ('v')", 60: "an HTML page ('<')"}


def translate(
    exc: BaseException, path: str | None, *, weights_only: bool, torch_version: str
) -> CheckpointError:
    """Turn anything ``torch.load`` raised into the matching ckptcompat error.

    Args:
        exc: what ``torch.load`` raised.
        path: the file, for the error message (None for an unnamed file object).
        weights_only: whether the failed call was weights-only (names the loader).
        torch_version: the running torch's base version, named when an attribute is missing.
    """
    text = str(exc)
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return CheckpointNotFoundError("no checkpoint file here", path=path, found=text)
    if "Attempting to deserialize object on" in text:
        # A storage saved on a device this machine lacks ("cuda:0" on a CPU-only machine):
        # a RuntimeError from torch's restore_location on 2.5+, wrapped as a weights-only
        # UnpicklingError by 2.4 (both seen in the cells, 2026-12-06). Not unsafe:
        # map_location="cpu" loads the same tensors.
        inner = _WRAPPER_SPLIT.split(text, maxsplit=1)[-1].strip()
        return IncompatibleCheckpointError(
            "the checkpoint's tensors were saved on a device this machine lacks",
            path=path,
            expected="storage locations this machine can restore (the CPU, or a visible GPU)",
            found=inner.split(". ", 1)[0],
            fix='load with map_location="cpu" (torch_compat.load(path, map_location="cpu")); '
            "`ckptcompat doctor FILE` lists the devices it was saved on",
        )
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        failure = parse_weights_only_error(exc)
        return _from_failure(failure, path)
    if isinstance(exc, RuntimeError) and "TorchScript" in text:
        return IncompatibleCheckpointError(
            "this is a TorchScript archive, not a torch.save checkpoint",
            path=path,
            expected="a torch.save file",
            found="a TorchScript (torch.jit.save) archive",
            fix="load it with torch.jit.load; ckptcompat does not manage TorchScript",
        )
    if isinstance(exc, RuntimeError) and "legacy .tar format" in text:
        return UnsafeCheckpointError(
            "the legacy .tar container cannot be loaded with weights_only=True",
            path=path,
            expected="a zip-format torch.save file",
            found="a pre-1.6 .tar checkpoint",
            fix="migrate it with `ckptcompat migrate --trust` only if you trust its source",
        )
    if isinstance(exc, (EOFError, zipfile.BadZipFile)) or (
        isinstance(exc, (RuntimeError, pickle.UnpicklingError, ValueError, OSError))
        and any(
            s in text
            for s in (
                "PytorchStreamReader",
                "Ran out of input",
                "invalid load key",
                "Invalid magic number",
                "truncated",
                "unexpected EOF",
                "zip archive",
                "negative argument",
                "pickle data was truncated",
                # 2.10+: a storage record shorter or longer than the pickle claims.
                "does not match expected size",
            )
        )
    ):
        return CorruptCheckpointError(
            "the file is not a complete torch checkpoint",
            path=path,
            expected="a complete torch.save zip archive",
            found=f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}",
            fix="restore the file from its source or pick an earlier checkpoint",
        )
    if isinstance(exc, AttributeError) and "torch" in text:
        return IncompatibleCheckpointError(
            "the checkpoint uses a torch attribute (often a dtype) this torch lacks",
            path=path,
            found=f"{type(exc).__name__}: {text}",
            expected=f"names known to torch {torch_version}",
            fix="load it with the torch version that wrote it, or a newer one",
        )
    loader = "weights_only=True" if weights_only else "torch.load"
    return CheckpointError(
        f"{loader} failed on this file",
        path=path,
        found=f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}",
        fix="run `ckptcompat doctor FILE` for a per-version diagnosis",
    )


def _from_failure(failure: WeightsOnlyFailure, path: str | None) -> CheckpointError:
    if failure.kind == "unsupported_operand" and failure.operand in _NOT_A_TORCH_FILE:
        return CorruptCheckpointError(
            "not a torch checkpoint",
            path=path,
            expected="a torch.save file",
            found=_NOT_A_TORCH_FILE[failure.operand],
            fix="fetch the real file (git lfs pull, or re-download)",
        )
    if failure.kind == "torchscript":
        return IncompatibleCheckpointError(
            "this is a TorchScript archive, not a torch.save checkpoint",
            path=path,
            fix="load it with torch.jit.load",
        )
    described = {
        "unsupported_global": "globals outside the allowlist",
        "blocked_module": "a global from a module torch blocks outright",
        "can_only_build": "an object of a class that is not allowlisted",
        "setitem_restriction": "items set on a dict subclass, refused by torch >= 2.10",
        "unsupported_operand": f"pickle opcode {failure.operand}, outside protocol 2",
        "legacy_tar": "the legacy .tar container",
    }.get(failure.kind, failure.message.splitlines()[0] if failure.message else "unknown")
    return UnsafeCheckpointError(
        "the weights-only unpickler refused this checkpoint",
        path=path,
        globals=failure.globals,
        expected="only tensors, containers and allowlisted globals",
        found=described + (f" ({', '.join(failure.globals)})" if failure.globals else ""),
        fix="run `ckptcompat doctor FILE` to see what an allowlist would need, "
        "or `ckptcompat migrate` to convert it to the safe format",
    )
