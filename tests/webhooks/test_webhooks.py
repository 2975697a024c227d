"""The signed webhook receiver, the flow webhook receiver and the consent handlers."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import random
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from django_klaviyo.models import (
    Consent,
    KlaviyoProfileLink,
    ListMembership,
    WebhookDelivery,
    WebhookItem,
)
from django_klaviyo.webhooks import dispatch, verify
from django_klaviyo.webhooks.signals import klaviyo_webhook_event
from django_klaviyo.webhooks.store import redact_headers

SECRET = "whsec-test-secret-0123456789"
OTHER_SECRET = "whsec-rotated-new-secret-abcdef"
WEBHOOK_ID = "01KP4EGG9B0AEF4VJD749M6H9D"
URL = "/klaviyo/webhooks/"
FLOW_URL = "/klaviyo/webhooks/flow/"
FLOW_TOKEN = "flow-token-0123456789abcdef"
HEADER_TS = "Fri, 04 Sep 2026 18:16:52 GMT"

pytestmark = pytest.mark.django_db


def event_item(
    external_id: str = "73WCCK7JKtE",
    topic: str = "event:klaviyo.unsubscribed_from_email_marketing",
    *,
    profile_id: str = "01KP4EGHH8QJ3N3AY2Z6V7RMDK",
    when: str = "2026-04-13T22:16:46+00:00",
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "topic": topic,
        "external_id": external_id,
        "payload": {
            "data": {
                "type": "event",
                "id": external_id,
                "attributes": {
                    "datetime": when,
                    "event_properties": properties
                    if properties is not None
                    else {"method": "PROFILE_PAGE", "email_address": "email@example.com"},
                },
                "relationships": {
                    "metric": {"data": {"type": "metric", "id": "SHi67A"}},
                    "profile": {"data": {"type": "profile", "id": profile_id}},
                },
            }
        },
    }


def delivery_body(
    *items: dict[str, Any], sent_at: dt.datetime | None = None, webhook_id: str = WEBHOOK_ID
) -> bytes:
    sent_at = sent_at or timezone.now()
    document = {
        "meta": {
            "timestamp": sent_at.isoformat(),
            "klaviyo_webhook_id": webhook_id,
            "klaviyo_account_id": "WBhXHN",
            "version": "2024-06-28",
        },
        "data": list(items) if items else [event_item()],
    }
    return json.dumps(document).encode()


def sign(body: bytes, secret: str = SECRET, timestamp: str = HEADER_TS) -> str:
    # Written from Klaviyo's rule, independently of the code under test.
    return hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def post(
    client, body: bytes, *, signature: str | None = None, webhook_id: str = WEBHOOK_ID, **meta: str
):
    headers = {
        "Klaviyo-Webhook-Id": webhook_id,
        "Klaviyo-Timestamp": HEADER_TS,
        "Klaviyo-Signature": signature if signature is not None else sign(body),
    }
    return client.generic(
        "POST", URL, body, content_type="application/json", headers=headers, **meta
    )


@pytest.fixture
def calls():
    """Every klaviyo_webhook_event sent, as (topic, external_id)."""
    seen: list[tuple[str, str]] = []

    def receiver(sender, topic, payload, item, delivery, **kwargs):
        seen.append((topic, item.external_id))

    klaviyo_webhook_event.connect(receiver, dispatch_uid="test-calls")
    yield seen
    klaviyo_webhook_event.disconnect(dispatch_uid="test-calls")


# --- signature, freshness, shape ---------------------------------------------------------


def test_valid_delivery_is_stored_processed_and_acknowledged(client, calls):
    body = delivery_body(event_item("a1"), event_item("a2", "event:klaviyo.opened_email"))
    response = post(client, body, HTTP_COOKIE="sessionid=abc", HTTP_AUTHORIZATION="Bearer x")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "received": 2,
        "new": 2,
        "duplicates": 0,
        "failed": 0,
        "pending": 0,
    }
    delivery = WebhookDelivery.objects.get()
    assert delivery.valid and delivery.processed and delivery.item_count == 2
    assert delivery.source == WebhookDelivery.Source.SYSTEM
    assert delivery.webhook_id == WEBHOOK_ID
    assert delivery.body == body.decode()
    assert delivery.headers["Klaviyo-Signature"] == "[redacted]"
    assert delivery.headers["Authorization"] == "[redacted]"
    assert delivery.headers["Cookie"] == "[redacted]"
    assert delivery.headers["Klaviyo-Webhook-Id"] == WEBHOOK_ID
    assert sign(body) not in json.dumps(delivery.headers)
    assert sorted(calls) == [
        ("event:klaviyo.opened_email", "a2"),
        ("event:klaviyo.unsubscribed_from_email_marketing", "a1"),
    ]
    items = {item.external_id: item for item in WebhookItem.objects.all()}
    assert set(items) == {"a1", "a2"} and all(
        i.processed and i.processed_at for i in items.values()
    )
    assert items["a2"].payload["data"]["id"] == "a2"


def test_tampered_body_is_refused_and_logged(client, calls, caplog):
    body = delivery_body(event_item("t1"))
    tampered = body.replace(b"t1", b"t2")
    with caplog.at_level(logging.WARNING, logger="django_klaviyo"):
        response = post(client, tampered, signature=sign(body), REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 403
    assert response.json() == {"detail": "The Klaviyo-Signature does not match."}
    assert not WebhookDelivery.objects.exists() and not WebhookItem.objects.exists() and not calls
    warning = next(r for r in caplog.records if "BAD SIGNATURE" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert WEBHOOK_ID in warning.getMessage() and "203.0.113.9" in warning.getMessage()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged and sign(body) not in logged


def test_wrong_secret_is_refused(client, calls):
    body = delivery_body()
    response = post(client, body, signature=sign(body, secret="not-the-configured-secret"))
    assert response.status_code == 403
    assert not WebhookItem.objects.exists() and not calls


def test_signature_over_body_alone_or_base64_is_refused(client):
    body = delivery_body()
    body_only = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert post(client, body, signature=body_only).status_code == 403
    assert post(client, body, signature=sign(body).upper() + "00").status_code == 403


def test_rotated_secret_is_accepted(client, calls, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "WEBHOOK_SECRETS": [SECRET, OTHER_SECRET]}
    body = delivery_body(event_item("r1"))
    response = post(client, body, signature=sign(body, secret=OTHER_SECRET))
    assert response.status_code == 200
    assert calls == [("event:klaviyo.unsubscribed_from_email_marketing", "r1")]


def test_no_configured_secret_refuses_everything(client, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "WEBHOOK_SECRETS": []}
    body = delivery_body()
    assert post(client, body, signature=sign(body, secret="")).status_code == 403
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(
    "age", [dt.timedelta(seconds=86401), dt.timedelta(days=2), -dt.timedelta(seconds=400)]
)
def test_stale_or_future_timestamp_is_refused(client, calls, age):
    body = delivery_body(sent_at=timezone.now() - age)
    response = post(client, body)
    assert response.status_code == 403
    assert "meta.timestamp" in response.json()["detail"]
    assert not WebhookItem.objects.exists() and not calls


def test_timestamp_within_tolerance_is_accepted(client, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "WEBHOOK_TOLERANCE_SECONDS": 3600}
    body = delivery_body(sent_at=timezone.now() - dt.timedelta(minutes=50))
    assert post(client, body).status_code == 200


def test_header_and_meta_webhook_id_mismatch_is_refused(client, calls):
    body = delivery_body(webhook_id="01OTHERWEBHOOKID")
    response = post(client, body)  # header carries WEBHOOK_ID
    assert response.status_code == 403
    assert "klaviyo_webhook_id" in response.json()["detail"]
    assert not WebhookItem.objects.exists() and not calls


def test_replayed_item_is_acknowledged_once(client, calls):
    body = delivery_body(event_item("dup-1"))
    assert post(client, body).status_code == 200
    second = post(client, body)
    assert second.status_code == 200
    assert second.json() == {
        "received": 1,
        "new": 0,
        "duplicates": 1,
        "failed": 0,
        "pending": 0,
    }
    # A later delivery carrying the old item with a new one processes only the new one.
    third = post(client, delivery_body(event_item("dup-1"), event_item("dup-2")))
    assert third.json()["new"] == 1 and third.json()["duplicates"] == 1
    assert [c[1] for c in calls] == ["dup-1", "dup-2"]
    assert WebhookItem.objects.count() == 2
    # The pure replay stored no delivery row.
    assert WebhookDelivery.objects.count() == 2


def test_same_item_twice_in_one_delivery_is_processed_once(client, calls):
    response = post(client, delivery_body(event_item("x1"), event_item("x1")))
    assert response.json() == {
        "received": 2,
        "new": 1,
        "duplicates": 1,
        "failed": 0,
        "pending": 0,
    }
    assert calls == [("event:klaviyo.unsubscribed_from_email_marketing", "x1")]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"meta": NaN}',
        b"[" * 100000,
        b"[]",
        b'"just a string"',
        b'{"meta": {"klaviyo_webhook_id": "%s", "timestamp": "yesterday"}, "data": []}'
        % WEBHOOK_ID.encode(),
        b'{"meta": {"klaviyo_webhook_id": "%s"}, "data": []}' % WEBHOOK_ID.encode(),
        b'{"data": []}',
    ],
)
def test_malformed_json_is_a_400(client, body):
    response = post(client, body)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(
    "bad_item",
    [
        "not an object",
        {"topic": "t", "payload": {}},
        {"external_id": 12, "topic": "t", "payload": {}},
        {"external_id": "e", "topic": None, "payload": {}},
        {"external_id": "e", "topic": "t", "payload": []},
        {"external_id": "x" * 256, "topic": "t", "payload": {}},
    ],
)
def test_malformed_shape_is_a_400(client, bad_item):
    body = delivery_body(event_item("fine"), bad_item)
    response = post(client, body)
    assert response.status_code == 400
    assert "data[1]" in response.json()["detail"]
    assert not WebhookItem.objects.exists()


def test_data_must_be_a_list(client):
    document = json.loads(delivery_body())
    document["data"] = {"external_id": "e"}
    body = json.dumps(document).encode()
    assert post(client, body).status_code == 400


def test_oversized_body_is_a_413(client, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "WEBHOOK_MAX_BODY_BYTES": 2048}
    body = delivery_body(*[event_item(f"big-{n}") for n in range(20)])
    assert len(body) > 2048
    response = post(client, body)
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]
    assert not WebhookDelivery.objects.exists()


def test_body_longer_than_its_content_length_claims_is_a_413(rf):
    """The actual length counts too, not only the Content-Length header."""
    from django_klaviyo.webhooks.views import read_body

    request = rf.post(URL, data=b"x" * 100, content_type="application/json")
    request.META["CONTENT_LENGTH"] = "10"  # the header lies low
    with pytest.raises(verify.WebhookRejected) as exc:
        read_body(request, 50)
    assert exc.value.status == 413
    request = rf.post(URL, data=b"x" * 50, content_type="application/json")
    assert read_body(request, 50) == b"x" * 50
    request = rf.post(URL, data=b"x", content_type="application/json")
    request.META["CONTENT_LENGTH"] = "ten"
    with pytest.raises(verify.WebhookRejected) as exc:
        read_body(request, 50)
    assert exc.value.status == 400


def test_bodies_between_django_upload_limit_and_ours_are_accepted(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = delivery_body(*[event_item(f"mid-{n}") for n in range(10)])
    assert len(body) > 1000
    assert post(client, body).status_code == 200


@pytest.mark.parametrize(
    "missing", ["Klaviyo-Signature", "Klaviyo-Timestamp", "Klaviyo-Webhook-Id"]
)
def test_missing_header_is_a_401(client, missing):
    body = delivery_body()
    headers = {
        "Klaviyo-Webhook-Id": WEBHOOK_ID,
        "Klaviyo-Timestamp": HEADER_TS,
        "Klaviyo-Signature": sign(body),
    }
    del headers[missing]
    response = client.generic("POST", URL, body, content_type="application/json", headers=headers)
    assert response.status_code == 401
    assert missing in response.json()["detail"]


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
def test_other_methods_are_a_405(client, method):
    response = getattr(client, method)(URL)
    assert response.status_code == 405
    assert "detail" in response.json()


def test_csrf_and_sessions_do_not_interfere(calls):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    user = get_user_model().objects.create_user("shopper", password="pw")
    csrf_client.force_login(user)
    body = delivery_body(event_item("csrf-1"))
    assert post(csrf_client, body).status_code == 200


def test_accept_header_does_not_cause_a_406(client):
    body = delivery_body()
    assert post(client, body, HTTP_ACCEPT="text/html").status_code == 200


def test_fuzzed_bodies_never_cause_a_server_error(client):
    rng = random.Random(1234)
    valid = delivery_body(event_item("fuzz"))
    for _ in range(150):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(mutated))
            mutated[position] = rng.randrange(256)
        body = bytes(mutated)
        response = post(client, body)  # correctly signed, so every check runs
        assert response.status_code in (200, 400, 403), (body, response.content)
        assert response.status_code == 200 or "detail" in response.json()


@pytest.mark.parametrize(
    "signature",
    ["é" * 64, "\x00", " " * 3, "z" * 10000],
)
def test_odd_signature_headers_are_a_403(client, signature):
    assert post(client, delivery_body(), signature=signature).status_code in (401, 403)


def test_nul_and_lone_surrogates_in_json_are_stored(client, calls):
    item = event_item(
        "nul-1", properties={"note": "a\u0000b", "odd": "\ud800", "email_address": "x@example.com"}
    )
    body = json.dumps(json.loads(delivery_body(item))).encode()
    assert b"\\u0000" in body and b"\\ud800" in body
    response = post(client, body)
    assert response.status_code == 200, response.content
    stored = WebhookItem.objects.get().payload["data"]["attributes"]["event_properties"]
    assert stored["note"] == "a\ufffdb" and stored["odd"] == "?"
    assert WebhookDelivery.objects.get().body == body.decode()


# --- handler failures and transactions -----------------------------------------------------


def test_failing_receiver_is_recorded_and_rolls_back_only_its_item(client, calls):
    link = KlaviyoProfileLink.objects.create(
        email="email@example.com", klaviyo_id="01KP4EGHH8QJ3N3AY2Z6V7RMDK"
    )

    def broken(sender, topic, item, **kwargs):
        if item.external_id == "bad":
            raise RuntimeError("store code failed")

    klaviyo_webhook_event.connect(broken, dispatch_uid="test-broken")
    try:
        body = delivery_body(event_item("bad"), event_item("good", "event:klaviyo.opened_email"))
        response = post(client, body)
    finally:
        klaviyo_webhook_event.disconnect(dispatch_uid="test-broken")
    assert response.status_code == 200
    assert response.json()["failed"] == 1
    bad, good = (
        WebhookItem.objects.get(external_id="bad"),
        WebhookItem.objects.get(external_id="good"),
    )
    assert good.processed and not bad.processed
    assert "RuntimeError: store code failed" in bad.error and "Traceback" in bad.traceback
    # The built-in consent update of the failed item was rolled back with it...
    link.refresh_from_db()
    assert link.email_consent == Consent.UNKNOWN
    delivery = WebhookDelivery.objects.get()
    assert not delivery.processed and "bad" in delivery.error
    # ...and reprocessing (the admin action) applies it once the receiver is fixed.
    result = dispatch.process_items([bad])
    assert result.processed == 1
    link.refresh_from_db()
    bad.refresh_from_db()
    delivery.refresh_from_db()
    assert link.email_consent == Consent.UNSUBSCRIBED and bad.processed and not bad.error
    assert delivery.processed and delivery.error == ""


@pytest.mark.django_db(transaction=True)
def test_crash_after_storing_keeps_the_delivery_under_atomic_requests(
    client, monkeypatch, settings
):
    from django.db import connections

    # The test's own database only: the suite's "other" alias is not open to this test.
    for alias in ("default",):
        connections[alias].settings_dict["ATOMIC_REQUESTS"] = True
    try:

        def explode(items):
            raise RuntimeError("worker died")

        monkeypatch.setattr("django_klaviyo.webhooks.views.process_claimed", explode)
        client.raise_request_exception = False
        response = post(client, delivery_body(event_item("kept-1")))
        assert response.status_code == 500
    finally:
        for alias in ("default",):
            connections[alias].settings_dict["ATOMIC_REQUESTS"] = False
    assert WebhookItem.objects.filter(external_id="kept-1", processed=False).exists()
    assert WebhookDelivery.objects.count() == 1


# --- consent handlers ----------------------------------------------------------------------


def consent_item(external_id: str, topic: str, when: str, **kwargs: Any) -> dict[str, Any]:
    return event_item(external_id, f"event:klaviyo.{topic}", when=when, **kwargs)


@pytest.mark.parametrize(
    ("topic", "field", "expected"),
    [
        ("subscribed_to_email_marketing", "email_consent", Consent.SUBSCRIBED),
        ("unsubscribed_from_email_marketing", "email_consent", Consent.UNSUBSCRIBED),
        ("manually_suppressed_from_email_marketing", "email_consent", Consent.SUPPRESSED),
        ("bounced_email", "email_consent", Consent.SUPPRESSED),
        ("marked_email_as_spam", "email_consent", Consent.SUPPRESSED),
        ("subscribed_to_sms_marketing", "sms_consent", Consent.SUBSCRIBED),
        ("unsubscribed_from_sms_marketing", "sms_consent", Consent.UNSUBSCRIBED),
    ],
)
def test_consent_topics_update_the_link_found_by_profile_id(client, topic, field, expected):
    link = KlaviyoProfileLink.objects.create(email="someone@example.com", klaviyo_id="PROF1")
    other = KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF2")
    when = "2026-04-13T22:16:46+00:00"
    post(client, delivery_body(consent_item("c1", topic, when, profile_id="PROF1")))
    link.refresh_from_db()
    other.refresh_from_db()
    assert getattr(link, field) == expected
    assert getattr(link, f"{field}_at") == dt.datetime(
        2026, 4, 13, 22, 16, 46, tzinfo=dt.timezone.utc
    )
    # The id wins over the email in event_properties, which belongs to another link.
    assert other.email_consent == Consent.UNKNOWN and other.sms_consent == Consent.UNKNOWN


def test_consent_found_by_email_or_phone_when_the_id_is_unknown(client):
    by_email = KlaviyoProfileLink.objects.create(email="Email@Example.com")
    by_phone = KlaviyoProfileLink.objects.create(phone_number="+14155550100")
    when = "2026-04-13T22:16:46+00:00"
    post(
        client,
        delivery_body(
            consent_item("e1", "unsubscribed_from_email_marketing", when, profile_id="UNKNOWN"),
            consent_item(
                "s1",
                "subscribed_to_sms_marketing",
                when,
                profile_id="UNKNOWN",
                properties={"phone_number": "+14155550100"},
            ),
        ),
    )
    by_email.refresh_from_db()
    by_phone.refresh_from_db()
    assert by_email.email_consent == Consent.UNSUBSCRIBED
    assert by_phone.sms_consent == Consent.SUBSCRIBED and by_phone.email_consent == Consent.UNKNOWN


def test_consent_events_are_order_safe(client):
    link = KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF1")
    newer = consent_item(
        "n1", "subscribed_to_email_marketing", "2026-04-13T22:00:00+00:00", profile_id="PROF1"
    )
    older = consent_item(
        "o1", "unsubscribed_from_email_marketing", "2026-04-13T21:00:00+00:00", profile_id="PROF1"
    )
    post(client, delivery_body(newer))
    post(client, delivery_body(older))  # arrives late: ignored
    link.refresh_from_db()
    assert link.email_consent == Consent.SUBSCRIBED
    assert link.email_consent_at == dt.datetime(2026, 4, 13, 22, tzinfo=dt.timezone.utc)
    # Unsuppression only lifts a suppression, and only when newer.
    post(
        client,
        delivery_body(
            consent_item(
                "u1",
                "manually_unsuppressed_from_email_marketing",
                "2026-04-13T23:00:00+00:00",
                profile_id="PROF1",
            )
        ),
    )
    link.refresh_from_db()
    assert link.email_consent == Consent.SUBSCRIBED
    post(
        client,
        delivery_body(
            consent_item(
                "sp", "marked_email_as_spam", "2026-04-14T00:00:00+00:00", profile_id="PROF1"
            )
        ),
    )
    post(
        client,
        delivery_body(
            consent_item(
                "u2",
                "manually_unsuppressed_from_email_marketing",
                "2026-04-14T01:00:00+00:00",
                profile_id="PROF1",
            )
        ),
    )
    link.refresh_from_db()
    assert link.email_consent == Consent.UNKNOWN


def test_soft_bounce_does_not_suppress(client):
    link = KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF1")
    item = consent_item(
        "b1",
        "bounced_email",
        "2026-04-13T22:00:00+00:00",
        profile_id="PROF1",
        properties={"bounce_type": "Soft"},
    )
    post(client, delivery_body(item))
    link.refresh_from_db()
    assert link.email_consent == Consent.UNKNOWN


def test_consent_event_without_datetime_is_recorded_as_item_error(client):
    KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF1")
    item = consent_item("nodate", "subscribed_to_email_marketing", "not a date", profile_id="PROF1")
    response = post(client, delivery_body(item))
    assert response.status_code == 200 and response.json()["failed"] == 1
    assert "datetime" in WebhookItem.objects.get().error


def test_epoch_timestamp_is_used_when_datetime_is_missing(client):
    link = KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF1")
    item = consent_item("epoch", "subscribed_to_email_marketing", "", profile_id="PROF1")
    del item["payload"]["data"]["attributes"]["datetime"]
    item["payload"]["data"]["attributes"]["timestamp"] = 1776118606
    post(client, delivery_body(item))
    link.refresh_from_db()
    assert link.email_consent == Consent.SUBSCRIBED
    assert link.email_consent_at == dt.datetime.fromtimestamp(1776118606, tz=dt.timezone.utc)


# --- flow webhooks -------------------------------------------------------------------------


def flow_post(client, document: Any, *, url: str = FLOW_URL, **headers: str):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return client.generic("POST", url, body, content_type="application/json", headers=headers)


def test_flow_webhook_with_bearer_token(client, calls):
    url = reverse("klaviyo-flow-webhook", kwargs={"name": "vip-welcome"})
    response = flow_post(
        client, {"email": "a@example.com"}, url=url, Authorization=f"Bearer {FLOW_TOKEN}"
    )
    assert response.status_code == 200, response.content
    item = WebhookItem.objects.get()
    assert item.topic == "flow:vip-welcome" and item.payload == {"email": "a@example.com"}
    assert item.delivery.source == WebhookDelivery.Source.FLOW
    assert item.delivery.headers["Authorization"] == "[redacted]"
    assert calls == [("flow:vip-welcome", item.external_id)]
    # The same body again is deduplicated by its hash.
    again = flow_post(
        client, {"email": "a@example.com"}, url=url, Authorization=f"Bearer {FLOW_TOKEN}"
    )
    assert again.json()["duplicates"] == 1 and len(calls) == 1


def test_flow_webhook_dedupes_by_client_id_and_accepts_token_header(client, calls):
    headers = {"X-Klaviyo-Flow-Token": FLOW_TOKEN}
    assert flow_post(client, {"id": "evt-1", "n": 1}, **headers).status_code == 200
    assert flow_post(client, {"id": "evt-1", "n": 2}, **headers).json()["new"] == 0
    assert flow_post(client, {"id": "evt-2", "n": 1}, **headers).json()["new"] == 1
    assert [c[0] for c in calls] == ["flow:default", "flow:default"]
    assert set(WebhookItem.objects.values_list("external_id", flat=True)) == {
        "flow:default:id:evt-1",
        "flow:default:id:evt-2",
    }


def test_flow_webhook_refusals(client, settings, calls):
    assert flow_post(client, {"a": 1}).status_code == 401
    assert flow_post(client, {"a": 1}, Authorization="Bearer wrong-token").status_code == 403
    assert flow_post(client, {"a": 1}, Authorization=f"Basic {FLOW_TOKEN}").status_code == 401
    assert flow_post(client, b"{oops", Authorization=f"Bearer {FLOW_TOKEN}").status_code == 400
    assert flow_post(client, [1, 2], Authorization=f"Bearer {FLOW_TOKEN}").status_code == 400
    bad_name = flow_post(
        client, {"a": 1}, url=FLOW_URL + "a.b/", Authorization=f"Bearer {FLOW_TOKEN}"
    )
    assert bad_name.status_code == 400
    assert client.get(FLOW_URL).status_code == 405
    settings.KLAVIYO = {**settings.KLAVIYO, "FLOW_WEBHOOK_TOKEN": None}
    assert flow_post(client, {"a": 1}, Authorization="Bearer ").status_code == 403
    assert not WebhookDelivery.objects.exists() and not calls


# --- units ---------------------------------------------------------------------------------


def test_redact_headers_hides_credentials_only():
    redacted = redact_headers(
        {
            "Klaviyo-Signature": "abc",
            "X-Api-Key": "k",
            "X-Session-Token": "t",
            "Content-Type": "json",
        }
    )
    assert redacted == {
        "Klaviyo-Signature": "[redacted]",
        "X-Api-Key": "[redacted]",
        "X-Session-Token": "[redacted]",
        "Content-Type": "json",
    }


def test_compute_signature_matches_klaviyo_rule():
    assert verify.compute_signature(SECRET, b"{}", HEADER_TS) == sign(b"{}")
    assert verify.signature_matches(b"{}", HEADER_TS, sign(b"{}"), ["other", SECRET])
    assert not verify.signature_matches(b"{}", HEADER_TS, sign(b"{}"), [])


# --- list-scoped consent events ------------------------------------------------------------


# An unsubscribe naming a list is global, and unsubscribed_from_list (not a documented
# topic) changes nothing: tests/security/test_webhook_consent.py (issue 19, case 13).


def test_subscribe_through_a_list_is_global_and_recorded_on_the_list(client):
    link = KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF1")
    when = "2026-04-13T22:16:46+00:00"
    item = consent_item(
        "s1",
        "subscribed_to_email_marketing",
        when,
        profile_id="PROF1",
        properties={"email_address": "email@example.com", "list_id": "NEWLIST"},
    )

    post(client, delivery_body(item))

    link.refresh_from_db()
    assert link.email_consent == Consent.SUBSCRIBED
    # A list never synced is mirrored by its id until klaviyo_sync names it.
    membership = ListMembership.objects.get(profile=link)
    assert membership.klaviyo_list.klaviyo_id == "NEWLIST"
    assert membership.klaviyo_list.name == "NEWLIST"
    assert membership.email_consent == Consent.SUBSCRIBED


def test_suppression_naming_a_list_is_still_global(client):
    link = KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF1")
    item = consent_item(
        "sp",
        "marked_email_as_spam",
        "2026-04-13T22:16:46+00:00",
        profile_id="PROF1",
        properties={"list_id": "LIST1"},
    )

    post(client, delivery_body(item))

    link.refresh_from_db()
    assert link.email_consent == Consent.SUPPRESSED
    assert not ListMembership.objects.exists()


def test_list_consent_events_are_order_safe(client):
    link = KlaviyoProfileLink.objects.create(email="email@example.com", klaviyo_id="PROF1")
    newer = consent_item(
        "n1",
        "subscribed_to_email_marketing",
        "2026-04-13T22:00:00+00:00",
        profile_id="PROF1",
        properties={"list_id": "LIST1"},
    )
    older = consent_item(
        "o1",
        "unsubscribed_from_email_marketing",
        "2026-04-13T21:00:00+00:00",
        profile_id="PROF1",
        properties={"list_id": "LIST1"},
    )
    post(client, delivery_body(newer))
    post(client, delivery_body(older))  # arrives late: ignored

    membership = ListMembership.objects.get(profile=link)
    assert membership.email_consent == Consent.SUBSCRIBED
