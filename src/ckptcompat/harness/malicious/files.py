"""The malicious corpus's file table (:data:`KINDS`), and writing and checking it.

``python -m ckptcompat.harness.malicious [FOLDER] [--check]`` (:func:`main`) writes every
file of the table and ``MANIFEST.json`` into FOLDER, or reports drift; the payloads are
built by :mod:`.payloads`. Importing this module is cheap (standard library only);
:func:`generate` imports torch.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from ckptcompat import locator
from ckptcompat.harness.fixtures.manifest import fixture_cli, folder_problems, sha256_file
from ckptcompat.harness.malicious.payloads import (
    _ARGV,
    _CANARY_NAME,
    _PYTHON,
    _SHELL,
    CANARY_ENV,
    _call,
    _dict,
    _duplicate_data_pkl,
    _exec_python,
    _float_tensor,
    _g,
    _g1_record,
    _g2_agent,
    _getattr,
    _legacy_stream,
    _legacy_tar,
    _methodcaller_import,
    _mock_agent_state,
    _nested_loads,
    _os_system,
    _p2,
    _policy_metadata_state,
    _proto4,
    _Reduce,
    _s,
    _safe_v1_dict,
    _strs,
    _system_call,
    _torch_zip,
    _zip_of,
)

__all__ = [
    "CORPUS_DIR",
    "KINDS",
    "MANIFEST_NAME",
    "MaliciousFile",
    "check",
    "generate",
    "main",
    "read_manifest",
]

#: The committed corpus of a source checkout.
CORPUS_DIR: Path = locator.MALICIOUS_DIR
MANIFEST_NAME = "MANIFEST.json"
_MANIFEST_SCHEMA = 1


# --------------------------------------------------------------------------- the table
Refusal = Literal["UnsafeCheckpointError", "CorruptCheckpointError"]


@dataclass(frozen=True)
class MaliciousFile:
    """One corpus file.

    Attributes:
        name: file name in the corpus folder.
        kind: short identifier of the attack.
        description: what it is and why a reader might fall for it.
        container: ``zip``, ``legacy_stream``, ``raw_pickle`` or ``legacy_tar``.
        refused_as: the error ``torch_compat.load`` must raise.
        build: returns the file's bytes.
        made_with: ``stdlib`` (identical bytes in every cell) or ``torch`` (writer cell only).
    """

    name: str
    kind: str
    description: str
    container: str
    refused_as: Refusal
    build: Callable[[], bytes]
    made_with: Literal["stdlib", "torch"] = "stdlib"


_U: Refusal = "UnsafeCheckpointError"
_C: Refusal = "CorruptCheckpointError"
_M = MaliciousFile

KINDS: tuple[MaliciousFile, ...] = (
    _M("global_os_system.pt", "global_os_system",
       "GLOBAL os.system, REDUCE(shell command)", "zip", _U, _zip_of(_os_system())),
    _M("global_posix_system.pt", "global_posix_system",
       "GLOBAL posix.system (what os.system pickles as on Linux)", "zip", _U,
       _zip_of(_system_call("posix"))),
    _M("stack_global_posix_system_p4.pt", "stack_global_p4",
       "protocol 4 (FRAME, STACK_GLOBAL, MEMOIZE) posix.system, as pickle.dumps writes it",
       "zip", _U, lambda: _torch_zip(_proto4(os.system, _SHELL))),
    _M("stack_global_os_system_in_p2.pt", "stack_global_in_p2",
       "STACK_GLOBAL os.system inside a stream whose header claims protocol 2", "zip", _U,
       _zip_of(_p2(_s("os") + _s("system") + b"\x93" + _s(_SHELL) + b"\x85R"))),
    _M("subprocess_check_call.pt", "subprocess_check_call",
       "subprocess.check_call(['/bin/sh', '-c', command])", "zip", _U,
       _zip_of(_p2(_call(_g("subprocess", "check_call"), _strs(_ARGV))))),
    _M("subprocess_popen_obj.pt", "obj_subprocess_popen",
       "OBJ opcode instantiating subprocess.Popen(argv)", "zip", _U,
       _zip_of(_p2(b"(" + _g("subprocess", "Popen") + _strs(_ARGV) + b"o"))),
    _M("builtins_eval.pt", "builtins_eval",
       "builtins.eval of an expression that execs Python", "zip", _U,
       _zip_of(_p2(_call(_g("builtins", "eval"), _s(f"exec({_PYTHON!r})"))))),
    _M("builtins_exec.pt", "builtins_exec",
       "builtins.exec of Python source", "zip", _U, _zip_of(_exec_python())),
    _M("getattr_chain.pt", "getattr_chain",
       "getattr(__import__('os'), 'system')(command): builtins.getattr over __import__",
       "zip", _U,
       _zip_of(_p2(_call(_getattr(_call(_g("builtins", "__import__"), _s("os")), "system"),
                         _s(_SHELL))))),
    _M("getattr_torch_os.pt", "getattr_torch_module",
       "getattr(torch.os, 'system')(command): the os module reached as an attribute of torch",
       "zip", _U, _zip_of(_p2(_call(_getattr(_g("torch", "os"), "system"), _s(_SHELL))))),
    _M("importlib_import_module.pt", "importlib_import_module",
       "operator.methodcaller('system', command)(importlib.import_module('os'))", "zip", _U,
       _zip_of(_methodcaller_import())),
    _M("runpy_run_code.pt", "runpy",
       "runpy._run_code(source, {}): runpy's exec with fresh globals", "zip", _U,
       _zip_of(_p2(_call(_g("runpy", "_run_code"), _s(_PYTHON), b"}")))),
    _M("nested_pickle_loads.pt", "nested_pickle_loads",
       "pickle.loads of an inner os.system pickle whose bytes _codecs.encode builds "
       "(_codecs.encode is allowlisted)", "zip", _U, _nested_loads),
    _M("inst_os_system_p0.pt", "inst_protocol0",
       "a bare protocol-0 text pickle: INST os system (class lookup and call in one opcode); "
       "no PROTO header, so the sniff calls it neither zip nor pickle", "raw_pickle", _C,
       lambda: b"(S'" + _SHELL.encode() + b"'\nios\nsystem\n."),
    _M("text_exec_p0.pt", "text_protocol0",
       "protocol-0 text pickle: GLOBAL __builtin__ exec (Python 2 spelling), UNICODE, TUPLE, "
       "REDUCE", "zip", _U,
       _zip_of(b"c__builtin__\nexec\n(V" + _PYTHON.encode("raw_unicode_escape") + b"\ntR.")),
    _M("exec_p4_raw.pt", "protocol4_raw",
       "a bare protocol-4 pickle of builtins.exec (no zip, no legacy header)", "raw_pickle",
       _U, lambda: _proto4(exec, _PYTHON)),
    _M("legacy_stream_payload.pt", "legacy_stream",
       "torch's non-zip legacy format (magic, protocol, sys_info) whose object pickle calls "
       "os.system", "legacy_stream", _U, lambda: _legacy_stream(_os_system())),
    _M("raw_pickle_magic_slot.pt", "legacy_magic_slot",
       "a bare pickle: the legacy loader unpickles it where it expects the magic number",
       "raw_pickle", _U, lambda: pickle.dumps(_Reduce(os.system, _SHELL), protocol=2)),
    _M("legacy_tar_payload.pt", "legacy_tar",
       "the pre-1.6 .tar container (the CVE-2025-32434 loader path on torch <= 2.5.1) with "
       "posix.system in its pickle member", "legacy_tar", _U,
       lambda: _legacy_tar(pickle.dumps(_Reduce(os.system, _SHELL), protocol=2))),
    _M("duplicate_data_pkl.pt", "two_pickle_records",
       "two archive/data.pkl records: torch <= 2.6 reads the first (os.system), Python's "
       "zipfile and torch 2.15 the last (exec)", "zip", _U, _duplicate_data_pkl),
    _M("storage_size_mismatch.pt", "storage_size_mismatch",
       "a tensor claiming 8 float32 (32 bytes) over an 8-byte storage record (the "
       "CVE-2026-24747 storage-size path; torch <= 2.9 reads past the record)", "zip", _C,
       lambda: _torch_zip(_p2(_dict((_s("w"), _float_tensor("0", 8)))), [("0", bytes(8))])),
    _M("allowlisted_policy_metadata_state.pt", "allowlisted_class_state",
       "our allowlisted PolicyMetadata (NEWOBJ + BUILD) whose crafted state calls posix.system",
       "zip", _U, _zip_of(_policy_metadata_state())),
    _M("allowlisted_mock_agent_state.pt", "allowlisted_agent_state",
       "our allowlisted MockAgent (NEWOBJ + BUILD) whose crafted state sets forward to an "
       "exec call", "zip", _U, _zip_of(_mock_agent_state())),
    _M("g1_record_with_payload.pt", "g1_payload",
       "an otherwise valid G1 PolicyRecord (MockAgent inside) whose metadata holds an "
       "os.system call", "zip", _U, _g1_record, "torch"),
    _M("g2_agent_with_payload.pt", "g2_payload",
       "an otherwise valid G2 whole MockAgent with an exec call in its __dict__", "zip", _U,
       _g2_agent, "torch"),
    _M("safe_v1_dict_with_payload.pt", "safe_v1_payload",
       "a safe-format-v1-looking agent dict (real state_dict) with subprocess.check_call in "
       "metadata.extra", "zip", _U, _safe_v1_dict, "torch"),
)  # fmt: skip


# --------------------------------------------------------------------------- manifest
def _writer() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    versions = {name: version(name) for name in ("torch", "numpy", "ckptcompat")}
    return versions | {"python": platform.python_version()}


def read_manifest(folder: str | os.PathLike[str] = CORPUS_DIR) -> dict[str, Any]:
    """The parsed ``MANIFEST.json`` of ``folder``.

    Raises:
        FileNotFoundError: no manifest there. ValueError: not valid JSON.
    """
    return json.loads((Path(folder) / MANIFEST_NAME).read_text())


def generate(folder: str | os.PathLike[str] = CORPUS_DIR) -> Path:
    """Write every corpus file and ``MANIFEST.json`` into ``folder``; return the manifest path.

    Files listed by an older manifest there are removed first; nothing else is touched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST_NAME
    if manifest_path.exists():
        for entry in read_manifest(folder).get("files", []):
            (folder / entry["name"]).unlink(missing_ok=True)
    files = []
    for item in KINDS:
        path = folder / item.name
        path.write_bytes(item.build())
        files.append(
            {
                "name": item.name,
                "kind": item.kind,
                "description": item.description,
                "container": item.container,
                "refused_as": item.refused_as,
                "made_with": item.made_with,
                "sha256": sha256_file(path),
                "size_bytes": path.stat().st_size,
            }
        )
    manifest = {
        "schema_version": _MANIFEST_SCHEMA,
        "generated_by": "python -m ckptcompat.harness.malicious",
        "canary": f"${CANARY_ENV}, else <system temp dir>/{_CANARY_NAME}: "
        "creating it is every payload's only effect",
        "writer": _writer(),
        "files": files,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest_path


def check(folder: str | os.PathLike[str] = CORPUS_DIR) -> list[str]:
    """Differences between ``folder``'s files, its manifest and :data:`KINDS` (empty: agree)."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, ValueError) as exc:
        return [f"no readable {MANIFEST_NAME} in {folder}: {exc}"]
    listed = {entry["name"]: entry for entry in manifest.get("files", [])}
    return folder_problems(
        folder, listed, manifest_name=MANIFEST_NAME, expected=[k.name for k in KINDS]
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m ckptcompat.harness.malicious [FOLDER] [--check]``."""
    return fixture_cli(
        argv,
        prog="python -m ckptcompat.harness.malicious",
        default_folder=CORPUS_DIR,
        generate=generate,
        check=check,
    )
