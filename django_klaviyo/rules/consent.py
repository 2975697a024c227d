"""Consent rules (``subscribe`` / ``unsubscribe`` rows, and the client's subscription
jobs): channels, the contact each channel needs, the source and the consent date."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.identifiers import normalize_email, normalize_phone_number
from django_klaviyo.rules.lists import clean_list_id
from django_klaviyo.rules.shapes import batch, mapping
from django_klaviyo.rules.values import check_text, iso_time

CHANNELS = limits.CONSENT_CHANNELS
CONTACT_KEYS = ("email", "phone_number")


def clean_channels(channels: Any, field: str = "channels") -> list[str]:
    """A non-empty list of 'email' and/or 'sms', each once, in that order."""
    if (
        isinstance(channels, (str, bytes, Mapping))
        or not isinstance(channels, Iterable)
        or not (channels := list(channels))
        or any(c not in CHANNELS for c in channels)
    ):
        raise KlaviyoValidationError(
            f"{field} must be a non-empty list of 'email' and/or 'sms'.", field=field
        )
    return [c for c in CHANNELS if c in channels]


def consent_contact(
    profile: Any, channels: list[str], field: str = "profile", *, other_keys: Iterable[str] = ()
) -> dict[str, str]:
    """The contact of a subscription: email and/or phone number only (``other_keys``:
    what else the item may carry), with the one each channel needs."""
    if not isinstance(profile, Mapping):
        raise KlaviyoValidationError(
            f"{field} must be a dict with email and/or phone_number.", field=field
        )
    cleaned: dict[str, str] = {}
    if profile.get("email"):
        cleaned["email"] = normalize_email(profile["email"])
    if profile.get("phone_number"):
        cleaned["phone_number"] = normalize_phone_number(profile["phone_number"])
    known = {*CONTACT_KEYS, *other_keys}
    extra = sorted(k for k, v in profile.items() if k not in known and v)
    if extra:
        raise KlaviyoValidationError(
            f"subscriptions identify profiles by email and phone_number only; "
            f"remove {field}.{extra[0]}.",
            field=f"{field}.{extra[0]}",
        )
    for channel, needs in (("email", "email"), ("sms", "phone_number")):
        if channel in channels and needs not in cleaned:
            raise KlaviyoValidationError(
                f"the {channel} channel needs {field}.{needs}"
                + (" in E.164 format." if needs == "phone_number" else "."),
                field=f"{field}.{needs}",
            )
    return cleaned


def clean_custom_source(source: Any, field: str = "custom_source") -> str | None:
    if source is None:
        return None
    if not isinstance(source, str) or not source:
        raise KlaviyoValidationError(f"{field} must be a non-empty string.", field=field)
    return check_text(source, field)


def clean_consented_at(
    value: Any, field: str = "consented_at", *, now: datetime | None = None
) -> str | None:
    """A consent date means a historical import, which Klaviyo requires in the past
    (than ``now``, the client's clock, when given)."""
    if value is None:
        return None
    if now is None:
        return iso_time(value, field, allow_future=False)
    iso = iso_time(value, field)
    if datetime.fromisoformat(iso) > now:
        raise KlaviyoValidationError(f"{field} {iso} is in the future.", field=field)
    return iso


def _payload(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    return payload


def clean_unsubscribe(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``{"profile", "channels", "list_id"}``."""
    payload = _payload(payload)
    channels = payload.get("channels", ("email",))
    # The Python API takes one channel by name too.
    channels = clean_channels([channels] if isinstance(channels, str) else channels)
    list_id = payload.get("list_id")
    return {
        "profile": consent_contact(payload.get("profile"), channels),
        "channels": channels,
        "list_id": None if list_id is None else clean_list_id(list_id),
    }


def clean_subscribe(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``{"profile", "channels", "list_id", "custom_source", "consented_at"}``."""
    return {
        **clean_unsubscribe(payload),
        "custom_source": clean_custom_source(payload.get("custom_source")),
        "consented_at": clean_consented_at(payload.get("consented_at")),
    }


# -- the client's subscription jobs ---------------------------------------------------


def clean_consent_request(
    profiles: Any,
    *,
    subscribe: bool,
    historical_import: bool = False,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The items of a subscribe (at most 1000) or unsubscribe (at most 100) job: each
    ``{"email"?, "phone_number"?, "channels", "consented_at"?}``. ``consented_at`` is
    required with ``historical_import`` and refused without it, as Klaviyo does."""
    limit = limits.PROFILES_PER_SUBSCRIBE_JOB if subscribe else limits.PROFILES_PER_UNSUBSCRIBE_JOB
    other_keys = ("channels", "consented_at") if subscribe else ("channels",)
    cleaned = []
    for i, profile in enumerate(batch(profiles, "profiles", limit)):
        field = f"profiles[{i}]"
        profile = mapping(profile, field)
        channels = clean_channels(profile.get("channels"), f"{field}.channels")
        item: dict[str, Any] = consent_contact(profile, channels, field, other_keys=other_keys)
        item["channels"] = channels
        if subscribe:
            consented_at = clean_consented_at(
                profile.get("consented_at"), f"{field}.consented_at", now=now
            )
            if historical_import and consented_at is None:
                raise KlaviyoValidationError(
                    f"{field}.consented_at is required for a historical import.",
                    field=f"{field}.consented_at",
                )
            if consented_at is not None and not historical_import:
                raise KlaviyoValidationError(
                    f"{field}.consented_at is only accepted with historical_import=True.",
                    field=f"{field}.consented_at",
                )
            item["consented_at"] = consented_at
        cleaned.append(item)
    return cleaned
