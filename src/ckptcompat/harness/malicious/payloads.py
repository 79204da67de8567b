"""The malicious corpus's payloads, built opcode by opcode (standard library only).

Every payload's one effect is the canary (see :mod:`ckptcompat.harness.malicious`):
:data:`CANARY_ENV` names it, :func:`default_canary` is where it lands by default. The
pickle vocabulary (``_g`` GLOBAL, ``_s`` string, ``_call`` REDUCE, ``_p2`` a protocol 2
stream, ...) and the containers (zip, legacy stream and tar) are used by the file table of
:mod:`.files`; the G1/G2/safe-v1-looking payloads import torch when built.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CANARY_ENV", "default_canary"]

#: Environment variable holding the canary path a payload would create.
CANARY_ENV = "CKPTCOMPAT_CANARY"
_CANARY_NAME = "ckptcompat-canary"

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
