"""The sandbox is a test tool: nothing a store runs (saving, flushing, the admin, the
webhooks, the management commands a worker uses) imports it, Klaviyo's spec or a JSON
Schema library. They ship with the ``sandbox`` extra only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_TOOLING = (
    "django_klaviyo.testing.sandbox",
    "django_klaviyo.testing.openapi",
    "django_klaviyo.testing.spec",
    "django_klaviyo.management.commands.klaviyo_sandbox",
)
FORBIDDEN = (*TEST_TOOLING[:3], "jsonschema", "fastjsonschema")

# Runs in a fresh interpreter, so nothing this test process imported counts.
PROBE = """
import importlib, json, pkgutil, sys
import django
django.setup()
import django_klaviyo
tooling = {tooling!r}
imported = []
def walk(package):
    # Not pkgutil.walk_packages: it imports every package to look inside, the sandbox too.
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name.startswith(tooling):
            continue
        imported.append(module.name)
        loaded = importlib.import_module(module.name)
        if module.ispkg:
            walk(loaded)
walk(django_klaviyo)
from shop import services  # the example shop's save path (place_order)
loaded = sorted(name for name in sys.modules if name.startswith({forbidden!r}))
print(json.dumps({{"imported": imported, "loaded": loaded}}))
"""


def test_runtime_modules_import_neither_the_sandbox_nor_the_spec_nor_a_validator() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.projects.settings",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "example_project")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(tooling=TEST_TOOLING, forbidden=FORBIDDEN)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The probe did reach the save and flush path (module names survive restructuring).
    assert "django_klaviyo.outbox" in report["imported"]
    assert any(name.startswith("django_klaviyo.flush") for name in report["imported"])
    assert "django_klaviyo.management.commands.klaviyo_flush" in report["imported"]
    assert report["loaded"] == []
