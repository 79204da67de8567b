"""Recognise and open G3 (``.mpt``) and G4 (bundle) files: standard library only.

* G3: a zip whose root holds ``weights.safetensors`` and ``modelarchitecture.txt``.
* G4: a directory or a zip whose root holds ``policy_spec.json`` (``class_path``,
  ``data_path`` -- the weights' name inside the bundle, ``weights.safetensors`` --, and
  ``init_kwargs``, one string value of which is the architecture string: the key
  ``architecture_spec`` or ``architecture`` first, else the only string that parses as a
  call), the weights, and optionally ``trainer_state.pt``.

Zip members are read with their declared sizes checked first (against
:data:`MAX_MEMBER_BYTES` and :data:`MAX_TEXT_BYTES`), so a compression bomb is refused before
it is inflated; ``data_path`` must name a plain member of the bundle (no ``..``, no absolute
path). This module owns the G3/G4 names (``checkpoint/layout.py`` owns the older generations';
it sits under the golden producer digest, which this issue may not change).
"""

from __future__ import annotations

import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from ckptcompat.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    LimitExceededError,
    UnsafeCheckpointError,
)
from ckptcompat.generations.architecture import ArchCall, parse_architecture
from ckptcompat.generations.safetensors_header import (
    SafetensorsHeader,
    header_length,
    parse_header,
)
from ckptcompat.scan.archive_reader import ArchiveReader, BadZip

__all__ = [
    "ARCHITECTURE_NAME",
    "MAX_MEMBER_BYTES",
    "MAX_TEXT_BYTES",
    "SPEC_NAME",
    "TRAINER_STATE_NAME",
    "WEIGHTS_NAME",
    "GenerationSource",
    "generation_of",
    "open_generation",
    "run_and_epoch",
]

WEIGHTS_NAME = "weights.safetensors"
ARCHITECTURE_NAME = "modelarchitecture.txt"
SPEC_NAME = "policy_spec.json"
TRAINER_STATE_NAME = "trainer_state.pt"
#: The largest weights member read from a zip, bytes (a declared size above is refused).
MAX_MEMBER_BYTES = 8 * 2**30
#: The largest architecture or spec text read, bytes.
MAX_TEXT_BYTES = 4 * 2**20
#: ``<run>:v<epoch>.mpt`` or ``<run>_v<epoch>.mpt`` / ``...`` bundle: Metta's names.
_NAME_RE = re.compile(r"^(?P<run>[A-Za-z0-9][A-Za-z0-9._-]*?)[:_]v(?P<epoch>\d+)(\.[a-z]+)?$")
_ARCH_KEYS = ("architecture_spec", "architecture")
#: What a damaged zip raises: bad directory, inflate error, encryption, unknown method.
_ZIP_ERRORS = (
    OSError, zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError,
    NotImplementedError,
)  # fmt: skip

Generation = Literal["g3", "g4"]


@dataclass(frozen=True)
class GenerationSource:
    """An opened G3/G4 file: what it is and what it names. No tensor is built here.

    Attributes:
        path: the file or directory.
        generation: ``g3`` (``.mpt``) or ``g4`` (bundle).
        container: ``zip`` or ``dir``.
        architecture: the architecture string, verbatim.
        call: it parsed (:class:`ArchCall`); ``None`` with ``call_error`` set when refused.
        call_error: why the string was refused (a typed error's message), else ``None``.
        spec: ``policy_spec.json`` (G4), else ``None``.
        weights_name: the weights' name in the container.
        header: the checked safetensors header.
        weights_size: the weights' size in bytes.
        trainer_state: name of ``trainer_state.pt`` in the container, if present.
    """

    path: str
    generation: Generation
    container: Literal["zip", "dir"]
    architecture: str
    call: ArchCall | None
    call_error: str | None
    spec: dict[str, Any] | None
    weights_name: str
    header: SafetensorsHeader
    weights_size: int
    trainer_state: str | None

    def read_weights(self) -> bytes:
        """The whole safetensors file, its size checked against the header's account.

        Raises:
            CorruptCheckpointError: the container changed or cannot be read.
        """
        try:
            if self.container == "dir":
                data = (Path(self.path) / self.weights_name).read_bytes()
            else:
                with zipfile.ZipFile(self.path) as zf:
                    data = zf.read(self.weights_name)
        except _ZIP_ERRORS as exc:
            raise CorruptCheckpointError(
                "cannot read the weights", path=self.path, found=str(exc)[:200]
            ) from exc
        if len(data) != self.weights_size:
            raise CorruptCheckpointError(
                "the weights changed while being read",
                path=self.path,
                expected=f"{self.weights_size} bytes",
                found=f"{len(data)} bytes",
            )
        return data


