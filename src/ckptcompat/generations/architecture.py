"""The architecture string of G3/G4 files, parsed without running it: standard library only.

Metta writes the architecture as a Python call, ``pkg.Arch(action_probs_config={...},
components=[...])``. :func:`parse_architecture` reads it with :func:`ast.parse` in ``eval``
mode and accepts exactly: a call of a dotted name (``a.b.C``) with keyword or positional
arguments that are literals -- str, int, float, bool, None, a negated number, dicts with
literal keys, lists, tuples -- or nested calls of the same kind. Anything else (a subscript,
an attribute of a call, ``**kwargs``, a lambda, a name alone, f-strings, operators) is
refused with :class:`~ckptcompat.errors.UnsafeCheckpointError`, and so is a dotted name
with a dunder part (``__import__``), which no architecture class has. Nothing is evaluated,
imported or called here: the result is data, :class:`ArchCall`.

Which class rebuilds the agent is decided by :func:`resolve_class_path`: a name on
:data:`ALLOWED_ARCHITECTURES`, or the ``--class-path`` the user gave.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from ckptcompat.errors import AgentMismatchError, CorruptCheckpointError, UnsafeCheckpointError

__all__ = [
    "ALLOWED_ARCHITECTURES",
    "MAX_ARCHITECTURE_CHARS",
    "ArchCall",
    "parse_architecture",
    "resolve_class_path",
]

#: The longest architecture string parsed (characters); Metta's are a few kilobytes.
MAX_ARCHITECTURE_CHARS = 1_000_000
#: How deep calls and containers may nest; deeper is refused before the parser recurses.
_MAX_DEPTH = 64

#: Architecture names that rebuild without ``--class-path``: name -> agent class_path. Only
#: our own agents: a team's architecture names code this project has not reviewed.
ALLOWED_ARCHITECTURES: dict[str, str] = {
    "ckptcompat.agents.mlp.MLPAgent": "ckptcompat.agents.mlp.MLPAgent",
    "ckptcompat.agents.recurrent.RecurrentAgent": "ckptcompat.agents.recurrent.RecurrentAgent",
    "ckptcompat.agents.split_lstm.SplitLSTMAgent": "ckptcompat.agents.split_lstm.SplitLSTMAgent",
}


@dataclass(frozen=True)
class ArchCall:
    """One call of the architecture string, as data.

    Attributes:
        name: the dotted name called, ``"pkg.Arch"``.
        args: positional arguments (literals or :class:`ArchCall`).
        kwargs: keyword arguments, in the string's order.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        """Every dotted name called, this one first, then nested calls in order, unique."""
        found: dict[str, None] = {self.name: None}

        def visit(value: Any) -> None:
            if isinstance(value, ArchCall):
                found.update(dict.fromkeys(value.names()))
            elif isinstance(value, dict):
                for v in value.values():
                    visit(v)
            elif isinstance(value, list | tuple):
                for v in value:
                    visit(v)

        for value in (*self.args, *self.kwargs.values()):
            visit(value)
        return tuple(found)

    def to_config(self) -> dict[str, Any]:
        """The keyword arguments as JSON primitives: the agent's ``from_config`` config.

        Tuples become lists; a nested call becomes ``{"_target_": name, **kwargs}`` (with
        ``"_args_": [...]`` when it has positional arguments), the spelling Hydra uses.

        Raises:
            AgentMismatchError: this call has positional arguments (a config is a dict).
        """
        if self.args:
            raise AgentMismatchError(
                f"the architecture {self.name} has positional arguments",
                expected="keyword arguments only (they become the agent's config)",
                found=f"{len(self.args)} positional arguments",
                fix="pass --config with the agent's config as JSON",
            )
        return {key: _json(value) for key, value in self.kwargs.items()}


def _json(value: Any) -> Any:
    if isinstance(value, ArchCall):
        out: dict[str, Any] = {"_target_": value.name}
        if value.args:
            out["_args_"] = [_json(v) for v in value.args]
        out.update((k, _json(v)) for k, v in value.kwargs.items())
        return out
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _refuse(node: ast.AST, why: str, text: str) -> UnsafeCheckpointError:
    snippet = ast.get_source_segment(text, node) or type(node).__name__
    return UnsafeCheckpointError(
        f"the architecture string holds {why}, which only running code could evaluate",
        globals=(),
        expected="a call of a dotted name with literal arguments (str, numbers, bool, None, "
        "dict, list, tuple, nested calls)",
        found=repr(snippet[:120]),
        fix="nothing in it was run; rebuild the agent with --class-path and --config",
    )


