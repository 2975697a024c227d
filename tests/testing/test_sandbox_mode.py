"""Sandbox mode: the example shop migrates, checks cleanly and flushes to the sandbox with
no Klaviyo key configured; the pytest fixture needs no key either."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from django_klaviyo.flush import flush_outbox

EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"


def manage(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "DJANGO_"))}
    environment.update(DATABASE_URL=f"sqlite:///{tmp_path / 'shop.sqlite3'}", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_example_shop_migrates_and_checks_without_a_klaviyo_key(tmp_path):
    migrated = manage("migrate", "--noinput", "-v", "0", tmp_path=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    checked = manage("check", tmp_path=tmp_path)
    assert checked.returncode == 0, checked.stderr
    # The same shop deployed with DEBUG off warns that nothing reaches Klaviyo.
    deployed = manage("check", tmp_path=tmp_path, DJANGO_DEBUG="false")
    assert "django_klaviyo.W031" in deployed.stderr + deployed.stdout


@pytest.mark.django_db
def test_the_pytest_fixture_needs_no_private_key(klaviyo_sandbox, settings):
    settings.KLAVIYO = {k: v for k, v in settings.KLAVIYO.items() if k != "PRIVATE_API_KEY"}
    get_user_model().objects.create_user("ada", email="ada@example.com")
    flush_outbox()
    assert [p["email"] for p in klaviyo_sandbox.state.profiles().values()] == ["ada@example.com"]
