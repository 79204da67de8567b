"""Read the tensors of a file that names other libraries' classes, without those libraries.

A Lightning ``.ckpt`` pickles ``argparse.Namespace``, ``omegaconf`` configs, dataclasses,
enums (and with them ``typing.Any``, ``builtins.set`` ...) beside its ``state_dict``; torch's
weights-only unpickler refuses the whole file for any of them. :func:`load_tensors` loads it
with ``weights_only=True`` (:func:`ckptcompat.torch_compat.load`, whose prescan and limits
apply) and every such name allowlisted as an inert stand-in of ours: a class with no
behaviour that ignores its arguments, its state and its items. Nothing of the file's
libraries is imported or run; what torch returns holds real tensors and plain containers,
and stand-ins (or empty dicts) where the foreign objects were. Callers keep only tensors.

Per torch version (read in ``torch/_weights_only_unpickler.py`` of 2.4.1, 2.6.0, 2.15.0):

* 2.4/2.5 match a user global by ``f"{obj.__module__}.{obj.__name__}"``, so each name gets
  its own stand-in subclass whose ``__module__``/``__name__`` spell it; 2.6+ take
  ``(obj, "module.Name")`` aliases, so one stand-in class serves every name.
* 2.10+ accept SETITEM(S) only on an object whose type is exactly dict, OrderedDict or
  Counter (``_check_set_item_target``), so a dict subclass the file names (Lightning's
  ``AttributeDict``, ``collections.defaultdict``) is aliased to a stand-in whose
  construction returns a plain ``{}``. Before 2.10 the stand-in takes the items and drops
  them (our prescan lets SETITEM through on a name the caller allowlisted).
* APPEND(S) only on a list, on every version: a list subclass cannot be read this way.

Names under ``torch.`` that torch's weights-only unpickler knows (tensor rebuilds,
storages, dtypes) never get a stand-in: a tensor must come back as a tensor or the load
fails, never as a stand-in dropped later.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import IO, Any

from ckptcompat import torch_compat, versions_facts
from ckptcompat.errors import UnsafeCheckpointError
from ckptcompat.scan.danger import is_dangerous
from ckptcompat.scan.torch_names import SETITEM_TARGETS, WEIGHTS_ONLY_GLOBALS

__all__ = ["StandIn", "load_tensors", "stand_in_entries", "stand_in_names"]


class StandIn:
    """An inert stand-in for a class or function a file names: it ignores its arguments
    (REDUCE, NEWOBJ), its state (BUILD) and its items (SETITEM before torch 2.10)."""

    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> StandIn:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("ckptcompat stand-ins cannot be pickled")


class _PlainDict:
    """Stand-in for a dict subclass on torch 2.10+: constructing it gives a plain ``{}``
    (``__new__`` returns no instance of the class, so no ``__init__`` runs)."""

    def __new__(cls, *args: object, **kwargs: object) -> dict[Any, Any]:
        return {}


def _defaults() -> frozenset[str]:
    """What this torch's weights-only unpickler accepts without an allowlist, from the
    ``globals_added``/``globals_removed`` facts of :mod:`ckptcompat.versions_facts`."""
    version = str(torch_compat.TORCH_VERSION)
    return (
        WEIGHTS_ONLY_GLOBALS
        - versions_facts.names_after("globals_added", version)
        - versions_facts.names_through("globals_removed", version)
    )


def stand_in_names(globals_: Iterable[str]) -> list[str]:
    """The names of ``globals_`` that get a stand-in, in the given order: those this torch
    does not accept by default, except torch's own tensor machinery (names under
    ``torch.`` on :data:`~ckptcompat.scan.torch_names.WEIGHTS_ONLY_GLOBALS`)."""
    defaults = _defaults()
    return [
        g
        for g in dict.fromkeys(globals_)
        if g not in defaults and not (g.startswith("torch.") and g in WEIGHTS_ONLY_GLOBALS)
    ]


def _spelled(name: str) -> type[StandIn]:
    module, _, attr = name.rpartition(".")
    cls = type("StandIn", (StandIn,), {"__slots__": (), "__module__": module or "builtins"})
    cls.__qualname__ = cls.__name__ = attr
    return cls


def stand_in_entries(names: Sequence[str], dict_like: Iterable[str] = ()) -> list[Any]:
    """``safe_globals`` entries for :func:`ckptcompat.torch_compat.load`: one inert
    stand-in per name in ``names``.

    Args:
        names: fully qualified globals (``"argparse.Namespace"``), as the scan reports them.
        dict_like: those of ``names`` whose objects receive items (SETITEM): plain ``{}``
            on torch 2.10+ (see the module docstring).

    Raises:
        UnsafeCheckpointError: a name cannot be spelled as a class name (a NUL character).
    """
    dict_like = frozenset(dict_like) - SETITEM_TARGETS
    out: list[Any] = []
    for name in names:
        if torch_compat.SETITEM_RESTRICTED and name in dict_like:
            out.append((_PlainDict, name))
        elif torch_compat.HAS_ALIASED_SAFE_GLOBALS:
            out.append((StandIn, name))
        else:
            try:
                cls = _spelled(name)
            except (TypeError, ValueError) as exc:
                raise UnsafeCheckpointError(
                    "the file names a global that cannot stand for a class",
                    globals=[name],
                    found=repr(name),
                    fix="do not load it",
                ) from exc
            out.append((cls, name))
    return out


def load_tensors(
    f: str | os.PathLike[str] | IO[bytes],
    globals_: Sequence[str],
    *,
    dict_like: Iterable[str] = (),
    append_targets: Sequence[str] = (),
    trust: bool = False,
) -> tuple[Any, str, tuple[str, ...]]:
    """Load ``f`` with ``weights_only=True`` and inert stand-ins for ``globals_``.

    Args:
        f: a ``torch.save`` file (path or seekable binary file object).
        globals_: every global its pickle names (from :func:`ckptcompat.scan.scan`).
        dict_like: names whose objects receive SETITEM (the scan's ``setitem_targets``).
        append_targets: names whose objects receive APPEND (the scan's ``append_targets``):
            refused by torch on every version.
        trust: when the weights-only read is refused, load with
            :func:`ckptcompat.torch_compat.trusted_load` (``weights_only=False``: runs the
            file's code and needs its libraries installed).

    Returns:
        ``(object, loader, stand-in names)``: what torch returned (tensors, plain
        containers, stand-ins); ``"safe"`` (no stand-in needed), ``"allowlist"``
        (stand-ins) or ``"trusted"``; the names read as stand-ins (empty unless
        ``"allowlist"``).

    Raises:
        UnsafeCheckpointError: the file names dangerous globals (``os.system``,
            ``builtins.eval`` ...; ``.globals`` lists them) or appends to a non-list object,
            and ``trust`` is False; or torch refused it.
        CorruptCheckpointError, LimitExceededError, IncompatibleCheckpointError: as
            :func:`ckptcompat.torch_compat.load`.
    """
    names = stand_in_names(globals_)
    dangerous = [g for g in names if is_dangerous(g)]
    try:
        if dangerous:
            raise UnsafeCheckpointError(
                "the file names globals that can run code; no stand-in is made for them",
                path=_name(f),
                globals=dangerous,
                found=", ".join(dangerous[:8]),
                fix="do not migrate it (with --trust, torch would run them)",
            )
        if append_targets:
            raise UnsafeCheckpointError(
                "the file appends items to objects that are not lists, which torch's "
                "weights-only unpickler refuses on every version",
                path=_name(f),
                globals=list(append_targets),
                found=", ".join(append_targets[:8]),
                fix="migrate with --trust only if you trust the file (needs its libraries)",
            )
        entries = stand_in_entries(names, dict_like)
        loaded = torch_compat.load(f, safe_globals=entries, map_location="cpu")
        return loaded, "allowlist" if names else "safe", tuple(names)
    except UnsafeCheckpointError:
        if not trust:
            raise
    if not isinstance(f, (str, os.PathLike)):
        f.seek(0)
    return torch_compat.trusted_load(f, map_location="cpu"), "trusted", ()


def _name(f: str | os.PathLike[str] | IO[bytes]) -> str | None:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return None
