"""The browse-events endpoint: what it records, for whom, and what it refuses."""

from __future__ import annotations

import base64
import json

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from shop.models import Cart

from django_klaviyo.models import OutboxEvent
from django_klaviyo.storefront.identity import kla_cookie_ids

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.projects.storefront_urls")]

PRODUCT = {
    "product_id": "TEE-BLK",
    "sku": "TEE-BLK",
    "name": "Black T-shirt",
    "price": "19.99",
    "product_url": "https://shop.example.com/p/TEE-BLK",
    "image_url": "https://shop.example.com/img/TEE-BLK.png",
    "categories": ["Apparel"],
    "brand": "Example Co",
}


@pytest.fixture(autouse=True)
def fresh_throttle():
    cache.clear()  # the throttle's history lives in the default cache
    yield
    cache.clear()


@pytest.fixture
def visitor():
    """A browser with a CSRF cookie, as after loading any page with {% klaviyo_js %}."""
    client = Client(enforce_csrf_checks=True)
    client.get(reverse("shop:products"))
    return client


def post(client, body, **extra):
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(
        reverse("klaviyo-storefront-events"),
        json.dumps(body),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
        **extra,
    )


def kla_cookie(data):
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_viewed_product_is_recorded_for_an_anonymous_visitor(visitor):
    answer = post(visitor, {"event": "viewed_product", "product": PRODUCT})

    assert answer.status_code == 202
    row = OutboxEvent.objects.get()
    assert answer.json() == {"event": "viewed_product", "outbox_id": str(row.pk)}
    assert row.metric == "Viewed Product"
    assert row.payload["properties"] == {
        "ProductID": "TEE-BLK",
        "SKU": "TEE-BLK",
        "ProductName": "Black T-shirt",
        "Price": 19.99,
        "URL": "https://shop.example.com/p/TEE-BLK",
        "ImageURL": "https://shop.example.com/img/TEE-BLK.png",
        "Categories": ["Apparel"],
        "Brand": "Example Co",
    }
    anonymous_id = row.payload["profile"]["anonymous_id"]
    # The visitor keeps that id: the next event is on the same anonymous profile.
    post(visitor, {"event": "viewed_product", "product": PRODUCT})
    second = OutboxEvent.objects.exclude(pk=row.pk).get()
    assert second.payload["profile"] == {"anonymous_id": anonymous_id}


def test_klaviyo_cookie_and_email_link_identify_the_visitor(visitor):
    visitor.cookies["__kla_id"] = kla_cookie({"cid": "ZmE3NmQ1", "$referrer": {"ts": 1}})
    # A click from a Klaviyo email lands with _kx in the query string.
    visitor.get(reverse("shop:products"), {"_kx": "abc123.XYZ"})

    post(visitor, {"event": "viewed_product", "product": PRODUCT})

    assert OutboxEvent.objects.get().payload["profile"] == {
        "anonymous_id": "ZmE3NmQ1",
        "_kx": "abc123.XYZ",
    }


def test_a_percent_encoded_klaviyo_cookie_is_read():
    raw = kla_cookie({"cid": "Zm9vY"})
    assert raw.endswith("=")
    assert kla_cookie_ids(raw.replace("=", "%3D")) == {"anonymous_id": "Zm9vY"}


@pytest.mark.parametrize(
    "raw",
    ["", "not-base64!", base64.b64encode(b"[1, 2]").decode(), kla_cookie({"cid": "<script>"})],
)
def test_an_unreadable_klaviyo_cookie_is_ignored(raw):
    assert kla_cookie_ids(raw) == {}


def test_added_to_cart_carries_the_whole_cart_and_a_signed_cart_link(visitor, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "CART_TOKEN": "shop.cart.cart_token"}
    Cart.objects.create(token="cart-token-1")
    session = visitor.session
    session["shop_cart_token"] = "cart-token-1"
    session.save()
    mug = {**PRODUCT, "product_id": "MUG", "sku": "MUG", "name": "Mug", "price": "9.50"}

    answer = post(
        visitor,
        {
            "event": "added_to_cart",
            "item": {**mug, "quantity": 2},
            "items": [{**PRODUCT, "quantity": 1}, {**mug, "quantity": 2}],
            "currency": "USD",
        },
    )

    assert answer.status_code == 202, answer.content
    row = OutboxEvent.objects.get()
    assert row.metric == "Added to Cart"
    assert row.payload["value"] == 38.99
    assert row.payload["value_currency"] == "USD"
    properties = row.payload["properties"]
    assert properties["AddedItemProductName"] == "Mug"
    assert properties["AddedItemQuantity"] == 2
    assert properties["ItemNames"] == ["Black T-shirt", "Mug"]
    assert [item["RowTotal"] for item in properties["Items"]] == [19.99, 19.0]
    assert properties["CheckoutURL"].startswith("http://testserver/klaviyo/storefront/cart/")
    assert "cart-token-1" not in properties["CheckoutURL"].split("/cart/")[0]


