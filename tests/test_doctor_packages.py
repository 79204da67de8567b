"""Tests of ckptcompat.doctor.packages: packages a pickle needs, and the consumer's imports.

The pickles are written once with torch; the doctor's reading and the find_spec checks do
not depend on torch's version (one cell).
"""

from __future__ import annotations

import io
import os
import sys
import types
from pathlib import Path

import pytest

from ckptcompat import doctor
from ckptcompat.cli import main
from ckptcompat.doctor.packages import check_here, check_python, packages_of
from ckptcompat.errors import InputError
from ckptcompat.torch_compat import save

pytestmark = pytest.mark.one_cell


class _Opt:
    """Stands for a third-party optimizer pickled by reference."""

    def __init__(self) -> None:
        self.lr = 0.1


def _pickle_naming(module: str, path: Path) -> Path:
    """A torch.save file whose pickle names ``<module>.ForeachMuon``, with ``module``
    importable only while saving."""
    cls = type("ForeachMuon", (_Opt,), {"__module__": module})
    fake = types.ModuleType(module)
    fake.ForeachMuon = cls  # type: ignore[attr-defined]
    owner = sys.modules.get(module)
    sys.modules[module] = owner or fake
    if owner is not None:
        owner.ForeachMuon = cls  # type: ignore[attr-defined]
    try:
        buf = io.BytesIO()
        save({"optimizer": cls(), "step": 3}, buf)
    finally:
        if owner is None:
            del sys.modules[module]
        else:
            delattr(owner, "ForeachMuon")
    path.write_bytes(buf.getvalue())
    return path


def test_an_uninstalled_package_fails_a_plain_load(tmp_path: Path) -> None:
    """Guards the issue's second symptom: a trainer state naming heavyball.ForeachMuon was
    predicted to load (runs_code) on 2.4 while the real load fails with ModuleNotFoundError."""
    path = _pickle_naming("heavyball", tmp_path / "trainer_state.pt")
    diag = doctor.diagnose(path)
    assert "heavyball" in diag.consumer.packages and diag.consumer.missing == ("heavyball",)
    for minor in ("2.4", "2.5"):
        plain = diag.for_torch(minor).plain
        assert plain.outcome == "not_fixable"
        assert plain.first_error == "ModuleNotFoundError: No module named 'heavyball'"
    assert diag.for_torch("2.6").plain.outcome != "loads"
    assert doctor.to_json(diag)["consumer"]["missing"] == ["heavyball"]
    assert "not importable in this environment" in doctor.render_text(diag)


def test_main_classes_fail_outside_their_script(tmp_path: Path) -> None:
    """Guards classes pickled from a script (__main__.X): a plain load elsewhere fails."""
    path = _pickle_naming("__main__", tmp_path / "main.pt")
    diag = doctor.diagnose(path)
    assert diag.consumer.main_globals == ("__main__.ForeachMuon",)
    plain = diag.for_torch("2.4").plain
    assert plain.outcome == "not_fixable" and "AttributeError" in (plain.first_error or "")


def test_installed_packages_still_run_code(tmp_path: Path) -> None:
    """Guards against over-prediction: an importable package keeps runs_code."""
    path = _pickle_naming("json", tmp_path / "ok.pt")
    assert doctor.diagnose(path).for_torch("2.4").plain.outcome == "runs_code"


def test_another_venv_is_asked_without_importing(tmp_path: Path) -> None:
    """Guards --python: the consumer's interpreter answers find_spec for top-level names
    only; a package present there (and absent here) turns the prediction back to
    runs_code, and the package's code never runs (its __init__ would write a file)."""
    site = tmp_path / "site"
    (site / "heavyball").mkdir(parents=True)
    marker = tmp_path / "imported"
    (site / "heavyball" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    globals_ = ("heavyball.ForeachMuon", "torch._utils._rebuild_tensor_v2", "__main__.X")
    assert packages_of(globals_) == ("heavyball", "torch", "__main__")
    assert check_here(globals_).missing == ("heavyball",)
    there = check_python(str(python), globals_)
    assert there.missing == () and there.main_globals == ("__main__.X",)
    assert not marker.exists()
    path = _pickle_naming("heavyball", tmp_path / "t.pt")
    diag = doctor.diagnose(path, python=str(python))
    assert diag.for_torch("2.4").plain.outcome == "runs_code"
    assert not marker.exists()


def test_a_bad_python_is_an_input_error(tmp_path: Path) -> None:
    """Guards --python pointing at nothing runnable: exit 2, typed InputError."""
    with pytest.raises(InputError):
        check_python(str(tmp_path / "nope"), ("a.B",))
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(InputError):
        check_python(str(broken), ("a.B",))
    path = _pickle_naming("heavyball", tmp_path / "t.pt")
    assert main(["doctor", str(path), "--python", os.fspath(broken)]) == 2
