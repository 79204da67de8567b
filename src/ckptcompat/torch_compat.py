"""Every torch-version difference ckptcompat knows of, and the only ``torch.load`` calls.

Three loaders, one per trust level (docs/design.md section 5):

* :func:`load` -- ``weights_only=True`` with an allowlist scoped to the call. On torch
  < 2.10 a static scan of the file runs first (torch <= 2.5.1 had a weights-only bypass,
  CVE-2025-32434, and <= 2.9.1 memory-safety bugs, CVE-2026-24747).
* :func:`trusted_load` -- the single audited ``weights_only=False`` call; it warns, and
  only an explicit user opt-in (``ckptcompat migrate --trust``) may reach it.
* :func:`naive_load` -- ``weights_only`` omitted: what a user's plain ``torch.load`` does
  on this torch (False on 2.4/2.5, True from 2.6). For the harness and ``repro`` only,
  run in a subprocess, never on the malicious corpus.

Failures come out as :mod:`ckptcompat.errors` types, translated by
:func:`ckptcompat.load_errors.translate`; the torch exception is chained as ``__cause__``
and, for weights-only refusals, parsed by :func:`ckptcompat.load_errors.parse_weights_only_error`.
"""

from __future__ import annotations

import importlib.util
import io
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import torch
import torch.serialization
from packaging.version import Version

from ckptcompat import numerics, versions_facts
from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    InvalidArgumentError,
    MissingDependencyError,
    TrustedLoadWarning,
)
from ckptcompat.load_errors import translate
from ckptcompat.scan.archive_reader import BadZip
from ckptcompat.scan.crc_reader import CrcCheckingReader
from ckptcompat.scan.scan import precheck

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "HAS_ALIASED_SAFE_GLOBALS",
    "HAS_SAFE_GLOBALS_API",
    "HAS_SAFE_GLOBALS_CONTEXT",
    "HAS_SERIALIZATION_CONFIG",
    "HAS_UNSAFE_GLOBALS_SCAN",
    "NEEDS_STATIC_PRESCAN",
    "SETITEM_RESTRICTED",
    "TORCH_VERSION",
    "WEIGHTS_ONLY_IS_DEFAULT",
    "SafeGlobal",
    "check_device",
    "check_path",
    "load",
    "naive_load",
    "save",
    "scoped_safe_globals",
    "trusted_load",
]

FileLike = str | os.PathLike[str] | IO[bytes]
SafeGlobal = Any  # a class/function, or (on 2.6+) a tuple (object, "full.dotted.name")

#: Base version of the running torch: ``2.15.0+cu132`` -> ``Version("2.15.0")``.
TORCH_VERSION: Version = Version(Version(torch.__version__).base_version)

# A process started in the reproducible-numerics mode (the harness's own: goldens, replays,
# bitwise resume) gets the mode's torch flags as soon as anything of ours that computes
# imports torch: oneDNN has no environment variable, and a child the harness starts (a
# stopped-and-resumed training run) must compute exactly as its parent. Without
# CKPTCOMPAT_NUMERICS=reproducible this does nothing.
numerics.apply()

_ser = torch.serialization
_wo = torch._weights_only_unpickler

#: ``add_safe_globals``/``get_safe_globals``/``clear_safe_globals`` exist (torch 2.4+).
HAS_SAFE_GLOBALS_API: bool = all(
    hasattr(_ser, name) for name in ("add_safe_globals", "get_safe_globals", "clear_safe_globals")
)
#: torch's own ``safe_globals`` context manager exists (2.5+). We never use it: on exit it
#: removes by set difference, dropping entries registered before the ``with`` block.
HAS_SAFE_GLOBALS_CONTEXT: bool = hasattr(_ser, "safe_globals")
#: ``get_unsafe_globals_in_checkpoint`` exists (2.6+).
HAS_UNSAFE_GLOBALS_SCAN: bool = hasattr(_ser, "get_unsafe_globals_in_checkpoint")
#: ``torch.load`` defaults to ``weights_only=True`` (2.6+, ``_default_to_weights_only``).
WEIGHTS_ONLY_IS_DEFAULT: bool = hasattr(_ser, "_default_to_weights_only")
#: Allowlist entries may be ``(obj, "dotted.name")`` aliases (2.6+, the allowlist became a
#: set with tuple support in the same release that added the unsafe-globals scan).
HAS_ALIASED_SAFE_GLOBALS: bool = HAS_UNSAFE_GLOBALS_SCAN and versions_facts.holds(
    "aliased_safe_globals", str(TORCH_VERSION)
)
#: ``torch.utils.serialization.config`` exists (2.7+; not imported by ``import torch``).
HAS_SERIALIZATION_CONFIG: bool = importlib.util.find_spec("torch.utils.serialization") is not None
#: SETITEM(S) only on dict/OrderedDict/Counter under weights_only (2.10+, CVE-2026-24747 fix).
SETITEM_RESTRICTED: bool = hasattr(getattr(_wo, "Unpickler", None), "_check_set_item_target")
#: torch versions whose weights-only unpickler we do not trust alone: those lacking a
#: security fix of :mod:`ckptcompat.versions_facts` (<= 2.5.1 had a code execution bypass,
#: CVE-2025-32434, and <= 2.9.1 memory corruption, CVE-2026-24747).
NEEDS_STATIC_PRESCAN: bool = bool(versions_facts.advisories(str(TORCH_VERSION)))

