"""django_klaviyo has no import cycle.

A cycle is two modules that each need the other, however many steps apart: neither can be
read, moved or tested alone. This test reads the package's source (it imports nothing, so an
import that runs only inside a function, or only under ``TYPE_CHECKING``, counts like any
other) and draws one arrow per import:

- ``import a.b`` points at ``a.b``;
- ``from a import b`` points at ``a.b`` when ``a/b.py`` or ``a/b/`` exists, else at ``a``
  (a name defined in ``a/__init__.py``); relative imports are resolved first;
- importing the package's own ``__init__`` is an arrow like any other; imports from outside
  django_klaviyo draw no arrow.

Then it looks for a way round. Each group of modules that can reach each other is one
cycle; the failure names it, with the file and line of every import on the way round.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "django_klaviyo"


@dataclass(frozen=True)
class Import:
    """One arrow: ``source`` imports ``target`` at ``where`` (path:line)."""

    source: str
    target: str
    where: str


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``a/__init__.py`` is ``a``)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """The arrows out of one module, from every import statement anywhere in its file."""
    is_package = path.name == "__init__.py"
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    arrows = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # ``from .x import y`` means a.b.x in module a.b.c and in package a.b alike.
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        where = f"{shown}:{node.lineno}"
        arrows += [Import(name, t, where) for t in dict.fromkeys(targets) if t in known]
    return arrows


def import_graph() -> dict[str, list[Import]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """One way round each group of modules that reach each other (Tarjan's strongly
    connected components), as the imports that make it, shortest first from the group's
    first module by name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for arrow in graph[module]:
            if arrow.target not in index:
                visit(arrow.target)
                low[module] = min(low[module], low[arrow.target])
            elif arrow.target in on_stack:
                low[module] = min(low[module], index[arrow.target])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            self_import = any(a.target == module for a in graph[module])
            if len(group) > 1 or self_import:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [way_round(graph, group) for group in sorted(groups, key=min)]


def way_round(graph: dict[str, list[Import]], group: set[str]) -> list[Import]:
    """The shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    came_by: dict[str, Import] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for arrow in graph[module]:
            if arrow.target not in group or arrow.target in came_by:
                continue
            came_by[arrow.target] = arrow
            if arrow.target == start:
                path = [arrow]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return path
            queue.append(arrow.target)
    raise AssertionError(f"no way round {group}")  # a strongly connected group always has one


def describe(cycle: list[Import]) -> str:
    """``a -> b -> a`` and, under it, where each of those imports is."""
    steps = [f"    {a.source} -> {a.target}  ({a.where})" for a in cycle]
    return "\n".join([" -> ".join([cycle[0].source, *(a.target for a in cycle)]), *steps])


def test_the_package_has_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(describe(c) for c in found)


# The reader above is itself code that could be wrong; these pin what it sees.


def test_the_reader_sees_imports_inside_functions() -> None:
    graph = import_graph()
    # apps.ready() imports checks inside the method; __getattr__ imports api inside a function.
    assert "django_klaviyo.checks" in {a.target for a in graph["django_klaviyo.apps"]}
    assert "django_klaviyo.api" in {a.target for a in graph["django_klaviyo"]}


def test_the_reader_resolves_submodules_names_and_relative_imports(tmp_path: Path) -> None:
    files = ["pkg/__init__.py", "pkg/a.py", "pkg/sub/__init__.py", "pkg/sub/b.py"]
    for file in files:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).touch()
    known = dict(zip(["pkg", "pkg.a", "pkg.sub", "pkg.sub.b"], [tmp_path / f for f in files]))
    (tmp_path / "pkg/sub/b.py").write_text(
        "import json\n"  # outside the package: no arrow
        "from pkg import a\n"  # a submodule: pkg.a
        "from pkg import VERSION\n"  # a name in pkg/__init__.py: pkg
        "from .. import a as again\n"  # relative: pkg.a again, one arrow per statement
        "def later():\n"
        "    from . import b\n"  # itself
        "    from .. import sub\n"  # its own package's __init__
    )
    (tmp_path / "pkg/sub/__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from .b import thing\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.a import Thing\n"  # for annotations only, but an arrow all the same
    )

    def targets(name: str) -> list[str]:
        return [arrow.target for arrow in imports(name, known[name], known)]

    assert sorted(targets("pkg.sub.b")) == ["pkg", "pkg.a", "pkg.a", "pkg.sub", "pkg.sub.b"]
    assert sorted(targets("pkg.sub")) == ["pkg.a", "pkg.sub.b"]


def test_a_cycle_is_found_and_named() -> None:
    def arrow(source: str, target: str) -> Import:
        return Import(source, target, f"{source}.py:1")

    graph = {
        "a": [arrow("a", "b")],
        "b": [arrow("b", "c")],
        "c": [arrow("c", "a"), arrow("c", "d")],
        "d": [],
        "e": [arrow("e", "e")],
    }
    found = cycles(graph)
    assert [describe(c).splitlines()[0] for c in found] == ["a -> b -> c -> a", "e -> e"]
