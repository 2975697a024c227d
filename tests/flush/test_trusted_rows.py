"""Rows are cleaned once, when written: the flusher only assembles their requests.

Every kind of row the profile, consent, list and privacy senders send is written through
the public API (so it carries the current rules version), then flushed to the sandbox
(which holds each request to Klaviyo's spec) while every request cleaner of the rules
refuses to run. A row of an older rules version is still cleaned before it is sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import responses

import django_klaviyo
from django_klaviyo import rules
from django_klaviyo.client import client as client_methods
from django_klaviyo.client import consent as consent_methods
from django_klaviyo.client import resources
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules.identifiers import profile_key
from django_klaviyo.testing.sandbox import SandboxServer
from tests.flush.test_flush import PROFILE_IMPORT_URL, duplicate_body, url

Status = OutboxEvent.Status
Kind = OutboxEvent.Kind

pytestmark = pytest.mark.django_db

# What the client's public methods clean with (where they look it up), and the rulebook's
# own entry point: none of it may run for a row written under the current rules.
REQUEST_CLEANERS = (
    (client_methods, "clean_upsert_request"),
    (client_methods, "clean_update_request"),
    (client_methods, "clean_import_request"),
    (consent_methods, "clean_consent_request"),
    (consent_methods, "clean_custom_source"),
    (consent_methods, "clean_list_id"),
    (resources, "clean_profile_ids"),
    (consent_methods, "clean_deletion"),
)


def refuse_cleaning(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, every request cleaner (and ``rules.clean``) records its call and
    refuses; the list of calls is returned."""
    called: list[str] = []

    def refusing(name: str) -> Any:
        def cleaner(*args: Any, **kwargs: Any) -> Any:
            called.append(name)
            raise AssertionError(f"{name} ran at flush for a row cleaned when written")

        return cleaner

    for module, name in REQUEST_CLEANERS:
        monkeypatch.setattr(module, name, refusing(name))
    monkeypatch.setattr(rules, "clean", refusing("rules.clean"))
    return called


def statuses(rows: list[OutboxEvent]) -> list[str]:
    return [OutboxEvent.objects.get(pk=r.pk).status for r in rows]


