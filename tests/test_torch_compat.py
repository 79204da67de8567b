"""torch_compat in the running cell: feature flags, scoped allowlists, the three loaders.

Every test here runs in every default cell, because each checks a behaviour that differs
between torch versions; expectations are derived from the cell's pin, so a torch that
disagrees with /work/shared/reference/torch_versions.md fails here.
"""

from __future__ import annotations

import _codecs
import argparse
import collections
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.version import Version

from ckptcompat import torch_compat as tc
from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    TrustedLoadWarning,
    UnsafeCheckpointError,
)
from ckptcompat.load_errors import parse_weights_only_error

V = tc.TORCH_VERSION


class _Marker:
    """A module-level class used as an allowlist entry in these tests."""


class _OtherMarker:
    """A second allowlist entry."""


def _save(obj: object, path: Path) -> Path:
    tc.save(obj, path)
    return path


@pytest.fixture(autouse=True)
def _clean_allowlist():
    """Each test starts and ends with the allowlist torch itself had after import."""
    before = list(torch.serialization.get_safe_globals())
    yield
    torch.serialization.clear_safe_globals()
    if before:
        torch.serialization.add_safe_globals(before)


# ------------------------------------------------------------------ version facts
def test_torch_version_is_the_base_version() -> None:
    """Guards '2.15.0+cu132' comparing unlike 2.15.0 (local build suffixes)."""
    assert Version(torch.__version__).base_version == str(V)
    assert not V.local


def test_feature_flags_match_the_documented_version_table() -> None:
    """Guards a feature flag (hasattr-detected) disagreeing with torch_versions.md."""
    assert tc.HAS_SAFE_GLOBALS_API  # 2.4+
    assert tc.HAS_SAFE_GLOBALS_CONTEXT == (V >= Version("2.5"))
    assert tc.HAS_UNSAFE_GLOBALS_SCAN == (V >= Version("2.6"))
    assert tc.WEIGHTS_ONLY_IS_DEFAULT == (V >= Version("2.6"))
    assert tc.HAS_ALIASED_SAFE_GLOBALS == (V >= Version("2.6"))
    assert tc.HAS_SERIALIZATION_CONFIG == (V >= Version("2.7"))
    assert tc.SETITEM_RESTRICTED == (V >= Version("2.10"))
    assert tc.NEEDS_STATIC_PRESCAN == (V < Version("2.10"))


# ------------------------------------------------------------------ scoped allowlist
def test_scoped_allowlist_restores_a_preexisting_allowlist_exactly() -> None:
    """Guards torch's safe_globals context manager dropping entries registered before it.

    torch 2.5+'s ``safe_globals`` removes its entries on exit by set difference, so an
    entry that was already allowlisted permanently disappears too; 2.4 has no context
    manager. Ours must leave the list exactly as it was (order and duplicates on the
    2.4/2.5 list; the same set on 2.6+).
    """
    pre: list[object] = [_Marker, _OtherMarker, _Marker]
    if tc.HAS_ALIASED_SAFE_GLOBALS:
        pre.append((_Marker, "some.old.module.Marker"))
    torch.serialization.add_safe_globals(pre)
    before = list(torch.serialization.get_safe_globals())

    with tc.scoped_safe_globals([_Marker, argparse.Namespace]):
        inside = torch.serialization.get_safe_globals()
        assert argparse.Namespace in inside

    after = list(torch.serialization.get_safe_globals())
    if V >= Version("2.6"):
        assert set(after) == set(before)  # a set since 2.6
    else:
        assert after == before  # a list, order and duplicates included, on 2.4/2.5
    assert argparse.Namespace not in after


def test_scoped_allowlist_restores_after_an_exception() -> None:
    """Guards an entry leaking into the global allowlist when the load inside fails."""
    before = list(torch.serialization.get_safe_globals())
    with pytest.raises(RuntimeError, match="boom"), tc.scoped_safe_globals([_Marker]):
        raise RuntimeError("boom")
    after = list(torch.serialization.get_safe_globals())
    if V >= Version("2.6"):
        assert set(after) == set(before)  # a set since 2.6: list order is arbitrary
    else:
        assert after == before


@pytest.mark.skipif(V < Version("2.5"), reason="torch 2.4 has no safe_globals context manager")
def test_control_torch_context_manager_drops_preexisting_entries() -> None:
    """Control for the fault above: torch's own safe_globals really does drop entries.

    If a future torch fixes this, this test fails and the workaround can be revisited.
    """
    torch.serialization.add_safe_globals([_Marker])
    with torch.serialization.safe_globals([_Marker]):
        pass
    assert _Marker not in torch.serialization.get_safe_globals()


def test_allowlist_applies_to_the_call_only(tmp_path: Path) -> None:
    """Guards an allowlisted class staying loadable after the call that allowed it."""
    path = _save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    loaded = tc.load(path, safe_globals=[argparse.Namespace])
    assert loaded["args"].lr == 0.1
    with pytest.raises(UnsafeCheckpointError) as info:
        tc.load(path)
    assert info.value.globals == ("argparse.Namespace",)


