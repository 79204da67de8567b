"""Wrapper prefixes on a state_dict's keys: DDP's ``module.``, torch.compile's ``_orig_mod.``.

``DistributedDataParallel(model).state_dict()`` names every parameter ``module.<name>``,
and ``torch.compile(model).state_dict()`` names it ``_orig_mod.<name>`` (the two stack:
``_orig_mod.module.`` for a compiled DDP model). The file loads on every torch, but
``agent.load_state_dict(sd)`` into the bare module fails with "Missing key(s) ...
Unexpected key(s) ..." under the default ``strict=True``. torch ships the fix,
``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(sd, prefix)`` (since
1.9), which strips a prefix in place.

Keys are read from the object pickle symbolically (:func:`~ckptcompat.doctor.pickle_walk.
root_object`): the root mapping, or the mapping under a conventional key (``state_dict``,
``model``, ``model_state_dict``, ``module``). Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ckptcompat.checkpoint.key_prefixes import split_prefix, wrapper_prefix
from ckptcompat.doctor.pickle_walk import mapping_keys

__all__ = ["KeyPrefix", "find_prefix", "state_dict_keys"]

_NESTED = ("state_dict", "model", "model_state_dict", "module")


@dataclass(frozen=True)
class KeyPrefix:
    """A prefix every key of a state_dict carries.

    Attributes:
        prefix: the whole prefix, e.g. ``"module."`` or ``"_orig_mod.module."``.
        wrappers: the wrappers that add it, outermost first.
        keys: how many keys carry it.
        where: ``"root"`` or the key of the nested mapping (``"state_dict"``).
        fix: Python statements that load the file (``FILE``), take the state_dict and strip
            the prefix before ``agent.load_state_dict(sd)``.
    """

    prefix: str
    wrappers: tuple[str, ...]
    keys: int
    where: str
    fix: str


def state_dict_keys(root: object) -> tuple[tuple[str, ...], str] | None:
    """``(keys, where)`` of the state_dict in a file's root object: the root mapping when
    its keys are strings, else the first of the conventional nested keys that holds a
    mapping of string keys; None when neither."""
    keys = mapping_keys(root)
    if isinstance(root, dict):
        for name in _NESTED:
            nested = mapping_keys(root.get(name))
            if nested:
                return nested, name
    return (keys, "root") if keys else None


def find_prefix(keys: Sequence[str], where: str = "root") -> KeyPrefix | None:
    """The wrapper prefix all of ``keys`` carry (DDP, torch.compile, or both stacked);
    None when some key lacks it or there are no keys."""
    prefix, wrappers = wrapper_prefix(keys)
    if not prefix:
        return None
    strip = "; ".join(
        f'consume_prefix_in_state_dict_if_present(sd, "{p}")' for p in split_prefix(prefix)
    )
    # Python statements a user can paste (FILE and agent are theirs).
    take = "sd = ckpt" if where == "root" else f"sd = ckpt[{where!r}]"
    fix = (
        "from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present; "
        f"ckpt = torch.load(FILE, weights_only=True); {take}; {strip}; "
        "agent.load_state_dict(sd)"
    )
    return KeyPrefix(prefix, wrappers, len(keys), where, fix)
