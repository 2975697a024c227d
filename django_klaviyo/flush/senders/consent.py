"""Consent: subscribe and unsubscribe bulk jobs, grouped by list and source."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.flush.claim import ClaimedRow, chunks
from django_klaviyo.flush.outcomes import Located, locate_rows
from django_klaviyo.flush.senders.base import (
    PROFILES_FIELD,
    PROFILES_PER_SUBSCRIBE_JOB,
    PROFILES_PER_UNSUBSCRIBE_JOB,
    PROFILES_POINTER,
    Request,
    Sender,
    optional_str,
)
from django_klaviyo.flush.senders.profiles import link_for
from django_klaviyo.models import Consent, KlaviyoProfileLink, OutboxEvent

Kind = OutboxEvent.Kind


@dataclass
class _ConsentItem:
    key: tuple[Any, ...]
    profile: dict[str, Any]


class SubscribeSender(Sender):
    kind = Kind.SUBSCRIBE
    per_job = PROFILES_PER_SUBSCRIBE_JOB

    def _contact(self, row: ClaimedRow) -> tuple[dict[str, Any], list[str]]:
        # Cleaned when written (rules.consent): the contact and the channels it serves.
        return dict(row.payload["profile"]), list(row.payload["channels"])

    def prepare(self, row: ClaimedRow) -> _ConsentItem:
        contact, channels = self._contact(row)
        list_id = optional_str(row.payload, "list_id")
        source = optional_str(row.payload, "custom_source")
        consented_at = optional_str(row.payload, "consented_at")
        profile = {**contact, "channels": channels}
        if consented_at:
            profile["consented_at"] = consented_at
        return _ConsentItem((list_id, source, bool(consented_at)), profile)

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

    def send(self, client: Any, request: Request) -> Any:
        list_id, source, historical = request.key
        return client.subscribe_profiles(
            request.body, list_id=list_id, custom_source=source, historical_import=historical
        )

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=PROFILES_POINTER, field=PROFILES_FIELD)


class UnsubscribeSender(SubscribeSender):
    kind = Kind.UNSUBSCRIBE
    per_job = PROFILES_PER_UNSUBSCRIBE_JOB

    def prepare(self, row: ClaimedRow) -> _ConsentItem:
        contact, channels = self._contact(row)
        list_id = optional_str(row.payload, "list_id")
        return _ConsentItem((list_id,), {**contact, "channels": channels})

    def send(self, client: Any, request: Request) -> Any:
        return client.unsubscribe_profiles(request.body, list_id=request.key[0])

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        for profile in request.body:
            link = link_for(profile, self.using)
            if link is None:
                continue
            changes: dict[str, Any] = {}
            for channel in profile["channels"]:
                if getattr(link, f"{channel}_consent") != Consent.SUPPRESSED:
                    changes[f"{channel}_consent"] = Consent.UNSUBSCRIBED
                    changes[f"{channel}_consent_at"] = now
            if changes:
                KlaviyoProfileLink.objects.using(self.using).filter(pk=link.pk).update(
                    **changes, updated_at=now
                )
