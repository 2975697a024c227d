"""The reports' settings are checked at startup (E075, E076)."""

from __future__ import annotations

import pytest

from django_klaviyo.checks import check_klaviyo_settings


def ids(settings, **keys) -> list[str]:
    settings.KLAVIYO = {**settings.KLAVIYO, **keys}
    return [m.id for m in check_klaviyo_settings() if m.id.startswith("django_klaviyo.E07")]


def test_the_defaults_pass(settings):
    assert ids(settings) == []


@pytest.mark.parametrize("days", [0, 366, 7.5, "30", True])
def test_reports_days_must_be_1_to_365(settings, days):
    assert ids(settings, REPORTS_DAYS=days) == ["django_klaviyo.E075"]


@pytest.mark.parametrize("key", ["REPORTS_REFRESH_SECONDS", "REPORTS_MAX_WAIT_SECONDS"])
def test_seconds_must_be_a_number_of_zero_or_more(settings, key):
    assert ids(settings, **{key: -1}) == ["django_klaviyo.E076"]
    assert ids(settings, **{key: "soon"}) == ["django_klaviyo.E076"]
    assert ids(settings, **{key: 0}) == []
