"""Tests of harness/generations_golden/metta_format.py: the files follow Metta's formats.

The byte layout is checked against the formats' definitions (the safetensors reference
serializer, Metta's ``to_spec`` and ``SubmissionPolicySpec``), and read back with our own
readers (``ckptcompat.generations``), which are what consumers use.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest
import torch

from ckptcompat.generations.architecture import parse_architecture
from ckptcompat.generations.safetensors_header import parse_header
from ckptcompat.generations.tensors import load_safetensors
from ckptcompat.harness.generations_golden import metta_format


def test_safetensors_layout_is_the_reference_serializers() -> None:
    """Guards a weights file laid out unlike safetensors.torch.save: tensors must follow in
    descending dtype order, then by name, under a compact JSON header padded to 8 bytes."""
    tensors = {
        "b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "a.count": torch.tensor(7.0, dtype=torch.float64),
        "a.bias": torch.ones(2),
        "z.mean": torch.zeros(3, dtype=torch.float64),
    }
    data = metta_format.safetensors_bytes(tensors)
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0
    text = data[8 : 8 + length].decode()
    assert text.rstrip(" ").startswith('{"a.count":{"dtype":"F64","shape":[],"data_offsets":[0,8]}')
    assert " " not in text.rstrip(" ")  # serde_json's compact form
    assert list(json.loads(text)) == ["a.count", "z.mean", "a.bias", "b.weight"]
    header = parse_header(data, len(data))
    assert [t.name for t in header.tensors] == ["a.count", "z.mean", "a.bias", "b.weight"]
    loaded = load_safetensors(data)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor) and loaded[name].dtype == tensor.dtype


def test_shared_storage_is_written_twice() -> None:
    """Guards Metta's prepare_state_dict_for_save: tied tensors (one storage) are cloned,
    since safetensors refuses aliases; each name keeps its own bytes."""
    weight = torch.ones(2, 2)
    data = metta_format.safetensors_bytes({"a": weight, "b": weight})
    header = parse_header(data, len(data))
    assert [t.end - t.begin for t in header.tensors] == [16, 16]


def test_unwritable_dtype_is_a_type_error() -> None:
    """Guards a silent wrong file: a dtype this writer has no safetensors name for."""
    with pytest.raises(TypeError, match="complex"):
        metta_format.safetensors_bytes({"c": torch.zeros(2, dtype=torch.complex64)})


def test_architecture_string_is_metta_to_spec_and_parses_back() -> None:
    """Guards the architecture string: keys sorted at every depth, repr values, and our
    ast-only parser reads back the same config."""
    config = {"z": 1, "a": {"y": [1, 2], "b": True}, "m": None, "f": -1.5, "s": "x"}
    spec = metta_format.architecture_spec("pkg.mod.Arch", config)
    assert spec == "pkg.mod.Arch(a={'b': True, 'y': [1, 2]}, f=-1.5, m=None, s='x', z=1)"
    call = parse_architecture(spec)
    assert call.name == "pkg.mod.Arch" and call.to_config() == config
    assert metta_format.architecture_spec("pkg.Arch", {}) == "pkg.Arch"


def test_policy_spec_is_submission_policy_spec_json() -> None:
    """Guards policy_spec.json's keys: pydantic's compact dump of class_path (the string up
    to its first parenthesis), data_path, init_kwargs.architecture_spec, setup_script."""
    raw = metta_format.policy_spec_json("pkg.Arch(n=1)")
    assert raw == (
        b'{"class_path":"pkg.Arch","data_path":"weights.safetensors",'
        b'"init_kwargs":{"architecture_spec":"pkg.Arch(n=1)"},"setup_script":null}'
    )


def test_mpt_members_sit_at_the_root_deflated_with_a_fixed_time() -> None:
    """Guards the .mpt container: two deflated members at the zip's root, weights first, and
    no writing time in the bytes (committed goldens must regenerate)."""
    data = metta_format.mpt_bytes(b"weights", "pkg.Arch(n=1)")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["weights.safetensors", "modelarchitecture.txt"]
        assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
        assert {i.date_time for i in infos} == {metta_format.ZIP_DATE_TIME}
        assert archive.read("modelarchitecture.txt") == b"pkg.Arch(n=1)"
    assert metta_format.mpt_bytes(b"weights", "pkg.Arch(n=1)") == data


def test_bundle_members_are_sorted_and_trainer_state_loads_weights_only() -> None:
    """Guards the G4 bundle's files: spec, trainer state and weights; the trainer state is
    Metta's {optimizer, epoch, agent_step} torch.save, readable with weights_only=True."""
    from ckptcompat import torch_compat

    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param])
    param.sum().backward()
    optimizer.step()
    state = metta_format.trainer_state_bytes(optimizer.state_dict(), 1, 128)
    members = metta_format.bundle_members(b"w", "pkg.Arch()", state)
    assert list(members) == ["policy_spec.json", "trainer_state.pt", "weights.safetensors"]
    loaded = torch_compat.load(io.BytesIO(state))
    assert (loaded["epoch"], loaded["agent_step"]) == (1, 128)
    assert set(loaded["optimizer"]) == {"state", "param_groups"}
