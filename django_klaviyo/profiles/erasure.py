"""GDPR erasure in the local mirror: what ``forget_profile`` removes besides asking Klaviyo.

Given one identifier, the person is found through their profile links, and every
identifier those links know (email, phone number, external_id, Klaviyo id) is erased too:

- profile links and their list memberships: deleted;
- outbox rows not yet sent (pending, retrying, dead): deleted, so nothing about the person
  is sent after the deletion request (a later event would re-create the profile);
- outbox rows sent or being sent: payload replaced by ``{"erased": true}`` and the profile
  key, error detail and outcome note cleared; the row stays for the counts;
- webhook items and deliveries that mention an identifier: payload and body replaced.

Kept: the ``profile_deletion`` rows, which carry the one identifier the deletion request
itself needs (and nothing else).

Rows keyed by another identifier the mirror never linked to the person (an anonymous id,
an email typed at a guest checkout without a link) cannot be found and are not touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast

from django_klaviyo import outbox
from django_klaviyo.models import (
    KlaviyoProfileLink,
    ListMembership,
    OutboxEvent,
    WebhookDelivery,
    WebhookItem,
)
from django_klaviyo.rules.identifiers import normalize_email, normalize_phone_number, profile_key

ERASED = {"erased": True}
Status = OutboxEvent.Status
_UNSENT = (Status.PENDING, Status.RETRYING, Status.DEAD)


@dataclass
class ErasureReport:
    identifiers: dict[str, list[str]]
    profile_links: int = 0
    memberships: int = 0
    unsent_rows_deleted: int = 0
    sent_rows_redacted: int = 0
    webhook_items_redacted: int = 0
    webhook_deliveries_redacted: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "profile links deleted": self.profile_links,
            "list memberships deleted": self.memberships,
            "unsent outbox rows deleted": self.unsent_rows_deleted,
            "sent outbox rows redacted": self.sent_rows_redacted,
            "webhook items redacted": self.webhook_items_redacted,
            "webhook deliveries redacted": self.webhook_deliveries_redacted,
        }


def _given(email: Any, phone_number: Any, profile_id: Any) -> dict[str, str]:
    given: dict[str, str] = {}
    if email:
        given["email"] = normalize_email(email)
    if phone_number:
        given["phone_number"] = normalize_phone_number(phone_number)
    if profile_id:
        given["id"] = str(profile_id)
    return given


def erase_locally(
    *,
    email: str | None = None,
    phone_number: str | None = None,
    profile_id: str | None = None,
    using: str | None = None,
) -> ErasureReport:
    """Erase the person named by any of the identifiers from the local mirror, in one
    transaction (the caller's, when there is one)."""
    alias = using or DEFAULT_DB_ALIAS
    given = _given(email, phone_number, profile_id)
    if not given:
        raise ValueError("erase_locally needs an email, phone_number or profile_id.")
    with transaction.atomic(using=alias):
        links = KlaviyoProfileLink.objects.using(alias).matching(given)
        known: dict[str, set[str]] = {key: {value} for key, value in given.items()}
        for link in links:
            for key, value in (
                ("email", link.email),
                ("phone_number", link.phone_number),
                ("external_id", link.external_id),
                ("id", link.klaviyo_id),
            ):
                if value:
                    known.setdefault(key, set()).add(value.lower() if key == "email" else value)
        report = ErasureReport(identifiers={k: sorted(v) for k, v in known.items()})
        report.memberships = (
            ListMembership.objects.using(alias).filter(profile__in=list(links)).delete()[0]
        )
        report.profile_links = links.delete()[0]
        _erase_outbox(report, known, alias)
        _erase_webhooks(report, [v for values in known.values() for v in values], alias)
    return report


def forget(
    *,
    email: str | None = None,
    phone_number: str | None = None,
    profile_id: str | None = None,
    using: str | None = None,
    account: str = "",
) -> tuple[OutboxEvent | None, ErasureReport]:
    """``forget_profile``: queue Klaviyo's deletion request (exactly one identifier) and
    erase the person locally, in one transaction. The row is None when ``ENABLED`` is
    False; the local erasure happens regardless. ``account``: the ``OutboxEvent.account``
    the deletion request goes to ("": the default account)."""
    row = outbox.build_profile_deletion(
        email=email, phone_number=phone_number, profile_id=profile_id
    )
    alias = using or DEFAULT_DB_ALIAS
    with transaction.atomic(using=alias):
        written = outbox.enqueue_many([row], using=alias, account=account)
        report = erase_locally(
            email=email, phone_number=phone_number, profile_id=profile_id, using=alias
        )
    return (written[0] if written else None), report


def _erase_outbox(report: ErasureReport, known: dict[str, set[str]], alias: str) -> None:
    keys = {profile_key({key: value}) for key, values in known.items() for value in values}
    rows = (
        OutboxEvent.objects.using(alias)
        .filter(profile_key__in=keys)
        .exclude(kind=OutboxEvent.Kind.PROFILE_DELETION)
    )
    report.unsent_rows_deleted = rows.filter(status__in=_UNSENT).delete()[0]
    report.sent_rows_redacted = rows.exclude(status__in=_UNSENT).update(
        payload=ERASED, profile_key="", last_error_detail="", outcome_note=""
    )


def _mentions(field: str, values: Iterable[str]) -> Q:
    condition = Q()
    for value in values:
        condition |= Q(**{f"{field}__icontains": value})
    return condition


def _erase_webhooks(report: ErasureReport, values: list[str], alias: str) -> None:
    # Payloads are searched as text: a value anywhere in the JSON (profile attributes,
    # nested event properties) marks the item.
    items = (
        WebhookItem.objects.using(alias)
        .annotate(_text=Cast("payload", TextField()))
        .filter(_mentions("_text", values))
        .values_list("pk", flat=True)
    )
    report.webhook_items_redacted = (
        WebhookItem.objects.using(alias).filter(pk__in=list(items)).update(payload=ERASED)
    )
    report.webhook_deliveries_redacted = (
        WebhookDelivery.objects.using(alias)
        .filter(_mentions("body", values))
        .update(body='{"erased": true}', error="", traceback="")
    )