_ALLOWLIST_LOCK = threading.RLock()


# --------------------------------------------------------------------------- allowlist
def _normalise_entries(entries: Sequence[SafeGlobal]) -> list[SafeGlobal]:
    """Return ``entries`` in the form this torch accepts.

    Raises:
        IncompatibleCheckpointError: an alias ``(obj, name)`` whose name differs from the
            object's own ``module.name`` was asked for on torch < 2.6, which has no aliases.
    """
    out: list[SafeGlobal] = []
    for entry in entries:
        if isinstance(entry, tuple):
            obj, name = entry
            if HAS_ALIASED_SAFE_GLOBALS:
                out.append((obj, name))
                continue
            own = f"{obj.__module__}.{obj.__name__}"
            if own != name:
                raise IncompatibleCheckpointError(
                    f"the allowlist needs the alias {name!r} for {own!r}",
                    expected="torch >= 2.6, whose add_safe_globals accepts (object, name) tuples",
                    found=f"torch {TORCH_VERSION}",
                    fix="load this file on torch >= 2.6, or migrate it there to the safe format",
                )
            out.append(obj)
        else:
            out.append(entry)
    return out


@contextmanager
def scoped_safe_globals(entries: Sequence[SafeGlobal] = ()) -> Iterator[None]:
    """Allowlist ``entries`` for the duration of the ``with`` block, on every torch 2.4+.

    On exit the global allowlist is restored to exactly the list it held before (order and
    duplicates included on 2.4/2.5, where it is a list). torch's own ``safe_globals``
    context manager (2.5+) is not used because its exit removes ``entries`` by set
    difference, which also drops identical entries registered before the block.
    A process-wide lock serialises scoped blocks between threads.

    Raises:
        IncompatibleCheckpointError: see :func:`_normalise_entries`.
    """
    if not entries:
        yield
        return
    wanted = _normalise_entries(entries)
    with _ALLOWLIST_LOCK:
        previous = list(_ser.get_safe_globals())
        try:
            _ser.add_safe_globals(wanted)
            yield
        finally:
            _ser.clear_safe_globals()
            if previous:
                _ser.add_safe_globals(previous)


# --------------------------------------------------------------------------- file sniffing
def _describe(f: FileLike) -> str | None:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return getattr(f, "name", None) if isinstance(getattr(f, "name", None), str) else None


