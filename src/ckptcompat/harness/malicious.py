"""The malicious corpus (``fixtures/malicious/``): crafted checkpoints every reader must refuse.

Regenerate with one command, inside the writer cell (``t26``, as :mod:`.corpus`)::

    python -m ckptcompat.harness.malicious fixtures/malicious          # files + MANIFEST.json
    python -m ckptcompat.harness.malicious fixtures/malicious --check  # exit 1 on any drift

Each file is a few kB and written deterministically: zips with fixed dates, tars with
``mtime=0``, pickles crafted opcode by opcode. Most files are made with the standard library
alone and are byte-identical in every cell; the G1/G2/safe-v1-looking ones go through
``torch.save`` (``made_with="torch"`` in the manifest) and reproduce only under the writer's
torch.

**The one effect.** Every payload, if some unpickler ever ran it, does exactly one thing:
create (or touch) an empty *canary* file at ``$CKPTCOMPAT_CANARY``, or at
``<system temp dir>/ckptcompat-canary`` when that variable is unset -- the path is read when
the payload runs, so the bytes are the same everywhere. Payloads never do anything else.
Tests set the variable to a path in their temporary directory, run every reading path in a
subprocess, and check after each file that the canary is absent. Payloads only ever run
inside tests; this module only writes bytes, it never unpickles them.

Importing this module is cheap (standard library only); :func:`generate` imports torch.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import platform
import struct
import subprocess
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from ckptcompat.harness.fixtures import locator
from ckptcompat.harness.fixtures.manifest import fixture_cli, folder_problems, sha256_file

__all__ = [
    "CANARY_ENV",
    "CORPUS_DIR",
    "KINDS",
    "MANIFEST_NAME",
    "MaliciousFile",
    "check",
    "default_canary",
    "generate",
    "main",
    "read_manifest",
]

#: The committed corpus of a source checkout.
CORPUS_DIR: Path = locator.MALICIOUS_DIR
MANIFEST_NAME = "MANIFEST.json"
#: Environment variable holding the canary path a payload would create.
CANARY_ENV = "CKPTCOMPAT_CANARY"
_CANARY_NAME = "ckptcompat-canary"
_MANIFEST_SCHEMA = 1

# The payloads, in the three languages they are written in. Each creates the canary only.
_SHELL = f'touch "${{{CANARY_ENV}:-${{TMPDIR:-/tmp}}/{_CANARY_NAME}}}"'
_PYTHON = (
    "import os, tempfile; open(os.environ.get("
    f"{CANARY_ENV!r}) or os.path.join(tempfile.gettempdir(), {_CANARY_NAME!r}), 'a').close()"
)
_ARGV = ["/bin/sh", "-c", _SHELL]


def default_canary() -> Path:
    """Where a payload would create the canary when ``CKPTCOMPAT_CANARY`` is unset."""
    import tempfile

    return Path(tempfile.gettempdir()) / _CANARY_NAME


# --------------------------------------------------------------------------- opcodes
def _g(module: str, name: str) -> bytes:
    """GLOBAL: push ``module.name`` (protocol 0+, text arguments)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _s(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(value: int) -> bytes:
    """BININT (signed 32-bit)."""
    return b"J" + struct.pack("<i", value)


def _call(fn: bytes, *args: bytes) -> bytes:
    """``fn(*args)``: MARK, the arguments, TUPLE, REDUCE."""
    return fn + b"(" + b"".join(args) + b"tR"


def _dict(*pairs: tuple[bytes, bytes]) -> bytes:
    """EMPTY_DICT, MARK, key/value pairs, SETITEMS."""
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def _strs(items: Sequence[str]) -> bytes:
    """A list of strings: EMPTY_LIST, MARK, items, APPENDS."""
    return b"](" + b"".join(_s(i) for i in items) + b"e"


def _p2(body: bytes) -> bytes:
    """A protocol-2 pickle: PROTO 2, ``body``, STOP."""
    return b"\x80\x02" + body + b"."


def _os_system() -> bytes:
    return _p2(_call(_g("os", "system"), _s(_SHELL)))


def _exec_python() -> bytes:
    return _p2(_call(_g("builtins", "exec"), _s(_PYTHON)))


class _Reduce:
    """Pickles as ``fn(*args)`` (REDUCE); the generator pickles it and never calls ``fn``."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _proto4(fn: Callable[..., Any], *args: Any) -> bytes:
    """The standard library's protocol-4 pickle of ``fn(*args)``: FRAME, STACK_GLOBAL, MEMOIZE."""
    return pickle.dumps(_Reduce(fn, *args), protocol=4)


# --------------------------------------------------------------------------- containers
_DATE = (1980, 1, 1, 0, 0, 0)


def _zip(records: Sequence[tuple[str, bytes]]) -> bytes:
    """A stored zip of ``records`` in order, with fixed dates and modes (deterministic)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # One kind repeats a record name on purpose; zipfile warns about it.
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, data in records:
                info = zipfile.ZipInfo(name, date_time=_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
    return buf.getvalue()


def _torch_zip(pkl: bytes, storages: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """A ``torch.save``-shaped zip (``archive/`` prefix, as when saving to a buffer)."""
    return _zip(
        [
            ("archive/data.pkl", pkl),
            ("archive/byteorder", b"little"),
            *((f"archive/data/{key}", data) for key, data in storages),
            ("archive/version", b"3\n"),
        ]
    )


def _tar(members: Sequence[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of ``members`` with ``mtime=0`` and root ownership (deterministic)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
_SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}


def _legacy_stream(payload: bytes) -> bytes:
    """torch's non-zip format: magic, protocol, sys_info, the object pickle, storage keys."""
    head = b"".join(
        pickle.dumps(x, protocol=2) for x in (_LEGACY_MAGIC, _LEGACY_PROTOCOL, _SYS_INFO)
    )
    return head + payload + pickle.dumps([], protocol=2)


def _legacy_tar(payload: bytes) -> bytes:
    """The pre-1.6 ``.tar`` container: sys_info, pickle, tensors, storages (none of either)."""
    none = pickle.dumps(0, protocol=2)
    return _tar(
        [
            ("sys_info", pickle.dumps(_SYS_INFO, protocol=2)),
            ("pickle", payload),
            ("tensors", none),
            ("storages", none + pickle.dumps([], protocol=2)),
        ]
    )


def _float_tensor(key: str, numel: int) -> bytes:
    """``_rebuild_tensor_v2`` of a FloatStorage ``key`` claimed to hold ``numel`` elements."""
    pid = _s("storage") + _g("torch", "FloatStorage") + _s(key) + _s("cpu") + _i(numel)
    storage = b"(" + pid + b"tQ"  # TUPLE, BINPERSID
    return _call(
        _g("torch._utils", "_rebuild_tensor_v2"),
        storage,
        _i(0),
        _i(numel) + b"\x85",
        _i(1) + b"\x85",
        b"\x89",
        _call(_g("collections", "OrderedDict")),
    )


# --------------------------------------------------------------------------- kinds (stdlib)
def _nested_loads() -> bytes:
    inner = _os_system().decode("latin-1")
    as_bytes = _call(_g("_codecs", "encode"), _s(inner), _s("latin1"))
    return _torch_zip(_p2(_call(_g("pickle", "loads"), as_bytes)))


def _getattr(obj: bytes, name: str) -> bytes:
    return _call(_g("builtins", "getattr"), obj, _s(name))


def _policy_metadata_state() -> bytes:
    # NEWOBJ + BUILD, exactly how PolicyMetadata pickles itself, with a call in its attrs.
    state = _dict(
        (_s("items"), _dict((_s("epoch"), _i(3)), (_s("agent_step"), _i(0)))),
        (_s("attrs"), _dict((_s("_on_load"), _call(_g("posix", "system"), _s(_SHELL))))),
    )
    cls = _g("ckptcompat.policy.policy_metadata", "PolicyMetadata")
    return _p2(cls + b")\x81" + state + b"b")


def _mock_agent_state() -> bytes:
    state = _dict(
        (_s("training"), b"\x88"),
        (_s("_parameters"), b"}"),
        (_s("_buffers"), b"}"),
        (_s("_modules"), b"}"),
        (_s("forward"), _call(_g("builtins", "exec"), _s(_PYTHON))),
    )
    return _p2(_g("ckptcompat.agents.mock", "MockAgent") + b")\x81" + state + b"b")


def _stack_global_in_protocol2() -> bytes:
    # STACK_GLOBAL is a protocol-4 opcode; here it hides in a stream that claims protocol 2.
    return _p2(_s("os") + _s("system") + b"\x93" + _s(_SHELL) + b"\x85R")


# --------------------------------------------------------------------------- kinds (torch)
def _mock_agent() -> Any:
    import torch

    from ckptcompat.agents.mock import MockAgent

    torch.manual_seed(0)
    return MockAgent()


def _torch_saved(obj: Any) -> bytes:
    from ckptcompat import torch_compat

    buf = io.BytesIO()
    torch_compat.save(obj, buf)  # a file object: inner folder "archive", byte-stable
    return buf.getvalue()


def _g1_record() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the stubs announce themselves
        from ckptcompat.policy.policy_metadata import PolicyMetadata
        from ckptcompat.policy.policy_record import PolicyRecord

        metadata_ = PolicyMetadata(epoch=3, agent_step=300, evals=_Reduce(os.system, _SHELL))
        record = PolicyRecord(None, "corpus", "file://model_0003.pt", metadata_)
    record.policy = _mock_agent()
    return _torch_saved(record)


def _g2_agent() -> bytes:
    agent = _mock_agent()
    agent.post_load_hook = _Reduce(exec, _PYTHON)  # a plain attribute: lands in __dict__
    return _torch_saved(agent)


def _safe_v1_dict() -> bytes:
    from ckptcompat.checkpoint.format import build_agent_payload

    payload = build_agent_payload(
        _mock_agent(), run="corpus", epoch=3, agent_step=300, total_time_s=1.0, score=None,
        created_at="2025-01-01T00:00:00Z",
    )  # fmt: skip
    # Fixed, so that the bytes do not name the generating environment.
    payload["metadata"]["saved_by"] = {
        "torch": "2.6.0", "numpy": "2.4.6", "python": "3.11", "ckptcompat": "0.1.0"
    }  # fmt: skip
    payload["metadata"]["extra"] = {"note": _Reduce(subprocess.check_call, _ARGV)}
    return _torch_saved(payload)


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


def _zip_of(body: bytes) -> Callable[[], bytes]:
    return lambda: _torch_zip(body)


def _system_call(module: str) -> bytes:
    return _p2(_call(_g(module, "system"), _s(_SHELL)))


def _methodcaller_import() -> bytes:
    caller = _call(_g("operator", "methodcaller"), _s("system"), _s(_SHELL))
    return _p2(_call(caller, _call(_g("importlib", "import_module"), _s("os"))))


def _duplicate_data_pkl() -> bytes:
    return _zip(
        [
            ("archive/data.pkl", _os_system()),
            ("archive/data.pkl", _exec_python()),
            ("archive/byteorder", b"little"),
            ("archive/version", b"3\n"),
        ]
    )


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


if __name__ == "__main__":
    raise SystemExit(main())
