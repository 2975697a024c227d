"""Profile deletions: one request each, naming exactly one identifier."""

from __future__ import annotations

from typing import Any

from django_klaviyo.client.bodies.privacy import build_deletion
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.senders.base import Request, Sender
from django_klaviyo.models import OutboxEvent

Kind = OutboxEvent.Kind


class DeletionSender(Sender):
    kind = Kind.PROFILE_DELETION

    def prepare(self, row: ClaimedRow) -> dict[str, Any]:
        # Cleaned when written (rules.profiles): exactly one identifier.
        ((identifier, value),) = row.payload["profile"].items()
        return build_deletion(identifier, value)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        return [Request(self.kind, None, [r], r.flush_item, [[r]]) for r in rows]

    def send(self, ctx: SendContext, request: Request) -> Any:
        return ctx.client.send_deletion_job(request.body)
