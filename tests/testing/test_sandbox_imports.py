"""What the sandbox needs to run: no Django settings, no app registry, and of
django_klaviyo only the test tooling and the rulebook (for Klaviyo's profile fields).

Checked in a fresh interpreter without DJANGO_SETTINGS_MODULE, the way a benchmark starts
the sandbox in a process of its own (bench/common.py), and through a real request, so
nothing loaded lazily on the first request escapes the check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django_klaviyo.client.ratelimit import account_scope
from django_klaviyo.testing.sandbox.state import key_digest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys, urllib.request
from django_klaviyo.testing.sandbox import SandboxServer

with SandboxServer(enforce_rate_limits=False) as sandbox:
    body = {"data": {"type": "profile", "attributes": {"email": "a@example.com"}}}
    request = urllib.request.Request(
        sandbox.url + "/api/profile-import",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": "Klaviyo-API-Key pk_probe",
            "revision": "2026-07-15",
            "Content-Type": "application/vnd.api+json",
        },
    )
    with urllib.request.urlopen(request) as response:
        status = response.status

from django.apps import apps
from django.conf import settings
print(json.dumps({
    "status": status,
    "settings_configured": settings.configured,
    "apps_ready": apps.ready,
    "ours": sorted(m for m in sys.modules if m.startswith("django_klaviyo")),
    "django": sorted(m for m in sys.modules if m == "django" or m.startswith("django.")),
}))
"""

# The test tooling itself, and the rulebook (whose package loads the cleaners with it).
ALLOWED = ("django_klaviyo.testing", "django_klaviyo.rules", "django_klaviyo.exceptions")


def test_the_sandbox_runs_without_settings_and_loads_no_runtime_module() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 201  # the request went through the whole pipeline
    assert report["settings_configured"] is False
    assert report["apps_ready"] is False
    runtime = [
        name for name in report["ours"] if name != "django_klaviyo" and not name.startswith(ALLOWED)
    ]
    assert runtime == []  # no client, conf, accounts, models, outbox, flush ...
    # Django utilities come in with the rulebook's validators (rules.identifiers, values);
    # nothing that needs a database, a cache or a request.
    assert not [
        name
        for name in report["django"]
        if name.startswith(("django.db", "django.core.cache", "django.http", "django.contrib"))
    ]


def test_the_sandbox_keeps_api_keys_as_the_client_scopes_its_rate_limits() -> None:
    # key_counts() tells accounts apart by the digest the client keys its limits by.
    for key in ("pk_us_0123456789abcdef", "pk_eu_0123456789abcdef", ""):
        assert key_digest(key) == account_scope(key)