def test_aliased_entries_need_torch_2_6(tmp_path: Path) -> None:
    """Guards a numpy-1 alias silently failing on 2.4/2.5, which have no tuple entries."""
    path = _save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    same_name = (argparse.Namespace, "argparse.Namespace")
    assert tc.load(path, safe_globals=[same_name])["args"].lr == 0.1
    alias = (argparse.Namespace, "old_argparse.Namespace")
    if tc.HAS_ALIASED_SAFE_GLOBALS:
        with tc.scoped_safe_globals([alias]):
            assert alias in torch.serialization.get_safe_globals()
    else:
        with pytest.raises(IncompatibleCheckpointError, match=r"torch >= 2\.6"):
            tc.load(path, safe_globals=[alias])


# ------------------------------------------------------------------ load: typed errors
def test_safe_payload_loads_with_no_allowlist(tmp_path: Path) -> None:
    """Guards the safe format needing an allowlist on some version."""
    payload = {"w": torch.arange(6.0).reshape(2, 3), "n": 3, "s": "x", "f": 0.5, "z": None}
    out = tc.load(_save(payload, tmp_path / "ok.pt"))
    assert torch.equal(out["w"], payload["w"])
    assert out["n"] == 3 and out["s"] == "x" and out["z"] is None


def test_save_writes_pickle_protocol_2(tmp_path: Path) -> None:
    """Guards a protocol > 2 pickle, which the weights-only unpickler cannot read."""
    path = _save({"a": 1}, tmp_path / "p.pt")
    with zipfile.ZipFile(path) as zf:
        record = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        assert zf.read(record)[:2] == b"\x80\x02"


def test_whole_module_is_refused_with_every_global_named(tmp_path: Path) -> None:
    """Guards 'Unsupported global ... Linear' surfacing as a raw UnpicklingError or None."""
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeCheckpointError) as info:
        tc.load(path)
    assert any("Linear" in g for g in info.value.globals)
    assert "doctor" in str(info.value)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "empty"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", "Git-LFS"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b"\x00\x01garbage", "neither a zip"),
    ],
)
def test_files_that_are_not_checkpoints_are_corrupt(
    tmp_path: Path, content: bytes, found: str
) -> None:
    """Guards LFS pointers / HTML pages / empty files becoming 'Unsupported operand 118'."""
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=found):
        tc.load(path)


def test_truncated_zip_is_corrupt(tmp_path: Path) -> None:
    """Guards a half-copied checkpoint raising PytorchStreamReader's RuntimeError."""
    path = _save({"w": torch.zeros(1000)}, tmp_path / "full.pt")
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        tc.load(cut)


def test_missing_file_and_directory_are_not_found(tmp_path: Path) -> None:
    """Guards a bare FileNotFoundError/IsADirectoryError from deep inside torch."""
    with pytest.raises(CheckpointNotFoundError, match="nothing at this path"):
        tc.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointNotFoundError, match="a directory"):
        tc.load(tmp_path)


def test_torchscript_archive_is_incompatible(tmp_path: Path) -> None:
    """Guards torch <= 2.5 handing a TorchScript archive to torch.jit.load under weights_only."""
    path = tmp_path / "ts.pt"
    zf = zipfile.ZipFile(path, "w")
    zf.writestr("ts/data.pkl", b"\x80\x02}q\x00.")
    zf.writestr("ts/constants.pkl", b"\x80\x02).")
    zf.writestr("ts/version", b"3\n")
    zf.close()
    with pytest.raises(IncompatibleCheckpointError, match="TorchScript"):
        tc.load(path)


def test_file_objects_are_loaded_and_errors_typed() -> None:
    """Guards file-object inputs bypassing the checks paths get."""
    buf = io.BytesIO()
    tc.save({"a": torch.ones(2)}, buf)
    buf.seek(0)
    assert torch.equal(tc.load(buf)["a"], torch.ones(2))
    with pytest.raises(CorruptCheckpointError):
        tc.load(io.BytesIO(b"version https://git-lfs.github.com/spec/v1\n"))


# ------------------------------------------------------------------ naive / trusted
def test_naive_load_does_what_a_plain_torch_load_does_here(tmp_path: Path) -> None:
    """Guards the headline break: a whole-object pickle loads on 2.4/2.5 and fails on 2.6+."""
    path = _save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    if V >= Version("2.6"):
        with pytest.raises(UnsafeCheckpointError) as info:
            tc.naive_load(path)
        assert info.value.globals == ("argparse.Namespace",)
    else:
        with pytest.warns(FutureWarning, match="weights_only=False"):
            assert tc.naive_load(path)["args"].lr == 0.1


