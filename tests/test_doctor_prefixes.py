"""Tests of the doctor's wrapper prefixes (ckptcompat.doctor.prefixes, issue 16 item 5).

State_dicts saved from a DistributedDataParallel or a torch.compile model load on every
torch, but ``load_state_dict(strict=True)`` into the bare module fails on their
``module.`` / ``_orig_mod.`` keys. The files here come from the cell's real wrappers:
DDP over a one-rank gloo group, and ``torch.compile`` (its state_dict needs no compiling).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.nn.parallel import DistributedDataParallel

from ckptcompat import doctor, torch_compat
from ckptcompat.doctor.prefixes import find_prefix


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _ddp_state_dict(tmp_path: Path) -> dict[str, torch.Tensor]:
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        return DistributedDataParallel(_model()).state_dict()
    finally:
        dist.destroy_process_group()


def _apply_fix(sd: dict[str, torch.Tensor], prefix: str) -> nn.Module:
    """What the doctor's fix line says: strip each wrapper's prefix, then load strictly."""
    for part in ("_orig_mod.", "module."):
        if prefix.startswith(part):
            consume_prefix_in_state_dict_if_present(sd, part)
            prefix = prefix[len(part) :]
    bare = _model()
    bare.load_state_dict(sd)
    return bare


@pytest.mark.parametrize("wrapper", ["ddp", "compile", "compiled_ddp_in_a_dict"])
def test_prefix_is_named_and_the_printed_fix_loads(tmp_path: Path, wrapper: str) -> None:
    """Guards a DDP / torch.compile state_dict explained as a plain state_dict while
    load_state_dict(strict=True) into the bare agent fails: the doctor names the prefix
    and its wrapper, and the fix it prints makes the strict load succeed."""
    if wrapper == "ddp":
        sd, expected, where = _ddp_state_dict(tmp_path), "module.", "root"
        saved: object = sd
    elif wrapper == "compile":
        sd, expected, where = torch.compile(_model()).state_dict(), "_orig_mod.", "root"
        saved = sd
    else:
        sd = torch.compile(nn.ModuleDict({"module": _model()})).state_dict()
        expected, where = "_orig_mod.module.", "state_dict"
        saved = {"epoch": 3, "state_dict": sd}
    path = tmp_path / f"{wrapper}.pt"
    torch.save(saved, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        _model().load_state_dict(torch_compat.load(path) if where == "root" else sd)
    diag = doctor.diagnose(path)
    assert diag.key_prefix is not None
    assert (diag.key_prefix.prefix, diag.key_prefix.where) == (expected, where)
    assert f"every key starts with {expected!r}" in doctor.verdict_line(diag)
    assert "consume_prefix_in_state_dict_if_present" in diag.key_prefix.fix
    loaded = torch_compat.load(path)
    bare = _apply_fix(dict(loaded if where == "root" else loaded["state_dict"]), expected)
    assert torch.equal(bare[0].weight, _model()[0].weight)
    # The printed fix, pasted as it is (new-user trial: it lacked the step that takes a
    # nested state_dict and ended in prose, "; then agent.load_state_dict(sd)").
    agent = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    exec(diag.key_prefix.fix, {"torch": torch, "FILE": str(path), "agent": agent})
    assert torch.equal(agent[0].weight, _model()[0].weight)
    assert doctor.to_json(diag)["key_prefix"]["prefix"] == expected


@pytest.mark.one_cell
@pytest.mark.parametrize(
    ("keys", "prefix"),
    [
        (["module.a", "module.b"], "module."),
        (["module.a", "b"], None),  # one key without it: not a wrapper's prefix
        (["module."], None),  # nothing after the prefix
        ([], None),
        (["_orig_mod.module.0.weight"], "_orig_mod.module."),
        (["module._orig_mod.x"], "module._orig_mod."),
        (["modules.a"], None),
    ],
)
def test_find_prefix_rules(keys: list[str], prefix: str | None) -> None:
    """Guards false prefixes: only when every key carries a wrapper's whole prefix, with a
    name after it (one cell: string rules)."""
    found = find_prefix(keys)
    assert (None if found is None else found.prefix) == prefix


@pytest.mark.one_cell
def test_plain_state_dict_has_no_prefix(tmp_path: Path) -> None:
    """Guards a false alarm on a bare state_dict (one cell)."""
    path = tmp_path / "plain.pt"
    torch.save(_model().state_dict(), path)
    diag = doctor.diagnose(path)
    assert diag.key_prefix is None and "keys  " not in doctor.render_text(diag)
