"""list_add / list_remove: profile ids looked up (locally, then from Klaviyo), then bulk calls."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django_klaviyo.client.bodies.lists import build_list_relationship
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoError, KlaviyoValidationError
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import (
    ErrorInfo,
    Located,
    Outcomes,
    fail,
    locate_rows,
    refused,
)
from django_klaviyo.flush.senders.base import (
    IDS_PER_LIST_REQUEST,
    Request,
    Sender,
)
from django_klaviyo.flush.senders.imports import (
    IDS_PER_LOOKUP,
    import_profiles,
    lookup_ids,
    upsert_profile,
)
from django_klaviyo.flush.senders.profiles import profile_attributes, remember_profile_id
from django_klaviyo.models import KlaviyoProfileLink, ListMembership, OutboxEvent
from django_klaviyo.rules.identifiers import profile_key

Kind = OutboxEvent.Kind

_IDS_POINTER = re.compile(r"^/data/(\d+)")
_IDS_FIELD = re.compile(r"^profile_ids\[(\d+)\]")


@dataclass
class ListItem:
    list_id: str
    identifiers: dict[str, Any]
    profile_key: str
    profile_id: str | None = None


class ListSender(Sender):
    """list_add / list_remove: Klaviyo takes profile ids only, so learn them first."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        # Ids this flusher learnt (profile_key -> id): a retried row, or another row of
        # the same profile, needs no second lookup even without a local profile link.
        self._learnt: dict[str, str] = {}

    def prepare(self, row: ClaimedRow) -> ListItem:
        list_id = row.payload["list_id"]
        identifiers = profile_attributes(row)
        klaviyo_id = identifiers.pop("id", None)
        key = row.profile_key or profile_key(identifiers)
        return ListItem(list_id, identifiers, key, str(klaviyo_id) if klaviyo_id else None)

    def _known_ids(self, rows: list[ClaimedRow]) -> None:
        """Fill ids from local links, in one query per identifier kind."""
        for row in rows:
            if not row.flush_item.profile_id:
                row.flush_item.profile_id = self._learnt.get(row.flush_item.profile_key)
        missing = [r for r in rows if not r.flush_item.profile_id]
        if not self.mirrored:
            return  # another account's ids are learnt from Klaviyo, never the mirror
        links = KlaviyoProfileLink.objects.using(self.using)
        for key in ("external_id", "email", "phone_number"):
            values = {
                str(r.flush_item.identifiers[key])
                for r in missing
                if r.flush_item.identifiers.get(key)
            }
            if not values:
                continue
            known: dict[str, str] = {}
            for chunk in chunks(sorted(values), IN_CHUNK):
                known.update(links.klaviyo_ids(key, chunk))
            for row in missing:
                value = row.flush_item.identifiers.get(key)
                if value and not row.flush_item.profile_id:
                    found = known.get(str(value).lower() if key == "email" else str(value))
                    row.flush_item.profile_id = found
            missing = [r for r in missing if not r.flush_item.profile_id]

    def lookups_needed(self, rows: list[ClaimedRow]) -> int:
        self._known_ids(rows)
        unknown = len({r.flush_item.profile_key for r in rows if not r.flush_item.profile_id})
        if not unknown:
            return 0
        if self.kind == Kind.LIST_ADD and unknown == 1:
            return 1
        # An import job (POST, a poll, its errors) and the lookups, by one identifier each.
        job = 3 if self.kind == Kind.LIST_ADD else 0
        return job + -(-unknown // IDS_PER_LOOKUP)

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        """Learn the ids Klaviyo needs, in bulk: one profile-import for a single unknown
        profile, else (list_add) one import job for all of them followed to its end, then
        lookups of 100 identifiers per request; never one request per row."""
        self._known_ids(rows)
        unknown: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            if not row.flush_item.profile_id:
                unknown[row.flush_item.profile_key].append(row)
        if not unknown:
            return rows
        groups = list(unknown.values())
        profiles = [g[0].flush_item.identifiers for g in groups]
        try:
            if self.kind == Kind.LIST_ADD and len(groups) == 1:
                ctx.request_made()
                data = upsert_profile(ctx, profiles[0])
                ids: list[str | None] = [str(data["id"]) if data.get("id") else None]
                failures: list[ErrorInfo | None] = [None]
                if ids[0] is None:
                    raise KlaviyoValidationError(
                        "Klaviyo's profile-import answer carried no profile id."
                    )
            else:
                failures = [None] * len(groups)
                if self.kind == Kind.LIST_ADD:
                    ctx.request_made()
                    failures = import_profiles(ctx, profiles)
                ids = lookup_ids(ctx, profiles)
        except KlaviyoAuthError:
            raise
        except KlaviyoError as err:
            waiting = [r for group in groups for r in group]
            fail(waiting, err, outcomes)
            return [r for r in rows if r.pk not in outcomes.decided]
        for group, identifiers, profile_id, failure in zip(
            groups, profiles, ids, failures, strict=True
        ):
            if failure is not None:
                outcomes.settle(refused(row, failure) for row in group)
                continue
            for row in group:
                row.flush_item.profile_id = profile_id
            if profile_id:
                if len(self._learnt) >= 10_000:
                    self._learnt.clear()
                self._learnt[group[0].flush_item.profile_key] = profile_id
                if self.mirrored:
                    remember_profile_id(identifiers, profile_id, self.using)
            elif self.kind == Kind.LIST_REMOVE:
                # Removing a profile Klaviyo does not know: nothing is on the list.
                outcomes.mark_sent(group)
            else:
                outcomes.mark_retry(
                    group,
                    KlaviyoValidationError(
                        "Klaviyo imported the profile but a lookup did not find it yet."
                    ),
                )
        return [r for r in rows if r.pk not in outcomes.decided]

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        by_list: dict[str, dict[str, list[ClaimedRow]]] = {}
        for row in rows:
            item: ListItem = row.flush_item
            by_list.setdefault(item.list_id, {}).setdefault(str(item.profile_id), []).append(row)
        requests = []
        for list_id, by_id in by_list.items():
            ids = list(by_id)
            for chunk in chunks(ids, IDS_PER_LIST_REQUEST):
                index = [by_id[i] for i in chunk]
                rows_ = [r for group in index for r in group]
                requests.append(Request(self.kind, list_id, rows_, list(chunk), index))
        return requests

    def send(self, ctx: SendContext, request: Request) -> Any:
        body = build_list_relationship(request.body)
        return ctx.client.send_list_change(request.key, body, remove=self.kind == Kind.LIST_REMOVE)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=_IDS_POINTER, field=_IDS_FIELD)

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        ListMembership.objects.using(self.using).filter(
            klaviyo_list__account=self.account,
            klaviyo_list__klaviyo_id=request.key,
            profile__klaviyo_id__in=request.body,
        ).update(synced_member=self.kind == Kind.LIST_ADD, synced_at=now, updated_at=now)
