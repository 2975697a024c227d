"""Built-in receivers that keep the local consent mirror (KlaviyoProfileLink) true.

Each consent topic moves ``email_consent`` or ``sms_consent`` and stamps ``*_consent_at``
with the event's own date-time. An event older than (or as old as) the stored stamp changes
nothing, so re-sent, replayed and out-of-order events leave the newest state in place.

The link is found by Klaviyo profile id (``payload.data.relationships.profile.data.id``);
if no link has that id, by the email or phone number in ``event_properties``.

Global or list consent is decided by the topic alone, from Klaviyo's documented system
webhook topics: "Common webhook topics" in https://developers.klaviyo.com/en/docs/working_with_system_webhooks
(and the Webhooks API overview, https://developers.klaviyo.com/en/reference/webhooks:
"Consent events (e.g. Subscribed to sms marketing, Unsubscribed from email marketing,
etc.)"; see /work/shared/notes/klaviyo-api.md section 10.1 and docs/webhooks.md). Every
one of them is account-wide consent for a channel; none is scoped to a list, and no
documented field of the event payload names one. So an unsubscribe is always global,
whatever ``event_properties`` hold (a list property there must never keep someone
subscribed), and ``unsubscribed_from_list``, which is not a documented topic, changes no
consent (it is stored and signalled like any other topic for the project's receivers).
A subscribe whose properties name a list is also recorded on that list's
:class:`ListMembership`, a supplementary note that never withdraws anything.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.dispatch import receiver
from django.utils.dateparse import parse_datetime

from django_klaviyo.models import Consent, KlaviyoList, KlaviyoProfileLink
from django_klaviyo.profiles.consent import set_global_consent, set_list_consent
from django_klaviyo.webhooks.signals import klaviyo_webhook_event

logger = logging.getLogger(__name__)

TOPIC_PREFIX = "event:klaviyo."
EMAIL_PROPERTY_KEYS = ("email_address", "email", "$email", "Email", "Email Address")
PHONE_PROPERTY_KEYS = ("phone_number", "$phone_number", "Phone Number", "phone", "to_number")
LIST_ID_PROPERTY_KEYS = ("list_id", "List ID", "$list_id")
# Klaviyo's "Unsubscribed from List" metric names the list (by name) in "List".
LIST_NAME_PROPERTY_KEYS = ("List", "$list")


@dataclass(frozen=True)
class ConsentChange:
    channel: str  # "email" or "sms"
    consent: str
    # Apply only when the stored state is one of these (None: whatever it is).
    only_from: tuple[str, ...] | None = None


# Klaviyo's documented consent topics only (module docstring), each global for its channel.
CONSENT_TOPICS: dict[str, ConsentChange] = {
    "subscribed_to_email_marketing": ConsentChange("email", Consent.SUBSCRIBED),
    "unsubscribed_from_email_marketing": ConsentChange("email", Consent.UNSUBSCRIBED),
    "manually_suppressed_from_email_marketing": ConsentChange("email", Consent.SUPPRESSED),
    # Unsuppressing lifts only the suppression; the consent underneath is not in the event.
    "manually_unsuppressed_from_email_marketing": ConsentChange(
        "email", Consent.UNKNOWN, only_from=(Consent.SUPPRESSED,)
    ),
    "bounced_email": ConsentChange("email", Consent.SUPPRESSED),
    "marked_email_as_spam": ConsentChange("email", Consent.SUPPRESSED),
    "subscribed_to_sms_marketing": ConsentChange("sms", Consent.SUBSCRIBED),
    "unsubscribed_from_sms_marketing": ConsentChange("sms", Consent.UNSUBSCRIBED),
}


class UnusableConsentEvent(ValueError):
    """The event lacks what the consent mirror needs (a date-time)."""


def _attributes(payload: dict[str, Any]) -> dict[str, Any]:
    data = payload.get("data")
    attributes = data.get("attributes") if isinstance(data, dict) else None
    return attributes if isinstance(attributes, dict) else {}


def event_datetime(payload: dict[str, Any]) -> dt.datetime:
    """The event's date-time: ``attributes.datetime`` (ISO), else ``attributes.timestamp``."""
    attributes = _attributes(payload)
    value = attributes.get("datetime")
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    stamp = attributes.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        try:
            return dt.datetime.fromtimestamp(stamp, tz=dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            pass
    raise UnusableConsentEvent(
        "The event has neither a valid data.attributes.datetime nor data.attributes.timestamp."
    )


def profile_id(payload: dict[str, Any]) -> str | None:
    try:
        value = payload["data"]["relationships"]["profile"]["data"]["id"]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


def _first_string(properties: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = properties.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def matching_links(payload: dict[str, Any]) -> Any:
    """The links this event is about (a queryset), or None if it names nobody."""
    links = KlaviyoProfileLink.objects.all()
    klaviyo_id = profile_id(payload)
    if klaviyo_id:
        by_id = links.matching({"id": klaviyo_id})
        if by_id.exists():
            return by_id
    properties = _attributes(payload).get("event_properties")
    if not isinstance(properties, dict):
        return None
    email = _first_string(properties, EMAIL_PROPERTY_KEYS)
    phone = _first_string(properties, PHONE_PROPERTY_KEYS)
    if not email and not phone:
        return None
    return links.matching({"email": email, "phone_number": phone})


def _is_soft_bounce(payload: dict[str, Any]) -> bool:
    properties = _attributes(payload).get("event_properties")
    if not isinstance(properties, dict):
        return False
    kind = properties.get("bounce_type", properties.get("Bounce Type"))
    return isinstance(kind, str) and kind.strip().lower() in ("soft", "soft bounce")


def named_list(payload: dict[str, Any], account: str = "") -> str | None:
    """The Klaviyo id of the list an event is about, if its properties name one; a name
    is looked up among ``account``'s lists (the delivery's ``OutboxEvent.account`` value)."""
    properties = _attributes(payload).get("event_properties")
    if not isinstance(properties, dict):
        return None
    list_id = _first_string(properties, LIST_ID_PROPERTY_KEYS)
    if list_id:
        return list_id
    named = _first_string(properties, LIST_NAME_PROPERTY_KEYS)
    if not named:
        return None
    lists = KlaviyoList.objects.filter(account=account)
    if lists.filter(klaviyo_id=named).exists():
        return named
    ids = list(lists.filter(name=named).values_list("klaviyo_id", flat=True)[:2])
    return ids[0] if len(ids) == 1 else None  # an ambiguous name names no list


def apply_consent_event(topic: str, payload: dict[str, Any], account: str = "") -> int:
    """Update the links (or list memberships) an event concerns; returns rows changed.
    A list is looked up within ``account`` (the delivery's ``OutboxEvent.account``)."""
    if not topic.startswith(TOPIC_PREFIX):
        return 0
    change = CONSENT_TOPICS.get(topic[len(TOPIC_PREFIX) :])
    if change is None:
        return 0
    if topic.endswith("bounced_email") and _is_soft_bounce(payload):
        # Klaviyo suppresses on hard bounces only.
        return 0
    happened_at = event_datetime(payload)
    links = matching_links(payload)
    if links is None:
        logger.debug("Klaviyo consent event %s names no known profile.", topic)
        return 0
    changed = 0
    # Only a subscribe is noted on a list its properties name; the decision stays global.
    list_id = named_list(payload, account) if change.consent == Consent.SUBSCRIBED else None
    if list_id is not None:
        changed += set_list_consent(
            links, list_id, [change.channel], change.consent, happened_at, account=account
        )
    # One conditional UPDATE: order-safe under concurrent deliveries, no read-modify-write.
    return changed + set_global_consent(
        links, change.channel, change.consent, happened_at, only_from=change.only_from
    )


@receiver(klaviyo_webhook_event, dispatch_uid="django_klaviyo.builtin_consent")
def update_consent_mirror(sender: Any, topic: str, payload: Any, **kwargs: Any) -> None:
    if kwargs.get("account"):
        # Consent and profile ids are per Klaviyo account; the local mirror is the default
        # account's, so another account's events are stored and signalled, never applied.
        return
    if isinstance(payload, dict):
        apply_consent_event(topic, payload)
