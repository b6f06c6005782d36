"""The package's import graph: no cycles, a core without I/O, a lean layer the hook can afford.

The graph is built statically: every module of `trustix_p2p` is parsed with `ast`, and every
`import` and `from ... import` in it is an edge to the package module it names, wherever it
stands.  Each edge records where: at module level, inside a function (a lazy import), or
under `if TYPE_CHECKING:` (seen by type checkers only).

What counts as a cycle: every edge, lazy and TYPE_CHECKING-only ones included.  A lazy
import is a run-time dependency all the same, only later, and importing inside a function to
get around a cycle is exactly the tangle this test exists to keep out.  A cycle through a
TYPE_CHECKING import is harmless at run time, but its modules can still only be read and
type-checked together; the package has none, and this keeps it so.

What is not an edge: the parent packages an import runs on the way (`import a.b.c` executes
`a/__init__` and `a/b/__init__` too).  A package whose `__init__` re-exports its own
submodules (`trustix_p2p.transport`) would otherwise be in a cycle with each of them, which is
Python's ordinary layout rather than a dependency loop.  An import that names a package
(`from trustix_p2p.core.lean import NamedTuple`) is an edge to its `__init__`, as it should be.

Dynamic imports (`importlib.import_module`, as `trustix_p2p.cli` dispatches commands) are not
seen; `trustix_p2p.core` may not use them at all (below).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import msgpack
import pytest

import trustix_p2p

ROOT = Path(trustix_p2p.__file__).resolve().parent.parent
PACKAGE = "trustix_p2p"

MODULE_LEVEL = "module level"
IN_FUNCTION = "in a function"
TYPE_ONLY = "under TYPE_CHECKING"
# Edges that execute when the program runs (sooner or later).
RUN_TIME = frozenset({MODULE_LEVEL, IN_FUNCTION})


@attrs.frozen
class Edge:
    source: str
    target: str  # a package module, or the top-level name of an outside module
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target} ({self.kind})"


@attrs.frozen
class Graph:
    modules: frozenset[str]
    internal: tuple[Edge, ...]  # to modules of the package
    external: tuple[Edge, ...]  # to anything else, by top-level name (`os`, `attrs`)
    calls: dict[str, frozenset[str]]  # module -> names it calls (`open(...)`)

    def out(self, module: str, kinds: frozenset[str] | None = None) -> list[Edge]:
        return [e for e in self.internal if e.source == module and (not kinds or e.kind in kinds)]

    def closure(self, start: Iterable[str], kinds: frozenset[str] | None = None) -> set[str]:
        """`start` and every package module reachable from it over edges of `kinds`."""
        seen = set(start)
        todo = list(seen)
        while todo:
            for edge in self.out(todo.pop(), kinds):
                if edge.target not in seen:
                    seen.add(edge.target)
                    todo.append(edge.target)
        return seen


def module_files(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, whether it is a package's `__init__`)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of a module, with the kind of place it stands in."""

    def walk(
        nodes: Iterable[ast.AST], kind: str
    ) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, kind
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, TYPE_ONLY)
                yield from walk(node.orelse, kind)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(
                    ast.iter_child_nodes(node), TYPE_ONLY if kind == TYPE_ONLY else IN_FUNCTION
                )
            else:
                yield from walk(ast.iter_child_nodes(node), kind)

    yield from walk(tree.body, MODULE_LEVEL)


def build_graph(root: Path = ROOT, package: str = PACKAGE) -> Graph:
    files = module_files(root, package)

    def owner(name: str) -> str | None:
        # The package module that `name` (a module, or an attribute of one) lives in.
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    internal: list[Edge] = []
    external: list[Edge] = []
    calls: dict[str, frozenset[str]] = {}
    for module, (path, is_package) in files.items():
        tree = ast.parse(path.read_text(), str(path))
        calls[module] = frozenset(
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        )
        for node, kind in _imports(tree):
            # The modules the statement names: `import a.b, c` names a.b and c; `from a.b
            # import c` names the module a.b.c if there is one, else a.b itself.
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            else:
                if node.level:  # relative: from the module's own package, `level` up
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join([*base, node.module] if node.module else base)
                else:
                    stem = node.module or ""
                named = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in files]
                named = named or [stem]
            for name in named:
                top = name.split(".")[0]
                if top != package:
                    external.append(Edge(module, top, node.lineno, kind))
                    continue
                target = owner(name)
                if target is not None and target != module:
                    internal.append(Edge(module, target, node.lineno, kind))
    return Graph(frozenset(files), tuple(internal), tuple(external), calls)