#: A G3 .mpt holds 2 members and a G4 zip 2-3; a zip with more is not one of them, and its
#: names are not read any further (a torch .pt of 4096 tensors has 4100).
_MAX_GENERATION_MEMBERS = 64


def _names(path: str) -> set[str] | None:
    """The names at the root of a directory, or of a zip file's central directory; None for
    anything else. Only directories and regular files are opened: a FIFO blocks ``open``
    forever and ``/dev/zero`` never ends, so a path of another kind is not a generation
    (the doctor and migrate then report it as "not a regular file"). The zip directory is
    read through the scan's bounded reader (sizes and offsets checked against the file),
    never zipfile's, which parses any number of entries."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISDIR(mode):
        try:
            return set(os.listdir(path))
        except OSError:
            return None
    if not stat.S_ISREG(mode):
        return None
    try:
        reader = ArchiveReader(path)
    except OSError:
        return None
    try:
        directory = reader.zip_directory()
        if len(directory.names) > _MAX_GENERATION_MEMBERS:
            return None
        return set(directory.names)
    except (BadZip, OSError):
        return None
    finally:
        reader.close()


def generation_of(path: str | os.PathLike[str]) -> Generation | None:
    """``g3``, ``g4`` or ``None`` from the names at the container's root (nothing parsed)."""
    names = _names(os.fspath(path))
    if not names:
        return None
    if SPEC_NAME in names:
        return "g4"
    if WEIGHTS_NAME in names and ARCHITECTURE_NAME in names and not os.path.isdir(path):
        return "g3"
    return None


