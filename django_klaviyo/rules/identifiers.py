"""Validation of Klaviyo profile identifiers, shared by the public API and the client.

Klaviyo needs at least one identifier per profile (email, phone_number, external_id;
events may also use anonymous_id or a Klaviyo profile id) and phone numbers in E.164.
Catching a bad identifier here gives the caller a clear error at call time instead of
a 400 from Klaviyo minutes later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator

from django_klaviyo.exceptions import KlaviyoValidationError


def _compiled(pattern: Any) -> re.Pattern[str]:
    """A pattern Django compiles lazily, compiled now (the same pattern and flags)."""
    return re.compile(pattern.pattern, pattern.flags)


class _EmailValidator(EmailValidator):
    """Django's email rule, its own code, with its patterns compiled once: each use of a
    lazily compiled pattern goes through a proxy (about 1 µs), twice per email, and every
    order's save checks its customer's email."""

    user_regex = _compiled(EmailValidator.user_regex)
    domain_regex = _compiled(EmailValidator.domain_regex)
    literal_regex = _compiled(EmailValidator.literal_regex)


validate_email = _EmailValidator()

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
PROFILE_IDENTIFIERS = ("email", "phone_number", "external_id")
EVENT_IDENTIFIERS = (*PROFILE_IDENTIFIERS, "anonymous_id", "id")
_EVENT_IDENTIFIERS = frozenset(EVENT_IDENTIFIERS)


def normalize_phone_number(value: str) -> str:
    """Strip the separators people type ("+1 (415) 555-0100") and check E.164."""
    if not isinstance(value, str):
        raise KlaviyoValidationError(
            f"phone_number must be a string in E.164 format, not {type(value).__name__}.",
            field="phone_number",
        )
    cleaned = re.sub(r"[\s().-]", "", value)
    if not E164.match(cleaned):
        raise KlaviyoValidationError(
            f"phone_number {value!r} is not in E.164 format (for example +14155550100).",
            field="phone_number",
        )
    return cleaned


def normalize_email(value: str) -> str:
    if not isinstance(value, str):
        raise KlaviyoValidationError("email must be a string.", field="email")
    cleaned = value.strip()
    try:
        validate_email(cleaned)
    except DjangoValidationError:
        raise KlaviyoValidationError(
            f"email {value!r} is not a valid email address.", field="email"
        ) from None
    return cleaned


def clean_profile(profile: Mapping[str, Any] | None, *, for_event: bool = False) -> dict[str, Any]:
    """Return a copy of ``profile`` with identifiers normalised, or raise.

    Empty identifier values are dropped; at least one must remain.
    """
    if type(profile) is not dict and not isinstance(profile, Mapping):
        raise KlaviyoValidationError(
            "profile must be a mapping with at least one identifier "
            "(email, phone_number or external_id).",
            field="profile",
        )
    cleaned: dict[str, Any] = {}
    for key, value in profile.items():
        if key in _EVENT_IDENTIFIERS and (value is None or value == ""):
            continue
        cleaned[key] = value
    if "email" in cleaned:
        cleaned["email"] = normalize_email(cleaned["email"])
    if "phone_number" in cleaned:
        cleaned["phone_number"] = normalize_phone_number(cleaned["phone_number"])
    if "external_id" in cleaned:
        cleaned["external_id"] = str(cleaned["external_id"])
    allowed = EVENT_IDENTIFIERS if for_event else PROFILE_IDENTIFIERS
    if not for_event and "anonymous_id" in cleaned:
        raise KlaviyoValidationError(
            "anonymous_id identifies event profiles only; profile upserts need "
            "email, phone_number or external_id.",
            field="anonymous_id",
        )
    if cleaned.keys().isdisjoint(allowed):
        names = ", ".join(allowed)
        raise KlaviyoValidationError(
            f"A Klaviyo profile needs at least one identifier: {names}.", field="profile"
        )
    return cleaned


def email_key(value: Any) -> str:
    """An email as profiles are matched by it: whatever its case and surrounding spaces
    (Klaviyo's lookups ignore case too)."""
    return str(value).strip().lower()


def profile_key(profile: Mapping[str, Any]) -> str:
    """A stable key that groups outbox rows of one profile ("email:a@x.com").

    The strongest identifier wins: Klaviyo id, then external_id, email, phone, anonymous id.
    """
    for key in ("id", "external_id", "email", "phone_number", "anonymous_id"):
        value = profile.get(key)
        if value:
            value = str(value)
            return f"{key}:{email_key(value) if key == 'email' else value}"
    return ""
