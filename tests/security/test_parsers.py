"""JSON from outside is refused past limits.MAX_INPUT_DEPTH levels with a 400, never a
500 (issue 19, case 5): the storefront events, back in stock, signed system webhooks and
flow webhooks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from django.test import Client
from django.utils import timezone

from django_klaviyo.models import OutboxEvent, WebhookDelivery
from django_klaviyo.rules import limits
from tests.security.helpers import (
    BACK_IN_STOCK,
    EVENTS,
    PRODUCT,
    browse_events,
    post_json,
    product,
    subscriptions,
    visitor,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_rate_limits")]

SECRET = "whsec-test-secret-0123456789"
FLOW_TOKEN = "flow-token-0123456789abcdef"
HEADER_TS = "Fri, 04 Sep 2026 18:16:52 GMT"


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def deep_post(url: str, depth: int):
    product()
    client = Client(raise_request_exception=False, enforce_csrf_checks=True)
    client.get("/admin/login/")
    return post_json(client, url, '{"event": ' + nested(depth) + "}")


@pytest.mark.parametrize("url", [EVENTS, BACK_IN_STOCK])
# 30,000 levels fit under the body cap and overflowed DRF's parser (a 500).
@pytest.mark.parametrize("depth", [30_000, limits.MAX_INPUT_DEPTH + 1])
def test_deep_json_to_a_storefront_endpoint_is_a_400(url, depth):
    answer = deep_post(url, depth)

    assert answer.status_code == 400, answer.content[:200]
    assert "nested" in answer.json()["detail"]
    assert browse_events() == subscriptions() == 0


@pytest.mark.parametrize("url", [EVENTS, BACK_IN_STOCK])
def test_the_issue_s_100000_levels_are_refused_by_size_first(url):
    answer = deep_post(url, 100_000)

    assert answer.status_code == 413, answer.content[:200]
    assert browse_events() == subscriptions() == 0


def test_json_at_the_depth_limit_is_parsed_as_before():
    # {"event": [[...]]}: the serializer, not the parser, refuses it, naming the field.
    answer = post_json(visitor(), EVENTS, '{"event": ' + nested(limits.MAX_INPUT_DEPTH - 2) + "}")
    assert answer.status_code == 400
    assert "event" in answer.json()


def signed_post(client: Client, body: bytes):
    signature = hmac.new(SECRET.encode(), body + HEADER_TS.encode(), hashlib.sha256).hexdigest()
    headers = {
        "Klaviyo-Webhook-Id": "hook-1",
        "Klaviyo-Timestamp": HEADER_TS,
        "Klaviyo-Signature": signature,
    }
    return client.generic(
        "POST", "/klaviyo/webhooks/", body, content_type="application/json", headers=headers
    )


def delivery(*, meta_extra: str = "", payload: str = "{}") -> bytes:
    sent = timezone.now().astimezone(dt.timezone.utc).isoformat()
    meta = f'"timestamp": "{sent}", "klaviyo_webhook_id": "hook-1"{meta_extra}'
    item = f'{{"external_id": "e1", "topic": "event:klaviyo.opened_email", "payload": {payload}}}'
    return f'{{"meta": {{{meta}}}, "data": [{item}]}}'.encode()


@pytest.mark.parametrize(
    "body",
    [
        delivery(meta_extra=', "x": ' + nested(600)),
        # A NUL escape makes the receiver copy the payload to make it storable.
        delivery(payload='{"a": ' + nested(600, '"\\u0000"') + "}"),
        delivery(payload='{"a": ' + nested(limits.MAX_INPUT_DEPTH) + "}"),
    ],
    ids=["meta", "payload-with-nul", "just-past-the-limit"],
)
def test_a_deep_signed_webhook_is_a_400(body):
    client = Client(raise_request_exception=False)

    answer = signed_post(client, body)

    assert answer.status_code == 400, answer.content[:200]
    assert "nested" in answer.json()["detail"]
    assert WebhookDelivery.objects.count() == 0


def test_a_signed_webhook_within_the_limit_is_stored():
    body = delivery(payload='{"a": ' + nested(limits.MAX_INPUT_DEPTH - 6, '"\\u0000"') + "}")
    answer = signed_post(Client(), body)
    assert answer.status_code == 200, answer.content[:300]


def test_a_deep_flow_webhook_is_a_400():
    client = Client(raise_request_exception=False)
    body = json.dumps({"id": "x"})[:-1] + ', "deep": ' + nested(600) + "}"

    answer = client.post(
        "/klaviyo/webhooks/flow/",
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {FLOW_TOKEN}"},
    )

    assert answer.status_code == 400, answer.content[:200]
    assert WebhookDelivery.objects.count() == 0


def test_a_deeply_nested_klaviyo_cookie_is_ignored_not_a_500():
    # __kla_id is base64 JSON from the browser; 1,500 levels fit in its 4,096 characters.
    cookie = base64.b64encode(nested(1500).encode()).decode()
    client = visitor()
    client.cookies["__kla_id"] = cookie

    answer = post_json(client, EVENTS, {"event": "viewed_product", "product": PRODUCT})

    assert answer.status_code == 202
    assert "anonymous_id" in browse_event_profile()


def browse_event_profile() -> dict:
    return OutboxEvent.objects.get(kind=OutboxEvent.Kind.EVENT).payload["profile"]
