"""The example shop's storefront pages and seed data (the browser test drives the rest)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from shop.models import Cart, Order, Product

from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.projects.storefront_urls")]


def test_seed_shop_creates_the_products_once(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    call_command("seed_shop", customers=0, orders=0, seed=1, stdout=StringIO())
    call_command("seed_shop", customers=0, orders=0, seed=1, stdout=StringIO())

    products = {p.sku: p for p in Product.objects.all()}
    assert set(products) == {"TEE-BLK", "MUG-WHT", "CAP-RED", "BAG-CNV", "STK-SET"}
    tee = products["TEE-BLK"]
    assert (tee.price, tee.categories, tee.brand) == (
        Decimal("19.99"),
        ["Apparel", "Tops"],
        "Northwind",
    )
    assert tee.url == "https://shop.example.com/p/TEE-BLK" and tee.inventory > 0
    assert products["STK-SET"].inventory == 0  # sold out, for the back-in-stock demo


@pytest.fixture
def tee():
    return Product.objects.create(
        sku="TEE-BLK", name="Black T-shirt", price=Decimal("19.99"), inventory=2
    )


def test_the_product_pages_use_the_tags(tee):
    listing = Client().get(reverse("shop:products")).content.decode()
    assert 'href="/store/p/TEE-BLK/"' in listing
    page = Client().get(tee.get_absolute_url()).content.decode()
    assert 'id="klaviyo-viewed-product"' in page
    assert "company_id=AbC123" in page


def embedded_event(html, element_id):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html)
    return json.loads(match.group(1)) if match else None


def test_the_category_page_lists_its_products_and_reports_viewed_category():
    Product.objects.create(
        sku="TEE-BLK", name="Black T-shirt", price=Decimal("9"), categories=["Apparel", "Tops"]
    )
    Product.objects.create(sku="MUG", name="Mug", price=Decimal("4"), categories=["Kitchen"])

    listing = Client().get(reverse("shop:products")).content.decode()
    assert 'href="/store/c/apparel/"' in listing and 'href="/store/c/kitchen/"' in listing
    page = Client().get(reverse("shop:category", args=["apparel"])).content.decode()

    assert "Black T-shirt" in page and "Mug" not in page
    event = embedded_event(page, "klaviyo-viewed-category")
    # The id is the slug the catalog sync gives the category, so the two match in Klaviyo.
    assert event["body"]["category"] == {
        "category_id": "apparel",
        "name": "Apparel",
        "url": "http://testserver/store/c/apparel/",
    }
    assert Client().get(reverse("shop:category", args=["nothing-here"])).status_code == 404


def test_the_search_page_reports_the_term_and_count_and_escapes_the_term():
    Product.objects.create(sku="MUG", name="White mug", price=Decimal("4"))
    Product.objects.create(sku="MUG-2", name="Blue Mug", price=Decimal("5"))

    page = Client().get(reverse("shop:search"), {"q": "  mug "}).content.decode()
    assert "2 results for" in page
    event = embedded_event(page, "klaviyo-searched-site")
    assert event["body"] == {"event": "searched_site", "term": "mug", "result_count": 2}

    hostile = Client().get(reverse("shop:search"), {"q": "<script>alert(1)</script>"})
    html = hostile.content.decode()
    assert "<script>alert(1)" not in html
    assert "0 results for" in html
    assert embedded_event(html, "klaviyo-searched-site")["body"]["result_count"] == 0

    empty = Client().get(reverse("shop:search")).content.decode()
    assert embedded_event(empty, "klaviyo-searched-site") is None  # no search, no event


def test_adding_to_the_cart_reports_added_to_cart_once(tee):
    shopper = Client()
    answer = shopper.post(reverse("shop:cart-add", args=["TEE-BLK"]), follow=True)
    assert 'id="klaviyo-added-to-cart"' in answer.content.decode()
    assert Cart.objects.get().items == {"TEE-BLK": 1}
    # Reloading the cart page does not report it again.
    assert 'id="klaviyo-added-to-cart"' not in shopper.get(reverse("shop:cart")).content.decode()


def test_a_sold_out_product_page_offers_the_back_in_stock_form(tee):
    tee.inventory = 0
    tee.save()

    page = Client().get(tee.get_absolute_url()).content.decode()

    assert 'id="add-to-cart"' not in page
    assert 'action="/klaviyo/back-in-stock/"' in page
    assert 'name="variant" value="TEE-BLK"' in page


def test_a_sold_out_product_cannot_be_added(tee):
    tee.inventory = 0
    tee.save()
    answer = Client().post(reverse("shop:cart-add", args=["TEE-BLK"]), follow=True)
    assert "Black T-shirt is sold out." in answer.content.decode()
    assert not Cart.objects.exists()


def test_checkout_places_the_order_with_the_visitor_s_anonymous_id(tee, settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "ORDER_FIELDS": {"anonymous_id": "klaviyo_anonymous_id"},
    }
    shopper = Client()
    session = shopper.session
    session["klaviyo_anonymous_id"] = "visitor-1"
    session.save()
    shopper.post(reverse("shop:cart-add", args=["TEE-BLK"]))
    page = shopper.get(reverse("shop:checkout")).content.decode()
    assert 'id="klaviyo-started-checkout"' in page

    answer = shopper.post(reverse("shop:checkout"), {"email": "grace@example.com"}, follow=True)

    order = Order.objects.get()
    assert order.number in answer.content.decode()
    assert order.klaviyo_anonymous_id == "visitor-1"
    assert Cart.objects.get().checked_out
    placed = OutboxEvent.objects.get(metric="Placed Order")
    assert placed.payload["profile"] == {"email": "grace@example.com", "anonymous_id": "visitor-1"}


def test_an_order_page_is_only_shown_to_the_session_that_placed_it(tee):
    order = Order.objects.create(number="N-1", email="grace@example.com")
    assert Client().get(reverse("shop:order-done", args=[order.number])).status_code == 404


def test_demo_browse_puts_browsing_and_the_order_on_one_profile(klaviyo_sandbox, settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "ORDER_FIELDS": {"anonymous_id": "klaviyo_anonymous_id"},
        "CART_TOKEN": "shop.cart.cart_token",
        "RESTORE_CART": "shop.cart.restore_cart",
    }
    settings.ALLOWED_HOSTS = ["localhost"]
    Product.objects.create(
        sku="TEE-BLK",
        name="Black T-shirt",
        price=Decimal("19.99"),
        url="https://shop.example.com/p/TEE-BLK",
        categories=["Apparel"],
        inventory=2,
    )
    out = StringIO()
    call_command("demo_browse", email="grace@example.com", stdout=out)
    for metric in ("Viewed Category", "Searched Site", "Viewed Product"):
        assert f"{metric}: recorded" in out.getvalue()

    flush_outbox()

    events = klaviyo_sandbox.state.events()
    metrics = {e["metric"] for e in events}
    assert {
        "Viewed Category",
        "Searched Site",
        "Viewed Product",
        "Added to Cart",
        "Started Checkout",
        "Placed Order",
    } <= metrics
    searched = next(e for e in events if e["metric"] == "Searched Site")
    assert searched["properties"] == {"Search Term": "t-shirt", "Search Results Count": 1}
    assert len({e["profile_id"] for e in events}) == 1
    (profile,) = klaviyo_sandbox.state.profiles().values()
    assert profile["email"] == "grace@example.com"
    assert profile["anonymous_id"] == Order.objects.get().klaviyo_anonymous_id
