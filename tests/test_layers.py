"""The import graph of src/ckptcompat: no circle, no import from a lower layer up to a higher one.

The layers, bottom first (docs/design.md): the standard-library leaves (errors,
versions_facts, numerics, locator); agents and scan; load_errors; torch_compat; checkpoint;
generations (Metta G3/G4, issue 22); doctor and policy; rl; evaluation; remote; harness;
the CLI. Read from the AST, imports under ``TYPE_CHECKING`` and inside functions included:
a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ckptcompat

PACKAGE = Path(ckptcompat.__file__).resolve().parent
#: Layer of each top-level module or package of ckptcompat; an import may only go to a
#: lower or equal layer.
LAYERS: dict[str, float] = {
    "ckptcompat": 0, "errors": 0, "versions_facts": 0, "numerics": 0, "locator": 0,
    "json_config": 0,
    "agents": 1, "scan": 1,
    "load_errors": 2,
    "torch_compat": 3,
    "checkpoint": 4,
    "generations": 4.5,
    "doctor": 5, "policy": 5,
    "rl": 6,
    "evaluation": 7,
    "remote": 8,
    "harness": 9,
    "cli": 10, "cli_common": 10, "cli_eval": 10, "cli_eval_parser": 10, "cli_launch": 10,
    "cli_rank": 10, "cli_run": 10, "cli_run_parser": 10,
    "__main__": 11,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("ckptcompat", *path.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for imported in targets:
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # importing a submodule runs its package's __init__, not an arrow back to it
            if target and target != name and not name.startswith(f"{target}."):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "ckptcompat"
    if top not in LAYERS:
        pytest.fail(f"{module}: its top-level name {top!r} has no layer in LAYERS; add one")
    return LAYERS[top]


@pytest.mark.one_cell
def test_no_import_goes_up_a_layer() -> None:
    """Guards the arrow that ran back up (torch_compat importing checkpoint's scan through
    a lazy __getattr__; the doctor reaching into checkpoint internals): every import goes
    to the same or a lower layer. One cell: a static read of the sources."""
    upward = sorted(
        f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _layer(b) > _layer(a)
    )
    assert upward == []


@pytest.mark.one_cell
def test_no_import_circle() -> None:
    """Guards import circles (three sat inside checkpoint/: scan/archive_scan/scan_result/
    storage_check, format/uri, inert_placeholders/persistent_ids): the module graph has no
    strongly connected component of more than one module. One cell: a static read."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert circles == []
