"""A local stand-in for Klaviyo's API, for tests, demos and benchmarks.

    from django_klaviyo.testing.sandbox import SandboxServer

    with SandboxServer(time_scale=0.1) as sandbox:
        ...  # point KLAVIYO["API_URL"] at sandbox.url
        assert sandbox.state.events(metric="Placed Order")

Also available as ``manage.py klaviyo_sandbox`` and as the pytest fixture
``klaviyo_sandbox`` (``pytest_plugins = ["django_klaviyo.testing.sandbox.pytest_plugin"]``).
The sandbox needs no Django settings and no app registry: of django_klaviyo it imports
only this test tooling and the rulebook (``django_klaviyo.rules``, for Klaviyo's profile
fields), whose validators load a few of Django's utilities (about 28 ``django.*``
modules), never settings, models, the database or the client
(tests/testing/test_sandbox_imports.py).
"""

from __future__ import annotations

from django_klaviyo.testing.sandbox.faults import FaultConfig
from django_klaviyo.testing.sandbox.server import SandboxServer
from django_klaviyo.testing.sandbox.state import SandboxState

__all__ = ["FaultConfig", "SandboxServer", "SandboxState"]