def test_started_checkout_names_the_store_s_cart_not_the_visitor_s_claim(visitor, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "CART_TOKEN": "shop.cart.cart_token"}
    Cart.objects.create(token="cart-token-2")
    session = visitor.session
    session["shop_cart_token"] = "cart-token-2"
    session.save()

    answer = post(
        visitor,
        {"event": "started_checkout", "items": [PRODUCT], "checkout_id": "someone-elses"},
    )

    assert answer.status_code == 202, answer.content
    properties = OutboxEvent.objects.get().payload["properties"]
    assert properties["CheckoutId"] != "someone-elses"
    assert "cart-token-2" not in json.dumps(properties["CheckoutId"])
    assert properties["CheckoutURL"].startswith("http://testserver/klaviyo/storefront/cart/")


def test_started_checkout_without_a_cart_hook_uses_the_given_id(visitor):
    answer = post(visitor, {"event": "started_checkout", "items": [PRODUCT], "checkout_id": "c-42"})
    assert answer.status_code == 202
    assert OutboxEvent.objects.get().payload["properties"]["CheckoutId"] == "c-42"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"event": "viewed_product"}, ["product"]),
        ({"event": "bought_a_yacht", "product": PRODUCT}, ["event"]),
        (
            {"event": "viewed_product", "product": {**PRODUCT, "price": "cheap"}},
            ["product", "price"],
        ),
        ({"event": "viewed_product", "product": {**PRODUCT, "price": "-1"}}, ["product", "price"]),
        (
            {"event": "viewed_product", "product": {**PRODUCT, "product_url": "javascript:1"}},
            ["product", "product_url"],
        ),
        ({"event": "viewed_product", "product": {**PRODUCT, "name": ""}}, ["product", "name"]),
        ({"event": "added_to_cart", "item": {**PRODUCT, "quantity": 0}}, ["item", "quantity"]),
        ({"event": "added_to_cart", "item": PRODUCT, "currency": "usd"}, ["currency"]),
        ({"event": "started_checkout", "checkout_id": "c-1"}, ["items"]),
        ({"event": "started_checkout", "items": [PRODUCT]}, ["checkout_id"]),
        (
            {"event": "started_checkout", "items": [PRODUCT], "checkout_id": "a b"},
            ["checkout_id"],
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(visitor, body, path):
    answer = post(visitor, body)

    assert answer.status_code == 400
    errors = answer.json()
    for key in path:
        assert key in errors, errors
        errors = errors[key]
    assert OutboxEvent.objects.count() == 0


def test_a_post_without_the_csrf_token_is_refused_for_visitors_too(visitor):
    answer = visitor.post(
        reverse("klaviyo-storefront-events"),
        json.dumps({"event": "viewed_product", "product": PRODUCT}),
        content_type="application/json",
    )
    assert answer.status_code == 403
    assert "CSRF" in answer.json()["detail"]
    assert OutboxEvent.objects.count() == 0


def test_each_visitor_is_throttled_on_their_own(visitor, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_THROTTLE_RATE": "2/min"}
    body = {"event": "viewed_product", "product": PRODUCT}
    assert [post(visitor, body).status_code for _ in range(3)] == [202, 202, 429]

    other = Client(enforce_csrf_checks=True)
    other.get(reverse("shop:products"))
    assert post(other, body).status_code == 202
    assert OutboxEvent.objects.count() == 3


def test_disabled_klaviyo_records_nothing_and_says_so(visitor, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "ENABLED": False}
    answer = post(visitor, {"event": "viewed_product", "product": PRODUCT})
    assert answer.status_code == 202
    assert answer.json() == {"event": "viewed_product", "outbox_id": None}
    assert OutboxEvent.objects.count() == 0


def test_a_client_dropping_its_session_is_held_back_by_its_address(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_ADDRESS_THROTTLE_RATE": "3/min"}
    body = {"event": "viewed_product", "product": PRODUCT}
    statuses = []
    for _ in range(4):
        fresh = Client(enforce_csrf_checks=True)  # a new session every time
        fresh.get(reverse("shop:products"))
        statuses.append(post(fresh, body).status_code)
    assert statuses == [202, 202, 202, 429]


def test_a_refusal_by_the_event_rules_is_a_400_naming_the_field(visitor, settings):
    # The rules (not the serializer) refuse a metric name of 128+ characters.
    settings.KLAVIYO = {**settings.KLAVIYO, "METRIC_NAMES": {"viewed_product": "V" * 200}}
    answer = post(visitor, {"event": "viewed_product", "product": PRODUCT})
    assert answer.status_code == 400
    assert list(answer.json()) == ["metric"]
    assert OutboxEvent.objects.count() == 0
