"""Regression tests of the doctor on classes pickled from a training script (``__main__.X``).

Issue 16 item 2: a config dataclass saved by ``python train.py`` is pickled as
``__main__.Cfg``. A plain load anywhere but that script fails (AttributeError on 2.4/2.5,
refused on 2.6+), and the doctor's ``add_safe_globals([__main__.Cfg])`` only worked inside
that script. torch keys its allowlist by the object's ``module.name`` (2.4/2.5: no other
form; 2.6+: also ``(obj, "name")`` tuples, read in torch/_weights_only_unpickler.py's
``_get_user_allowed_globals``), so an imported ``Cfg`` is ``mylib.Cfg`` and never matches.

The file is written by a real script run as the main program, in this cell; every load
goes through :mod:`ckptcompat.torch_compat`. The loading scripts are real scripts too,
running the doctor's snippet as printed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ckptcompat import doctor, torch_compat
from ckptcompat.errors import CheckpointError

_CLASS = """
import dataclasses

@dataclasses.dataclass
class Cfg:
    lr: float = 0.1
    layers: int = 2
"""


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=script.parent,
        check=False,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``{"cfg": Cfg(lr=0.25), "w": tensor}`` saved by ``python train.py`` (Cfg in __main__)."""
    folder = tmp_path_factory.mktemp("main")
    script = folder / "train.py"
    script.write_text(
        "import sys\nfrom ckptcompat import torch_compat\nimport torch\n"
        + _CLASS
        + "torch_compat.save({'cfg': Cfg(lr=0.25), 'w': torch.zeros(2)}, sys.argv[1])\n"
    )
    (folder / "mylib.py").write_text(_CLASS)  # where the class lives now, for the consumer
    path = folder / "cfg.pt"
    done = _run(script, str(path))
    assert done.returncode == 0, done.stderr
    return path


def test_plain_load_outside_the_script_fails_and_is_predicted(saved: Path) -> None:
    """Guards the doctor predicting 'loads' for a plain load of a __main__ class outside
    its script: it fails on every torch (AttributeError on 2.4/2.5, refused from 2.6)."""
    report = doctor.diagnose(saved).for_torch(str(torch.__version__))
    assert report.plain.outcome not in ("loads", "runs_code")
    with pytest.raises(CheckpointError) as failed:
        torch_compat.naive_load(saved)
    if not torch_compat.WEIGHTS_ONLY_IS_DEFAULT:
        assert report.plain.outcome == "not_fixable"
        assert report.plain.first_error is not None
        assert "Can't get attribute 'Cfg'" in report.plain.first_error
        assert "Can't get attribute 'Cfg'" in str(failed.value)
        assert any("__main__.Cfg = Cfg" in n for n in report.plain.notes)


def test_plain_load_fix_of_the_note_loads(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the plain-load note: registering the class on the loading side's __main__
    lets a plain load on 2.4/2.5 find it (from 2.6 a plain load is weights-only)."""
    if torch_compat.WEIGHTS_ONLY_IS_DEFAULT:
        pytest.skip("torch >= 2.6: a plain load is weights-only (the allowlist test covers it)")
    monkeypatch.syspath_prepend(str(saved.parent))
    from mylib import Cfg  # type: ignore[import-not-found]

    import __main__

    monkeypatch.setattr(__main__, "Cfg", Cfg, raising=False)
    assert torch_compat.naive_load(saved)["cfg"] == Cfg(lr=0.25)


def test_the_printed_allowlist_loads_from_another_script(saved: Path) -> None:
    """Guards the snippet that only worked inside the saving script: the doctor's
    add_safe_globals entry for this torch, run as printed by a loading script, loads the
    file; the bare imported class (the old snippet) is still refused."""
    wo = doctor.diagnose(saved).for_torch(str(torch.__version__)).weights_only
    assert wo.outcome == "fixable_by_allowlist"
    (entry,) = wo.allowlist
    assert entry.name == "__main__.Cfg"
    text = doctor.render_text(doctor.diagnose(saved))
    assert f"add_safe_globals([{entry.python}])" in text
    if torch_compat.HAS_ALIASED_SAFE_GLOBALS:
        assert entry.python == "(Cfg, '__main__.Cfg')"
        get_class = "from mylib import Cfg"  # the class from where it lives now
    else:
        assert entry.python == "Cfg" and "defined in the loading script" in entry.reason
        get_class = _CLASS  # torch < 2.6: the loading script defines it itself
    loader = saved.parent / "load_it.py"
    body = f"""
        import sys
        from ckptcompat import torch_compat
        from ckptcompat.errors import UnsafeCheckpointError
        {{}}
        ok = torch_compat.load(sys.argv[1], safe_globals=[{entry.python}])
        assert ok["cfg"].lr == 0.25 and type(ok["cfg"]) is Cfg, ok
        from mylib import Cfg as Imported
        try:
            torch_compat.load(sys.argv[1], safe_globals=[Imported])
        except UnsafeCheckpointError:
            print("bare class refused")
        print("loaded")
    """
    loader.write_text(textwrap.dedent(body).format(textwrap.indent(get_class, "")))
    done = _run(loader, str(saved))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["bare", "class", "refused", "loaded"]
