"""The audit rule of docs/design.md section 5: torch.load is called only inside torch_compat."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.one_cell  # reads source files; the torch version is irrelevant

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_FUNCTIONS = {"load", "trusted_load", "naive_load"}
COMPAT = ROOT / "src" / "ckptcompat" / "torch_compat.py"
SCANNED = [p for d in ("src", "tests", "benchmarks", "examples") for p in (ROOT / d).rglob("*.py")]
SCANNED.append(ROOT / "noxfile.py")


def _is_torch_load(node: ast.Call) -> bool:
    func = node.func
    # torch.load(...), torch.serialization.load(...), serialization.load(...)
    if isinstance(func, ast.Attribute) and func.attr == "load":
        target = ast.unparse(func.value)
        return target in {"torch", "torch.serialization", "serialization", "_ser"}
    return False


def _imports_load_by_name(tree: ast.AST) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module in {"torch", "torch.serialization"}
        and any(alias.name == "load" for alias in node.names)
    ]


def _calls_by_function(tree: ast.AST) -> list[tuple[str | None, ast.Call]]:
    found: list[tuple[str | None, ast.Call]] = []

    def visit(node: ast.AST, func_name: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            name = func_name
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and func_name is None:
                name = child.name
            if isinstance(child, ast.Call) and _is_torch_load(child):
                found.append((func_name, child))
            visit(child, name)

    visit(tree, None)
    return found


def test_torch_load_only_in_the_three_audited_loaders() -> None:
    """Guards a stray torch.load (which may default to weights_only=False) anywhere else."""
    offenders = []
    for path in SCANNED:
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path}:{line} imports torch.load" for line in _imports_load_by_name(tree)]
        for func_name, call in _calls_by_function(tree):
            if path != COMPAT or func_name not in ALLOWED_FUNCTIONS:
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} in {func_name}")
    assert offenders == []


def test_weights_only_false_only_in_trusted_load() -> None:
    """Guards a second weights_only=False path (exactly one audited path may exist)."""
    hits = []
    for path in SCANNED:
        tree = ast.parse(path.read_text(), filename=str(path))
        for func_name, call in _calls_by_function(tree):
            for kw in call.keywords:
                if kw.arg == "weights_only" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is True
                ):
                    hits.append((path.name, func_name))
    assert hits == [("torch_compat.py", "trusted_load")]


def test_the_audited_loaders_exist() -> None:
    """Guards this test passing vacuously if the loaders were renamed."""
    tree = ast.parse(COMPAT.read_text())
    calls = {name for name, _ in _calls_by_function(tree)}
    assert calls == ALLOWED_FUNCTIONS
