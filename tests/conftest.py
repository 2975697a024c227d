from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

# The klaviyo_sandbox fixture (django_klaviyo/testing/sandbox/pytest_plugin.py); the flusher tests'
# clock, klaviyo_client, mocked, fresh_rate_limits and isolated_rate_limits fixtures
# (tests/klaviyo_fixtures.py, which also holds FakeClock and the flush helpers).
pytest_plugins = [
    "django_klaviyo.testing.sandbox.pytest_plugin",
    "tests.klaviyo_fixtures",
    "tests.storefront.visitors",
]


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


# Headless Chromium for the tests marked ``browser`` (test_admin_browser, test_storefront_browser).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


@pytest.fixture
def browser(tmp_path: Path):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"Headless Chromium is needed for this test but {', '.join(missing)} is missing: "
            "apt-get install -y chromium chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("The selenium package is needed for this test: pip install selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
