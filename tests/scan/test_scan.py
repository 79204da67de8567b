"""Static checkpoint scan (scan/scan.py and the modules under it) and precheck.

Malicious pickles here only ever create a canary file in ``tmp_path``, and are only handed
to code that must refuse them (the scan, ``precheck``, ``torch_compat.load``); they are
never unpickled for real.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ckptcompat import torch_compat
from ckptcompat.errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError
from ckptcompat.scan import scan as scan_mod
from ckptcompat.scan.pickle_scan import scan_pickle
from ckptcompat.scan.scan import precheck, scan
from ckptcompat.scan.sniff import sniff

SRC = Path(__file__).resolve().parents[2] / "src"


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """Where a payload that ran would leave its mark."""
    return tmp_path / "CANARY"


class _Call:
    """Pickles as REDUCE(fn, args): unpickling it for real would call ``fn(*args)``."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args

    def __call__(self, *args: Any) -> None:  # pickle requires a REDUCE callable to be callable
        raise AssertionError("never called")


def _g(module: str, name: str) -> bytes:
    """GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _u(text: str) -> bytes:
    """BINUNICODE opcode."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _su(text: str) -> bytes:
    """SHORT_BINUNICODE opcode (protocol 4)."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _write_zip(path: Path, records: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    return path


def _as_checkpoint_zip(path: Path, pkl: bytes) -> Path:
    """A minimal torch-like zip whose data.pkl is ``pkl``."""
    return _write_zip(
        path, {"archive/data.pkl": pkl, "archive/byteorder": b"little", "archive/version": b"3\n"}
    )


def _canary_code(canary: Path) -> str:
    return f"open({str(canary)!r}, 'w').close()"


def _payloads(tmp_path: Path, canary: Path) -> dict[str, bytes]:
    """Malicious pickles, keyed by kind; each would create ``canary`` if really unpickled."""
    code = _canary_code(canary)
    cmd = f"touch {canary}"
    script = tmp_path / "payload_script.py"
    script.write_text(code + "\n")
    argv = [sys.executable, "-c", code]
    os_system = _g("os", "system") + _u(cmd) + b"\x85R."
    import importlib
    import runpy

    return {
        "os.system GLOBAL": b"\x80\x02" + os_system,
        "os.system STACK_GLOBAL": b"\x80\x04"
        + _su("os")
        + b"\x94"
        + _su("system")
        + b"\x94\x93"
        + _su(cmd)
        + b"\x85R.",
        "posix.system": pickle.dumps(_Call(os.system, cmd), protocol=2),
        "builtins.eval": pickle.dumps(_Call(eval, code), protocol=2),
        "builtins.exec protocol 0": pickle.dumps(_Call(exec, code), protocol=0),
        "getattr chain": pickle.dumps(
            _Call(_Call(getattr, _Call(__import__, "os"), "system"), cmd), protocol=2
        ),
        "getattr chain protocol 4": pickle.dumps(
            _Call(_Call(getattr, _Call(__import__, "os"), "system"), cmd), protocol=4
        ),
        "importlib": pickle.dumps(
            _Call(_Call(getattr, _Call(importlib.import_module, "os"), "system"), cmd), protocol=3
        ),
        "subprocess": pickle.dumps(_Call(subprocess.check_call, argv), protocol=2),
        "runpy": pickle.dumps(_Call(runpy.run_path, str(script)), protocol=2),
        "nested pickle.loads": pickle.dumps(
            _Call(pickle.loads, b"\x80\x02" + os_system), protocol=2
        ),
        "INST protocol 0": b"(S'" + cmd.encode() + b"'\nios\nsystem\n.",
        "OBJ protocol 1": b"(" + _g("os", "system") + _u(cmd) + b"o.",
        "torch.os smuggled module": b"\x80\x02"
        + _g("builtins", "getattr")
        + _g("torch", "os")
        + _u("system")
        + b"\x86R"
        + _u(cmd)
        + b"\x85R.",
        "BUILD/SETITEM/APPEND on placeholders": b"\x80\x02"
        + _g("os", "system")
        + b"}b"
        + _g("os", "system")
        + _u("k")
        + _u(cmd)
        + b"s"
        + _g("os", "system")
        + _u(cmd)
        + b"a"
        + _g("os", "system")
        + b"("
        + _u(cmd)
        + b"e"
        + b")"
        + _g("os", "system")
        + b")\x81\x86.",
        "safe-looking dict": pickle.dumps(
            {"format": "ckptcompat.agent", "state_dict": {}, "x": _Call(os.system, cmd)}, protocol=2
        ),
    }


def _saved(tmp_path: Path, obj: Any, name: str = "ckpt.pt", **kwargs: Any) -> Path:
    path = tmp_path / name
    if kwargs:
        torch.save(obj, path, **kwargs)
    else:
        torch_compat.save(obj, path)
    return path


def _copy_zip(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """Rewrite a zip record by record; ``change`` returns new bytes, or None to drop it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def _run_python(code: str, *, env_path: Path | None = None) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC)] + ([str(env_path)] if env_path else []) + [env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --------------------------------------------------------------------------- scanning
def test_whole_pickled_module_lists_its_globals(tmp_path: Path) -> None:
    """Guards whole-module pickles (legacy G1/G2) hiding their classes from the scan: every
    nn class is named, marked NEWOBJ+BUILD, and precheck refuses until they are allowed."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    result = scan(_saved(tmp_path, model))
    for name in (
        "torch.nn.modules.container.Sequential",
        "torch.nn.modules.linear.Linear",
        "torch.nn.modules.activation.ReLU",
        "torch._utils._rebuild_parameter",
        "collections.OrderedDict",
    ):
        assert name in result.globals
    assert {"NEWOBJ", "BUILD"} <= result.applied["torch.nn.modules.linear.Linear"]
    assert set(result.nondefault_globals) == {
        "torch.nn.modules.container.Sequential",
        "torch.nn.modules.linear.Linear",
        "torch.nn.modules.activation.ReLU",
    }
    with pytest.raises(UnsafeCheckpointError) as refused:
        precheck(tmp_path / "ckpt.pt", full=True)
    assert set(refused.value.globals) == set(result.nondefault_globals)
    precheck(tmp_path / "ckpt.pt", full=True, allowed=result.nondefault_globals)


@pytest.mark.one_cell
def test_stack_global_resolved_through_the_memo() -> None:
    """Guards STACK_GLOBAL names built from memoized strings (MEMOIZE/BINPUT/LONG_BINPUT
    read back by BINGET/LONG_BINGET) going unnamed. Pure pickle bytes: one cell suffices."""
    proto4 = (
        b"\x80\x04"
        + _su("os")
        + b"\x94"
        + _su("system")
        + b"\x94\x93\x94"  # memo 0,1,2
        + b"h\x00"
        + _su("getcwd")
        + b"\x93"  # module via BINGET 0
        + b"\x86."
    )
    result = scan_pickle(proto4)
    assert result.globals == ("os.system", "os.getcwd")
    assert {"STACK_GLOBAL", "MEMOIZE", "SHORT_BINUNICODE"} <= result.opcodes
    assert result.protocol == 4
    long_memo = (
        b"\x80\x02"
        + _u("subprocess")
        + b"r\x05\x00\x00\x00"
        + _u("Popen")
        + b"q\x07"
        + b"j\x05\x00\x00\x00"
        + b"h\x07"
        + b"\x93."
    )
    assert scan_pickle(long_memo).globals == ("subprocess.Popen",)


@pytest.mark.one_cell
def test_inst_and_obj_detected() -> None:
    """Guards INST/OBJ, whose class comes inline (INST) or from the stack (OBJ), slipping
    past a GLOBAL-only scan. Pure pickle bytes: one cell suffices."""
    inst = scan_pickle(b"(S'echo'\nios\nsystem\n.")
    assert inst.globals == ("os.system",)
    assert "INST" in inst.opcodes
    assert inst.applied["os.system"] == {"REDUCE"}
    obj = scan_pickle(b"(" + _g("posix", "system") + _u("echo") + b"o.")
    assert obj.globals == ("posix.system",)
    assert "OBJ" in obj.opcodes
    empty_obj = scan_pickle(b"(" + _g("argparse", "Namespace") + b"o.")
    assert empty_obj.applied["argparse.Namespace"] == {"NEWOBJ"}


def test_protocol_0_and_4_files(tmp_path: Path) -> None:
    """Guards pickles of another protocol (weights-only implements protocol 2's opcodes only:
    protocol 4 needs FRAME, 0 uses text opcodes) being passed as loadable."""
    p4 = scan(_saved(tmp_path, {"w": torch.ones(2)}, "p4.pt", pickle_protocol=4))
    assert p4.protocol == 4
    assert {"FRAME", "STACK_GLOBAL", "MEMOIZE"} <= p4.unsupported_opcodes
    assert "torch._utils._rebuild_tensor_v2" in p4.globals
    assert len(p4.storages) == 1
    p0 = scan(_saved(tmp_path, {"a": 1, "b": "x"}, "p0.pt", pickle_protocol=0))
    assert p0.protocol == 0
    assert {"DICT", "PUT"} <= p0.unsupported_opcodes
    for path in (tmp_path / "p4.pt", tmp_path / "p0.pt"):
        with pytest.raises(UnsafeCheckpointError, match="opcodes outside"):
            precheck(path, full=True)
    raw0 = scan_pickle(pickle.dumps(collections.OrderedDict(a=1), protocol=0))
    assert raw0.protocol == 0
    assert raw0.globals == ("collections.OrderedDict",)


def test_legacy_non_zip_file(tmp_path: Path) -> None:
    """Guards the legacy stream (magic, protocol, sys_info, object, keys, raw storages)
    being unscanned or misread: storages, dtypes and sizes come from its pickles and size
    headers, and a truncated storage is caught without reading storage bytes."""
    base = torch.arange(5)
    obj = {
        "f": torch.ones(3, 4),
        "view": base[1:3],
        "base": base,
        "f8": torch.ones(4).to(torch.float8_e4m3fn),
    }
    path = _saved(tmp_path, obj, "legacy.pt", _use_new_zipfile_serialization=False)
    result = scan(path)
    assert result.kind == "legacy_pickle"
    assert result.writer_hint == "torch.save(_use_new_zipfile_serialization=False)"
    assert result.protocol == 2
    assert result.findings == ()
    assert sorted(s.dtype or "" for s in result.storages) == ["float32", "float8_e4m3fn", "int64"]
    assert result.storage_bytes == 48 + 40 + 4
    assert all(s.record_bytes == s.nbytes for s in result.storages)
    assert precheck(path, full=True).kind == "legacy_pickle"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:-10])
    assert "truncated_storage" in scan(cut).codes()
    with pytest.raises(CorruptCheckpointError):
        precheck(cut, full=True)


def test_storages_counted_with_dtypes_and_bytes(tmp_path: Path) -> None:
    """Guards storage accounting: one entry per storage (views share), dtypes from the
    storage class or from _rebuild_tensor_v3's dtype argument, bytes as claimed."""
    base = torch.arange(5)
    obj = {
        "f32": torch.zeros(3, 4),
        "i64": base,
        "view": base[2:],
        "f16": torch.zeros(2, dtype=torch.float16),
        "f8": torch.zeros(4).to(torch.float8_e5m2),
    }
    result = scan(_saved(tmp_path, obj))
    assert len(result.storages) == 4
    assert result.dtypes == {"float32", "int64", "float16", "float8_e5m2"}
    assert result.storage_bytes == 48 + 40 + 4 + 4
    f8 = next(s for s in result.storages if s.dtype == "float8_e5m2")
    assert f8.storage_type == "torch.storage.UntypedStorage"
    assert (f8.numel, f8.nbytes, f8.record_bytes) == (4, 4, 4)
    assert result.prefix == "ckpt"  # torch.save names the top folder after the file's stem
    assert result.archive_version == "3"
    assert result.byteorder == "little"
    has_format_version = ".format_version" in {r.rsplit("/", 1)[-1] for r in result.records}
    assert (result.format_version is not None) == has_format_version
    assert result.writer_hint == (
        "torch >= 2.7 (.format_version 1)" if has_format_version else "torch < 2.7"
    )


def test_record_size_mismatch_detected(tmp_path: Path) -> None:
    """Guards a storage record shorter than the pickle claims (the CVE-2026-24747 storage-size
    path on torch <= 2.9.1), and a storage record missing altogether."""
    good = _saved(tmp_path, {"w": torch.zeros(8), "b": torch.zeros(2)})
    short = _copy_zip(
        good, tmp_path / "short.pt", lambda n, d: d[:4] if n.endswith("data/0") else d
    )
    result = scan(short)
    mismatch = [f for f in result.findings if f.code == "storage_size_mismatch"]
    assert mismatch and mismatch[0].names == ("0",)
    assert next(s for s in result.storages if s.key == "0").record_bytes == 4
    with pytest.raises(CorruptCheckpointError, match="disagree"):
        precheck(short, full=True)
    missing = _copy_zip(
        good, tmp_path / "missing.pt", lambda n, d: None if n.endswith("data/1") else d
    )
    assert "missing_storage_record" in scan(missing).codes()
    with pytest.raises(CorruptCheckpointError):
        precheck(missing, full=True)


def test_two_pickle_records_refused(tmp_path: Path, canary: Path) -> None:
    """Guards a second pickle record smuggled next to data.pkl: both are scanned, the file
    is refused and the hidden global is named."""
    good = _saved(tmp_path, {"w": torch.zeros(2)})
    evil = pickle.dumps(_Call(os.system, f"touch {canary}"), protocol=2)
    with zipfile.ZipFile(good) as zin:
        records = {i.filename: zin.read(i) for i in zin.infolist()}
    records["ckpt/extra.pkl"] = evil
    path = _write_zip(tmp_path / "two.pt", records)
    result = scan(path)
    assert "multiple_pickles" in result.codes()
    assert "posix.system" in result.globals
    with pytest.raises(UnsafeCheckpointError) as refused:
        precheck(path, full=True)
    assert "posix.system" in refused.value.globals
    assert not canary.exists()


def test_safe_dict_of_tensors_passes(tmp_path: Path) -> None:
    """Guards false refusals of the safe format: a dict of tensors, primitives and an
    OrderedDict state_dict has no findings and passes precheck(full=True) and load."""
    sd = nn.Linear(3, 2).state_dict()
    obj = {
        "format": "x",
        "n": 3,
        "ok": True,
        "f": 0.5,
        "s": [1, "a"],
        "state_dict": sd,
        "t": torch.ones(2),
    }
    path = _saved(tmp_path, obj)
    result = scan(path)
    assert result.findings == ()
    assert result.setitem_targets == ("collections.OrderedDict",)
    assert result.nondefault_globals == ()
    assert precheck(path, full=True).kind == "zip"
    with path.open("rb") as fh:
        fh.seek(0)
        assert precheck(fh, full=True).kind == "zip"
        assert fh.tell() == 0
    assert torch.equal(torch_compat.load(path)["state_dict"]["weight"], sd["weight"])


def test_precheck_lists_every_offender(tmp_path: Path, canary: Path) -> None:
    """Guards an UnsafeCheckpointError naming only the first offending global; dangerous
    globals stay refused even when the caller allowlists them."""
    dd = collections.defaultdict(list)
    dd["a"].append(1)
    obj = {
        "ns": argparse.Namespace(a=1),
        "path": pathlib.PurePosixPath("/x"),
        "dd": dd,
        "evil": _Call(os.system, f"touch {canary}"),
    }
    path = tmp_path / "offenders.pt"
    path.write_bytes(pickle.dumps(obj, protocol=2))  # a raw pickle: legacy_pickle kind
    expected = {
        "argparse.Namespace",
        "pathlib.PurePosixPath",
        "collections.defaultdict",
        "builtins.list",
        "posix.system",
    }
    with pytest.raises(UnsafeCheckpointError) as refused:
        precheck(path, full=True)
    assert set(refused.value.globals) == expected
    with pytest.raises(UnsafeCheckpointError) as still:
        precheck(path, full=True, allowed=expected)
    assert still.value.globals == ("posix.system",)
    assert "dangerous" in str(still.value)
    assert not canary.exists()


@pytest.mark.one_cell
def test_setitem_on_tensors_and_storages_refused(tmp_path: Path) -> None:
    """Guards SETITEM on non-dict objects built from default globals, a tensor and a storage
    (the CVE-2026-24747 memory-corruption path on torch <= 2.9.1; 2.10 added the same rule).
    Crafted bytes, no torch involved: one cell suffices."""
    tensor = (
        _g("torch._utils", "_rebuild_tensor_v2")
        + b"(("
        + _u("storage")
        + _g("torch", "FloatStorage")
        + _u("0")
        + _u("cpu")
        + b"K\x04tQq\x09K\x00K\x04\x85K\x01\x85\x89"  # the storage is memo 9
        + _g("collections", "OrderedDict")
        + b")RtR"
    )
    pkl = b"\x80\x02" + tensor + b"K\x00K\x07s" + b"h\x09K\x00K\x07s" + b"\x86."
    path = _write_zip(
        tmp_path / "setitem.pt", {"archive/data.pkl": pkl, "archive/data/0": bytes(16)}
    )
    result = scan(path)
    assert result.setitem_targets == ("torch._utils._rebuild_tensor_v2", "<persistent id>")
    assert result.nondefault_globals == ()
    with pytest.raises(UnsafeCheckpointError, match="non-dict") as refused:
        precheck(path, full=True, allowed=["torch._utils._rebuild_tensor_v2"])
    assert refused.value.globals == ()


# --------------------------------------------------------------------------- safety
@pytest.mark.one_cell
def test_placeholders_only_record() -> None:
    """Guards the implicit calls the unpickler makes on what find_class returned (BUILD's
    __setstate__, SETITEM, APPEND/APPENDS, NEWOBJ_EX, ADDITEMS, calling a result): each
    lands on an inert placeholder that records it. Pure pickle bytes: one cell suffices."""
    system = _g("os", "system")
    pkl = b"".join(
        [
            b"\x80\x04" + system + b"}b",  # BUILD on the class itself
            system + _u("k") + _u("v") + b"s",  # SETITEM on the class
            system + _u("v") + b"a",  # APPEND
            system + b"(" + _u("v") + b"e",  # APPENDS
            system + b")}\x92",  # NEWOBJ_EX
            b"(" + _u("v") + b"\x90",  # ADDITEMS on the new object
            b"}b",  # BUILD on it
            b")R.",  # call it
        ]
    )
    result = scan_pickle(pkl)
    assert result.completed
    assert result.applied["os.system"] == {"BUILD", "SETITEM", "APPEND", "NEWOBJ"}
    assert result.setitem_targets == ("os.system",)
    assert result.append_targets == ("os.system",)
    assert "call_on_result" in {f.code for f in result.findings}


def test_no_callable_from_the_file_is_ever_invoked(tmp_path: Path, canary: Path) -> None:
    """Guards the inert scan itself running payloads: every malicious kind (os/posix.system,
    eval/exec, getattr chains, importlib, subprocess, runpy, nested pickle.loads, INST/OBJ,
    protocols 0-4, a smuggled torch.os) is scanned raw, in a zip and through precheck and
    torch_compat.load under a Python audit hook that records every exec/compile/import/
    process event; none fires, every file is refused, the canary never appears."""
    files = []
    for i, (kind, pkl) in enumerate(_payloads(tmp_path, canary).items()):
        raw = tmp_path / f"raw{i}.pkl"
        raw.write_bytes(pkl)
        files += [(kind, str(raw)), (kind, str(_as_checkpoint_zip(tmp_path / f"zip{i}.pt", pkl)))]
    benign = _as_checkpoint_zip(tmp_path / "benign.pt", pickle.dumps({"a": 1}, protocol=2))
    report = json.loads(
        _run_python(
            f"""
            import json, os, sys
            from ckptcompat.scan import scan
            from ckptcompat.errors import CheckpointError
            files = {files!r}
            scan.scan({str(benign)!r}); scan.precheck({str(benign)!r}, full=True)  # warm up
            events, active = [], [False]
            payload_dir = {str(tmp_path)!r}
            def hook(event, args):
                if not active[0]:
                    return
                if (
                    event == "open"
                    and str(args[0]).startswith(payload_dir)
                    and args[1] in ("r", "rb")
                    and not args[2] & (os.O_WRONLY | os.O_RDWR)
                ):
                    return  # the scan reading the file under test, read-only
                events.append([event, repr(args)[:200]])
            sys.addaudithook(hook)
            refused, globals_seen = 0, {{}}
            active[0] = True
            for kind, path in files:
                result = scan.scan(path)
                globals_seen.setdefault(kind, []).extend(result.globals)
                try:
                    scan.precheck(path, full=True)
                except CheckpointError:
                    refused += 1
            active[0] = False
            scanned_events, events[:] = list(events), []
            active[0] = True  # control: the hook does see a compile and a real find_class
            compile("0", "<control>", "eval")
            import pickle
            pickle.loads(b"cbuiltins\\nint\\n.")
            active[0] = False
            control = sorted({{e for e, _ in events}})
            print(json.dumps({{
                "events": scanned_events, "control": control, "refused": refused,
                "globals": globals_seen,
            }}))
            """
        )
    )
    assert report["events"] == []
    assert report["control"] == ["compile", "pickle.find_class"]
    assert report["refused"] == len(files)
    assert "os.system" in report["globals"]["os.system STACK_GLOBAL"]
    assert "builtins.getattr" in report["globals"]["getattr chain protocol 4"]
    assert "torch.os" in report["globals"]["torch.os smuggled module"]
    for kind, path in files:
        if path.endswith(".pt"):
            with pytest.raises(CheckpointError):
                torch_compat.load(path)
            assert "call_on_result" in scan(path).codes() or kind not in (
                "getattr chain",
                "importlib",
            )
    assert not canary.exists()


@pytest.mark.one_cell
def test_find_class_never_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, canary: Path
) -> None:
    """Guards find_class importing the modules a file names (import-time side effects):
    a module on sys.path that creates the canary on import is named by GLOBAL, STACK_GLOBAL
    and INST and never imported. Pure pickle bytes: one cell suffices."""
    (tmp_path / "ckpt_canary_mod.py").write_text(_canary_code(canary) + "\nboom = print\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    for pkl in (
        b"\x80\x02" + _g("ckpt_canary_mod", "boom") + b")R.",
        b"\x80\x04" + _su("ckpt_canary_mod") + _su("boom") + b"\x93)R.",
        b"(ickpt_canary_mod\nboom\n.",
        b"\x80\x02" + _g("tabnanny", "check") + b")R.",
    ):
        result = scan_pickle(pkl)
        assert result.completed
        assert result.globals[0] in ("ckpt_canary_mod.boom", "tabnanny.check")
    assert "ckpt_canary_mod" not in sys.modules
    assert set(sys.modules) - before == set()
    assert not canary.exists()


