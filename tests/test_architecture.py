"""The shape of the package: no import cycles, the layer contract, modules and functions kept short.

- No cycle among turnstream's modules, counting imports inside functions too
  (a lazy import hides a cycle from import time, not from the design). Imports
  under `if TYPE_CHECKING:` never run and are not counted.
- The contracts in pyproject.toml's `[tool.importlinter]` hold (`lint-imports`):
  the layers cli > api > runs | embedded > runtime > agents > live | store > leaf
  modules, and HTTP and the command line only in api/ and cli/.
- A module has at most MODULE_LINES lines unless its docstring says why, in a
  paragraph that starts with "Length:". A function or method has at most
  FUNCTION_LINES lines, from its `def` to its last line: split a longer one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "turnstream"

MODULE_LINES = 300
FUNCTION_LINES = 60
# A migration is frozen once released, and its upgrade() is a list of DDL
# statements: it is not held to the function limit.
FROZEN = PACKAGE / "store" / "migrations" / "versions"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its `__init__`'s)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(
    module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]
) -> set[str]:
    """The turnstream modules an import statement loads, parent packages included."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        if node.level:  # relative: resolve against this module's package
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, node.module] if node.module else package)
        else:
            base = node.module or ""
        # `from pkg import name` loads pkg.name when that is a module.
        names = {base} | {f"{base}.{alias.name}" for alias in node.names}
    out = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            # Importing a module also runs its parent packages, except those the
            # importer sits in (they are already being imported).
            if target in known and not (module == target or module.startswith(target + ".")):
                out.add(target)
    return out


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = set()
        for node in _runtime_imports(tree):
            graph[module] |= _targets(module, path, node, known)
        graph[module].discard(module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path start -> ... -> start inside the component (breadth-first: a shortest one)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle found in the component {sorted(component)}")


def test_the_package_has_no_import_cycle():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles
    )


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    tree = ast.parse("def f():\n    from turnstream.keys import x\n")
    known = {"turnstream", "turnstream.keys"}
    targets = [_targets("turnstream.events", PACKAGE, n, known) for n in _runtime_imports(tree)]
    assert targets == [{"turnstream.keys"}]


def test_the_layer_contract_holds():
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, f"lint-imports failed:\n{check.stdout}\n{check.stderr}"


def test_modules_and_functions_are_short():
    too_long = []
    for path in _modules().values():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        lines = len(text.splitlines())
        docstring = ast.get_docstring(tree) or ""
        if lines > MODULE_LINES and "Length:" not in docstring:
            too_long.append(
                f"{path.relative_to(ROOT)}: {lines} lines (over {MODULE_LINES}; split it, or "
                "say why in a 'Length:' paragraph of its docstring)"
            )
        if path.is_relative_to(FROZEN):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES:
                    too_long.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {length} lines "
                        f"(over {FUNCTION_LINES}; split it)"
                    )
    assert not too_long, "too long:\n" + "\n".join("  " + item for item in too_long)
