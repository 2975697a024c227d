"""list_add / list_remove: profile ids looked up (locally, then from Klaviyo), then bulk calls."""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoError, KlaviyoValidationError
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.flush.outcomes import Located, Outcomes, fail, locate_rows
from django_klaviyo.flush.senders.base import (
    IDS_PER_LIST_REQUEST,
    Request,
    Sender,
)
from django_klaviyo.flush.senders.profiles import profile_attributes, remember_profile_id
from django_klaviyo.identifiers import profile_key
from django_klaviyo.models import KlaviyoProfileLink, ListMembership, OutboxEvent

Kind = OutboxEvent.Kind

if TYPE_CHECKING:
    from django_klaviyo.flush.loop import Flusher

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

    def prepare(self, row: ClaimedRow) -> ListItem:
        list_id = row.payload["list_id"]
        identifiers = profile_attributes(row)
        klaviyo_id = identifiers.pop("id", None)
        key = row.profile_key or profile_key(identifiers)
        return ListItem(list_id, identifiers, key, str(klaviyo_id) if klaviyo_id else None)

    def _known_ids(self, rows: list[ClaimedRow]) -> None:
        """Fill ids from local links, in one query per identifier kind."""
        missing = [r for r in rows if not r.flush_item.profile_id]
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
        return len({r.flush_item.profile_key for r in rows if not r.flush_item.profile_id})

    def resolve(
        self, flusher: Flusher, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        self._known_ids(rows)
        unknown: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            if not row.flush_item.profile_id:
                unknown[row.flush_item.profile_key].append(row)
        groups = deque(unknown.values())
        while groups:
            group = groups.popleft()
            identifiers = group[0].flush_item.identifiers
            try:
                profile_id = self._lookup(flusher, identifiers)
            except KlaviyoAuthError:
                raise
            except KlaviyoError as err:
                if not fail(group, err, outcomes):
                    # Throttled or failing: the other lookups would fare no better now.
                    until = flusher.retry_at(1, getattr(err, "retry_after", None))
                    for rest in groups:
                        outcomes.mark_release(rest, until)
                    groups.clear()
                continue
            for row in group:
                row.flush_item.profile_id = profile_id
            if profile_id:
                remember_profile_id(identifiers, profile_id, self.using)
            else:
                # Removing a profile Klaviyo does not know: nothing is on the list.
                outcomes.mark_sent(group)
        return [r for r in rows if r.pk not in outcomes.decided]

    def _lookup(self, flusher: Flusher, identifiers: dict[str, Any]) -> str | None:
        flusher.report.requests += 1
        if self.kind == Kind.LIST_REMOVE:
            # Don't create a profile just to take it off a list.
            found = flusher.client.find_profile(
                email=identifiers.get("email"),
                phone_number=identifiers.get("phone_number"),
                external_id=identifiers.get("external_id"),
            )
            return str(found["id"]) if found and found.get("id") else None
        data = flusher.client.upsert_profile(identifiers)
        profile_id = data.get("id") if isinstance(data, Mapping) else None
        if not profile_id:
            raise KlaviyoValidationError("Klaviyo's profile-import answer carried no profile id.")
        return str(profile_id)

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

    def send(self, client: Any, request: Request) -> Any:
        if self.kind == Kind.LIST_ADD:
            return client.add_profiles_to_list(request.key, request.body)
        return client.remove_profiles_from_list(request.key, request.body)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=_IDS_POINTER, field=_IDS_FIELD)

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        ListMembership.objects.using(self.using).filter(
            klaviyo_list__klaviyo_id=request.key, profile__klaviyo_id__in=request.body
        ).update(synced_member=self.kind == Kind.LIST_ADD, synced_at=now, updated_at=now)
