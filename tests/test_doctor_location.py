"""Tests of the doctor's storage locations (ckptcompat.doctor.location, issue 16 item 1).

A file whose tensors were saved on ``cuda:0`` fails ``torch.load`` on a CPU-only machine on
every torch version, plain and weights-only; the doctor predicted "loads" and never named
locations or ``map_location``. The file here comes from the cell's own ``torch.save``,
with the location tag a GPU machine's save writes (``torch.serialization.location_tag``
answers ``cuda:0``, as it does for a CUDA storage): this machine has no GPU.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.serialization

from ckptcompat import doctor, torch_compat
from ckptcompat.doctor.location import check_devices, visible_cuda_devices
from ckptcompat.errors import CheckpointError


def _save_on(path: Path, tag: str) -> dict[str, torch.Tensor]:
    state = {"w": torch.arange(6, dtype=torch.float32), "b": torch.ones(2)}
    real = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: tag  # type: ignore[assignment]
    try:
        torch.save(state, path)
    finally:
        torch.serialization.location_tag = real
    return state


def test_cuda_file_prediction_matches_this_torch(tmp_path: Path) -> None:
    """Guards the doctor predicting "loads" for a file saved on cuda:0 that fails on a
    CPU-only machine (issue 16 item 1): the prediction here must match what this cell's
    torch does, plain and weights-only, and the fix it prints (map_location="cpu") must
    load the same tensors."""
    path = tmp_path / "on_cuda.pt"
    state = _save_on(path, "cuda:0")
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    diag = doctor.diagnose(path, cuda_devices=here)
    assert diag.devices.locations == {"cuda:0": 2}
    # A plain load (naive_load: torch.load with weights_only omitted, as a user writes it)
    # and a weights-only one (torch_compat.load); torch.load is called only in torch_compat.
    for load in (torch_compat.naive_load, torch_compat.load):
        try:
            load(path)
        except (RuntimeError, pickle.UnpicklingError, CheckpointError) as exc:
            # 2.4 wraps it for weights_only: "Weights only load failed ... WeightsUnpickler
            # error: Attempting to deserialize object on a CUDA device but ..."
            assert "deserialize object on a CUDA device" in str(exc)
            assert diag.devices.problem is not None and diag.devices.certain
        else:
            assert diag.devices.problem is None
    assert doctor.verdict_line(diag).startswith(
        'saved on cuda:0: fails here without map_location="cpu"'
        if here == 0
        else "loads with weights_only"
    )
    loaded = torch_compat.load(path, map_location="cpu")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.one_cell
def test_devices_in_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards a report that names neither the location nor map_location (one cell: the
    doctor's text does not depend on the torch that wrote a two-tensor file)."""
    path = tmp_path / "on_cuda.pt"
    _save_on(path, "cuda:0")
    assert doctor.main([str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    devices = document["devices"]
    assert devices["locations"] == {"cuda:0": 2}
    if devices["cuda_devices_here"] == 0:
        assert devices["certain"] and "map_location" in devices["fix"]
        assert document["summary"].startswith("saved on cuda:0")
    assert doctor.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "devices      saved on cuda:0 (2 storage(s))" in text


@pytest.mark.one_cell
def test_the_per_version_table_stars_loads_that_need_map_location(tmp_path: Path) -> None:
    """Guards the per-version table saying a bare "loads" for a cuda:0 file on a machine
    without CUDA (new-user trial, 2026-12-06), under a verdict line saying it fails here:
    every cell that would load is starred, and the footnote names the location and
    map_location. With a CUDA device to restore to, no star and no footnote."""
    path = tmp_path / "on_cuda.pt"
    _save_on(path, "cuda:0")
    text = doctor.render_text(doctor.diagnose(path, cuda_devices=0))
    rows = [line.split() for line in text.splitlines() if line.startswith("  2.")]
    assert rows and all(row[3:] == ["loads*", "loads*"] for row in rows)
    assert '* here only with map_location="cpu": saved on cuda:0' in text
    text = doctor.render_text(doctor.diagnose(path, cuda_devices=1))
    assert "loads*" not in text and 'map_location="cpu": saved on' not in text


@pytest.mark.one_cell
def test_cpu_file_has_no_device_note(tmp_path: Path) -> None:
    """Guards a false alarm on ordinary files: CPU storages give no problem and no line."""
    path = tmp_path / "cpu.pt"
    torch.save({"w": torch.ones(2)}, path)
    diag = doctor.diagnose(path, cuda_devices=0)
    assert diag.devices.locations == {"cpu": 1} and diag.devices.problem is None
    assert "devices" not in doctor.render_text(diag)


@pytest.mark.one_cell
@pytest.mark.parametrize(
    ("tags", "cuda", "problem", "certain"),
    [
        (["cuda:0", "cuda:0"], 1, None, True),
        (["cuda:1"], 1, "needs CUDA device 1, and 1 are visible here", True),
        (["cuda"], 0, "needs CUDA, and this machine has no visible CUDA device", True),
        (["cpu", "meta", None], 0, None, True),
        (["xpu:0"], 0, "xpu backend, which the doctor cannot see", False),
    ],
)
def test_check_devices_rules(
    tags: list[str | None], cuda: int, problem: str | None, certain: bool
) -> None:
    """Guards the restore rules of torch/serialization.py's default_restore_location: a
    cuda:N tag needs N + 1 visible devices; cpu and meta restore anywhere; an unknown
    backend is "may fail", never a certain verdict the doctor cannot know."""
    check = check_devices(tags, cuda)
    if problem is None:
        assert check.problem is None and check.fix is None
    else:
        assert check.problem is not None and problem in check.problem
        assert check.certain is certain
        assert ("fails here" if certain else "may fail here") in check.problem


@pytest.mark.one_cell
def test_visible_cuda_devices_reads_dev_and_the_environment(tmp_path: Path) -> None:
    """Guards counting GPUs by importing torch (the doctor must not): /dev/nvidia<N>
    nodes, limited by CUDA_VISIBLE_DEVICES (empty or -1 hides all)."""
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert visible_cuda_devices({}, str(tmp_path)) == 2
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": "1"}, str(tmp_path)) == 1
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": ""}, str(tmp_path)) == 0
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": "-1"}, str(tmp_path)) == 0
    assert visible_cuda_devices({}, str(tmp_path / "absent")) == 0
