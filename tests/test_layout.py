"""The codebase's shape: packages by role with imports flowing one way, small files and
functions, entry scripts that import no other entry script, framework-free packages."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package -> the project packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "data": {"core"},
    "backends": {"core", "models"},
    "engine": {"core", "data", "models", "backends"},
    "analysis": {"core", "data", "models", "engine", "backends"},
}
FRAMEWORK_FREE = ("data", "engine", "analysis")
FRAMEWORKS = ("torch", "jittor", "timm", "torchvision")
LONG_FILES_ALLOWED = {"models/overlock_torch.py", "models/overlock_jittor.py"}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [REPO / p for p in listed if not p.startswith("tests/") and (REPO / p).is_file()]


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, lazily inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _package(path: Path) -> str | None:
    rel = path.relative_to(REPO)
    return rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in ALLOWED else None


ENTRY_SCRIPTS = {p.stem for p in REPO.glob("*.py")}


def test_every_package_says_what_lives_there() -> None:
    for package in ALLOWED:
        init = REPO / package / "__init__.py"
        assert init.is_file(), f"{package}/ has no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{package}/__init__.py: docstring"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_flow_one_way(path: Path) -> None:
    imported = _imports(path)
    package = _package(path)
    project = (imported & set(ALLOWED)) - {package}
    if package is not None:
        assert project <= ALLOWED[package], f"{package} may not import {project - ALLOWED[package]}"
        if package in FRAMEWORK_FREE:
            assert not imported & set(FRAMEWORKS), f"{package} is framework-free"
    assert not imported & (ENTRY_SCRIPTS - {path.stem}), "an entry script imports another"


def test_no_import_cycle_between_packages() -> None:
    graph = {p: set() for p in ALLOWED}
    for path in _sources():
        package = _package(path)
        if package is not None:
            graph[package] |= (_imports(path) & set(ALLOWED)) - {package}
    visiting: list[str] = []

    def visit(node: str) -> None:
        assert node not in visiting, "import cycle: " + " -> ".join([*visiting, node])
        visiting.append(node)
        for nxt in graph[node]:
            visit(nxt)
        visiting.pop()

    for package in graph:
        visit(package)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_files_and_functions_stay_small(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    text = path.read_text()
    if rel not in LONG_FILES_ALLOWED:
        assert len(text.splitlines()) <= MAX_FILE_LINES, f"{rel} is over {MAX_FILE_LINES} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{rel}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_no_import_cycle_between_modules() -> None:
    """Within a package too (a call-back loop between two modules hides which one is lower)."""
    modules = {_module_name(p): p for p in _sources() if _package(p) is not None}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name}
        # a package's __init__ is imported with each of its modules, not the other way round
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        assert node not in trail, "import cycle: " + " -> ".join([*trail, node])
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*trail, node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
