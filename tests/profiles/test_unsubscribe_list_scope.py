"""A list-scoped unsubscribe through the flusher, against the sandbox.

Klaviyo globally unsubscribes a profile that is NOT on the list a list-scoped job names
(the sandbox does the same: tests/testing/test_sandbox.py proves it when called directly). So the
flusher confirms membership in bulk first, sends the job for members only, and leaves
everyone else's consent alone, in Klaviyo and in the local mirror.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import responses

from django_klaviyo import api
from django_klaviyo.client import KlaviyoClient
from django_klaviyo.flush import flush_outbox
from django_klaviyo.flush.senders.unsubscribe import not_on_list_note
from django_klaviyo.models import (
    Consent,
    KlaviyoList,
    KlaviyoProfileLink,
    ListMembership,
    OutboxEvent,
)
from django_klaviyo.testing.sandbox import SandboxServer

Status = OutboxEvent.Status

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


def shopper(sandbox: SandboxServer, email: str, phone: str, *lists: str) -> str:
    """A shopper subscribed to email and SMS, on ``lists``, in Klaviyo and in the mirror."""
    state = sandbox.state
    profile, _ = state.upsert_profile({"email": email, "phone_number": phone})
    for channel in ("email", "sms"):
        state.set_consent(profile["id"], channel, "marketing", "SUBSCRIBED")
    for list_id in lists:
        state.add_members(list_id, [profile["id"]])
    KlaviyoProfileLink.objects.create(
        email=email,
        phone_number=phone,
        klaviyo_id=profile["id"],
        email_consent=Consent.SUBSCRIBED,
        sms_consent=Consent.SUBSCRIBED,
    )
    return profile["id"]


def mirror_list(list_id: str, name: str) -> KlaviyoList:
    return KlaviyoList.objects.create(klaviyo_id=list_id, name=name)


def sandbox_consent(sandbox: SandboxServer, profile_id: str) -> dict[str, str]:
    return {c: sandbox.state.consent(profile_id, c) for c in ("email", "sms")}


def lookups(sandbox: SandboxServer) -> int:
    return sum(sandbox.state.request_counts().get("get_profiles_for_list", {}).values())


def test_on_list_and_off_list_shoppers_unsubscribed_from_one_list(
    klaviyo_sandbox: SandboxServer,
) -> None:
    newsletter = klaviyo_sandbox.state.create_list("Newsletter")["id"]
    offers = klaviyo_sandbox.state.create_list("Offers")["id"]
    mirror_list(newsletter, "Newsletter")
    offers_row = mirror_list(offers, "Offers")
    on_list = shopper(klaviyo_sandbox, "on@example.com", "+14155550101", newsletter, offers)
    off_list = shopper(klaviyo_sandbox, "off@example.com", "+14155550102", offers)
    for link in KlaviyoProfileLink.objects.all():
        ListMembership.objects.create(
            klaviyo_list=offers_row,
            profile=link,
            synced_member=True,
            email_consent=Consent.SUBSCRIBED,
            sms_consent=Consent.SUBSCRIBED,
        )

    on_row = api.unsubscribe({"email": "on@example.com"}, channels="email", list_id=newsletter)
    off_row = api.unsubscribe({"email": "off@example.com"}, channels="email", list_id=newsletter)
    report = flush_outbox()

    # One membership lookup for both rows, then one job carrying only the member.
    assert lookups(klaviyo_sandbox) == 1
    [job] = klaviyo_sandbox.state.unsubscriptions()
    assert (job["email"], job["list_id"], job["scope"]) == ("on@example.com", newsletter, "list")
    assert report.counts("unsubscribe").sent == 2

    # The off-list shopper keeps every consent, in Klaviyo and in the mirror.
    assert sandbox_consent(klaviyo_sandbox, off_list) == {
        "email": "SUBSCRIBED",
        "sms": "SUBSCRIBED",
    }
    assert klaviyo_sandbox.state.list_consent(off_list, newsletter) == {}
    assert klaviyo_sandbox.state.is_member(offers, off_list)
    status = api.subscription_status(email="off@example.com", list_id=newsletter)
    assert (status["email"], status["sms"]) == (Consent.SUBSCRIBED, Consent.SUBSCRIBED)
    assert status["list"]["email"] == Consent.SUBSCRIBED
    [offers_membership] = ListMembership.objects.filter(profile__email="off@example.com")
    assert offers_membership.klaviyo_list == offers_row
    assert (offers_membership.email_consent, offers_membership.sms_consent) == (
        Consent.SUBSCRIBED,
        Consent.SUBSCRIBED,
    )

    # The on-list shopper is unsubscribed from that list only.
    assert sandbox_consent(klaviyo_sandbox, on_list) == {"email": "SUBSCRIBED", "sms": "SUBSCRIBED"}
    withdrawn = klaviyo_sandbox.state.list_consent(on_list, newsletter)
    assert withdrawn == {"email": {"marketing": withdrawn["email"]["marketing"]}}
    assert withdrawn["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert klaviyo_sandbox.state.is_member(offers, on_list)
    status = api.subscription_status(email="on@example.com", list_id=newsletter)
    assert (status["email"], status["sms"]) == (Consent.SUBSCRIBED, Consent.SUBSCRIBED)
    assert status["list"]["member"] is True
    assert (status["list"]["email"], status["list"]["sms"]) == (
        Consent.UNSUBSCRIBED,
        Consent.SUBSCRIBED,
    )
    other_list = api.subscription_status(email="on@example.com", list_id=offers)["list"]
    assert (other_list["email"], other_list["sms"]) == (Consent.SUBSCRIBED, Consent.SUBSCRIBED)

    # Both rows end sent; the skipped one says why, for the admin.
    on_row.refresh_from_db()
    off_row.refresh_from_db()
    assert (on_row.status, on_row.outcome_note) == (Status.SENT, "")
    assert off_row.status == Status.SENT and off_row.last_error_code == ""
    assert off_row.outcome_note == not_on_list_note(newsletter)
    assert f"Not on list {newsletter}, nothing to do" in off_row.outcome_note


def test_a_shopper_known_only_by_phone_is_looked_up_by_phone(
    klaviyo_sandbox: SandboxServer,
) -> None:
    sms_club = klaviyo_sandbox.state.create_list("SMS club")["id"]
    member = shopper(klaviyo_sandbox, "texter@example.com", "+14155550103", sms_club)
    outsider = shopper(klaviyo_sandbox, "quiet@example.com", "+14155550104")

    api.unsubscribe({"phone_number": "+14155550103"}, channels="sms", list_id=sms_club)
    api.unsubscribe({"phone_number": "+14155550104"}, channels="sms", list_id=sms_club)
    flush_outbox()

    [job] = klaviyo_sandbox.state.unsubscriptions()
    assert job["profile_id"] == member and job["scope"] == "list"
    assert sandbox_consent(klaviyo_sandbox, outsider)["sms"] == "SUBSCRIBED"
    assert sandbox_consent(klaviyo_sandbox, member)["sms"] == "SUBSCRIBED"
    membership = ListMembership.objects.get(profile__klaviyo_id=member)
    assert membership.sms_consent == Consent.UNSUBSCRIBED
    assert membership.email_consent == Consent.UNKNOWN
    # A list never synced is mirrored by its id until `klaviyo_sync lists` names it.
    assert membership.klaviyo_list.name == sms_club


def test_membership_lookups_are_batched_by_one_hundred(klaviyo_sandbox: SandboxServer) -> None:
    state = klaviyo_sandbox.state
    weekly = state.create_list("Weekly")["id"]
    members = []
    for i in range(150):
        profile, _ = state.upsert_profile({"email": f"reader{i}@example.com"})
        state.set_consent(profile["id"], "email", "marketing", "SUBSCRIBED")
        if i % 2 == 0:
            members.append(profile["id"])
    state.add_members(weekly, members)
    for i in range(150):
        api.unsubscribe({"email": f"reader{i}@example.com"}, list_id=weekly)

    flush_outbox(batch_size=500)

    assert lookups(klaviyo_sandbox) == 2  # 100 + 50 emails, never one request per row
    jobs = state.unsubscriptions()
    assert len(jobs) == 75 and {j["scope"] for j in jobs} == {"list"}
    assert all(state.consent(pid) == "SUBSCRIBED" for pid in state.profiles())
    notes = OutboxEvent.objects.exclude(outcome_note="").count()
    assert notes == 75
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 150


def test_a_global_unsubscribe_is_sent_without_any_lookup(klaviyo_sandbox: SandboxServer) -> None:
    offers = klaviyo_sandbox.state.create_list("Offers")["id"]
    profile_id = shopper(klaviyo_sandbox, "done@example.com", "+14155550105", offers)

    api.unsubscribe(
        {"email": "done@example.com", "phone_number": "+14155550105"}, channels=["email", "sms"]
    )
    flush_outbox()

    assert lookups(klaviyo_sandbox) == 0
    [job] = klaviyo_sandbox.state.unsubscriptions()
    assert job["list_id"] is None and job["scope"] == "global"
    assert sandbox_consent(klaviyo_sandbox, profile_id) == {
        "email": "UNSUBSCRIBED",
        "sms": "UNSUBSCRIBED",
    }
    link = KlaviyoProfileLink.objects.get(email="done@example.com")
    assert (link.email_consent, link.sms_consent) == (Consent.UNSUBSCRIBED, Consent.UNSUBSCRIBED)


def test_an_unknown_list_ends_the_rows_dead_with_klaviyos_answer(
    klaviyo_sandbox: SandboxServer,
) -> None:
    profile_id = shopper(klaviyo_sandbox, "lost@example.com", "+14155550106")

    row = api.unsubscribe({"email": "lost@example.com"}, list_id="NOLIST")
    flush_outbox()

    row.refresh_from_db()
    assert row.status == Status.DEAD and row.last_error_status == 404
    assert klaviyo_sandbox.state.unsubscriptions() == []
    assert sandbox_consent(klaviyo_sandbox, profile_id)["email"] == "SUBSCRIBED"


def test_dry_run_counts_the_membership_lookups(klaviyo_sandbox: SandboxServer) -> None:
    weekly = klaviyo_sandbox.state.create_list("Weekly")["id"]
    for i in range(3):
        api.unsubscribe({"email": f"r{i}@example.com"}, list_id=weekly)

    report: Any = flush_outbox(dry_run=True)

    assert report.planned["unsubscribe"] == 3
    assert report.planned_requests == 2  # one lookup, one job (at most)
    assert lookups(klaviyo_sandbox) == 0


def test_subscribing_through_the_list_again_lifts_its_unsubscribe(
    klaviyo_sandbox: SandboxServer,
) -> None:
    newsletter = klaviyo_sandbox.state.create_list("Newsletter")["id"]
    profile_id = shopper(klaviyo_sandbox, "back@example.com", "+14155550107", newsletter)
    api.unsubscribe({"email": "back@example.com"}, list_id=newsletter)
    flush_outbox()
    status = api.subscription_status(email="back@example.com", list_id=newsletter)
    assert status["list"]["email"] == Consent.UNSUBSCRIBED

    api.subscribe({"email": "back@example.com"}, list_id=newsletter)
    flush_outbox()

    assert klaviyo_sandbox.state.list_consent(profile_id, newsletter) == {}
    membership = ListMembership.objects.get(profile__email="back@example.com")
    assert membership.email_consent == Consent.UNKNOWN  # the global consent answers again
    status = api.subscription_status(email="back@example.com", list_id=newsletter)
    assert status["list"]["email"] == Consent.SUBSCRIBED


def test_a_member_is_found_whatever_the_case_of_the_email(klaviyo_sandbox: SandboxServer):
    newsletter = klaviyo_sandbox.state.create_list("Newsletter")["id"]
    shopper(klaviyo_sandbox, "Mixed.Case@Example.com", "+14155550108", newsletter)
    lower = klaviyo_sandbox.state.create_list("Lower")["id"]
    shopper(klaviyo_sandbox, "lower@example.com", "+14155550109", lower)

    as_stored = api.unsubscribe({"email": "Mixed.Case@Example.com"}, list_id=newsletter)
    upper = api.unsubscribe({"email": "LOWER@example.com"}, list_id=lower)
    flush_outbox()

    as_stored.refresh_from_db()
    upper.refresh_from_db()
    assert (as_stored.outcome_note, upper.outcome_note) == ("", "")
    assert len(klaviyo_sandbox.state.unsubscriptions()) == 2


def test_a_throttled_lookup_sends_nothing_and_retries_later() -> None:
    """A failed membership lookup never falls through to sending the job: its rows retry
    (429, after Retry-After) and the other lists' rows wait, uncounted."""
    api_root = "https://a.klaviyo.com/api"
    throttled = api.unsubscribe({"email": "a@example.com"}, list_id="LISTA")
    waiting = api.unsubscribe({"email": "b@example.com"}, list_id="LISTB")
    slept: list[float] = []
    client = KlaviyoClient(sleep=slept.append)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add(
            responses.GET,
            re.compile(rf"^{re.escape(api_root)}/lists/LISTA/profiles/?(\?.*)?$"),
            status=429,
            headers={"Retry-After": "600"},
            json={"errors": [{"id": "1", "status": 429, "code": "throttled", "detail": "Wait."}]},
        )
        unsubscribe_jobs = mocked.add(
            responses.POST,
            re.compile(rf"^{re.escape(api_root)}/profile-subscription-.*"),
            status=202,
        )

        flush_outbox(client=client, jitter=lambda: 1.0)

    assert unsubscribe_jobs.call_count == 0
    throttled.refresh_from_db()
    waiting.refresh_from_db()
    assert (throttled.status, throttled.last_error_status) == (Status.RETRYING, 429)
    assert (waiting.status, waiting.attempts) == (Status.PENDING, 0)
    assert throttled.outcome_note == waiting.outcome_note == ""
