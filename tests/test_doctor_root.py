"""The doctor's top-level object of a tensor mapping, rebuilt from the scan's pass
(doctor/pickle_walk.tensor_mapping_root) instead of a second walk over the pickle.

One cell: the doctor never imports torch, and the files here are written once by this
cell's torch.save (the committed fixtures were written by every producer cell).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import torch

import ckptcompat.doctor as doctor_module
from ckptcompat import doctor
from ckptcompat.doctor import pickle_walk
from ckptcompat.doctor.prefixes import state_dict_keys
from ckptcompat.scan import scan

pytestmark = pytest.mark.one_cell

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".zip", ".pkl", ".tar"}


def _linear_state_dict() -> collections.OrderedDict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).state_dict()


def _objects() -> dict[str, Any]:
    sd = _linear_state_dict()
    return {
        "ordered_dict": sd,
        "plain_dict": dict(sd),
        "ddp_prefixed": collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()),
        "parameters": {"w": torch.nn.Parameter(torch.ones(2)), "b": torch.zeros(2)},
        "value_key": {"state_dict": torch.ones(1), "epoch": torch.zeros(1)},
        "int_keys": {0: torch.ones(1), 1: torch.zeros(1)},
        "mixed_values": {"w": torch.ones(1), "step": 3},
        "nested": {"model": dict(sd)},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("roots")
    out = {}
    for name, obj in _objects().items():
        out[name] = root / f"{name}.pt"
        torch.save(obj, out[name])
    return out


def _same_root(fast: object, walked: object) -> None:
    """Everything the root's readers look at is equal: its type, its keys in order, and of
    every value whether it is a mapping (and its keys)."""
    assert type(fast) is type(walked)
    assert pickle_walk.mapping_keys(fast) == pickle_walk.mapping_keys(walked)
    values = (
        (list(fast.values()), list(walked.values()))  # type: ignore[union-attr]
        if isinstance(fast, dict)
        else (fast.items, walked.items)  # type: ignore[union-attr]
    )
    assert len(values[0]) == len(values[1])
    for a, b in zip(*values, strict=True):
        assert type(a) is type(b) and pickle_walk.mapping_keys(a) == pickle_walk.mapping_keys(b)
    assert state_dict_keys(fast) == state_dict_keys(walked)


@pytest.mark.parametrize("name", ["ordered_dict", "plain_dict", "ddp_prefixed", "parameters"])
def test_a_tensor_mapping_is_rebuilt_from_the_scan_as_the_walk_rebuilds_it(
    files: dict[str, Path], name: str
) -> None:
    """Guards the fast root differing from the walked one (keys lost, reordered, a dict
    returned for an OrderedDict): for real torch.save files of tensor mappings the rebuilt
    root has the walked root's type, keys in order, and values of the same kind."""
    result = scan.scan(str(files[name]))
    assert result.facts is not None
    fast = pickle_walk.tensor_mapping_root(result.facts.root)
    assert fast is not None
    _same_root(fast, pickle_walk.root_object(str(files[name]), result))


@pytest.mark.parametrize("name", ["int_keys", "mixed_values", "nested"])
def test_other_roots_are_not_rebuilt_from_the_scan(files: dict[str, Path], name: str) -> None:
    """Guards a root the scan's shape cannot describe exactly (keys that are not str,
    values that are not all tensors, a nested state_dict) being rebuilt from it."""
    result = scan.scan(str(files[name]))
    assert result.facts is not None
    assert pickle_walk.tensor_mapping_root(result.facts.root) is None


def test_diagnose_skips_the_second_walk_only_where_the_rebuild_is_exact(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the second walk still running for a plain state_dict (the cost this removes:
    ~45% of a small file's diagnosis), and the rebuild used where a reader looks at values
    (a plain dict holding ``state_dict``: Lightning's test)."""
    walked: list[str] = []
    real = doctor_module.root_object

    def counting(name: str, result: Any) -> object | None:
        walked.append(Path(name).stem)
        return real(name, result)

    monkeypatch.setattr(doctor_module, "root_object", counting)
    for path in files.values():
        doctor.diagnose(path)
    assert sorted(walked) == ["int_keys", "mixed_values", "nested", "value_key"]


def _every_fixture() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)


def test_every_fixture_gets_the_same_diagnosis_with_and_without_the_rebuild(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the rebuild changing a verdict anywhere: every committed fixture (goldens of
    every producer, the zoo's Lightning, stable-baselines3 and Hugging Face files, the
    corpus, the malicious files) and the files above get the same diagnosis, as JSON, as
    with the rebuild switched off (the walk for every root)."""
    paths = [*_every_fixture(), *files.values()]
    assert len(paths) > 200

    def diagnoses() -> dict[str, Any]:
        out = {}
        for path in paths:
            try:
                out[str(path)] = doctor.to_json(doctor.diagnose(path))
            except Exception as exc:  # a typed refusal must stay the same refusal
                out[str(path)] = f"{type(exc).__name__}: {exc}"
        return out

    fast = diagnoses()
    monkeypatch.setattr(doctor_module, "tensor_mapping_root", lambda shape: None)
    walked = diagnoses()
    assert fast.keys() == walked.keys()
    differing = [p for p in fast if fast[p] != walked[p]]
    assert not differing, differing[:5]
