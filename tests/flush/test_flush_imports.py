"""The flush package's modules import one another without a cycle: every import counts,
at module level, inside functions and under ``TYPE_CHECKING`` alike. Senders get what they
need of the run as a ``SendContext`` and never import the ``Flusher``'s module."""

from __future__ import annotations

import ast
from pathlib import Path

import django_klaviyo.flush

PACKAGE = "django_klaviyo.flush"
ROOT = Path(django_klaviyo.flush.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((PACKAGE, *parts))] = path
    return modules


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package ``module`` imports anywhere in its source."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as the modules along it; None when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            found = visit(imported)
            if found:
                return found
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def test_the_flush_modules_import_one_another_without_a_cycle() -> None:
    assert _cycle(_graph()) is None


def test_no_sender_imports_the_flusher() -> None:
    graph = _graph()
    senders = [m for m in graph if m.startswith(f"{PACKAGE}.senders")]
    assert len(senders) >= 10
    for sender in senders:
        assert f"{PACKAGE}.loop" not in graph[sender], sender


def test_the_cycle_finder_finds_cycles_through_any_import() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_and_under_type_checking_count(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import report\n"
        "if TYPE_CHECKING:\n"
        "    from django_klaviyo.flush.loop import Flusher\n"
        "def later():\n"
        "    from .senders import base\n"
    )
    modules = _modules()
    found = _imported(f"{PACKAGE}.probe", source, modules)
    assert found == {
        PACKAGE,
        f"{PACKAGE}.report",
        f"{PACKAGE}.loop",
        f"{PACKAGE}.senders",
        f"{PACKAGE}.senders.base",
    }
