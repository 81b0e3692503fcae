"""The layers hold: import-linter's contracts (`.importlinter`), no import circles, one page per
module in pages/, every page routed by app.py.

The contracts are checked by running `lint-imports` itself, and a scratch copy of the tree with a
deliberate violation proves that each kind of contract can fail.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "cli", "ui", "pages", "models")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import "
                           "lint_imports_command as c; sys.exit(c())", "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=300)


def scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / ".importlinter", root)
    for name in PACKAGES:
        shutil.copytree(REPO / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.p"))
    return root


def test_lint_imports_passes():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("core/stats/delong.py", "import torch", "core is pure logic"),
    ("core/reports/scores.py", "import streamlit", "core is pure logic"),
    ("core/complement.py", "import models.networks.gmic", "Layers"),
    ("models/inference/preprocess.py", "import ui.session", "Layers"),
    ("cli/data.py", "import ui.session", "Layers"),
    ("core/stats/delong.py", "import core.store", "core.stats stands alone"),
    ("core/store/facade.py", "import core.importers.common", "The store never imports"),
    ("core/io/pixels.py", "import core.io.images", "No circles"),
])
def test_a_deliberate_violation_fails(tmp_path, module, line, contract):
    root = scratch_copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
    result = lint_imports(root)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken, result.stdout[-3000:]


def _module_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports inside functions
    included: a circle is a circle even when a lazy import hides it at start-up."""
    graph = grimp.build_graph(*PACKAGES)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m)
                 if i.split(".")[0] in PACKAGES} for m in graph.modules}
    # a package's __init__ may re-export its own modules: that is a facade, not a circle
    for module in edges:
        edges[module] = {i for i in edges[module] if not module.startswith(i + ".")}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_through_others():
    assert _module_cycles() == []


def test_pages_holds_pages_only_and_app_routes_each():
    pages = sorted(p.name for p in (REPO / "pages").glob("*.py") if p.name != "__init__.py")
    assert pages and not [p for p in pages if p.startswith("_")], "helpers belong in ui/"
    routed = {node.args[0].value for node in ast.walk(ast.parse((REPO / "app.py").read_text()))
              if isinstance(node, ast.Call) and (getattr(node.func, "attr", "") == "Page"
                                                 or getattr(node.func, "id", "") == "page")
              and node.args and isinstance(node.args[0], ast.Constant)}
    assert routed == {f"pages/{p}" for p in pages}


def test_core_main_is_the_only_core_module_that_knows_the_cli():
    knows = []
    for path in (REPO / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "cli" for n in names):
                knows.append(path.relative_to(REPO).as_posix())
    assert knows == ["core/__main__.py"]
    assert len((REPO / "core" / "__main__.py").read_text().strip().splitlines()) <= 4
