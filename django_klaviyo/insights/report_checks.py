"""System checks of the reports' settings (E075, E076). Run by ``django_klaviyo.checks``
with the others (the segments' are in ``insights/checks.py``)."""

from __future__ import annotations

from django.core.checks import CheckMessage, Error

from django_klaviyo.conf import setting_as_written as _get


def check_reports_settings() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    days = _get("REPORTS_DAYS")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
        messages.append(
            Error(
                f"KLAVIYO['REPORTS_DAYS'] = {days!r} is not a whole number of days from 1 to 365.",
                hint="Klaviyo's reports cover at most a year; the default is 30.",
                id="django_klaviyo.E075",
            )
        )
    for key in ("REPORTS_REFRESH_SECONDS", "REPORTS_MAX_WAIT_SECONDS"):
        value = _get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            messages.append(
                Error(
                    f"KLAVIYO[{key!r}] = {value!r} is not a number of seconds of 0 or more.",
                    hint="See docs/configuration.md.",
                    id="django_klaviyo.E076",
                )
            )
    return messages


REPORT_CHECKS = (check_reports_settings,)
