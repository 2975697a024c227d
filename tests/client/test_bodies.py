"""The body builders (``django_klaviyo.client.bodies``) are the one home of request bodies:
pure (no HTTP, no cleaning), reachable by the old ``payloads`` paths, and the ones
docs/outbox.md names. What they build is held to Klaviyo's spec by test_payloads_spec."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

from django_klaviyo.client import KlaviyoClient
from django_klaviyo.client.bodies import consent, encoding, events, profiles

BODIES = Path(importlib.import_module("django_klaviyo.client.bodies").__file__).parent
OUTBOX_DOC = Path(__file__).resolve().parents[2] / "docs" / "outbox.md"
# What would let a builder send, read the database or clean values.
NOT_FOR_BUILDERS = ("requests", "django.db", "django_klaviyo.models", "django_klaviyo.flush")


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of each import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


@pytest.mark.parametrize("path", sorted(BODIES.glob("*.py")), ids=lambda p: p.name)
def test_a_body_module_neither_sends_nor_cleans(path: Path) -> None:
    for module, name in _imports(path):
        assert not module.startswith(NOT_FOR_BUILDERS), (path.name, module)
        if module.startswith("django_klaviyo.client"):
            assert module.startswith("django_klaviyo.client.bodies"), (path.name, module)
        assert not name.startswith("clean_"), (path.name, module, name)


@pytest.mark.parametrize("old", ["django_klaviyo.payloads", "django_klaviyo.client.payloads"])
def test_the_old_payloads_paths_name_the_body_builders(
    old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match="client.bodies"):
        moved = importlib.import_module(old)
    assert moved.assemble_bulk_events is events.assemble_bulk_events
    assert moved.build_profile_import is profiles.build_profile_import
    assert moved.build_subscribe is consent.build_subscribe
    assert moved.encode is encoding.encode


def _builder_table() -> list[list[str]]:
    text = OUTBOX_DOC.read_text()
    start = text.index("| row kind | built by")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_outbox_doc_names_real_builders_and_senders() -> None:
    rows = _builder_table()
    assert len(rows) >= 8
    for kinds, built_by, sent_by in rows:
        module = None
        for name in re.findall(r"`([\w.]+)`", built_by):
            if "." in name:
                module, name = name.split(".")
            assert module is not None, (kinds, name)
            builders = importlib.import_module(f"django_klaviyo.client.bodies.{module}")
            assert callable(getattr(builders, name, None)), (kinds, module, name)
        for name in re.findall(r"`(\w+)`", sent_by):
            assert callable(getattr(KlaviyoClient, name, None)), (kinds, name)
