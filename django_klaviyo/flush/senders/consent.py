"""Consent: subscribe bulk jobs, grouped by list and source (unsubscribe: unsubscribe.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from django_klaviyo.client.bodies.consent import build_subscribe
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.flush.claim import ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import Located, locate_rows
from django_klaviyo.flush.senders.base import (
    PROFILES_FIELD,
    PROFILES_PER_SUBSCRIBE_JOB,
    PROFILES_POINTER,
    Request,
    Sender,
    optional_str,
)
from django_klaviyo.flush.senders.profiles import link_for
from django_klaviyo.models import KlaviyoProfileLink, OutboxEvent
from django_klaviyo.profiles.consent import lift_list_unsubscribe

Kind = OutboxEvent.Kind


@dataclass
class ConsentItem:
    key: tuple[Any, ...]
    profile: dict[str, Any]


class SubscribeSender(Sender):
    kind = Kind.SUBSCRIBE
    per_job = PROFILES_PER_SUBSCRIBE_JOB

    def _only(self, link: KlaviyoProfileLink) -> QuerySet[KlaviyoProfileLink]:
        """``link`` as the one-row QuerySet the consent writes take, on this database."""
        return KlaviyoProfileLink.objects.using(self.using).filter(pk=link.pk)

    def _contact(self, row: ClaimedRow) -> tuple[dict[str, Any], list[str]]:
        # Cleaned when written (rules.consent): the contact and the channels it serves.
        return dict(row.payload["profile"]), list(row.payload["channels"])

    def prepare(self, row: ClaimedRow) -> ConsentItem:
        contact, channels = self._contact(row)
        list_id = optional_str(row.payload, "list_id")
        source = optional_str(row.payload, "custom_source")
        consented_at = optional_str(row.payload, "consented_at")
        profile = {**contact, "channels": channels}
        if consented_at:
            profile["consented_at"] = consented_at
        return ConsentItem((list_id, source, bool(consented_at)), profile)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        groups: dict[tuple[Any, ...], list[ClaimedRow]] = {}
        for row in rows:
            groups.setdefault(row.flush_item.key, []).append(row)
        return [
            Request(
                self.kind,
                key,
                list(chunk),
                [r.flush_item.profile for r in chunk],
                [[r] for r in chunk],
            )
            for key, group in groups.items()
            for chunk in chunks(group, self.per_job)
        ]

    def send(self, ctx: SendContext, request: Request) -> Any:
        list_id, source, historical = request.key
        body = build_subscribe(
            request.body, list_id=list_id, custom_source=source, historical_import=historical
        )
        return ctx.client.send_subscribe_job(body)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=PROFILES_POINTER, field=PROFILES_FIELD)

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        list_id = request.key[0]
        if list_id is None:
            return
        # Consent itself waits for webhooks (double opt-in); only the list's own
        # unsubscribe, which Klaviyo's subscribe job lifts, is cleared now.
        for profile in request.body:
            link = link_for(profile, self.using)
            if link is not None:
                lift_list_unsubscribe(
                    self._only(link), list_id, profile["channels"], now, self.account
                )