@pytest.mark.klaviyo_sandbox()
def test_profile_consent_list_and_deletion_rows_are_sent_without_being_cleaned_again(
    klaviyo_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = klaviyo_sandbox.state
    newsletter = state.create_list("Newsletter")["id"]
    rows = [
        django_klaviyo.upsert_profile({"email": " Ada@Example.com ", "first_name": "Ada"}),
        django_klaviyo.subscribe(
            {"email": "bob@example.com"}, list_id=newsletter, custom_source="Checkout"
        ),
        django_klaviyo.add_to_list(newsletter, {"email": "cy@example.com"}),
        django_klaviyo.unsubscribe({"email": "dee@example.com"}),
        django_klaviyo.forget_profile(email="eve@example.com"),
    ]
    # Two profiles Klaviyo does not know yet: list_add imports them in one bulk job.
    rows += [
        django_klaviyo.add_to_list(newsletter, {"email": f"new{i}@example.com"}) for i in (1, 2)
    ]
    assert {r.rules_version for r in rows} == {rules.RULES_VERSION}
    cleaners_called = refuse_cleaning(monkeypatch)

    report = flush_outbox()

    assert cleaners_called == []
    assert statuses(rows) == [Status.SENT] * len(rows), report.summary_lines()
    ada = state.find_profile_id("email", "Ada@Example.com")  # cleaned when written
    assert ada and state.profile(ada)["first_name"] == "Ada"
    (subscription,) = state.subscriptions()
    assert subscription["email"] == "bob@example.com"
    members = {state.profile(p)["email"] for p in state.members(newsletter)}
    assert members == {"bob@example.com", "cy@example.com", "new1@example.com", "new2@example.com"}
    assert [u["email"] for u in state.unsubscriptions()] == ["dee@example.com"]
    assert [d["email"] for d in state.deletion_requests()] == ["eve@example.com"]


@pytest.mark.klaviyo_sandbox()
def test_a_row_of_older_rules_is_cleaned_once_before_it_is_sent(
    klaviyo_sandbox: SandboxServer,
) -> None:
    """Written by an older release (or by hand): its email is cleaned before it is sent."""
    row = OutboxEvent.objects.create(
        kind=Kind.PROFILE_UPSERT,
        payload={"profile": {"email": " Old@Example.com "}},
        profile_key=profile_key({"email": "Old@Example.com"}),
        rules_version=0,
    )

    flush_outbox()

    assert OutboxEvent.objects.get(pk=row.pk).status == Status.SENT
    assert klaviyo_sandbox.state.find_profile_id("email", "Old@Example.com")


def test_a_duplicate_profile_takes_the_rows_update_without_the_exchange_id() -> None:
    """A profile upsert may carry ``_kx`` (a link click's exchange id), which
    profile-import takes and PATCH does not: when Klaviyo answers 409 naming the profile
    that holds the email, the update goes to it without ``_kx`` (it was refused before,
    and the row went dead)."""
    row = django_klaviyo.upsert_profile(
        {"email": "ada@example.com", "first_name": "Ada", "_kx": "kx-from-a-link"}
    )
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, PROFILE_IMPORT_URL, status=409, json=duplicate_body("01ADA"))
        patch = mocked.add(
            responses.PATCH,
            url("/profiles/01ADA"),
            json={"data": {"type": "profile", "id": "01ADA", "attributes": {}}},
        )

        flush_outbox()

        (imported,) = [c for c in mocked.calls if c.request.method == "POST"]
        assert json.loads(imported.request.body)["data"]["attributes"]["_kx"] == "kx-from-a-link"
        assert patch.call_count == 1
        sent = json.loads(mocked.calls[-1].request.body)["data"]
        assert sent["id"] == "01ADA"
        assert sent["attributes"] == {"email": "ada@example.com", "first_name": "Ada"}
    assert OutboxEvent.objects.get(pk=row.pk).status == Status.SENT


@pytest.mark.klaviyo_sandbox()
def test_a_mirror_update_that_fails_after_sending_is_noted_on_the_sent_rows(
    klaviyo_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Klaviyo took the request, so the row is sent; but the local mirror (memberships,
    consent, profile ids) missed the change, and a log line alone would hide that."""
    newsletter = klaviyo_sandbox.state.create_list("Newsletter")["id"]
    row = django_klaviyo.add_to_list(newsletter, {"email": "cy@example.com"})

    def broken_mirror(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("membership table locked")

    monkeypatch.setattr("django_klaviyo.flush.senders.lists.ListSender.succeeded", broken_mirror)

    flush_outbox()

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert "local mirror was not updated" in row.outcome_note
    assert "membership table locked" in row.outcome_note


@pytest.mark.klaviyo_sandbox()
def test_a_bug_while_resolving_one_kind_retries_its_rows_and_the_other_kinds_are_sent(
    klaviyo_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list sender that fails before any request (here: looking up profile ids) is a
    bug, not Klaviyo's answer: its rows go back to the queue with the reason, counted as
    an attempt, and the run goes on with the other kinds instead of ending."""
    newsletter = klaviyo_sandbox.state.create_list("Newsletter")["id"]
    listed = django_klaviyo.add_to_list(newsletter, {"email": "cy@example.com"})
    order = django_klaviyo.track("Placed Order", {"email": "cy@example.com"}, unique_id="o1")

    def broken_lookup(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("profile id cache corrupted")

    monkeypatch.setattr("django_klaviyo.flush.senders.lists.ListSender.resolve", broken_lookup)

    report = flush_outbox()

    assert OutboxEvent.objects.get(pk=order.pk).status == Status.SENT
    listed.refresh_from_db()
    assert (listed.status, listed.attempts) == (Status.RETRYING, 1)
    assert "profile id cache corrupted" in listed.last_error_detail
    assert report.kinds["list_add"].retrying == 1
