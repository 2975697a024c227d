"""unsubscribe: global, or from one list, and never global by accident.

Klaviyo's bulk unsubscribe job with a list "globally unsubscribes profiles not in the
specified list". So before a list-scoped job the sender asks Klaviyo which of the rows'
profiles are on that list, in bulk (``GET /api/lists/{id}/profiles`` filtered with
``any(email,[...])`` / ``any(phone_number,[...])``, at most 100 values and one full page
each), sends the job for the members only, and ends the other rows ``sent`` with an
``outcome_note`` ("not on list X, nothing to do") and no request. A global unsubscribe
is sent only for rows that name no list.

Mirror: a list-scoped unsubscribe withdraws consent on that list's membership row; a
global one moves the profile link's consent (a suppression is kept).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django_klaviyo.client.bodies.consent import build_unsubscribe
from django_klaviyo.client.filters import any_
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoError
from django_klaviyo.flush.claim import ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import Outcomes, fail
from django_klaviyo.flush.senders.base import PROFILES_PER_UNSUBSCRIBE_JOB, Request, optional_str
from django_klaviyo.flush.senders.consent import ConsentItem, SubscribeSender
from django_klaviyo.flush.senders.profiles import link_for
from django_klaviyo.models import Consent, OutboxEvent
from django_klaviyo.profiles.consent import set_global_consent, set_list_consent

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status

# Values per any() filter: the list-members endpoint's largest page (page[size] <= 100),
# so every member a lookup can match comes back on its first page.
VALUES_PER_MEMBER_LOOKUP = 100


def not_on_list_note(list_id: str) -> str:
    return (
        f"Not on list {list_id}, nothing to do: no unsubscribe sent (Klaviyo would have "
        "unsubscribed this profile from every list)."
    )


@dataclass
class ListMembers:
    """Who of the looked-up contacts Klaviyo has on one list."""

    emails: set[str] = field(default_factory=set)
    phone_numbers: set[str] = field(default_factory=set)

    def includes(self, profile: dict[str, Any]) -> bool:
        email = profile.get("email")
        phone = profile.get("phone_number")
        return bool(
            (email and email.lower() in self.emails) or (phone and phone in self.phone_numbers)
        )

    def add(self, resource: Any) -> None:
        attributes = resource.get("attributes") if isinstance(resource, dict) else None
        if not isinstance(attributes, dict):
            return
        if isinstance(attributes.get("email"), str):
            self.emails.add(attributes["email"].lower())
        if isinstance(attributes.get("phone_number"), str):
            self.phone_numbers.add(attributes["phone_number"])


def _batches(profiles: Iterable[dict[str, Any]], key: str) -> list[list[str]]:
    """The distinct emails or phone numbers of ``profiles``, 100 a batch. An email is
    looked up as written and lower-cased: a member must never be missed over case."""
    values: set[str] = set()
    for profile in profiles:
        value = profile.get(key)
        if value:
            values.add(value)
            if key == "email":
                values.add(value.lower())
    return [list(c) for c in chunks(sorted(values), VALUES_PER_MEMBER_LOOKUP)]


def find_members(ctx: SendContext, list_id: str, profiles: list[dict[str, Any]]) -> ListMembers:
    """Ask Klaviyo which of ``profiles`` are on ``list_id``: one request per 100 emails,
    then one per 100 phone numbers of the profiles no email matched."""
    members = ListMembers()
    for batch in _batches(profiles, "email"):
        members_of(ctx, list_id, "email", batch, members)
    unmatched = [p for p in profiles if not members.includes(p)]
    for batch in _batches(unmatched, "phone_number"):
        members_of(ctx, list_id, "phone_number", batch, members)
    return members


def members_of(
    ctx: SendContext, list_id: str, field_name: str, values: list[str], into: ListMembers
) -> None:
    ctx.request_made()
    for resource in ctx.client.get_list_profiles(
        list_id,
        filter=any_(field_name, values),
        fields=["email", "phone_number"],
        page_size=VALUES_PER_MEMBER_LOOKUP,
    ):
        into.add(resource)


class UnsubscribeSender(SubscribeSender):
    kind = Kind.UNSUBSCRIBE
    per_job = PROFILES_PER_UNSUBSCRIBE_JOB

    def prepare(self, row: ClaimedRow) -> ConsentItem:
        contact, channels = self._contact(row)
        list_id = optional_str(row.payload, "list_id")
        return ConsentItem((list_id,), {**contact, "channels": channels})

    @staticmethod
    def _by_list(rows: list[ClaimedRow]) -> dict[str, list[ClaimedRow]]:
        scoped: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            list_id = row.flush_item.key[0]
            if list_id is not None:
                scoped[list_id].append(row)
        return scoped

    def lookups_needed(self, rows: list[ClaimedRow]) -> int:
        """At most: every email batch, plus every phone batch (if no email matches)."""
        needed = 0
        for group in self._by_list(rows).values():
            profiles = [r.flush_item.profile for r in group]
            needed += len(_batches(profiles, "email")) + len(_batches(profiles, "phone_number"))
        return needed

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        groups = deque(self._by_list(rows).items())
        while groups:
            list_id, group = groups.popleft()
            try:
                members = find_members(ctx, list_id, [r.flush_item.profile for r in group])
            except KlaviyoAuthError:
                raise
            except KlaviyoError as err:
                # A missing list (404) ends its rows dead with Klaviyo's answer.
                if not fail(group, err, outcomes):
                    # Throttled or failing: the other lookups would fare no better now.
                    until = ctx.retry_at(1, getattr(err, "retry_after", None))
                    for _list_id, rest in groups:
                        outcomes.mark_release(rest, until)
                    groups.clear()
                continue
            off_list = [r for r in group if not members.includes(r.flush_item.profile)]
            if off_list:
                ctx.note_rows(off_list, not_on_list_note(list_id))
                outcomes.mark_sent(off_list)
        return [r for r in rows if r.pk not in outcomes.decided]

    def send(self, ctx: SendContext, request: Request) -> Any:
        body = build_unsubscribe(request.body, list_id=request.key[0])
        return ctx.client.send_unsubscribe_job(body)

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        list_id = request.key[0]
        for profile in request.body:
            link = link_for(profile, self.using)
            if link is None:
                continue
            if list_id is not None:
                set_list_consent(
                    self._only(link),
                    list_id,
                    profile["channels"],
                    Consent.UNSUBSCRIBED,
                    now,
                    confirmed_member=True,
                    account=self.account,
                )
                continue
            for channel in profile["channels"]:
                set_global_consent(
                    self._only(link),
                    channel,
                    Consent.UNSUBSCRIBED,
                    now,
                    keep=(Consent.SUPPRESSED,),
                )
