"""Tests of ckptcompat.doctor.safetensors and ``ckptcompat doctor`` on safetensors files.

The doctor reads headers only and its predictions are tables (no torch): one cell, except
the plain ``torch.load`` check, which depends on torch's version. The files are written by
the real ``safetensors.torch.save_file`` / ``save_model``.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ckptcompat.cli import main
from ckptcompat.doctor.safetensors import explain, is_safetensors
from ckptcompat.errors import CheckpointError

st = pytest.importorskip("safetensors.torch")


def _e8m0(path: Path) -> Path:
    text = b'{"s": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}}'
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x7f\x80")
    return path


@pytest.mark.one_cell
def test_a_plain_file_is_explained_per_torch_and_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the issue's ask for a plain .safetensors: the doctor called it 'bytes of an
    unknown format'; now it names the dtypes and, per torch range and safetensors release,
    what load_file and load(bytes) do (F8_E8M0: load_file from 0.6.1 on torch >= 2.7,
    load(bytes) never)."""
    path = _e8m0(tmp_path / "w.safetensors")
    assert main(["doctor", str(path)]) == 0
    out = capsys.readouterr().out
    assert "safetensors file: 1 tensors" in out and "from 0.6.1" in out
    assert "2.4-2.6" in out and "AttributeError: torch has no float8_e8m0fnu" in out
    assert "KeyError: 'F8_E8M0'" in out
    assert main(["doctor", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_torch = {v["torch"]: v for v in data["versions"]}
    assert by_torch["2.6"]["ckptcompat"].startswith("fails")
    assert by_torch["2.7"]["ckptcompat"].startswith("reads")
    newest = by_torch["2.15"]["safetensors"][-1]
    assert newest["load_file"] == "reads" and newest["load"].startswith("fails: KeyError")
    assert data["kind"] == "safetensors" and data["load_file_since"] == "0.6.1"


@pytest.mark.one_cell
def test_save_model_aliases_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards the shared-storage account: save_model drops tensors that share storage and
    records them in __metadata__; a plain load_file then lacks those names, which breaks
    load_state_dict(strict=True). The doctor names each alias."""
    module = torch.nn.Module()
    module.x = torch.nn.Linear(2, 2)
    module.y = module.x
    path = tmp_path / "tied.safetensors"
    st.save_model(module, str(path))
    assert main(["doctor", str(path)]) == 0
    out = capsys.readouterr().out
    assert "y.weight -> x.weight" in out and "load_model" in out


@pytest.mark.one_cell
def test_a_sharded_directory_and_its_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the sharded case: a directory holding model.safetensors.index.json is one
    checkpoint; a tensor the index lists but no shard holds makes it INCOMPLETE and every
    reader's prediction a failure."""
    st.save_file({"a": torch.ones(2)}, str(tmp_path / "model-1.safetensors"))
    st.save_file({"b": torch.ones(3)}, str(tmp_path / "model-2.safetensors"))
    weight_map = {"a": "model-1.safetensors", "b": "model-2.safetensors"}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert main(["doctor", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 shards" in out and "complete; no problems" in out
    weight_map["c"] = "model-2.safetensors"
    index.write_text(json.dumps({"weight_map": weight_map}))
    assert main(["doctor", str(index), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "safetensors_index" and not data["shards"]["complete"]
    assert "tensor 'c'" in data["shards"]["problems"][0]
    assert all(v["ckptcompat"].startswith("fails") for v in data["versions"])


@pytest.mark.one_cell
def test_hostile_files_exit_2_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards 'a corrupt or hostile safetensors file gets a typed error, never a crash':
    a 2**64-1 header length, overlapping tensors; exit 2, the error as JSON."""
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    assert main(["doctor", str(huge), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["type"] == "LimitExceededError"
    text = json.dumps(
        {
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]},
        }
    ).encode()
    overlap = tmp_path / "overlap.safetensors"
    overlap.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    assert main(["doctor", str(overlap)]) == 2
    assert "share bytes" in capsys.readouterr().err


@pytest.mark.one_cell
def test_batch_lines_and_sniffing_by_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards doctor PATH...: a safetensors file named .bin is recognised by its first
    bytes, and each gets a summary line, while a torch .pt is not taken for one."""
    st.save_file({"a": torch.ones(1)}, str(tmp_path / "weights.bin"))
    torch.save({"a": torch.ones(1)}, tmp_path / "sd.pt")
    assert is_safetensors(tmp_path / "weights.bin") and not is_safetensors(tmp_path / "sd.pt")
    assert main(["doctor", str(tmp_path / "weights.bin"), str(tmp_path / "sd.pt")]) == 0
    out = capsys.readouterr().out
    assert "weights.bin: safetensors file, 1 tensors, dtypes F32" in out


@pytest.mark.one_cell
def test_mutated_files_never_crash_the_doctor(tmp_path: Path) -> None:
    """Guards the fuzz property on the doctor path: truncations and bit flips of a real
    file either explain or raise a CheckpointError (no KeyError, no hang)."""
    path = tmp_path / "w.safetensors"
    st.save_file({"a": torch.ones(3), "b": torch.zeros(2, dtype=torch.int64)}, str(path))
    blob = path.read_bytes()
    rng = random.Random(22)
    cases = [blob[:n] for n in range(0, len(blob), 5)]
    for _ in range(200):
        raw = bytearray(blob)
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        cases.append(bytes(raw))
    outcomes = set()
    for case in cases:
        path.write_bytes(case)
        try:
            explain(path)
            outcomes.add("explained")  # a flip in the data bytes, or a harmless one
        except CheckpointError:
            outcomes.add("refused")
    assert outcomes == {"explained", "refused"}


@pytest.mark.one_cell
def test_the_doctor_on_safetensors_does_not_import_torch(tmp_path: Path) -> None:
    """Guards the doctor pulling in torch or safetensors (seconds, absent on a bare
    machine) for a header-only explanation."""
    path = _e8m0(tmp_path / "w.safetensors")
    code = (
        "import sys; from ckptcompat.doctor.safetensors import explain, render; "
        f"render(explain({str(path)!r})); "
        "assert 'torch' not in sys.modules and 'safetensors' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.one_cell
def test_a_hostile_tensor_name_prints_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards printing names the file chose: a JSON escape spelling a lone surrogate
    (which no stream can encode) must not crash the text report."""
    text = b'{"\\udc80x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = tmp_path / "s.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x00")
    assert main(["doctor", str(path)]) == 0
    assert "safetensors file: 1 tensors" in capsys.readouterr().out
    assert main(["doctor", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"][0]["name"] == "\udc80x"


def test_plain_torch_load_prediction_in_this_cell(tmp_path: Path) -> None:
    """Guards the torch.load row: 2.4-2.6 refuse a safetensors file (UnpicklingError), and
    2.13+ hand a *.safetensors path to safetensors.torch.load_file (pytorch PR #170592), so
    'fails on every version' would be wrong there. Runs in every cell."""
    from ckptcompat.torch_compat import naive_load

    path = tmp_path / "w.safetensors"
    st.save_file({"a": torch.arange(3.0)}, str(path))
    minor = ".".join(torch.__version__.split(".")[:2])
    predicted = next(c.torch_load for c in explain(path).cells if c.torch == minor)
    if predicted.startswith("reads"):
        assert torch.equal(naive_load(path)["a"], torch.arange(3.0))
    elif predicted.startswith("fails: UnpicklingError"):
        with pytest.raises(CheckpointError):
            naive_load(path)
    else:
        pytest.skip(f"torch {minor}: not probed ({predicted})")
