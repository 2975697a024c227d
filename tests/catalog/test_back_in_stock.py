"""Back in stock: a shopper subscribes to a sold-out variant (public API, DRF endpoint,
template tag form); the subscription reaches Klaviyo (the sandbox) as a server-side
back-in-stock subscription, and the variant's inventory follows the store's stock so
Klaviyo's back-in-stock flow fires when it returns."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.template import Context, Template
from django.test import Client, RequestFactory
from shop.models import Product

import django_klaviyo as klaviyo
from django_klaviyo.catalog import subscribe_back_in_stock
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.klaviyo_fixtures import flush_now

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status
VARIANT = "$custom:::$default:::"
ENDPOINT = "/klaviyo/back-in-stock/"

# Rate-limit windows and DRF throttle history live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


def sold_out(sku: str = "MUG-1") -> Product:
    return Product.objects.create(
        name="Blue mug",
        sku=sku,
        price=Decimal("12.50"),
        url=f"https://shop.example/p/{sku}",
        categories=[],
        inventory=0,
    )


def bis_rows() -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(kind=Kind.BACK_IN_STOCK))


def csrf_client(user: Any = None) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.get("/admin/login/")  # sets the csrftoken cookie
    return client, client.cookies["csrftoken"].value


# --- the public API and the flush ------------------------------------------------------


def test_a_subscription_reaches_klaviyo_and_the_restock_reaches_the_variant(klaviyo_sandbox):
    mug = sold_out()
    flush_now()

    klaviyo.subscribe_back_in_stock({"email": " ada@example.com "}, mug)
    flush_now()
    mug.inventory = 8
    mug.save()
    flush_now()

    store = catalog_store(klaviyo_sandbox.state)
    (subscription,) = store.back_in_stock_subscriptions()
    assert subscription["variant_id"] == f"{VARIANT}MUG-1"
    assert subscription["channels"] == ["EMAIL"]
    assert subscription["profile"] == {"email": "ada@example.com"}
    assert store.variants()[f"{VARIANT}MUG-1"]["inventory_quantity"] == 8
    assert OutboxEvent.objects.exclude(status=Status.SENT).count() == 0


def test_a_subscription_to_a_variant_klaviyo_does_not_know_is_dead_with_its_reason(
    klaviyo_sandbox,
):
    subscribe_back_in_stock({"email": "ada@example.com"}, "NOT-IN-CATALOG")

    flush_now()

    (row,) = bis_rows()
    assert row.status == Status.DEAD
    assert row.last_error_status == 404
    assert row.last_error_code == "not_found"
    assert f"{VARIANT}NOT-IN-CATALOG" in row.last_error_detail


@pytest.mark.parametrize(
    ("profile", "channels", "field"),
    [
        ({"email": "not-an-email"}, ["email"], "email"),
        ({"phone_number": "+14155550100"}, ["email"], "email"),
        ({"email": "ada@example.com"}, ["sms"], "phone_number"),
        ({"email": "ada@example.com"}, ["fax"], "channels"),
        ({"email": "ada@example.com"}, [], "channels"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(profile, channels, field):
    with pytest.raises(KlaviyoValidationError) as caught:
        subscribe_back_in_stock(profile, "MUG-1", channels)

    assert caught.value.field == field
    assert not bis_rows()


# --- the endpoint -----------------------------------------------------------------------


def test_an_anonymous_shopper_subscribes_through_the_endpoint():
    sold_out()
    client, token = csrf_client()

    response = client.post(
        ENDPOINT,
        {"variant": "MUG-1", "email": "ada@example.com"},
        headers={"X-CSRFToken": token},
    )

    assert response.status_code == 202, response.content
    (row,) = bis_rows()
    assert row.payload == {
        "profile": {"email": "ada@example.com"},
        "variant": "MUG-1",
        "channels": ["EMAIL"],
    }


def test_a_logged_in_user_is_subscribed_with_their_own_email():
    sold_out()
    user = get_user_model().objects.create_user("ada", email="ada@example.com", password="x")
    client, token = csrf_client(user)

    response = client.post(ENDPOINT, {"variant": "MUG-1"}, headers={"X-CSRFToken": token})

    assert response.status_code == 202, response.content
    (row,) = bis_rows()
    assert row.payload["profile"]["email"] == "ada@example.com"


def test_a_post_without_the_csrf_token_is_refused_and_nothing_is_stored():
    sold_out()
    client, _token = csrf_client()

    response = client.post(ENDPOINT, {"variant": "MUG-1", "email": "ada@example.com"})

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not bis_rows()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"variant": "MUG-1", "email": "nope"}, "email"),
        ({"variant": "NO-SUCH-SKU", "email": "ada@example.com"}, "variant"),
        ({"email": "ada@example.com"}, "variant"),
        ({"variant": "MUG-1"}, "email"),
        ({"variant": "MUG-1", "email": "ada@example.com", "channels": ["fax"]}, "channels"),
        ({"variant": "MUG-1", "email": "ada@example.com", "channels": ["sms"]}, "phone_number"),
    ],
)
def test_bad_input_answers_400_naming_the_field(data, field):
    sold_out()
    client, token = csrf_client()

    response = client.post(
        ENDPOINT, data, content_type="application/json", headers={"X-CSRFToken": token}
    )

    assert response.status_code == 400
    assert field in response.json()
    assert not bis_rows()


def test_the_endpoint_is_throttled_per_visitor(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BACK_IN_STOCK_THROTTLE_RATE": "3/min"}
    sold_out()
    client, token = csrf_client()
    data = {"variant": "MUG-1", "email": "ada@example.com"}

    statuses = [
        client.post(ENDPOINT, data, headers={"X-CSRFToken": token}).status_code for _ in range(4)
    ]

    assert statuses == [202, 202, 202, 429]
    assert len(bis_rows()) == 3


# --- the template tag -------------------------------------------------------------------


def render_form(user: Any = None, library: str = "klaviyo", **request_attrs: Any) -> str:
    request = RequestFactory().get("/p/MUG-1")
    request.user = user or type("Anon", (), {"is_authenticated": False})()
    for name, value in request_attrs.items():
        setattr(request, name, value)
    template = Template(f"{{% load {library} %}}{{% klaviyo_back_in_stock_form mug %}}")
    return template.render(Context({"request": request, "mug": Product.objects.get()}))


def test_the_form_posts_the_variant_with_a_csrf_token_to_the_endpoint():
    sold_out()

    html = render_form()

    assert f'action="{ENDPOINT}"' in html
    assert 'name="variant" value="MUG-1"' in html
    assert 'name="csrfmiddlewaretoken" value="' in html
    assert 'type="email"' in html


def test_the_form_s_script_carries_the_csp_nonce():
    sold_out()

    html = render_form(csp_nonce="n0nce-123")

    assert '<script nonce="n0nce-123">' in html


def test_the_old_klaviyo_back_in_stock_library_still_loads_the_tag():
    sold_out()

    html = render_form(library="klaviyo_back_in_stock")

    assert f'action="{ENDPOINT}"' in html
    assert 'name="variant" value="MUG-1"' in html


def test_the_form_does_not_ask_a_logged_in_user_for_an_email():
    sold_out()
    user = get_user_model().objects.create_user("ada", email="ada@example.com")

    assert 'type="email"' not in render_form(user)