def check_device(device: Any) -> None:
    """Refuse a device this machine lacks before any load uses it.

    Without it a ``cuda`` map_location fails inside torch, differently per version (2.4:
    "Attempting to deserialize object on a CUDA device" inside the weights-only unpickler,
    read as an unsafe file; 2.6: "weights_only=True failed"). Callables and None pass.

    Raises:
        InvalidArgumentError: an unknown device string, or a CUDA/MPS device that is not
            available here (a ValueError too).
    """
    if device is None or callable(device) or isinstance(device, dict):
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(
            "unknown device", expected="'cpu', 'cuda', 'cuda:N' or 'mps'", found=repr(device)
        ) from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            raise InvalidArgumentError(
                f"device {str(dev)!r} is not available on this machine",
                expected="a device this machine has",
                found=f"{count} CUDA device(s)",
                fix="load with device='cpu' (PolicyStore(device='cpu'), load_agent(device='cpu'))",
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError(
            "device 'mps' is not available on this machine",
            expected="a device this machine has",
            found="no MPS backend",
            fix="load with device='cpu'",
        )


def check_path(f: FileLike) -> None:
    """Refuse missing, directory and unreadable paths before torch (or a scan) sees them.

    Raises:
        CheckpointNotFoundError: nothing at the path, or a directory.
        CheckpointError: an unreadable file.
    """
    if not isinstance(f, (str, os.PathLike)):
        return
    path = os.fspath(f)
    if not os.path.lexists(path):
        raise CheckpointNotFoundError(
            "no checkpoint file here",
            path=path,
            expected="an existing .pt file",
            found="nothing at this path",
            fix="check the run name, epoch and data_dir",
        )
    if os.path.isdir(path):
        raise CheckpointNotFoundError(
            "a directory where a checkpoint file was expected",
            path=path,
            expected="a file written by torch.save",
            found="a directory",
            fix="pass the .pt file inside it, or a run URI to the manager",
        )
    if not os.access(path, os.R_OK):
        raise CheckpointError(
            "the checkpoint file cannot be read",
            path=path,
            expected="a readable file",
            found="permission denied",
            fix="fix the file's permissions",
        )


def _prescan(f: FileLike, safe_globals: Sequence[SafeGlobal], *, mmap: bool) -> str:
    """Static checks before torch reads the file; returns the container kind (``"zip"`` ...).

    Kind sniffing always; the full scan on torch < 2.10 (:data:`NEEDS_STATIC_PRESCAN`) and
    for every ``mmap`` load, because torch's mmap path does not check storage record sizes
    (seen on 2.15). The scan never unpickles; it raises CorruptCheckpointError for files
    that are not torch checkpoints, and UnsafeCheckpointError for what the weights-only
    unpickler of this torch cannot be trusted to refuse.
    """
    full = NEEDS_STATIC_PRESCAN or mmap
    return precheck(f, allowed=_allowed_names(safe_globals), full=full).kind


def _allowed_names(entries: Sequence[SafeGlobal]) -> frozenset[str]:
    names = set()
    for entry in entries:
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{getattr(entry, '__qualname__', entry.__name__)}")
            names.add(f"{entry.__module__}.{entry.__name__}")
    return frozenset(names)


def _translated(exc: BaseException, f: FileLike, *, weights_only: bool) -> CheckpointError:
    return translate(exc, _describe(f), weights_only=weights_only, torch_version=str(TORCH_VERSION))


@contextmanager
def _quiet_protocol_warning() -> Iterator[None]:
    # The weights-only unpickler warns "Detected pickle protocol N" (2.4+) before refusing
    # the file; the refusal is what we report, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        yield


def _rewind(f: FileLike) -> None:
    if isinstance(f, io.IOBase) and f.seekable():
        f.seek(0)


# --------------------------------------------------------------------------- loaders
def load(
    f: FileLike,
    *,
    safe_globals: Sequence[SafeGlobal] = (),
    map_location: str | torch.device | Callable[..., Any] | None = None,
    mmap: bool = False,
    check_crc: bool = True,
) -> Any:
    """``torch.load(f, weights_only=True)`` with ``safe_globals`` allowlisted for this call.

    Args:
        f: a path or a seekable binary file object.
        safe_globals: classes/functions (or ``(obj, "dotted.name")`` aliases on 2.6+)
            allowed for this call only; the global allowlist is restored afterwards.
        map_location: as for ``torch.load``.
        mmap: memory-map storages (paths to zip checkpoints only). Memory-mapped bytes
            are read when first touched, so no CRC is checked.
        check_crc: check the zip CRC-32 of every record torch reads, in the same pass
            (torch checks none: a flipped bit loads as a wrong weight). Pass False only
            when the caller verifies the bytes itself (the manager's indexed digest).

    Raises:
        CheckpointNotFoundError: no file, or a directory.
        LimitExceededError: the file goes past a limit of :mod:`ckptcompat.scan.limits`
            (``.limit`` names it), checked before torch reads it.
        CorruptCheckpointError: truncated zip, zero bytes, Git-LFS pointer, HTML page; a
            record whose bytes differ from its zip CRC-32 (payload discarded).
        UnsafeCheckpointError: globals or opcodes the unpickler (or, on < 2.10, our
            static scan) refuses; ``.globals`` lists the offenders.
        IncompatibleCheckpointError: TorchScript archive, alias needing 2.6+, unknown dtype.
    """
    check_path(f)
    check_device(map_location)
    _normalise_entries(safe_globals)  # an alias torch lacks is refused before any read
    kind = _prescan(f, safe_globals, mmap=mmap)
    # torch refuses mmap for legacy (non-zip) files before judging their contents; load
    # those without mmap so the weights-only verdict, not the mmap limitation, decides.
    mmap = mmap and kind == "zip"
    _rewind(f)
    crc = _crc_reader(f) if check_crc and kind == "zip" and not mmap else None
    try:
        try:
            with scoped_safe_globals(safe_globals), _quiet_protocol_warning():
                payload = torch.load(
                    f if crc is None else crc,
                    map_location=map_location,
                    weights_only=True,
                    mmap=mmap,
                )
        except CheckpointError:
            _check_crc(crc, f)  # a damaged record explains the failure
            raise
        except Exception as exc:
            _check_crc(crc, f)
            raise _translated(exc, f, weights_only=True) from exc
        _check_crc(crc, f)
    finally:
        if crc is not None:
            crc.close()
    return payload


def _crc_reader(f: FileLike) -> CrcCheckingReader | None:
    """The CRC-checking view torch reads instead of ``f`` (None: the directory cannot be
    read, which torch then reports in its own words)."""
    try:
        return CrcCheckingReader(f)
    except (BadZip, OSError):
        return None


def _check_crc(crc: CrcCheckingReader | None, f: FileLike) -> None:
    """Raise CorruptCheckpointError when a record torch read differs from its CRC-32."""
    if crc is None:
        return
    try:
        bad = crc.mismatches()
    except OSError as exc:
        bad = [f"cannot be read again: {exc}"]
    if bad:
        raise CorruptCheckpointError(
            "the checkpoint's bytes differ from the CRC-32s its zip directory stores",
            path=_describe(f),
            expected="every record torch read to match its CRC-32 and its local header",
            found="; ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else ""),
            fix="restore the file from its source or pick an earlier checkpoint; "
            "the loaded weights were discarded",
        )


def trusted_load(
    f: FileLike,
    *,
    map_location: str | torch.device | Callable[..., Any] | None = None,
) -> Any:
    """The one audited ``torch.load(weights_only=False)``: runs any code the file holds.

    Only ``ckptcompat migrate --trust`` (an explicit user opt-in) calls this. It emits
    :class:`TrustedLoadWarning` first. Note ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` overrides
    the explicit False on every version (torch reads it on each call).

    Raises:
        CheckpointNotFoundError, CorruptCheckpointError, CheckpointError.
        MissingDependencyError: the file names a module that is not installed here.
    """
    check_path(f)
    warnings.warn(
        f"trusted_load: unpickling {_describe(f) or 'a file object'} with weights_only=False "
        "can execute arbitrary code; do this only for files from a trusted source",
        TrustedLoadWarning,
        stacklevel=2,
    )
    try:
        return torch.load(f, map_location=map_location, weights_only=False)
    except ModuleNotFoundError as exc:
        module = exc.name or str(exc)
        raise MissingDependencyError(
            f"the checkpoint's classes live in module {module!r}, which is not installed here",
            path=_describe(f),
            expected=f"module {module!r} importable (a trusted load rebuilds the saved objects)",
            found=f"ModuleNotFoundError: {exc}",
            fix=f"install the package that provides {module.split('.')[0]!r} (for Metta's "
            "files, the metta repository) in this environment and run the trusted migration "
            "again",
        ) from exc
    except Exception as exc:
        raise _translated(exc, f, weights_only=False) from exc


def naive_load(
    f: FileLike,
    *,
    map_location: str | torch.device | Callable[..., Any] | None = None,
) -> Any:
    """``torch.load(f)`` with ``weights_only`` omitted: what a plain user call does here.

    On 2.4/2.5 this unpickles anything (and warns FutureWarning); from 2.6 it is
    weights-only. Harness and ``repro`` only, always in a subprocess, never on the
    malicious corpus. Failures are translated like :func:`load`'s.
    """
    check_path(f)
    try:
        return torch.load(f, map_location=map_location)
    except Exception as exc:
        raise _translated(exc, f, weights_only=WEIGHTS_ONLY_IS_DEFAULT) from exc


def save(obj: Any, f: FileLike) -> None:
    """``torch.save(obj, f)`` with pickle protocol 2, the only one weights-only reads."""
    torch.save(obj, f, pickle_protocol=2)
