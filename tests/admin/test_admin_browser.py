"""End to end in headless Chromium: log in, open the outbox dashboard, retry a dead row.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package;
without them the test fails (it does not skip), saying what to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from django_klaviyo.models import OutboxEvent

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "outbox-dashboard.png"

# A loaded machine answers a click late: every element is waited for, never just looked up.
WAIT_SECONDS = 30


def wait_for(browser, by: str, value: str, *, clickable: bool = False):
    """The element once the page shows it (and accepts clicks, if asked); fails on timeout."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    condition = ec.element_to_be_clickable if clickable else ec.visibility_of_element_located
    return WebDriverWait(browser, WAIT_SECONDS).until(
        condition((by, value)), message=f"{value!r} did not appear within {WAIT_SECONDS} s"
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_retry_now_on_a_dead_row_from_the_dashboard(browser, live_server, settings, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    get_user_model().objects.create_superuser("boss", "boss@example.com", "secret-pw-123")
    dead = OutboxEvent.objects.create(
        kind=OutboxEvent.Kind.EVENT,
        metric="Placed Order",
        payload={"metric": "Placed Order", "profile": {"email": "ann@example.com"}},
        profile_key="email:ann@example.com",
        status=OutboxEvent.Status.DEAD,
        attempts=8,
        last_error_code="invalid",
        next_attempt_at=timezone.now() + timezone.timedelta(days=1),
    )

    # Some traffic of the last hours, so the dashboard's timeline has rows to show.
    now = timezone.now()
    for hours_ago, count in ((0, 3), (1, 5), (3, 2)):
        for i in range(count):
            OutboxEvent.objects.create(
                kind=OutboxEvent.Kind.EVENT,
                metric="Placed Order",
                payload={"metric": "Placed Order", "profile": {"email": f"c{i}@example.com"}},
                profile_key=f"email:c{i}@example.com",
                status=OutboxEvent.Status.SENT,
                sent_at=now - timezone.timedelta(hours=hours_ago, minutes=i),
            )

    browser.get(f"{live_server.url}/admin/login/?next=/admin/django_klaviyo/outboxevent/")
    wait_for(browser, By.NAME, "username").send_keys("boss")
    wait_for(browser, By.NAME, "password").send_keys("secret-pw-123")
    wait_for(browser, By.CSS_SELECTOR, "input[type=submit]", clickable=True).click()

    dashboard = wait_for(browser, By.ID, "klaviyo-dashboard")
    assert wait_for(browser, By.ID, "klaviyo-dead").text == "1"
    assert "invalid" in dashboard.text

    wait_for(
        browser,
        By.CSS_SELECTOR,
        f"input[name=_selected_action][value='{dead.pk}']",
        clickable=True,
    ).click()
    Select(wait_for(browser, By.NAME, "action")).select_by_value("retry_now")
    wait_for(browser, By.CSS_SELECTOR, "button[name=index]", clickable=True).click()

    # The list page before the click has no message list: this waits for the answer.
    messages = wait_for(browser, By.CSS_SELECTOR, "ul.messagelist").text
    assert "1 outbox event was queued for an immediate retry." in messages
    assert wait_for(browser, By.ID, "klaviyo-dead").text == "0"
    dead.refresh_from_db()
    assert dead.status == OutboxEvent.Status.PENDING and dead.attempts == 0

    assert browser.find_element(By.ID, "klaviyo-timeline").is_displayed()
    screenshot = tmp_path / "outbox-dashboard.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DOCS_SCREENSHOT") == "1":
        # README's picture: DOCS_SCREENSHOT=1 pytest -m browser refreshes docs/.
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_view_only_staff_see_the_hourly_chart_in_both_themes(browser, live_server, settings):
    from django.contrib.auth.models import Permission
    from selenium.webdriver.common.by import By

    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    viewer = get_user_model().objects.create_user(
        "viewer", "viewer@example.com", "secret-pw-123", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_outboxevent"))
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for i in range(4):
        OutboxEvent.objects.create(
            kind=OutboxEvent.Kind.EVENT,
            metric="Placed Order",
            payload={"metric": "Placed Order", "profile": {"email": f"c{i}@example.com"}},
            profile_key=f"email:c{i}@example.com",
            status=OutboxEvent.Status.SENT,
            sent_at=hour + timezone.timedelta(minutes=i),
        )

    browser.get(f"{live_server.url}/admin/login/?next=/admin/django_klaviyo/outboxevent/")
    wait_for(browser, By.NAME, "username").send_keys("viewer")
    wait_for(browser, By.NAME, "password").send_keys("secret-pw-123")
    wait_for(browser, By.CSS_SELECTOR, "input[type=submit]", clickable=True).click()

    chart = wait_for(browser, By.CSS_SELECTOR, "#klaviyo-timeline svg.dk-chart-svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 100  # drawn, not collapsed
    bars = browser.find_elements(By.CSS_SELECTOR, "#klaviyo-timeline rect.dk-series-0")
    assert len(bars) == 24
    [drawn] = [bar for bar in bars if float(bar.get_attribute("height")) > 0]
    assert drawn.get_attribute("data-value") == "4"
    # charts.css was served and applies: the admin's blue, not SVG's default black.
    assert drawn.value_of_css_property("fill") == "rgb(65, 118, 144)"

    # The figures behind the picture, one click away.
    wait_for(browser, By.CSS_SELECTOR, "#klaviyo-timeline summary", clickable=True).click()
    label = timezone.localtime(hour).strftime("%H:%M")
    row = wait_for(
        browser, By.XPATH, f"//div[@id='klaviyo-timeline']//tr[th[normalize-space()='{label}']]"
    )
    assert row.text.split() == [label, "4", "0"]

    # The admin's dark theme (its toggle stores the choice): lighter series colours.
    browser.execute_script("localStorage.setItem('theme', 'dark')")
    browser.refresh()
    wait_for(browser, By.CSS_SELECTOR, "html[data-theme=dark] #klaviyo-timeline svg")
    bar = browser.find_element(
        By.CSS_SELECTOR, "#klaviyo-timeline rect.dk-series-0[data-value='4']"
    )
    assert bar.value_of_css_property("fill") == "rgb(129, 212, 250)"
