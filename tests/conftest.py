from __future__ import annotations

import pytest
from django.db import connection

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