class _Container:
    """Bounded reads from a directory or a zip."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.zip = None if os.path.isdir(path) else zipfile.ZipFile(path)

    def size(self, name: str) -> int:
        if self.zip is None:
            return os.path.getsize(os.path.join(self.path, name))
        return self.zip.getinfo(name).file_size

    def read(self, name: str, limit: int) -> bytes:
        size = self.size(name)
        if size > limit:
            raise LimitExceededError(
                f"{name} is larger than this reader accepts",
                limit="max_member_bytes",
                path=self.path,
                expected=f"at most {limit} bytes",
                found=f"{size} bytes declared",
            )
        with self._open(name) as f:
            return f.read(limit + 1)

    def _open(self, name: str) -> IO[bytes]:
        if self.zip is None:
            return open(os.path.join(self.path, name), "rb")
        return self.zip.open(name)

    def head(self, name: str) -> tuple[bytes, int]:
        """The first 8 + N bytes of a safetensors member, and its size."""
        size = self.size(name)
        if size > MAX_MEMBER_BYTES:
            self.read(name, MAX_MEMBER_BYTES)  # raises LimitExceededError
        with self._open(name) as f:
            prefix = f.read(8)
            length = header_length(prefix, size, path=f"{self.path}/{name}")
            return prefix + f.read(length), size

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _text(raw: bytes, name: str, path: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(
            f"{name} is not UTF-8 text", path=path, found=str(exc)[:120]
        ) from exc


def _spec(raw: bytes, path: str) -> dict[str, Any]:
    try:
        spec = json.loads(_text(raw, SPEC_NAME, path))
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(
            f"{SPEC_NAME} is not JSON", path=path, found=str(exc)[:120]
        ) from exc
    ok = (
        type(spec) is dict
        and type(spec.get("class_path")) is str
        and type(spec.get("data_path", WEIGHTS_NAME)) is str
        and type(spec.get("init_kwargs", {})) is dict
    )
    if not ok:
        raise CorruptCheckpointError(
            f"{SPEC_NAME} is malformed",
            path=path,
            expected="{class_path: str, data_path: str, init_kwargs: {...}}",
            found=repr(spec)[:160],
        )
    return spec


def _member(data_path: str, path: str) -> str:
    pure = PurePosixPath(data_path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in data_path or not pure.parts:
        raise UnsafeCheckpointError(
            f"{SPEC_NAME}'s data_path leaves the bundle",
            path=path,
            expected="a name inside the bundle, e.g. weights.safetensors",
            found=repr(data_path[:120]),
            fix="nothing was read outside the bundle; fix data_path",
        )
    return str(pure)


def _architecture_of(spec: dict[str, Any], path: str) -> str:
    kwargs = spec.get("init_kwargs", {})
    for key in _ARCH_KEYS:
        if type(kwargs.get(key)) is str:
            return kwargs[key]
    strings = [v for v in kwargs.values() if type(v) is str and "(" in v]
    if len(strings) == 1:
        return strings[0]
    raise CorruptCheckpointError(
        f"{SPEC_NAME}'s init_kwargs holds no architecture string",
        path=path,
        expected=f"init_kwargs.{_ARCH_KEYS[0]} = 'pkg.Arch(...)'",
        found=f"init_kwargs keys {sorted(kwargs)[:8]}",
        fix="pass --class-path and --config",
    )


def open_generation(path: str | os.PathLike[str]) -> GenerationSource:
    """Open a G3/G4 file: read its names, architecture string, spec and weights header.

    The architecture is parsed (:func:`parse_architecture`); a refused string does not fail
    the open (the doctor explains it): ``call`` is ``None`` and ``call_error`` says why.

    Raises:
        CheckpointNotFoundError: nothing at ``path``.
        CorruptCheckpointError: not a G3/G4 container, a missing member, malformed spec
            or weights header (:mod:`.safetensors_header`), a bad zip.
        LimitExceededError: a member larger than the limits above.
        UnsafeCheckpointError: ``data_path`` points outside the bundle.
        IncompatibleCheckpointError: a weights dtype this reader does not know.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise CheckpointNotFoundError(
            "no checkpoint here", path=name, found="nothing at this path", fix="check the path"
        )
    generation = generation_of(name)
    if generation is None:
        raise CorruptCheckpointError(
            "not a Metta G3 (.mpt) or G4 (bundle) checkpoint",
            path=name,
            expected=f"{WEIGHTS_NAME} + {ARCHITECTURE_NAME} in a zip, or {SPEC_NAME} in a "
            "directory or zip",
            found="neither",
        )
    try:
        box = _Container(name)
        try:
            return _open(box, name, generation)
        finally:
            box.close()
    except (*_ZIP_ERRORS, KeyError) as exc:
        raise CorruptCheckpointError(
            "cannot read the checkpoint's members",
            path=name,
            found=f"{type(exc).__name__}: {str(exc)[:160]}",
            fix="re-export the checkpoint; the container is damaged",
        ) from exc


def _open(box: _Container, name: str, generation: Generation) -> GenerationSource:
    spec = None
    weights = WEIGHTS_NAME
    if generation == "g4":
        spec = _spec(box.read(SPEC_NAME, MAX_TEXT_BYTES), name)
        weights = _member(spec.get("data_path", WEIGHTS_NAME), name)
        architecture = _architecture_of(spec, name)
    else:
        architecture = _text(box.read(ARCHITECTURE_NAME, MAX_TEXT_BYTES), ARCHITECTURE_NAME, name)
    head, size = box.head(weights)
    header = parse_header(head, size, path=f"{name}/{weights}")
    call, call_error = None, None
    try:
        call = parse_architecture(architecture, path=name)
    except (UnsafeCheckpointError, CorruptCheckpointError) as exc:
        call_error = f"{type(exc).__name__}: {exc}"
    names = _names(name) or set()
    trainer = TRAINER_STATE_NAME if TRAINER_STATE_NAME in names else None
    container: Literal["zip", "dir"] = "zip" if box.zip is not None else "dir"
    return GenerationSource(
        name, generation, container, architecture, call, call_error, spec, weights, header,
        size, trainer,
    )  # fmt: skip


def run_and_epoch(path: str | os.PathLike[str]) -> tuple[str | None, int | None]:
    """``(run, epoch)`` from a Metta name, ``<run>:v<epoch>.mpt`` or ``<run>_v<epoch>``;
    ``(None, None)`` when the name says neither."""
    match = _NAME_RE.match(Path(path).name)
    if match is None:
        return None, None
    return match["run"], int(match["epoch"])
