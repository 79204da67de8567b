"""The curated allowlist: which globals a legacy checkpoint may name, as qualified strings.

Legacy whole-pickle checkpoints (docs/design.md section 4) are read with ``weights_only=True``
plus an allowlist made of the globals the static scan found, *if and only if* every one of
them is on this list. Entries are strings, resolved lazily and one by one: this module
imports nothing from ``ckptcompat.policy`` or the agents (``checkpoint/`` never imports
``policy/``) and never imports a module that a file names unless the name is listed here.

numpy: a numpy-1 pickle names ``numpy.core.*`` and a numpy-2 one ``numpy._core.*``; both
spellings are listed and resolved to the running numpy's object, registered under the
file's spelling through torch 2.6+'s ``(object, "name")`` alias (2.4/2.5 have no aliases,
so a cross-major numpy file is not allowlistable there). ``numpy.dtype`` brings the concrete
dtype classes (``numpy.dtypes.Float32DType`` ...) that a pickle never names but torch's
BUILD check needs, and that torch's own ``get_unsafe_globals_in_checkpoint`` misses.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ckptcompat.scan.danger import is_dangerous
from ckptcompat.scan.torch_names import qualify

__all__ = [
    "CURATED",
    "AllowlistEntry",
    "import_dotted",
    "normalise",
    "partition",
    "resolve",
]


@dataclass(frozen=True)
class AllowlistEntry:
    """One allowlisted global.

    Attributes:
        name: the fully-qualified name as a pickle spells it (``"module.Qual.Name"``).
        group: ``agent``, ``policy``, ``torch.nn``, ``numpy``, ``gymnasium`` or ``stdlib``.
    """

    name: str
    group: str


def _entries(group: str, *names: str) -> tuple[AllowlistEntry, ...]:
    return tuple(AllowlistEntry(n, group) for n in names)


_NUMPY_FUNCS = ("multiarray._reconstruct", "multiarray.scalar")

CURATED: tuple[AllowlistEntry, ...] = (
    *_entries(
        "agent",
        "ckptcompat.agents.mock.MockAgent",
        "ckptcompat.agents.recurrent.RecurrentAgent",
        "ckptcompat.agents.recurrent.RecurrentAgentConfig",
        "ckptcompat.agents.recurrent.ChannelsFirst",
        "ckptcompat.agents.split_lstm.SplitLSTMAgent",
        "ckptcompat.agents.split_lstm.SplitLSTMAgentConfig",
    ),
    *_entries(
        "policy",
        "ckptcompat.policy.policy_record.PolicyRecord",
        "ckptcompat.policy.policy_metadata.PolicyMetadata",
        "ckptcompat.policy.mocks.MockPolicyRecord",
    ),
    *_entries(
        "torch.nn",
        *(
            f"torch.nn.modules.{m}"
            for m in (
                "linear.Linear",
                "linear.Identity",
                "rnn.LSTM",
                "rnn.GRU",
                "conv.Conv2d",
                "activation.ReLU",
                "activation.Tanh",
                "activation.GELU",
                "container.Sequential",
                "container.ModuleList",
                "container.ModuleDict",
                "flatten.Flatten",
                "normalization.LayerNorm",
                "sparse.Embedding",
            )
        ),
    ),
    *_entries(
        "gymnasium",
        "gymnasium.spaces.box.Box",
        "gymnasium.spaces.discrete.Discrete",
        "gymnasium.spaces.multi_discrete.MultiDiscrete",
        "gymnasium.spaces.dict.Dict",
    ),
    *_entries("numpy", "numpy.dtype", "numpy.ndarray"),
    *(
        AllowlistEntry(f"numpy.{core}.{f}", "numpy")
        for core in ("_core", "core")
        for f in _NUMPY_FUNCS
    ),
    *_entries(
        "stdlib",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.slice",
        "builtins.complex",
        "_codecs.encode",
        "collections.OrderedDict",
    ),
)

_BY_NAME = {e.name: e for e in CURATED}

#: Concrete numpy dtype classes allowlisted together with ``numpy.dtype``.
_NUMPY_DTYPES = (
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
)  # fmt: skip


def normalise(name: str) -> str:
    """Map a protocol-2 (Python 2) spelling to Python 3's: ``__builtin__.set`` -> ``builtins.set``.

    Uses the table torch's weights-only unpickler applies before its own allowlist lookup
    (``torch._utils`` IMPORT_MAPPING / NAME_MAPPING, transcribed in :mod:`.torch_names`).
    """
    module, _, attr = name.rpartition(".")
    return qualify(module, attr)


def partition(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split ``names`` into (curated, offenders), both normalised, order kept, no repeats.

    A dangerous name (:func:`ckptcompat.scan.danger.is_dangerous`) is never curated.
    """
    curated: list[str] = []
    offenders: list[str] = []
    for name in dict.fromkeys(normalise(n) for n in names):
        (curated if name in _BY_NAME and not is_dangerous(name) else offenders).append(name)
    return curated, offenders


def import_dotted(dotted: str) -> Any:
    """Import ``package.module.Qual.Name`` by the longest importable module prefix.

    Only for names already known to be safe to import (curated entries, or a doctor
    allowlist being tried in a throwaway process).

    Raises:
        ImportError: no prefix imports; AttributeError: a missing attribute after it.
    """
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {dotted!r}")


def _running_spelling(name: str) -> str:
    # numpy 2 moved numpy.core to numpy._core (touching numpy.core warns there); numpy 1
    # has only numpy.core. Import from wherever the running numpy keeps the object.
    for prefix in ("numpy.core.", "numpy._core."):
        if name.startswith(prefix):
            import numpy as np

            core = "numpy._core." if int(np.__version__.split(".")[0]) >= 2 else "numpy.core."
            return core + name[len(prefix) :]
    return name


def _own_name(obj: Any) -> str:
    return f"{obj.__module__}.{getattr(obj, '__qualname__', obj.__name__)}"


def resolve(names: Iterable[str]) -> list[Any]:
    """Resolve curated ``names`` to torch allowlist entries.

    Returns objects, or ``(object, name)`` aliases where the file's spelling differs from
    the running object's own (numpy-1 vs numpy-2); ``torch_compat`` refuses aliases on
    torch < 2.6 with IncompatibleCheckpointError. ``numpy.dtype`` adds the concrete dtype
    classes of :data:`_NUMPY_DTYPES`.

    Raises:
        KeyError: a name that is not curated (call :func:`partition` first).
        ImportError: a curated name whose module or attribute is missing here.
    """
    out: list[Any] = []
    for name in dict.fromkeys(normalise(n) for n in names):
        if name not in _BY_NAME:
            raise KeyError(f"{name!r} is not on the curated allowlist")
        obj = import_dotted(_running_spelling(name))
        out.append(obj if _own_name(obj) == name else (obj, name))
        if name == "numpy.dtype":
            import numpy as np

            out.extend(type(np.dtype(getattr(np, t))) for t in _NUMPY_DTYPES)
    return out
