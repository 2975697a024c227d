"""GDPR erasure: forget_profile and klaviyo_forget also erase the person locally."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

import django_klaviyo
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import (
    KlaviyoList,
    KlaviyoProfileLink,
    ListMembership,
    OutboxEvent,
    WebhookDelivery,
    WebhookItem,
)

pytestmark = pytest.mark.django_db
S = OutboxEvent.Status
K = OutboxEvent.Kind


def row(profile_key: str, status: str, payload: dict, kind: str = K.EVENT) -> OutboxEvent:
    return OutboxEvent.objects.create(
        kind=kind,
        status=status,
        payload=payload,
        profile_key=profile_key,
        sent_at=timezone.now() if status == S.SENT else None,
        last_error_detail="bad value for ada@example.com" if status == S.DEAD else "",
    )


@pytest.fixture
def ada():
    """Ada, known locally by email, external_id and Klaviyo id; and Bob, who stays."""
    link = KlaviyoProfileLink.objects.create(
        email="Ada@Example.com", external_id="42", klaviyo_id="01ADA"
    )
    bob = KlaviyoProfileLink.objects.create(email="bob@example.com", klaviyo_id="01BOB")
    news = KlaviyoList.objects.create(klaviyo_id="L1", name="News")
    ListMembership.objects.create(klaviyo_list=news, profile=link)
    ListMembership.objects.create(klaviyo_list=news, profile=bob)
    profile = {"email": "ada@example.com", "first_name": "Ada"}
    rows = {
        "pending": row("email:ada@example.com", S.PENDING, {"profile": profile}),
        "dead": row("external_id:42", S.DEAD, {"profile": {"external_id": "42"}}),
        "sent": row("id:01ADA", S.SENT, {"profile": {"id": "01ADA"}, "metric": "Placed Order"}),
        "bob": row("email:bob@example.com", S.PENDING, {"profile": {"email": "bob@example.com"}}),
    }
    delivery = WebhookDelivery.objects.create(body='{"data": [{"email": "ada@example.com"}]}')
    other = WebhookDelivery.objects.create(body='{"data": [{"email": "bob@example.com"}]}')
    WebhookItem.objects.create(
        delivery=delivery,
        external_id="w1",
        topic="event:klaviyo.unsubscribed_from_list",
        payload={"attributes": {"profile": {"email": "ADA@example.com", "id": "01ADA"}}},
    )
    WebhookItem.objects.create(
        delivery=other,
        external_id="w2",
        topic="event:klaviyo.unsubscribed_from_list",
        payload={"attributes": {"profile": {"email": "bob@example.com"}}},
    )
    return {"link": link, "bob": bob, "rows": rows, "delivery": delivery, "other": other}


def test_forget_profile_erases_the_person_from_the_local_mirror(ada):
    deletion = django_klaviyo.forget_profile(email="ada@example.com")

    # Klaviyo's deletion request is queued, carrying only the identifier it needs.
    assert deletion.kind == K.PROFILE_DELETION
    assert deletion.payload == {"profile": {"email": "ada@example.com"}}
    # Link and memberships gone; Bob's stay.
    assert list(KlaviyoProfileLink.objects.all()) == [ada["bob"]]
    assert list(ListMembership.objects.values_list("profile_id", flat=True)) == [ada["bob"].pk]
    # Rows not yet sent are deleted, whichever of her identifiers keyed them.
    remaining = set(OutboxEvent.objects.values_list("pk", flat=True))
    rows = ada["rows"]
    assert rows["pending"].pk not in remaining and rows["dead"].pk not in remaining
    # The sent row stays, emptied.
    rows["sent"].refresh_from_db()
    assert rows["sent"].payload == {"erased": True} and rows["sent"].profile_key == ""
    rows["bob"].refresh_from_db()
    assert rows["bob"].payload == {"profile": {"email": "bob@example.com"}}
    # Webhook items and deliveries mentioning her are redacted, Bob's kept.
    assert WebhookItem.objects.get(external_id="w1").payload == {"erased": True}
    assert WebhookItem.objects.get(external_id="w2").payload["attributes"]
    ada["delivery"].refresh_from_db()
    ada["other"].refresh_from_db()
    assert "ada@" not in ada["delivery"].body
    assert "bob@example.com" in ada["other"].body


def test_forgetting_by_klaviyo_id_finds_her_other_identifiers(ada):
    django_klaviyo.forget_profile(profile_id="01ADA")
    assert not KlaviyoProfileLink.objects.filter(pk=ada["link"].pk).exists()
    assert not OutboxEvent.objects.filter(profile_key="email:ada@example.com").exists()
    assert WebhookItem.objects.get(external_id="w1").payload == {"erased": True}


def test_a_bad_identifier_erases_nothing(ada):
    with pytest.raises(KlaviyoValidationError):
        django_klaviyo.forget_profile(email="not an email")
    assert KlaviyoProfileLink.objects.count() == 2
    assert OutboxEvent.objects.count() == 4


def test_with_klaviyo_disabled_the_local_erasure_still_happens(ada):
    with override_settings(KLAVIYO={**settings.KLAVIYO, "ENABLED": False}):
        assert django_klaviyo.forget_profile(email="ada@example.com") is None
    assert not KlaviyoProfileLink.objects.filter(pk=ada["link"].pk).exists()
    assert not OutboxEvent.objects.filter(kind=K.PROFILE_DELETION).exists()


def test_klaviyo_forget_command_reports_what_it_erased(ada):
    out = StringIO()
    call_command("klaviyo_forget", "--email", "ada@example.com", stdout=out)
    text = out.getvalue()
    assert "Deletion request queued" in text
    assert "profile links deleted: 1" in text
    assert "list memberships deleted: 1" in text
    assert "unsent outbox rows deleted: 2" in text
    assert "sent outbox rows redacted: 1" in text
    assert "webhook items redacted: 1" in text
    assert "webhook deliveries redacted: 1" in text


def test_klaviyo_forget_needs_a_valid_identifier(db):
    with pytest.raises(CommandError, match="email"):
        call_command("klaviyo_forget", "--email", "nope", stdout=StringIO())
