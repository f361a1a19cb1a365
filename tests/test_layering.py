"""No import cycles in src/rtseg: data flows one way (dataset -> transforms -> model -> loss/metrics -> report).

The graph holds every ``import``/``from ... import`` of an rtseg module found anywhere in a file, at the top
level and inside functions alike: a function-level import only postpones the cycle to the first call, and the
layering is about which module may know which. An import names its module explicitly (``from rtseg.io import
weights`` is an edge to ``rtseg.io.weights``); the parent packages Python runs on the way are not edges, or
every module would depend on ``rtseg/__init__.py`` and through it on the public API it re-exports.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Cycles waiting for a change in files another branch is rewriting, each with what breaks it. The test fails on
# any other cycle, and on a listed one that is gone (so the entry is removed with the fix).
KNOWN_CYCLES: dict[frozenset, str] = {}


def _modules(src: Path = SRC) -> dict[str, Path]:
    modules = {}
    for path in sorted((src / "rtseg").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The rtseg modules that ``path`` (module ``name``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = _modules(src)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a closed path."""
    return [_path_through(graph, c) for c in import_knots(graph)]


def import_knots(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: the modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    # The shortest cycle through the component's first module (breadth-first inside the component).
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def test_cycle_finder_names_a_cycle(tmp_path):
    pkg = tmp_path / "rtseg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from rtseg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import rtseg.a\n")
    (pkg / "d.py").write_text("from rtseg import a\n")
    graph = import_graph(tmp_path)
    assert graph["rtseg.sub.b"] == {"rtseg.c"} and graph["rtseg.d"] == {"rtseg.a"}
    assert find_cycles(graph) == [["rtseg.a", "rtseg.sub.b", "rtseg.c", "rtseg.a"]]


def test_src_rtseg_has_no_import_cycle():
    graph = import_graph()
    knots = import_knots(graph)
    new = [k for k in knots if frozenset(k) not in KNOWN_CYCLES]
    assert not new, "import cycles in src/rtseg:\n" + "\n".join(
        " -> ".join(_path_through(graph, k)) + (f"  (with {len(k) - 2} more modules: {', '.join(sorted(k))})" if len(k) > 2 else "") for k in new)
    gone = [" <-> ".join(sorted(k)) for k in KNOWN_CYCLES if set(k) not in knots]
    assert not gone, f"listed cycles no longer exist, remove them from KNOWN_CYCLES: {gone}"
