"""Tests of ckptcompat.generations.stand_ins: weights-only reads with inert stand-ins.

Issue 16 (Deliver, item 2): torch's weights-only load of a whole Lightning ``.ckpt`` fails on
the first foreign class (Namespace, DictConfig, AttributeDict ...); migrate reads it with
inert stand-ins allowlisted under those names instead, on every torch 2.4-2.15, without
importing or running anything of the libraries.
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.errors import TrustedLoadWarning, UnsafeCheckpointError
from ckptcompat.generations.stand_ins import StandIn, load_tensors, stand_in_entries
from ckptcompat.scan import scan
from tests.generations.family_builders import lightning_ckpt, trained, tsave


def _load(path: Path, trust: bool = False) -> tuple[object, str, tuple[str, ...]]:
    result = scan.scan(path)
    return load_tensors(
        path,
        result.globals,
        dict_like=result.setitem_targets,
        append_targets=result.append_targets,
        trust=trust,
    )


def test_foreign_classes_become_stand_ins_and_tensors_stay_tensors(tmp_path: Path) -> None:
    """Guards the whole-file refusal: a Lightning ckpt whose hyper_parameters hold a
    Namespace, an AttributeDict (a dict subclass: SETITEMS, refused on a non-dict by
    torch >= 2.10), a DictConfig, a __main__ dataclass and a module class loads with
    weights_only=True; the state_dict is the saved one, bit for bit, and no module of the
    libraries was imported."""
    model, _, _ = trained()
    path = lightning_ckpt(tmp_path / "last.ckpt", model.state_dict(), rich=True)
    before = set(sys.modules)
    loaded, loader, names = _load(path)
    assert loader == "allowlist"
    assert {"argparse.Namespace", "omegaconf.dictconfig.DictConfig", "__main__.TrainConfig"} <= set(
        names
    )
    assert not any(m.split(".")[0] in ("lightning", "omegaconf") for m in set(sys.modules) - before)
    assert isinstance(loaded, dict)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value)
    hp = loaded["hyper_parameters"]
    assert isinstance(hp["args"], StandIn) and isinstance(hp["cfg"], StandIn)
    assert hp["lr"] == 0.001 and hp["betas"] == (0.9, 0.999)


def test_entries_spell_the_name_where_torch_has_no_aliases() -> None:
    """Guards torch 2.4/2.5, which match a user global by its __module__ and __name__ (no
    (object, name) aliases before 2.6): each stand-in spells its name; on 2.6+ one class
    serves every name; on 2.10+ a dict subclass becomes a plain dict (SETITEM rule)."""
    entries = stand_in_entries(["a.b.Config", "x.Dict"], dict_like=["x.Dict"])
    (cls, name), (dict_cls, _) = entries
    assert name == "a.b.Config"
    if torch_compat.HAS_ALIASED_SAFE_GLOBALS:
        assert cls is StandIn
    else:
        assert (cls.__module__, cls.__name__) == ("a.b", "Config") and issubclass(cls, StandIn)
    if torch_compat.SETITEM_RESTRICTED:
        assert dict_cls() == {} and type(dict_cls()) is dict


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return builtins.eval, ("1 + 1",)


def test_dangerous_globals_get_no_stand_in(tmp_path: Path) -> None:
    """Guards a stand-in for a code-running global: a file naming builtins.eval is refused
    with UnsafeCheckpointError naming it (on every torch, before any unpickler runs)."""
    path = tmp_path / "evil.ckpt"
    path.write_bytes(tsave({"state_dict": {"w": torch.ones(1)}, "hook": _Evil()}))
    with pytest.raises(UnsafeCheckpointError) as info:
        _load(path)
    assert "builtins.eval" in info.value.globals


class Items(list):  # type: ignore[type-arg]
    """A list subclass: pickled with APPENDS on the instance, which torch always refuses."""


def test_list_subclass_needs_trust(tmp_path: Path) -> None:
    """Guards a silent loss or a bare torch error for a list subclass (APPENDS on a
    non-list, refused by every torch): without trust a typed error names the class; with
    trust the one audited weights_only=False load reads it (the class is importable)."""
    path = tmp_path / "items.ckpt"
    path.write_bytes(tsave({"state_dict": {"w": torch.ones(1)}, "items": Items([1, 2])}))
    with pytest.raises(UnsafeCheckpointError, match="not lists") as info:
        _load(path)
    assert f"{__name__}.Items" in info.value.globals
    with pytest.warns(TrustedLoadWarning):
        loaded, loader, names = _load(path, trust=True)
    assert loader == "trusted" and names == () and loaded["items"] == [1, 2]
