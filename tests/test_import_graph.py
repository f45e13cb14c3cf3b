"""The package's import graph has no circles (module-level and function-level imports alike).

A circle (``a`` imports ``b`` and ``b`` imports ``a``, even lazily inside a function) means two
modules share a job; the redesign split each one into a module both can import instead.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1] / "autodeco_samplers"


def _modules(root: Path) -> Dict[str, Path]:
    mods = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.with_suffix("").relative_to(root.parent).parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def import_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    """``{module: modules of the package it imports}``; ``from . import x`` of a submodule ``x``
    depends on ``x``, not on the package."""
    mods = _modules(root)
    graph: Dict[str, Set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = parent + ("." + node.module if node.module else "")
                for alias in node.names:
                    deps.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    # the graph sees imports inside functions (step imports the torch rule lazily)
    assert "autodeco_samplers.core.torch_ops" in graph["autodeco_samplers.core.step"]
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checker_finds_a_cycle(tmp_path):
    """The check itself: a lazy import back from ``b`` to ``a`` is reported."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "c.py").write_text("from .a import y\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]


# The layers, lowest first. A module may import its own layer and the layers below it, never one
# above (docs/design.md section 6 draws the picture). The package root (the public facade) and
# ``__main__`` sit on top.
LAYERS = ["core", "heads", "adapters", "research", "models", "conformance", "frontends"]


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__main__":
        return len(LAYERS)
    return LAYERS.index(parts[1])


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))


def test_every_module_lives_in_a_layer():
    stray = [m for m in import_graph() if m.count(".") == 1 and m.split(".")[1] not in LAYERS + ["__main__"]]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_no_layer_imports_a_layer_above_it():
    found = upward_imports(import_graph())
    assert not found, "imports from a lower layer into a higher one: " + "; ".join(found)


def test_the_layer_check_finds_an_upward_import():
    graph = {"autodeco_samplers.core.step": {"autodeco_samplers.adapters.vllm"}, "autodeco_samplers.adapters.vllm": set()}
    assert upward_imports(graph) == ["autodeco_samplers.core.step -> autodeco_samplers.adapters.vllm"]