def find_cycles(graph: Graph) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component that has one."""
    successors: dict[str, list[Edge]] = {m: graph.out(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for edge in successors[v]:
            w = edge.target
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            connect(module)

    cycles = []
    for component in components:
        # The shortest way from the component's first module back to itself, inside it.
        start = min(component)
        paths: dict[str, list[Edge]] = {start: []}
        todo = [start]
        while todo:
            v = todo.pop(0)
            for edge in successors[v]:
                if edge.target == start:
                    cycles.append([*paths[v], edge])
                    todo = []
                    break
                if edge.target in component and edge.target not in paths:
                    paths[edge.target] = [*paths[v], edge]
                    todo.append(edge.target)
    return cycles


def describe(cycle: list[Edge]) -> str:
    return "\n".join(f"  {edge}" for edge in cycle)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


# --- The graph builder itself --------------------------------------------------------------


def test_the_builder_sees_lazy_and_type_checking_imports_and_finds_their_cycle(
    tmp_path: Path,
) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import c\n")  # not a cycle
    (pkg / "sub" / "c.py").write_text("import os.path\n")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text(
        "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from pkg.sub.c import X\nelse:\n"
        "    from . import a\n"
    )
    (pkg / "d.py").write_text("from .sub import c\nfrom pkg.sub.c import name_in_c\n")
    g = build_graph(tmp_path, "pkg")
    assert {str(e) for e in g.internal} == {
        "pkg.sub:1 imports pkg.sub.c (module level)",
        "pkg.a:2 imports pkg.b (in a function)",
        "pkg.b:3 imports pkg.sub.c (under TYPE_CHECKING)",
        "pkg.b:5 imports pkg.a (module level)",
        "pkg.d:1 imports pkg.sub.c (module level)",
        "pkg.d:2 imports pkg.sub.c (module level)",
    }
    assert [str(e) for e in g.external] == ["pkg.sub.c:1 imports os (module level)"]
    (cycle,) = find_cycles(g)
    assert [str(e) for e in cycle] == [
        "pkg.a:2 imports pkg.b (in a function)",
        "pkg.b:5 imports pkg.a (module level)",
    ]


def test_the_graph_holds_the_packages_known_imports(graph: Graph) -> None:
    # A builder that silently saw nothing would pass every test below.
    edges = {(e.source, e.target, e.kind) for e in graph.internal}
    assert ("trustix_p2p.nix.hook", "trustix_p2p.core.lean.entry", MODULE_LEVEL) in edges
    assert ("trustix_p2p.control.client", "trustix_p2p.control.protocol", IN_FUNCTION) in edges
    assert ("trustix_p2p.control.client", "trustix_p2p.control.protocol", TYPE_ONLY) in edges
    assert ("trustix_p2p.core.lean.entry", "trustix_p2p.core.lean", MODULE_LEVEL) in edges
    assert ("trustix_p2p.core.noise", "attrs", MODULE_LEVEL) in {
        (e.source, e.target, e.kind) for e in graph.external
    }


# --- The package -----------------------------------------------------------------------


def test_the_package_has_no_import_cycle(graph: Graph) -> None:
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n\n".join(describe(c) for c in cycles)


CORE = "trustix_p2p.core"
LEAN = "trustix_p2p.core.lean"
# The sockets and event loops of the node, and the file APIs.  Pure code takes bytes and
# values; the shells around it (`trustix_p2p.nix`, `storage`, `node`, `control`) do the I/O.
NOT_IN_CORE = frozenset(
    {"trio", "plyvel", "socket", "_socket", "selectors", "zeroconf", "httpx"}
    | {"os", "pathlib", "io", "shutil", "tempfile", "tomllib"}
    # Dynamic imports would escape this test; nothing in core needs them.
    | {"importlib"}
)
# Builtins that are I/O too (`open`) or would import around this test (`__import__`).
NOT_CALLED_IN_CORE = frozenset({"open", "__import__", "exec", "eval"})


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_core_does_no_io_and_loads_no_network_stack(graph: Graph) -> None:
    # Everything core reaches counts (today that is core and `trustix_p2p.errors`), over
    # every kind of edge: a type-only import of `os` is still core knowing about files.
    # Nothing in core needs `os` for anything else today, so there is no exception.
    reached = graph.closure(m for m in graph.modules if in_package(m, CORE))
    bad = [e for e in graph.external if e.source in reached and e.target in NOT_IN_CORE]
    assert not bad, "\n".join(map(str, bad))
    called = {m: graph.calls[m] & NOT_CALLED_IN_CORE for m in reached}
    assert not {m: names for m, names in called.items() if names}


def test_the_lean_layer_loads_neither_attrs_nor_typing_at_run_time(graph: Graph) -> None:
    lean = {m for m in graph.modules if in_package(m, LEAN)}
    assert {f"{LEAN}.{name}" for name in ("entry", "storepath", "nar", "control")} <= lean
    reached = graph.closure(lean, RUN_TIME)
    bad = [
        e
        for e in graph.external
        if e.source in reached
        and e.kind in RUN_TIME
        and e.target in {"attr", "attrs", "typing", "typing_extensions"}
    ]
    assert not bad, "\n".join(map(str, bad))
    # At run time the layer builds on nothing of the package but itself, the errors and the
    # nix32 alphabet: in particular on none of the typed modules that re-export it.
    allowed = lean | {"trustix_p2p.errors", "trustix_p2p.core.nix32", "trustix_p2p.core.b64"}
    assert reached <= allowed, sorted(reached - allowed)


def test_importing_the_whole_lean_layer_loads_neither_attrs_nor_typing() -> None:
    # The same, as the interpreter sees it: standard modules that import typing count too.
    lean = sorted(m for m in build_graph().modules if in_package(m, LEAN))
    paths = [str(ROOT), str(Path(msgpack.__file__).resolve().parent.parent)]
    code = (
        f"import sys; sys.path[:0] = {paths!r}; import {', '.join(lean)}; "
        "print(' '.join(sorted(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(proc.stdout.split())
    assert set(lean) <= loaded
    assert not {"attr", "attrs", "typing", "typing_extensions"} & loaded
