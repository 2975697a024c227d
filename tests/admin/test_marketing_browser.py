"""End to end in headless Chromium: example orders flushed to the sandbox, `klaviyo_sync`,
then the admin's Marketing page shows non-empty charts (docs/marketing.png).

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package;
without them the test fails (it does not skip), saying what to install.
"""

from __future__ import annotations

import os
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command

from django_klaviyo.models import KlaviyoReportFetch
from tests.admin.test_admin_browser import wait_for
from tests.klaviyo_fixtures import flush_now

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "marketing.png"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_marketing_page_after_a_flush_and_a_sync_shows_its_charts(
    browser, live_server, klaviyo_sandbox, settings, tmp_path
):
    from selenium.webdriver.common.by import By

    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    call_command("seed_shop", customers=6, orders=15, seed=7, stdout=StringIO())
    flush_now()
    call_command("klaviyo_sync", "reports", stdout=StringIO())
    call_command("klaviyo_sync", "campaigns", "flows", "segments", stdout=StringIO())
    assert set(KlaviyoReportFetch.objects.values_list("state", flat=True)) == {"fresh"}

    # A staff user with the view permission on the reports only, not a superuser.
    user = get_user_model().objects.create_user("marketer", "m@example.com", "secret-pw-123")
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_klaviyoreportfetch"))

    browser.set_window_size(1280, 2700)
    browser.get(f"{live_server.url}/admin/login/?next=/admin/django_klaviyo/marketing/")
    wait_for(browser, By.NAME, "username").send_keys("marketer")
    wait_for(browser, By.NAME, "password").send_keys("secret-pw-123")
    wait_for(browser, By.CSS_SELECTOR, "input[type=submit]", clickable=True).click()

    revenue = wait_for(browser, By.CSS_SELECTOR, "#klaviyo-revenue-chart svg")
    assert revenue.size["width"] > 300 and revenue.size["height"] > 100
    # The line's dots carry their values; one day at least had orders.
    dots = browser.find_elements(By.CSS_SELECTOR, "#klaviyo-revenue-chart svg [data-value]")
    assert any(float(dot.get_attribute("data-value")) > 0 for dot in dots)
    for section in ("klaviyo-top-campaigns", "klaviyo-top-flows"):
        chart = wait_for(browser, By.CSS_SELECTOR, f"#{section} svg")
        bars = chart.find_elements(By.CSS_SELECTOR, "rect.dk-bar")
        assert bars and any(float(bar.get_attribute("data-value")) > 0 for bar in bars), (
            section,
            chart.get_attribute("outerHTML")[:3000],
        )
        table = wait_for(browser, By.CSS_SELECTOR, f"#{section} table.klaviyo-ranking")
        link = table.find_element(By.CSS_SELECTOR, "th a").get_attribute("href")
        assert link.startswith("https://www.klaviyo.com/")
    series = wait_for(browser, By.CSS_SELECTOR, "#klaviyo-flow-series svg")
    assert series.find_elements(By.CSS_SELECTOR, "[data-value]")
    sizes = wait_for(browser, By.CSS_SELECTOR, "#klaviyo-segment-sizes svg")
    assert any(
        float(d.get_attribute("data-value")) > 0
        for d in sizes.find_elements(By.CSS_SELECTOR, "[data-value]")
    )
    assert "Spring sale" in browser.page_source and "Welcome series" in browser.page_source

    screenshot = tmp_path / "marketing.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DOCS_SCREENSHOT") == "1":
        # docs/insights.md's picture: DOCS_SCREENSHOT=1 pytest -m browser refreshes docs/.
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)
