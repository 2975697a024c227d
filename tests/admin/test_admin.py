"""The admin: dashboard, actions, read-only detail pages, permissions, webhook log."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from django_klaviyo.models import (
    Consent,
    KlaviyoCampaign,
    KlaviyoFlow,
    KlaviyoList,
    KlaviyoProfileLink,
    ListMembership,
    OutboxEvent,
    WebhookDelivery,
    WebhookItem,
)
from django_klaviyo.webhooks.signals import klaviyo_webhook_event

pytestmark = pytest.mark.django_db
S = OutboxEvent.Status
CHANGELIST = "admin:django_klaviyo_outboxevent_changelist"


def row(status: str, **fields) -> OutboxEvent:
    defaults = {
        "kind": OutboxEvent.Kind.EVENT,
        "metric": "Placed Order",
        "payload": {
            "metric": "Placed Order",
            "profile": {"email": "ann@example.com"},
            "properties": {"Total": 12.5},
        },
        "profile_key": "email:ann@example.com",
        "attempts": 8,
    }
    return OutboxEvent.objects.create(status=status, **{**defaults, **fields})


@pytest.fixture(autouse=True)
def _no_user_tracking(settings):
    # Users created here must not enqueue profile upserts of their own.
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(user)
    return client


def run_action(client, action: str, *objs, model: str = "outboxevent"):
    url = reverse(f"admin:django_klaviyo_{model}_changelist")
    data = {"action": action, "_selected_action": [str(o.pk) for o in objs]}
    return client.post(url, data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_dashboard_renders_counts(staff):
    now = timezone.now()
    row(S.DEAD, last_error_code="invalid")
    row(S.DEAD, last_error_code="invalid", kind=OutboxEvent.Kind.SUBSCRIBE)
    row(S.RETRYING, last_error_code="throttled", next_attempt_at=now - dt.timedelta(hours=2))
    row(S.SENT, sent_at=now - dt.timedelta(minutes=5))
    response = staff.get(reverse(CHANGELIST))
    assert response.status_code == 200
    stats = response.context["dashboard"]
    assert {status: n.value for status, n in stats.by_status.items() if n} == {
        "dead": 2,
        "retrying": 1,
        "sent": 1,
    }
    assert stats.sent_last_hour.value == 1
    assert stats.top_error_codes == [("invalid", 2), ("throttled", 1)]
    html = response.content.decode()
    assert 'id="klaviyo-dashboard"' in html
    assert '<td class="num klaviyo-dead" id="klaviyo-dead">2</td>' in html
    assert '<td class="num" id="klaviyo-sent-hour">1</td>' in html
    assert "2\xa0hours" in html  # age of the oldest due row
    assert '?last_error_code=invalid">invalid</a></th><td class="num">2</td>' in html
    assert '<th scope="row">Subscribe</th>' in html


def test_changelist_stays_cheap(staff, django_assert_max_num_queries):
    for n in range(30):
        row(S.SENT if n % 2 else S.DEAD, profile_key=f"email:u{n}@example.com")
    with django_assert_max_num_queries(16):
        assert staff.get(reverse(CHANGELIST)).status_code == 200


def test_retry_now_action(staff):
    dead, sent = row(S.DEAD, next_attempt_at=timezone.now() + dt.timedelta(days=1)), row(S.SENT)
    response = run_action(staff, "retry_now", dead, sent)
    assert response.status_code == 200
    assert messages_of(response) == [
        "1 outbox event was queued for an immediate retry.",
        "1 selected outbox event was left alone (its status does not allow it).",
    ]
    dead.refresh_from_db()
    assert (
        dead.status == S.PENDING and dead.attempts == 0 and dead.next_attempt_at <= timezone.now()
    )


def test_requeue_dead_and_discard_actions(staff):
    dead1, dead2, sending = row(S.DEAD), row(S.DEAD), row(S.SENDING)
    response = run_action(staff, "requeue_dead", dead1, dead2)
    assert messages_of(response) == ["2 dead outbox events were requeued."]
    assert OutboxEvent.objects.filter(status=S.PENDING).count() == 2
    response = run_action(staff, "discard", dead1, sending)
    assert messages_of(response) == [
        "1 outbox event was discarded.",
        "1 selected outbox event was left alone (its status does not allow it).",
    ]
    assert not OutboxEvent.objects.filter(pk=dead1.pk).exists()
    assert OutboxEvent.objects.filter(pk=sending.pk).exists()


def test_actions_are_post_only(staff):
    dead = row(S.DEAD)
    url = reverse(CHANGELIST)
    staff.get(url, {"action": "retry_now", "_selected_action": [str(dead.pk)]})
    dead.refresh_from_db()
    assert dead.status == S.DEAD


def test_delete_selected_is_replaced_by_discard(staff):
    actions = staff.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices
    names = [name for name, _ in actions]
    assert "discard" in names and "delete_selected" not in names


def test_detail_page_is_read_only_with_pretty_payload(staff):
    obj = row(
        S.DEAD,
        last_error_code="invalid",
        last_error_detail="email is not valid",
        last_error_status=400,
    )
    response = staff.get(reverse("admin:django_klaviyo_outboxevent_change", args=[obj.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "&quot;Total&quot;: 12.5" in html and "<pre" in html
    assert "email is not valid" in html
    assert 'name="_save"' not in html
    assert 'name="status"' not in html and 'name="payload"' not in html
    # A POST to the detail page changes nothing.
    staff.post(
        reverse("admin:django_klaviyo_outboxevent_change", args=[obj.pk]), {"status": "pending"}
    )
    obj.refresh_from_db()
    assert obj.status == S.DEAD
    assert staff.get(reverse("admin:django_klaviyo_outboxevent_add")).status_code == 403


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("ANN@example.com", "ann"),
        ("email:ann@example.com", "ann"),
        ("42", "ext"),
        ("+1 415 555 0100", "phone"),
    ],
)
def test_search_by_profile_identifier(staff, term, expected):
    objs = {
        "ann": row(S.SENT),
        "ext": row(S.SENT, profile_key="external_id:42"),
        "phone": row(S.SENT, profile_key="phone_number:+14155550100"),
        "bob": row(S.SENT, profile_key="email:bob@example.com", unique_id="order-7"),
    }
    response = staff.get(reverse(CHANGELIST), {"q": term})
    found = list(response.context["cl"].result_list)
    assert found == [objs[expected]]


def test_filters(staff):
    dead = row(S.DEAD, last_error_code="invalid")
    row(S.SENT)
    response = staff.get(
        reverse(CHANGELIST), {"status__exact": "dead", "last_error_code": "invalid"}
    )
    assert list(response.context["cl"].result_list) == [dead]


def test_non_staff_users_are_refused(client):
    user = get_user_model().objects.create_user("shopper", password="pw")
    client.force_login(user)
    dead = row(S.DEAD)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.post(reverse(CHANGELIST), {"action": "retry_now", "_selected_action": [str(dead.pk)]})
    dead.refresh_from_db()
    assert dead.status == S.DEAD


def test_staff_without_model_permissions_are_refused(client):
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(user)
    dead = row(S.DEAD)
    assert client.get(reverse(CHANGELIST)).status_code == 403
    # View permission alone: the list shows, but the change actions are not offered.
    user.user_permissions.add(Permission.objects.get(codename="view_outboxevent"))
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert response.context["action_form"] is None or "retry_now" not in dict(
        response.context["action_form"].fields["action"].choices
    )
    run_action(client, "retry_now", dead)
    dead.refresh_from_db()
    assert dead.status == S.DEAD


def test_mirror_pages_render(staff):
    user = get_user_model().objects.create_user("ann", email="ann@example.com")
    link = KlaviyoProfileLink.objects.create(
        user=user, email="ann@example.com", klaviyo_id="01ANN", email_consent=Consent.SUBSCRIBED
    )
    newsletter = KlaviyoList.objects.create(klaviyo_id="LIST1", name="Newsletter")
    ListMembership.objects.create(klaviyo_list=newsletter, profile=link, synced_member=True)
    KlaviyoCampaign.objects.create(
        klaviyo_id="C1", name="Spring sale", channel="email", raw={"id": "C1"}
    )
    KlaviyoFlow.objects.create(klaviyo_id="F1", name="Welcome series", raw={"id": "F1"})
    pages = {
        reverse("admin:django_klaviyo_klaviyoprofilelink_changelist"): "01ANN",
        reverse(
            "admin:django_klaviyo_klaviyoprofilelink_change", args=[link.pk]
        ): "Newsletter (LIST1)",
        reverse("admin:django_klaviyo_klaviyolist_changelist"): "Newsletter",
        reverse("admin:django_klaviyo_listmembership_changelist"): "Newsletter",
        reverse("admin:django_klaviyo_klaviyocampaign_changelist"): "Spring sale",
        reverse("admin:django_klaviyo_klaviyoflow_changelist"): "Welcome series",
    }
    for url, text in pages.items():
        response = staff.get(url)
        assert response.status_code == 200, url
        assert text in response.content.decode(), url
    assert staff.get(reverse("admin:django_klaviyo_klaviyocampaign_add")).status_code == 403


def test_webhook_delivery_page_shows_pretty_body_and_redacted_headers(staff):
    body = json.dumps({"meta": {"klaviyo_webhook_id": "W1"}, "data": []})
    delivery = WebhookDelivery.objects.create(
        webhook_id="W1",
        body=body,
        valid=True,
        headers={"Klaviyo-Signature": "[redacted]", "Content-Type": "application/json"},
    )
    response = staff.get(reverse("admin:django_klaviyo_webhookdelivery_change", args=[delivery.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "&quot;klaviyo_webhook_id&quot;: &quot;W1&quot;" in html
    assert "[redacted]" in html
    assert f"delivery__id__exact={delivery.pk}" in html


def test_reprocess_action_reruns_handlers(staff):
    delivery = WebhookDelivery.objects.create(webhook_id="W1", valid=True)
    link = KlaviyoProfileLink.objects.create(email="ann@example.com", klaviyo_id="PROF1")
    payload = {
        "data": {
            "attributes": {"datetime": "2026-04-13T22:16:46+00:00", "event_properties": {}},
            "relationships": {"profile": {"data": {"type": "profile", "id": "PROF1"}}},
        }
    }
    item = WebhookItem.objects.create(
        delivery=delivery,
        external_id="E1",
        topic="event:klaviyo.subscribed_to_email_marketing",
        payload=payload,
        error="earlier failure",
    )
    seen = []
    klaviyo_webhook_event.connect(
        lambda sender, item, **kw: seen.append(item.external_id), dispatch_uid="t-seen", weak=False
    )
    try:
        response = run_action(staff, "reprocess", item, model="webhookitem")
    finally:
        klaviyo_webhook_event.disconnect(dispatch_uid="t-seen")
    assert messages_of(response) == ["1 webhook item was processed again."]
    assert seen == ["E1"]
    item.refresh_from_db()
    link.refresh_from_db()
    assert item.processed and item.error == ""
    assert link.email_consent == Consent.SUBSCRIBED


def test_reprocess_reports_failures(staff):
    delivery = WebhookDelivery.objects.create(webhook_id="W1", valid=True)
    item = WebhookItem.objects.create(delivery=delivery, external_id="E2", topic="t", payload={})

    def broken(sender, **kw):
        raise ValueError("nope")

    klaviyo_webhook_event.connect(broken, dispatch_uid="t-broken")
    try:
        response = run_action(staff, "reprocess", item, model="webhookitem")
    finally:
        klaviyo_webhook_event.disconnect(dispatch_uid="t-broken")
    assert messages_of(response) == ["1 webhook item failed in its handlers; see its error."]
    item.refresh_from_db()
    assert not item.processed and "ValueError: nope" in item.error


def test_an_unsubscribe_skipped_as_off_list_shows_its_note(staff):
    note = "Not on list LIST1, nothing to do: no unsubscribe sent."
    skipped = row(
        S.SENT,
        kind=OutboxEvent.Kind.UNSUBSCRIBE,
        metric="",
        payload={"profile": {"email": "ann@example.com"}, "channels": ["email"]},
        outcome_note=note,
    )
    listing = staff.get(reverse(CHANGELIST)).content.decode()
    assert note in listing
    detail = staff.get(reverse("admin:django_klaviyo_outboxevent_change", args=[skipped.pk]))
    assert note in detail.content.decode()


def test_membership_pages_show_list_scoped_consent(staff):
    link = KlaviyoProfileLink.objects.create(
        email="ann@example.com", email_consent=Consent.SUBSCRIBED
    )
    newsletter = KlaviyoList.objects.create(klaviyo_id="LIST1", name="Newsletter")
    membership = ListMembership.objects.create(
        klaviyo_list=newsletter, profile=link, email_consent=Consent.UNSUBSCRIBED
    )
    changelist = reverse("admin:django_klaviyo_listmembership_changelist")
    response = staff.get(changelist, {"email_consent__exact": "unsubscribed"})
    assert list(response.context["cl"].result_list) == [membership]
    assert "Unsubscribed" in response.content.decode()
    profile_page = staff.get(
        reverse("admin:django_klaviyo_klaviyoprofilelink_change", args=[link.pk])
    ).content.decode()
    # The link says subscribed (global); its Newsletter membership says unsubscribed.
    assert "Subscribed" in profile_page and "Unsubscribed" in profile_page
