"""The one danger table: globals refused however they are allowlisted. Standard library only.

Policy as data (as picklescan's ``scanner.py``): each row is a dotted module or name and
how it matches. Every caller (the scan's findings, the curated allowlist, the doctor's
verdicts, ``repro``) asks :func:`is_dangerous`, which reads names with torch's py2->py3
renaming first (``__builtin__.eval`` is ``builtins.eval``).
"""

from __future__ import annotations

import functools
from typing import Literal

from ckptcompat.scan.torch_names import qualify

__all__ = ["DANGER", "EXEMPT", "Match", "is_dangerous"]

#: ``component``: the module anywhere in a dotted name (``torch.os`` is the os module);
#: ``tree``: the module and everything under it; ``name``: exactly this global.
Match = Literal["component", "tree", "name"]


def _rows(match: Match, *names: str) -> tuple[tuple[str, Match], ...]:
    return tuple((n, match) for n in names)


#: Process control, interpreter internals, importers and nested unpicklers (``component``);
#: network, shells and process pools (``tree``); code evaluation, attribute access (the
#: getattr chains that reach os.system from any object), file access, nested loaders
#: (``name``). torch 2.5+ blocks only sys/os/posix/nt, and only as the module part.
DANGER: tuple[tuple[str, Match], ...] = (
    *_rows("component", "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess"),
    *_rows("component", "importlib", "runpy", "pickle", "_pickle", "cPickle", "marshal"),
    *_rows("component", "ctypes"),
    *_rows("tree", "shutil", "socket", "code", "codeop", "pty", "multiprocessing"),
    *_rows("tree", "webbrowser", "platform", "dill", "commands", "asyncio", "signal"),
    *_rows(
        "name",
        *(
            f"builtins.{fn}"
            for fn in (
                *("eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__"),
                *("open", "globals", "locals", "vars", "breakpoint", "input", "help", "exit"),
                "quit",
            )
        ),
    ),
    *_rows("name", "types.FunctionType", "types.LambdaType", "types.CodeType"),
    *_rows("name", "types.MethodType", "types.ModuleType"),
    *_rows("name", "operator.attrgetter", "operator.methodcaller"),
    *_rows("name", "io.open", "io.FileIO", "_io.open", "_io.FileIO", "codecs.open"),
    *_rows("name", "torch.load", "torch.serialization.load", "torch.serialization._load"),
    *_rows("name", "torch.serialization._legacy_load", "torch.storage._load_from_bytes"),
    *_rows("name", "torch.jit.load", "torch.hub.load", "numpy.load"),
)

#: Names a ``component`` row would catch that cannot run code: numpy's pickling helpers
#: for its random generators (``numpy.random._pickle``, numpy 1.17 to 2.x), which build a
#: BitGenerator from a name in numpy's own table or from a class, and a Generator or
#: RandomState around it (read in numpy 2.4.6's ``numpy/random/_pickle.py``). The optional
#: ``bit_generator_ctor`` argument is called, but under the weights-only unpickler it can
#: only be a global the user allowlisted, which REDUCE could already call directly: no
#: capability is added. ``_pickle`` as a module part flagged them "dangerous", so the doctor
#: said "do not load" to every file holding a numpy generator object (issue 16, item 3).
EXEMPT: frozenset[str] = frozenset(
    f"numpy.random._pickle.{fn}"
    for fn in ("__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor")
)

_BY_MATCH: dict[Match, frozenset[str]] = {
    m: frozenset(n for n, how in DANGER if how == m) for m in ("component", "tree", "name")
}


@functools.lru_cache(maxsize=4096)  # the doctor asks per global for every torch version
def is_dangerous(name: str) -> bool:
    """True if global ``module.name`` can run code or reach the system however it is
    allowlisted.

    >>> is_dangerous("os.system"), is_dangerous("torch.os"), is_dangerous("builtins.set")
    (True, True, False)
    """
    module, _, attr = name.rpartition(".")
    name = qualify(module, attr)
    if name in EXEMPT:
        return False
    if name in _BY_MATCH["name"]:
        return True
    if any(part in _BY_MATCH["component"] for part in name.split(".")):
        return True
    module = name.rsplit(".", 1)[0]
    return any(module == p or module.startswith(p + ".") for p in _BY_MATCH["tree"])
