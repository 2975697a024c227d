from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, connections

# The klaviyo_sandbox fixture (django_klaviyo/sandbox/pytest_plugin.py).
pytest_plugins = ["django_klaviyo.sandbox.pytest_plugin"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres`` need row locks that SQLite lacks: they run in the
    PostgreSQL pass of the suite and are deselected (not skipped) in the SQLite pass."""
    if connection.vendor == "postgresql":
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("postgres") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def _json_support_known_on_every_alias(django_db_setup: None, django_db_blocker: Any) -> None:
    """Django 6.1's model checks ask every database whether it supports JSONField, which
    opens a cursor on each alias. Asked once here (the answer is cached per connection),
    tests that run the checks need not declare the ``other`` alias they never use."""
    with django_db_blocker.unblock():
        for alias in connections:
            assert connections[alias].features.supports_json_field
