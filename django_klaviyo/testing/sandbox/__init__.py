"""A local stand-in for Klaviyo's API, for tests, demos and benchmarks.

    from django_klaviyo.testing.sandbox import SandboxServer

    with SandboxServer(time_scale=0.1) as sandbox:
        ...  # point KLAVIYO["API_URL"] at sandbox.url
        assert sandbox.state.events(metric="Placed Order")

Also available as ``manage.py klaviyo_sandbox`` and as the pytest fixture
``klaviyo_sandbox`` (``pytest_plugins = ["django_klaviyo.testing.sandbox.pytest_plugin"]``).
The sandbox imports nothing from Django, so it runs without configured settings.
"""

from __future__ import annotations

from django_klaviyo.testing.sandbox.faults import FaultConfig
from django_klaviyo.testing.sandbox.server import SandboxServer
from django_klaviyo.testing.sandbox.state import SandboxState

__all__ = ["FaultConfig", "SandboxServer", "SandboxState"]
