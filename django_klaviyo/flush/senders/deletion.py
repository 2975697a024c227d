"""Profile deletions: one request each, naming exactly one identifier."""

from __future__ import annotations

from typing import Any

from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.senders.base import InvalidRow, Request, Sender, require_mapping
from django_klaviyo.identifiers import clean_profile
from django_klaviyo.models import OutboxEvent

Kind = OutboxEvent.Kind


class DeletionSender(Sender):
    kind = Kind.PROFILE_DELETION

    def prepare(self, row: ClaimedRow) -> dict[str, str]:
        raw = require_mapping(row.payload, "profile")
        given = {k: raw[k] for k in ("email", "phone_number", "id") if raw.get(k)}
        if len(given) != 1:
            raise InvalidRow("a deletion names exactly one of email, phone_number or id.")
        if "id" in given:
            return {"profile_id": str(given["id"])}
        return clean_profile(given)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        return [Request(self.kind, None, [r], r.flush_item, [[r]]) for r in rows]

    def send(self, client: Any, request: Request) -> Any:
        return client.request_profile_deletion(**request.body)
