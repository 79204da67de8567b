"""Wrapper prefixes on state_dict keys, and the wrapper modules that add them.

``DistributedDataParallel(model).state_dict()`` (and ``DataParallel``'s) names every entry
``module.<name>``; ``torch.compile(model).state_dict()`` names it ``_orig_mod.<name>`` (the
``OptimizedModule`` wrapper keeps the model as ``_orig_mod``); the two stack as
``_orig_mod.module.`` for a compiled DDP model. Such a file loads on every torch, but
``load_state_dict(strict=True)`` into the bare agent fails with "Missing key(s) ...
Unexpected key(s) ...". torch's own fix is
``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present`` (since 1.9); this module
finds the prefix from the keys alone (the doctor reads them from the pickle without
loading), strips it for ``migrate``, and unwraps a wrapped module before the manager saves
it. Standard library only, except :func:`unwrap_module`, which reads module attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "WRAPPERS",
    "load_error",
    "split_prefix",
    "strip_wrapper_prefix",
    "unwrap_module",
    "wrapper_prefix",
]

#: Wrapper prefixes, the wrapper that adds each, in the order they are tried, outermost first.
WRAPPERS: tuple[tuple[str, str], ...] = (
    ("_orig_mod.", "torch.compile"),
    ("module.", "DistributedDataParallel / DataParallel"),
)
#: Wrapper classes by their torch class path, and the attribute holding the wrapped module.
_WRAPPER_CLASSES: dict[str, str] = {
    "torch.nn.parallel.distributed.DistributedDataParallel": "module",
    "torch.nn.parallel.data_parallel.DataParallel": "module",
    "torch._dynamo.eval_frame.OptimizedModule": "_orig_mod",
}
_V = TypeVar("_V")


def wrapper_prefix(keys: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """``(prefix, wrappers)``: the wrapper prefix every one of ``keys`` carries (DDP's
    ``module.``, torch.compile's ``_orig_mod.``, or both stacked) and the wrappers that add
    it, outermost first; ``("", ())`` when some key lacks one, or there are no keys.

    A prefix counts only when every key goes on after it (a key that *is* ``"module."``
    names nothing underneath).
    """
    prefix, wrappers = "", ()
    if not keys:
        return prefix, wrappers
    while True:
        for candidate, wrapper in WRAPPERS:
            whole = prefix + candidate
            if all(k.startswith(whole) and len(k) > len(whole) for k in keys):
                prefix, wrappers = whole, (*wrappers, wrapper)
                break
        else:
            return prefix, wrappers


def split_prefix(prefix: str) -> list[str]:
    """``"_orig_mod.module."`` -> ``["_orig_mod.", "module."]``: one entry per wrapper, for
    one ``consume_prefix_in_state_dict_if_present`` call each."""
    parts, rest = [], prefix
    while rest:
        for candidate, _ in WRAPPERS:
            if rest.startswith(candidate):
                parts.append(candidate)
                rest = rest[len(candidate) :]
                break
        else:  # not a prefix of WRAPPERS: kept whole
            parts.append(rest)
            break
    return parts


def strip_wrapper_prefix(
    state_dict: Mapping[str, _V], expected: Sequence[str]
) -> tuple[dict[str, _V], str]:
    """``state_dict`` with its wrapper prefix removed, and that prefix (``""``: unchanged).

    Strips only when it makes the keys fit: every key carries the prefix, no key of
    ``expected`` (the target module's own ``state_dict()`` keys) does, and the stripped
    keys are exactly ``expected``. A state_dict that does not fit either way is returned
    unchanged, so ``load_state_dict(strict=True)`` still reports the real mismatch.

    Args:
        state_dict: saved name -> value (tensors or anything else; values are not copied).
        expected: the names the target module has.
    """
    prefix, _ = wrapper_prefix(list(state_dict))
    if not prefix or any(k.startswith(prefix) for k in expected):
        return dict(state_dict), ""
    stripped = {k[len(prefix) :]: v for k, v in state_dict.items()}
    if set(stripped) != set(expected):
        return dict(state_dict), ""
    return stripped, prefix


def unwrap_module(module: Any) -> tuple[Any, tuple[str, ...]]:
    """The module inside DDP / DataParallel / torch.compile wrappers, and the wrappers'
    class paths, outermost first (``(module, ())`` for a bare module).

    Matched by class path, so neither ``torch.distributed`` nor ``torch._dynamo`` is
    imported; the attributes are DDP's and DataParallel's ``module`` and
    ``OptimizedModule``'s ``_orig_mod`` (torch 2.0 to 2.15).
    """
    wrappers: list[str] = []
    while True:
        cls = type(module)
        path = f"{cls.__module__}.{cls.__qualname__}"
        attribute = _WRAPPER_CLASSES.get(path)
        if attribute is None or not hasattr(module, attribute) or len(wrappers) > 8:
            return module, tuple(wrappers)
        wrappers.append(path)
        module = getattr(module, attribute)


def load_error(exc: BaseException, limit: int = 400) -> str:
    """What ``load_state_dict(strict=True)`` refused, on one line: its first line alone is
    only "Error(s) in loading state_dict for X:", the missing / unexpected keys and size
    mismatches follow (a migrate error said nothing else, new-user trial 2026-12-06)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[1:] or lines)
    return text if len(text) <= limit else text[: limit - 3] + "..."