def test_force_weights_only_env_emulates_2_6_on_every_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 (our quick 2.6 emulation) not being honoured."""
    path = _save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeCheckpointError):
        tc.naive_load(path)


def test_trusted_load_warns_then_loads(tmp_path: Path) -> None:
    """Guards the one weights_only=False path running without announcing itself."""
    path = _save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    with pytest.warns(TrustedLoadWarning, match="arbitrary code"):
        assert tc.trusted_load(path)["args"].lr == 0.1


# ------------------------------------------------------------------ real error wordings
def _torch_error(path: Path, monkeypatch: pytest.MonkeyPatch, allow=()) -> BaseException:
    """The raw exception torch raises for ``path`` under weights_only on this version."""
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError) as info, tc.scoped_safe_globals(allow):
        tc.naive_load(path)
    assert info.value.__cause__ is not None
    return info.value.__cause__


def test_parse_unsupported_global_from_this_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the parser missing this version's wording of 'Unsupported global'."""
    exc = _torch_error(_save({"a": argparse.Namespace()}, tmp_path / "a.pt"), monkeypatch)
    failure = parse_weights_only_error(exc)
    assert failure.kind == "unsupported_global"
    assert failure.globals == ("argparse.Namespace",)


def test_parse_builtin_global_keeps_builtins_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards 2.7+ printing 'GLOBAL slice' (builtins. stripped) breaking name comparison."""
    exc = _torch_error(_save({"s": slice(1, 2)}, tmp_path / "s.pt"), monkeypatch)
    assert parse_weights_only_error(exc).globals == ("builtins.slice",)


def test_parse_protocol_4_operand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards protocol-4 checkpoints (FRAME, opcode 149) being reported as 'other'."""
    path = tmp_path / "p4.pt"
    torch.save({"a": torch.ones(1)}, path, pickle_protocol=4)
    with pytest.warns(UserWarning, match="Detected pickle protocol 4"):
        exc = _torch_error(path, monkeypatch)
    failure = parse_weights_only_error(exc)
    assert (failure.kind, failure.operand) == ("unsupported_operand", 149)


def test_parse_can_only_build_names_the_numpy_dtype_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the concrete numpy dtype class (missed by torch's own scan) going unnamed.

    An ndarray's buffer pickles as bytes through ``_codecs.encode``, which 2.4 does not
    allow by default (2.5+ does), so 2.4 needs it allowlisted to get as far as BUILD.
    """
    path = _save({"a": np.arange(3, dtype=np.float64)}, tmp_path / "np.pt")
    allow = [np._core.multiarray._reconstruct, np.ndarray, np.dtype]
    if V < Version("2.5"):
        allow.append(_codecs.encode)
    failure = parse_weights_only_error(_torch_error(path, monkeypatch, allow))
    assert failure.kind == "can_only_build"
    assert failure.globals == ("numpy.dtypes.Float64DType",)


def test_parse_blocked_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards os/posix globals: 'blocked' on 2.5+ even if allowlisted; unsupported on 2.4."""
    failure = parse_weights_only_error(
        _torch_error(_save({"f": os.getcwd}, tmp_path / "os.pt"), monkeypatch)
    )
    if V >= Version("2.5"):
        assert failure.kind == "blocked_module"
    else:
        assert failure.kind == "unsupported_global"
    assert failure.globals == ("posix.getcwd",)


def test_allowlisted_defaultdict_with_items_by_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the 2.10+ SETITEM rule: an allowlisted defaultdict with items stops loading."""
    path = _save({"d": collections.defaultdict(int, {"k": 1})}, tmp_path / "dd.pt")
    allow = [collections.defaultdict, int]
    if tc.SETITEM_RESTRICTED:
        failure = parse_weights_only_error(_torch_error(path, monkeypatch, allow))
        assert failure.kind == "setitem_restriction"
        assert failure.globals == ("collections.defaultdict",)
    else:
        assert tc.load(path, safe_globals=allow)["d"]["k"] == 1


def test_bytes_load_by_default_from_2_5(tmp_path: Path) -> None:
    """Guards the 2.4 gap: bytes pickle through _codecs.encode, allowed by default from 2.5."""
    path = _save({"b": b"\x00\x01"}, tmp_path / "bytes.pt")
    if V >= Version("2.5"):
        assert tc.load(path)["b"] == b"\x00\x01"
    else:
        with pytest.raises(UnsafeCheckpointError) as info:
            tc.load(path)
        assert info.value.globals == ("_codecs.encode",)


def test_storage_on_a_missing_device_is_incompatible_not_unsafe(tmp_path: Path) -> None:
    """Guards the translation of a cuda:0 file's load on a CPU-only machine: 2.4 wraps
    torch's "Attempting to deserialize object on a CUDA device" in a weights-only
    UnpicklingError, which torch_compat.load called UnsafeCheckpointError ("the weights-only
    unpickler refused this checkpoint"); 2.5+ raise a RuntimeError, which gave an untyped
    CheckpointError. Both are IncompatibleCheckpointError naming map_location, and
    map_location="cpu" loads."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: a cuda:0 file loads here")
    path = tmp_path / "on_cuda.pt"
    real = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"  # what a GPU save writes
    try:
        torch.save({"w": torch.ones(3)}, path)
    finally:
        torch.serialization.location_tag = real
    with pytest.raises(IncompatibleCheckpointError) as caught:
        tc.load(path)
    assert type(caught.value) is IncompatibleCheckpointError
    assert "map_location" in str(caught.value) and "CUDA device" in str(caught.value)
    assert torch.equal(tc.load(path, map_location="cpu")["w"], torch.ones(3))