@pytest.mark.one_cell
def test_extension_opcodes_and_memo_bombs_are_not_unpickled() -> None:
    """Guards the C unpickler meeting EXT opcodes (process-wide copyreg cache) or a memo index
    that would make it allocate gigabytes: the walk refuses both before it runs. Pure
    pickle bytes: one cell suffices."""
    ext = scan_pickle(b"\x80\x02\x82\x01)R.")
    assert "extension_opcode" in {f.code for f in ext.findings}
    assert not ext.completed
    bomb = scan_pickle(b"\x80\x02Nr\xff\xff\xff\x7f0N.")
    assert "memo_index_out_of_range" in {f.code for f in bomb.findings}
    assert not bomb.completed
    text_bomb = scan_pickle(b"Np99999999999\n.")
    assert "memo_index_out_of_range" in {f.code for f in text_bomb.findings}
    truncated = scan_pickle(b"\x80\x02X\xff\x00\x00\x00abc")
    assert "truncated_pickle" in {f.code for f in truncated.findings}
    assert truncated.needed_bytes > 0


@pytest.mark.one_cell
def test_scan_module_imports_neither_torch_nor_numpy() -> None:
    """Guards the doctor-facing guarantee: `import ckptcompat.scan.scan` (and a scan)
    pulls in neither torch nor numpy, so it works on machines without them. Independent
    of the installed torch: one cell suffices."""
    out = _run_python(
        """
        import sys
        import ckptcompat.scan.scan as s
        s.scan(s.__file__)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy")))
        """
    )
    assert out.strip() == "[]"


