"""What the sandbox's account holds and how it refuses: the profile fields, the event
record, the webhook topics Klaviyo offers, and the errors ``SandboxState`` raises
(``DuplicateProfile``: Klaviyo's 409; ``NotFound``: its 404).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django_klaviyo.rules.limits import EVENT_PROFILE_ATTRIBUTES

# Identifiers in the order a request's identifiers are matched to a profile.
IDENTIFIER_FIELDS = ("email", "phone_number", "external_id", "anonymous_id")
# What a profile holds: the rulebook's list of what an event's profile may carry, less
# _kx (a cookie identifier Klaviyo resolves to a profile, never stored on it); the
# identifiers first.
PROFILE_ATTRIBUTES = (
    *IDENTIFIER_FIELDS,
    *sorted(EVENT_PROFILE_ATTRIBUTES - {"_kx", *IDENTIFIER_FIELDS}),
)

# Topics from Klaviyo's "Common webhook topics" list (see shared notes §10.1).
WEBHOOK_TOPICS = tuple(
    f"event:klaviyo.{name}"
    for name in (
        "received_email",
        "opened_email",
        "clicked_email",
        "bounced_email",
        "dropped_email",
        "marked_email_as_spam",
        "subscribed_to_email_marketing",
        "unsubscribed_from_email_marketing",
        "manually_suppressed_from_email_marketing",
        "manually_unsuppressed_from_email_marketing",
        "updated_email_preferences",
        "sent_sms",
        "received_sms",
        "clicked_sms",
        "failed_to_deliver_sms",
        "subscribed_to_sms_marketing",
        "unsubscribed_from_sms_marketing",
        "received_push",
        "opened_push",
        "bounced_push",
    )
)


class DuplicateProfile(Exception):
    """An identifier of the request already belongs to another profile (Klaviyo's 409)."""

    def __init__(self, duplicate_profile_id: str, field: str) -> None:
        super().__init__(f"A profile already exists with one of these identifiers ({field}).")
        self.duplicate_profile_id = duplicate_profile_id
        self.field = field


class NotFound(Exception):
    """A resource named by the request does not exist (Klaviyo's 404)."""


@dataclass
class EventRecord:
    metric: str
    profile_id: str
    profile: dict[str, Any]  # identifiers as sent
    unique_id: str | None
    properties: dict[str, Any]
    value: float | None
    value_currency: str | None
    time: str
    received_at: str
    operation: str
    # Klaviyo records a backfilled event without triggering flows.
    backfill: bool = False

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
