"""A refused request leaves no session row (issue 19, case 8): before, every cookieless
post to the storefront endpoint wrote one, even when answered 429."""

from __future__ import annotations

import pytest
from django.contrib.sessions.models import Session

from django_klaviyo.models import OutboxEvent
from tests.security.helpers import EVENTS, VIEWED, post_json, visitor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_rate_limits")]


def test_throttled_cookieless_requests_write_no_session(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_ADDRESS_THROTTLE_RATE": "3/min"}
    assert Session.objects.count() == 0

    statuses = [post_json(visitor(), EVENTS, VIEWED).status_code for _ in range(10)]

    assert statuses == [202] * 3 + [429] * 7
    # One session per accepted visitor (it carries the anonymous id), none for the rest.
    assert Session.objects.count() == 3


@pytest.mark.parametrize(
    "body",
    [
        {"event": "viewed_product"},  # refused by the serializer
        {"event": "viewed_product", "product": {"product_id": "X", "name": "\x00" * 3}},
    ],
)
def test_rejected_cookieless_requests_write_no_session(body):
    answer = post_json(visitor(), EVENTS, body)

    assert answer.status_code == 400
    assert Session.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def test_a_refusal_by_the_event_rules_writes_no_session(settings):
    # The serializer passes; the rules refuse the metric name after the visitor's anonymous
    # id has been made: the new session must still not be saved.
    settings.KLAVIYO = {**settings.KLAVIYO, "METRIC_NAMES": {"viewed_product": "V" * 200}}

    assert post_json(visitor(), EVENTS, VIEWED).status_code == 400
    assert Session.objects.count() == 0


def test_an_accepted_visitor_keeps_one_session_across_events():
    client = visitor()
    for _ in range(3):
        assert post_json(client, EVENTS, VIEWED).status_code == 202
    assert Session.objects.count() == 1
    ids = {row.payload["profile"]["anonymous_id"] for row in OutboxEvent.objects.all()}
    assert len(ids) == 1
