"""Issue 19, case 13: the consent mirror and Klaviyo's retries.

Global or list consent is decided from Klaviyo's documented topics only: an
``unsubscribed_from_email_marketing`` event is a global unsubscribe whatever list its
properties name, and ``unsubscribed_from_list`` (not a documented topic) changes nothing.
A delivery Klaviyo retries after more than five minutes is accepted (the freshness window
is wide, replays being deduplicated by the stored item ids), and counted once.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from django_klaviyo.conf import DEFAULTS
from django_klaviyo.models import (
    Consent,
    KlaviyoList,
    KlaviyoProfileLink,
    ListMembership,
    WebhookItem,
)
from django_klaviyo.webhooks.handlers import CONSENT_TOPICS
from tests.webhooks.test_webhooks import consent_item, delivery_body, event_item, post

pytestmark = pytest.mark.django_db
WHEN = "2026-04-13T22:16:46+00:00"
# Klaviyo's documented system-webhook consent topics (docs/webhooks.md cites the pages).
DOCUMENTED = {
    "subscribed_to_email_marketing",
    "unsubscribed_from_email_marketing",
    "manually_suppressed_from_email_marketing",
    "manually_unsuppressed_from_email_marketing",
    "bounced_email",
    "marked_email_as_spam",
    "subscribed_to_sms_marketing",
    "unsubscribed_from_sms_marketing",
}


@pytest.fixture
def ann():
    link = KlaviyoProfileLink.objects.create(
        email="email@example.com", klaviyo_id="PROF1", email_consent=Consent.SUBSCRIBED
    )
    KlaviyoList.objects.create(klaviyo_id="LIST1", name="Newsletter")
    return link


def test_only_documented_topics_move_consent():
    assert set(CONSENT_TOPICS) <= DOCUMENTED


@pytest.mark.parametrize(
    "properties",
    [
        {"email_address": "email@example.com", "list_id": "LIST1"},
        {"email_address": "email@example.com", "List": "Newsletter"},
        {"List ID": "LIST1", "$list_id": "LIST1"},
    ],
)
def test_an_email_unsubscribe_naming_a_list_is_still_global(client, ann, properties):
    item = consent_item(
        "u1", "unsubscribed_from_email_marketing", WHEN, profile_id="PROF1", properties=properties
    )
    assert post(client, delivery_body(item)).status_code == 200
    ann.refresh_from_db()
    assert ann.email_consent == Consent.UNSUBSCRIBED
    assert ann.email_consent_at == dt.datetime(2026, 4, 13, 22, 16, 46, tzinfo=dt.timezone.utc)


def test_an_sms_unsubscribe_naming_a_list_is_still_global(client, ann):
    ann.sms_consent = Consent.SUBSCRIBED
    ann.save()
    item = consent_item(
        "u2",
        "unsubscribed_from_sms_marketing",
        WHEN,
        profile_id="PROF1",
        properties={"list_id": "LIST1"},
    )
    post(client, delivery_body(item))
    ann.refresh_from_db()
    assert ann.sms_consent == Consent.UNSUBSCRIBED


def test_an_undocumented_list_topic_changes_no_consent(client, ann):
    item = consent_item(
        "n1", "unsubscribed_from_list", WHEN, profile_id="PROF1", properties={"List": "Newsletter"}
    )
    assert post(client, delivery_body(item)).status_code == 200
    ann.refresh_from_db()
    assert ann.email_consent == Consent.SUBSCRIBED
    assert not ListMembership.objects.filter(email_consent=Consent.UNSUBSCRIBED).exists()
    # Stored and signalled like any other topic, for the project's own receivers.
    assert WebhookItem.objects.filter(external_id="n1", processed=True).exists()


@pytest.mark.parametrize("late", [dt.timedelta(minutes=6), dt.timedelta(hours=23)])
def test_a_retry_sent_long_after_the_original_is_accepted_once(client, ann, late):
    first_sent = timezone.now() - late
    item = consent_item("r1", "unsubscribed_from_email_marketing", WHEN, profile_id="PROF1")
    # Klaviyo's retry: the same body (the original meta.timestamp), delivered late.
    answer = post(client, delivery_body(item, sent_at=first_sent))
    assert answer.status_code == 200, answer.json()
    assert answer.json()["new"] == 1
    ann.refresh_from_db()
    assert ann.email_consent == Consent.UNSUBSCRIBED
    again = post(client, delivery_body(item, sent_at=first_sent))
    assert again.status_code == 200
    assert again.json()["new"] == 0 and again.json()["duplicates"] == 1


def test_the_freshness_window_covers_a_day_of_retries():
    assert DEFAULTS["WEBHOOK_TOLERANCE_SECONDS"] >= 24 * 3600


def test_a_delivery_beyond_the_window_or_from_the_future_is_still_refused(client):
    tolerance = DEFAULTS["WEBHOOK_TOLERANCE_SECONDS"]
    stale = timezone.now() - dt.timedelta(seconds=tolerance + 60)
    assert post(client, delivery_body(event_item("s1"), sent_at=stale)).status_code == 403
    # Klaviyo stamps meta.timestamp when it sends: only clock skew puts it ahead of ours.
    future = timezone.now() + dt.timedelta(minutes=10)
    assert post(client, delivery_body(event_item("f1"), sent_at=future)).status_code == 403
    assert not WebhookItem.objects.exists()
