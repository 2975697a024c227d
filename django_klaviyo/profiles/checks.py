"""System checks of the consent settings collected by the store's forms (E043-E045). Run
by ``django_klaviyo.checks`` with the others."""

from __future__ import annotations

from django.core.checks import CheckMessage, Error

from django_klaviyo.conf import setting_as_written as _get
from django_klaviyo.profiles.forms import STORE_PLACEHOLDER, disclosure_placeholders


def check_consent_names() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for key in ("STORE_NAME", "CONSENT_SOURCE"):
        value = _get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            messages.append(
                Error(
                    f"KLAVIYO['{key}'] must be a non-empty string or None, not {value!r}.",
                    hint="For example 'Northwind Store'.",
                    id="django_klaviyo.E043",
                )
            )
    return messages


def check_sms_disclosure() -> list[CheckMessage]:
    text = _get("SMS_CONSENT_DISCLOSURE")
    problem = None
    if not isinstance(text, str) or not text.strip():
        problem = f"must be a non-empty string, not {text!r}"
    else:
        try:
            unknown = disclosure_placeholders(text) - {STORE_PLACEHOLDER}
        except ValueError as exc:
            unknown, problem = set(), f"is not a valid text with {{store}}: {exc}"
        if unknown:
            problem = f"uses {{{sorted(unknown)[0]}}}; only {{store}} is filled in"
    if problem is None:
        return []
    return [
        Error(
            f"KLAVIYO['SMS_CONSENT_DISCLOSURE'] {problem}.",
            hint="The text shown under the SMS consent box; {store} is the store's name "
            "(write {{ and }} for literal braces).",
            id="django_klaviyo.E044",
        )
    ]


def check_consent_list() -> list[CheckMessage]:
    value = _get("CONSENT_LIST_ID")
    if value is None or (isinstance(value, str) and value.strip()):
        return []
    return [
        Error(
            f"KLAVIYO['CONSENT_LIST_ID'] must be a Klaviyo list id or None, not {value!r}.",
            hint="The id of the list consent from the store's forms joins, e.g. 'Y6nRLr'.",
            id="django_klaviyo.E045",
        )
    ]


CONSENT_CHECKS = (check_consent_names, check_sms_disclosure, check_consent_list)