def _dotted(node: ast.expr, text: str) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise _refuse(node, "a call of something other than a dotted name", text)
    parts = [node.id, *reversed(parts)]
    if any(part.startswith("__") for part in parts):  # __import__, __builtins__, __class__
        raise _refuse(node, "a dunder name", text)
    return ".".join(parts)


def _value(node: ast.expr, text: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _refuse(node, f"nesting deeper than {_MAX_DEPTH}", text)
    if isinstance(node, ast.Constant):
        if node.value is None or type(node.value) in (str, int, float, bool):
            return node.value
        raise _refuse(node, f"a {type(node.value).__name__} constant", text)
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_value(v, text, depth + 1) for v in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise _refuse(value, "a ** unpacking", text)
            k = _value(key, text, depth + 1)
            if type(k) is not str:
                raise _refuse(key, "a dict key that is not a string", text)
            out[k] = _value(value, text, depth + 1)
        return out
    if isinstance(node, ast.Call):
        return _call(node, text, depth + 1)
    raise _refuse(node, f"an expression of kind {type(node).__name__}", text)


def _call(node: ast.Call, text: str, depth: int) -> ArchCall:
    name = _dotted(node.func, text)
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise _refuse(arg, "a * unpacking", text)
        args.append(_value(arg, text, depth))
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise _refuse(kw.value, "a ** unpacking", text)
        kwargs[kw.arg] = _value(kw.value, text, depth)
    return ArchCall(name, tuple(args), kwargs)


def _too_deep(text: str) -> bool:
    depth = deepest = 0
    for char in text:  # brackets inside strings count too: an over-estimate, never under
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest > _MAX_DEPTH


def parse_architecture(text: str, *, path: str | None = None) -> ArchCall:
    """Parse an architecture string into an :class:`ArchCall`, never evaluating it.

    Args:
        text: e.g. ``"pkg.Arch(hidden=[64, 64], head=pkg.Head(n=4))"``.
        path: the file it came from, for error messages.

    Raises:
        CorruptCheckpointError: not Python syntax, over :data:`MAX_ARCHITECTURE_CHARS`
            characters, or nesting over 64 levels (checked before parsing, so the parser
            never recurses that deep).
        UnsafeCheckpointError: anything but a call of a dotted name with literal arguments
            (the message quotes the refused part; ``.globals`` is empty: nothing was named).
    """
    if len(text) > MAX_ARCHITECTURE_CHARS or _too_deep(text):
        raise CorruptCheckpointError(
            "the architecture string is too large or too deeply nested to parse",
            path=path,
            expected=f"at most {MAX_ARCHITECTURE_CHARS} characters and {_MAX_DEPTH} levels",
            found=f"{len(text)} characters",
            fix="pass --class-path and --config instead",
        )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CorruptCheckpointError(
            "the architecture string is not a Python expression",
            path=path,
            expected="a call such as pkg.Arch(key=value, ...)",
            found=f"{type(exc).__name__}: {str(exc)[:120]}",
            fix="pass --class-path and --config instead",
        ) from exc
    if not isinstance(tree.body, ast.Call):
        raise _refuse(tree.body, "no call at the top level", text)
    try:
        return _call(tree.body, text, 0)
    except UnsafeCheckpointError as exc:
        if path is not None and exc.path is None:
            raise UnsafeCheckpointError(
                exc.problem, path=path, expected=exc.expected, found=exc.found, fix=exc.fix
            ) from None
        raise


def resolve_class_path(call: ArchCall, class_path: str | None, *, path: str | None = None) -> str:
    """The agent class that rebuilds ``call``: ``class_path`` if given, else the allowlist's.

    Raises:
        UnsafeCheckpointError: no ``class_path`` and ``call.name`` is not on
            :data:`ALLOWED_ARCHITECTURES` (``.globals`` names it).
    """
    if class_path is not None:
        return class_path
    allowed = ALLOWED_ARCHITECTURES.get(call.name)
    if allowed is None:
        raise UnsafeCheckpointError(
            f"the architecture {call.name} is not on the allowlist of architectures",
            globals=(call.name,),
            path=path,
            expected=f"one of {', '.join(ALLOWED_ARCHITECTURES)}",
            found=call.name,
            fix="name the agent class that rebuilds it: --class-path package.module.Class",
        )
    return allowed