def _sparse_gib_checkpoint(path: Path) -> int:
    """A torch-style zip whose pickle claims 2**28 float32 (1 GiB) and whose storage record is
    a 1 GiB hole (the writer seeks over zero chunks). Returns the claimed bytes."""
    numel = 1 << 28
    pkl = (
        b"\x80\x02}("
        + _u("w")
        + _g("torch._utils", "_rebuild_tensor_v2")
        + b"(("
        + _u("storage")
        + _g("torch", "FloatStorage")
        + _u("0")
        + _u("cpu")
        + b"J"
        + struct.pack("<i", numel)
        + b"tQK\x00J"
        + struct.pack("<i", numel)
        + b"\x85K\x01\x85\x89"
        + _g("collections", "OrderedDict")
        + b")RtRu."
    )
    zero = bytes(16 << 20)

    class Sparse(io.RawIOBase):
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            if b is zero:  # leave a hole instead of writing zeros
                self.fh.seek(len(b), io.SEEK_CUR)
            else:
                self.fh.write(b)
            return len(b)

        def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
            return self.fh.seek(offset, whence)

        def tell(self) -> int:
            return self.fh.tell()

    with path.open("wb") as raw, zipfile.ZipFile(Sparse(raw), "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("sparse/data.pkl", pkl)
        zf.writestr("sparse/byteorder", "little")
        with zf.open("sparse/data/0", "w", force_zip64=True) as record:
            for _ in range((numel * 4) // len(zero)):
                record.write(zero)
        zf.writestr("sparse/version", "3\n")
    return numel * 4


@pytest.mark.one_cell
def test_sparse_gib_checkpoint_reads_under_a_megabyte(tmp_path: Path) -> None:
    """Guards the scan reading storage bytes: on a sparse 1 GiB checkpoint the scan and
    precheck(full=True) read < 1 MB (/proc/self/io rchar, in a fresh process). The file
    takes 8 kB of disk and ~0.5 s to write (CRC of 1 GiB). Crafted without torch: one cell
    suffices."""
    path = tmp_path / "sparse.pt"
    claimed = _sparse_gib_checkpoint(path)
    assert path.stat().st_size > claimed
    out = _run_python(
        f"""
        import json
        from ckptcompat.scan import scan
        def rchar():
            with open("/proc/self/io") as fh:
                return int(next(l for l in fh if l.startswith("rchar:")).split()[1])
        before = rchar()
        result = scan.scan({str(path)!r})
        scan.precheck({str(path)!r}, full=True)
        used = rchar() - before
        print(json.dumps([used, result.storage_bytes, [f.code for f in result.findings]]))
        """
    )
    used, storage_bytes, codes = json.loads(out)
    assert storage_bytes == claimed
    assert codes == []
    assert used < 1_000_000


@pytest.mark.one_cell
def test_not_a_checkpoint_kinds_unchanged(tmp_path: Path) -> None:
    """Guards sniff/precheck behaviour every caller relies on: kinds and errors for zero
    bytes, an LFS pointer, HTML, a truncated zip and random bytes. Handmade bytes, no torch
    involved: one cell suffices."""
    cases = {
        "empty": b"",
        "git_lfs_pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n",
        "html": b"<!DOCTYPE html><html></html>",
        "truncated_zip": b"PK\x03\x04" + bytes(100),
        "unknown": b"\x00\x01garbage",
    }
    for kind, data in cases.items():
        path = tmp_path / f"{kind}.pt"
        path.write_bytes(data)
        assert sniff(path).kind == kind
        for full in (False, True):
            with pytest.raises(CorruptCheckpointError):
                precheck(path, full=full)
    assert scan_mod.scan(tmp_path / "html.pt").codes() == {"not_scanned"}


# --------------------------------------------------------------------------- fast paths
def _genops_names(pkl: bytes) -> set[str]:
    import pickletools

    return {op.name for op, _arg, _pos in pickletools.genops(pkl)}


class _Stored:
    """Pickles as a persistent id (what torch.save does for storages)."""

    def __init__(self, pid: object) -> None:
        self.pid = pid


class _IdPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        return obj.pid if isinstance(obj, _Stored) else None


def _with_ids(obj: object) -> bytes:
    buf = io.BytesIO()
    _IdPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


@pytest.mark.one_cell
@pytest.mark.parametrize("protocol", range(6))
def test_fast_tokenizer_finds_every_opcode_of_large_pickles(protocol: int) -> None:
    """Guards the regex runs of the walk (pickles over 8 KiB): the opcode set, protocol and
    end must be what a sequential tokenizer finds, with strings over 255 bytes, ints of every
    width and memo indices past 255 in the stream. Pure pickle bytes: one cell suffices."""
    state = collections.OrderedDict(
        (f"layer{i}." + "w" * (i % 300), [i, -i, 1 << (i % 70), i / 3, b"b" * (i % 280), None])
        for i in range(600)
    )
    pkl = pickle.dumps(state, protocol=protocol)
    assert len(pkl) > 8192
    result = scan_pickle(pkl + b"trailing")
    assert result.opcodes == _genops_names(pkl)
    assert result.end == len(pkl)
    assert result.completed
    if protocol >= 2:
        assert result.protocol == protocol


@pytest.mark.one_cell
def test_fast_tokenizer_leaves_large_memo_indices_to_the_check() -> None:
    """Guards the memo-bomb check behind the regex runs: LONG_BINPUT indices at or past the
    pickle's size are flagged in large pickles too, and indices below it (even past the
    largest power of two the regex covers) are not. Pure pickle bytes: one cell suffices."""
    body = b"\x80\x02]" + b"".join(
        b"K\x01r" + i.to_bytes(4, "little") + b"a" for i in range(3000)
    )  # [1, 1, ...], every item memoized: all in the regex's opcodes
    for index in (20_000, 30_000, 1 << 31):
        pkl = body + b"r" + index.to_bytes(4, "little") + b"."
        assert 1 << 14 <= len(pkl) < 30_000  # the regex covers indices below 2**14
        result = scan_pickle(pkl)
        codes = {f.code for f in result.findings}
        assert ("memo_index_out_of_range" in codes) is (index >= len(pkl)), index
        assert result.completed is (index < len(pkl))


@pytest.mark.one_cell
def test_quick_inert_pass_equals_the_full_one_on_odd_persistent_ids() -> None:
    """Guards the quick inert pass (persistent ids recorded by C, standing as None): where a
    pickle does more with an id than store it, or keys a dict by ids, the full pass must
    decide, so SETITEM on a storage and calls on it are still reported. Pure pickle bytes:
    one cell suffices."""
    storage = ("storage", collections.OrderedDict, "0", "cpu", 4)
    keyed = scan_pickle(_with_ids({_Stored(storage): 1, _Stored(("x",)): 2}))
    assert keyed.completed
    assert len(keyed.persistent_ids) == 2
    assert keyed.facts is None  # keyed by placeholders: the doctor walks it itself
    root = scan_pickle(_with_ids(_Stored(storage)))
    assert root.facts is not None and root.facts.root.kind == "unknown"
    setitem = scan_pickle(
        b"\x80\x02" + _u("0") + b"Q" + _u("k") + _u("v") + b"s."  # storage["k"] = "v"
    )
    assert setitem.setitem_targets == ("<persistent id>",)
    called = scan_pickle(b"\x80\x02" + _u("0") + b"Q)R.")  # storage()
    assert "call_on_result" in {f.code for f in called.findings}


@pytest.mark.one_cell
def test_zip_directory_bulk_parse_equals_the_record_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the bulk central-directory parse (one split and C-level maps for torch's
    thousands of plain records) against the record-by-record loop it stands for, on a
    torch file and on a directory with comments and a non-ASCII name. One cell suffices."""
    from ckptcompat.scan import archive_reader

    plain = tmp_path / "plain.pt"
    torch.save({f"w{i}": torch.zeros(1) for i in range(300)}, plain)
    odd = tmp_path / "odd.zip"
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("a/data.pkl", b"\x80\x02N.")
        info = zipfile.ZipInfo("a/dätä")
        info.comment = b"PK\x01\x02 inside a comment"
        zf.writestr(info, b"x")

    def entries(path: Path) -> list[archive_reader.ZipEntry]:
        reader = archive_reader.ArchiveReader(path)
        try:
            return reader.zip_entries()
        finally:
            reader.close()

    bulk = {p: entries(p) for p in (plain, odd)}
    monkeypatch.setattr(archive_reader, "_plain_entries", lambda cd, count: None)
    for path, found in bulk.items():
        assert entries(path) == found
    assert len(bulk[plain]) > 300
