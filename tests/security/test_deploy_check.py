"""Issue 19, case 11: published or short secrets fail ``check`` once the project is
deployed (DEBUG off, or a real Klaviyo key).

The example shop's defaults (its webhook secret, flow token and SECRET_KEY are in the
repository) are fine for the local demo, and refused by ``manage.py check`` as soon as
the same settings run with DEBUG off or talk to real Klaviyo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from django_klaviyo.checks import check_klaviyo_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"
REAL_KEY = "pk_0123456789abcdef0123456789abcdef01"
GOOD = {
    "PRIVATE_API_KEY": REAL_KEY,
    "WEBHOOK_SECRETS": ["whsec-test-secret-0123456789"],
    "FLOW_WEBHOOK_TOKEN": "flow-token-0123456789abcdef",
    "ORDER_MODEL": "shop.Order",
}
SANDBOX = {k: v for k, v in GOOD.items() if k != "PRIVATE_API_KEY"} | {"SANDBOX": True}
PUBLISHED = {
    "WEBHOOK_SECRETS": ["demo-webhook-secret-change-me"],
    "FLOW_WEBHOOK_TOKEN": "demo-flow-token-change-me",
    "HEALTH_TOKEN": "my-health-token-CHANGE-ME-please",
}


def ids(block: dict, **django_settings) -> list[str]:
    with override_settings(KLAVIYO=block, **django_settings):
        messages = check_klaviyo_settings()
    for message in messages:
        # Never echoes the secret it names.
        for secret in ("demo-webhook-secret-change-me", "demo-flow-token-change-me", "tiny"):
            assert secret not in message.msg and secret not in (message.hint or "")
    return [m.id for m in messages]


@pytest.mark.parametrize(("key", "value"), PUBLISHED.items())
@pytest.mark.parametrize(
    ("block", "debug"),
    [(GOOD, True), (GOOD, False), (SANDBOX, False)],
    ids=["key", "nodebug", "both"],
)
def test_a_published_secret_fails_check_when_deployed(key, value, block, debug):
    assert "django_klaviyo.E040" in ids({**block, key: value}, DEBUG=debug)


@pytest.mark.parametrize(
    ("key", "value"),
    [("WEBHOOK_SECRETS", ["tiny"]), ("FLOW_WEBHOOK_TOKEN", "tiny"), ("HEALTH_TOKEN", "tiny")],
)
def test_a_short_secret_fails_check_when_deployed(key, value):
    assert "django_klaviyo.E041" in ids({**GOOD, key: value}, DEBUG=False)


def test_an_account_s_published_or_short_secret_fails_check_when_deployed():
    accounts = {
        "eu": {"PRIVATE_API_KEY": "pk_eu_0123456789abcdef0123", "WEBHOOK_SECRETS": ["tiny"]},
        "us": {
            "PRIVATE_API_KEY": "pk_us_0123456789abcdef0123",
            "WEBHOOK_SECRETS": ["demo-webhook-secret-change-me"],
        },
    }
    found = ids({**GOOD, "ACCOUNTS": accounts}, DEBUG=False)
    assert "django_klaviyo.E041" in found and "django_klaviyo.E040" in found


def test_the_published_secret_key_fails_check_when_deployed():
    found = ids(GOOD, DEBUG=False, SECRET_KEY="example-shop-insecure-key-for-local-demo-only")
    assert "django_klaviyo.E040" in found


def test_the_local_demo_keeps_its_published_secrets():
    found = ids({**SANDBOX, **PUBLISHED, "WEBHOOK_SECRETS": ["tiny"]}, DEBUG=True)
    assert "django_klaviyo.E040" not in found and "django_klaviyo.E041" not in found
    assert "django_klaviyo.W002" in found  # still named, as a warning


def example_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "DJANGO_"))}
    environment.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'shop.sqlite3'}",
        # This checkout's package, not whichever one the virtualenv installed.
        PYTHONPATH=os.pathsep.join([str(EXAMPLE.parent), str(EXAMPLE)]),
        **env,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=EXAMPLE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize(
    "env",
    [{"DJANGO_DEBUG": "false"}, {"KLAVIYO_PRIVATE_API_KEY": REAL_KEY}],
    ids=["debug-off", "real-key"],
)
def test_the_example_shop_s_defaults_fail_check_when_deployed(tmp_path, env):
    checked = example_check(tmp_path, **env)
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0, output
    assert "django_klaviyo.E040" in output
    assert "WEBHOOK_SECRETS" in output and "FLOW_WEBHOOK_TOKEN" in output
