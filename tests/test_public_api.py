"""docs/api.md is the public surface: it and the public modules' ``__all__`` say the same
thing, with the code's signatures, and every ``django_klaviyo`` path the README and docs/
name still imports."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

import django_klaviyo

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "django_klaviyo"
API_DOC = REPO / "docs" / "api.md"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Internal modules whose __all__ names what the package re-exports for its own use: the
# admin's registering modules, the senders the flusher picks by kind, and a deprecated tag
# library that re-exports ``register`` so ``{% load klaviyo_back_in_stock %}`` still works.
NOT_DOCUMENTED = {
    "django_klaviyo.admin",
    "django_klaviyo.flush.senders",
    "django_klaviyo.templatetags.klaviyo_back_in_stock",
}
# ``django_klaviyo.E037``, ``django_klaviyo.W0xx``: system check ids, not paths.
CHECK_ID = re.compile(r"^[EWI](\d+|0xx)$")


def sections() -> dict[str, str]:
    """docs/api.md's ``## `heading` `` sections by heading, module or not."""
    found = re.split(r"^## (.+)$", API_DOC.read_text(), flags=re.MULTILINE)
    return {found[i].strip().strip("`"): found[i + 1] for i in range(1, len(found), 2)}


def documented_names(section: str) -> list[str]:
    """The names of the top-level entries ``- `name(...)`: ...`` (nested ones are
    methods of the entry above)."""
    return re.findall(r"^- `(?:class )?([A-Za-z_][A-Za-z0-9_]*)", section, flags=re.MULTILINE)


def documented_modules() -> dict[str, list[str]]:
    return {
        heading: documented_names(body)
        for heading, body in sections().items()
        if heading.startswith("django_klaviyo")
    }


def modules_with_all() -> set[str]:
    """Every module of the package that sets ``__all__``, read from source (importing the
    sandbox would need its extra)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for node in tree.body
        ):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_reference_documents_a_module_per_section_and_each_once() -> None:
    modules = documented_modules()
    headings = re.findall(r"^## `(django_klaviyo[^`]*)`", API_DOC.read_text(), flags=re.MULTILINE)
    assert len(headings) == len(set(headings))
    assert len(modules) >= 15
    for module, names in modules.items():
        assert names, f"{module} documents no name"
        assert len(names) == len(set(names)), f"{module} documents a name twice"


@pytest.mark.parametrize("module_name", sorted(documented_modules()))
def test_a_documented_module_exports_exactly_its_documented_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    documented = documented_modules()[module_name]
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert sorted(exported) == sorted(documented), (
        f"{module_name}: in __all__ only {sorted(set(exported) - set(documented))}, "
        f"in docs/api.md only {sorted(set(documented) - set(exported))}"
    )
    for name in documented:
        assert getattr(module, name) is not None, f"{module_name}.{name}"


def signature_text(function: Any) -> str:
    """A signature as docs/api.md writes it: annotations as written in the source."""
    signature = inspect.signature(function)
    parts, keyword_only = [], False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
        keyword_only = keyword_only or parameter.kind in (
            parameter.KEYWORD_ONLY,
            parameter.VAR_POSITIONAL,
        )
        text = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(
            parameter.kind, ""
        ) + parameter.name
        if parameter.annotation is not parameter.empty:
            text += f": {parameter.annotation}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    returns = signature.return_annotation
    return f"({', '.join(parts)})" + ("" if returns is signature.empty else f" -> {returns}")


@pytest.mark.parametrize("module_name", sorted(documented_modules()))
def test_each_documented_function_has_the_codes_signature(module_name: str) -> None:
    module = importlib.import_module(module_name)
    entries = re.findall(
        r"^- `([a-z_][A-Za-z0-9_]*)(\([^`]*)`: ",
        sections()[module_name],
        flags=re.MULTILINE,
    )
    if module_name == "django_klaviyo":
        assert len(entries) == len(module.__all__)  # the pattern reads every writer
    for name, documented in entries:
        function = getattr(module, name)
        function = getattr(function, "func", function)  # a Django task wraps its function
        assert documented == signature_text(function), f"{module_name}.{name}"


def test_every_module_with_an_all_is_documented() -> None:
    # An __all__ declares a public module; one that docs/api.md does not list is a surface
    # nobody promised, or a section that was forgotten.
    assert modules_with_all() - NOT_DOCUMENTED == set(documented_modules())


def test_the_management_commands_are_the_documented_ones() -> None:
    documented = set(documented_names(sections()["Management commands"]))
    commands = {
        path.stem
        for path in (PACKAGE / "management" / "commands").glob("*.py")
        if path.stem != "__init__"
    }
    assert documented == commands


def test_the_template_tags_are_the_documented_ones() -> None:
    from django_klaviyo.templatetags.klaviyo import register

    documented = set(documented_names(sections()["Template tags"]))
    assert documented == set(register.tags)


def test_the_old_paths_table_is_the_moved_modules_table() -> None:
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.+) \|$", sections()["Old paths"], flags=re.MULTILINE)
    documented = {old: tuple(re.findall(r"`django_klaviyo\.([a-z_.]+)`", new)) for old, new in rows}
    assert documented == django_klaviyo.MOVED_MODULES


def dotted_paths() -> list[tuple[str, str]]:
    """Every ``django_klaviyo.x.y`` named in the README and docs/, with its file."""
    found = set()
    for doc in DOCS:
        for match in re.finditer(r"\bdjango_klaviyo(?:\.[A-Za-z_][A-Za-z0-9_]*)+", doc.read_text()):
            path = match.group(0)
            if not CHECK_ID.match(path.rsplit(".", 1)[-1]):
                found.add((doc.name, path))
    return sorted(found)


def resolve(path: str) -> Any:
    """The module at ``path``, or the attribute its longest importable prefix has."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as error:
            if error.name is not None and not ".".join(parts[:cut]).startswith(error.name):
                raise  # the module exists but an import inside it failed
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(path)


def test_the_docs_name_dotted_paths() -> None:
    # Guards the regular expression below: the parametrized test must not run on nothing.
    assert len(dotted_paths()) >= 20


@pytest.mark.parametrize(("doc", "path"), dotted_paths())
def test_every_path_the_docs_name_imports_from_where_it_lives_now(doc: str, path: str) -> None:
    with warnings.catch_warnings():
        # An old path imports with a DeprecationWarning: the docs must name the new one.
        warnings.simplefilter("error", DeprecationWarning)
        assert resolve(path) is not None, f"{doc}: {path}"


def file_paths() -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        text = doc.read_text()
        # Not after a slash: "/static/django_klaviyo/storefront.js" is a URL.
        for match in re.finditer(r"(?<![/\w])django_klaviyo/[A-Za-z0-9_/]*(?:\.py)?", text):
            found.add((doc.name, match.group(0)))
    return sorted(found)


@pytest.mark.parametrize(("doc", "path"), file_paths())
def test_every_file_the_docs_name_exists(doc: str, path: str) -> None:
    assert (REPO / path).exists(), f"{doc}: {path}"
