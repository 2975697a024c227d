"""pytest fixture ``klaviyo_sandbox``: a running Klaviyo sandbox wired into Django settings.

Enable it in your project's ``conftest.py``::

    pytest_plugins = ["django_klaviyo.testing.sandbox.pytest_plugin"]

Then::

    def test_order_reaches_klaviyo(klaviyo_sandbox):
        place_order()
        flush_outbox()
        assert klaviyo_sandbox.state.events(metric="Placed Order")

The fixture starts a ``SandboxServer`` on a free port, points ``KLAVIYO["API_URL"]`` at it
for the test (through pytest-django's ``settings`` fixture, so it is undone afterwards),
yields the server and stops it. Options go in a marker::

    @pytest.mark.klaviyo_sandbox(time_scale=0.1, faults={"rate_503": 0.2, "seed": 7})
    def test_flush_survives_outages(klaviyo_sandbox): ...

Any ``SandboxServer`` keyword works; by default the sandbox accepts any API key and
enforces Klaviyo's rate limits. The fixture turns on sandbox mode (``KLAVIYO["SANDBOX"]``),
so a project needs no Klaviyo private key to use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_klaviyo.testing.sandbox.server import SandboxServer

__all__ = ["klaviyo_sandbox"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "klaviyo_sandbox(**options): SandboxServer options for the fixture"
    )


@pytest.fixture
def klaviyo_sandbox(request: pytest.FixtureRequest, settings: Any) -> Iterator[SandboxServer]:
    marker = request.node.get_closest_marker("klaviyo_sandbox")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    server = SandboxServer(**options).start()
    try:
        block = dict(getattr(settings, "KLAVIYO", None) or {})
        block["API_URL"] = server.url
        # Sandbox mode: no private key needed (the sandbox accepts any).
        block["SANDBOX"] = True
        settings.KLAVIYO = block
        yield server
    finally:
        server.stop()
