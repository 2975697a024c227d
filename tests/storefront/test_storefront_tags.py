"""{% klaviyo_js %} and the browse-event tags: what reaches the page, and what never does."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.template import Context, Template
from django.test import RequestFactory
from django.utils.functional import SimpleLazyObject, empty

pytestmark = pytest.mark.urls("tests.projects.storefront_urls")


def render(source, request=None, **context):
    template = Template("{% load klaviyo %}" + source)
    return template.render(Context({"request": request, **context}))


@pytest.fixture
def request_():
    request = RequestFactory().get("/store/")
    request.user = AnonymousUser()
    request.session = {}
    return request


def embedded(html, element_id):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html)
    assert match, f"no #{element_id} in {html}"
    return json.loads(match.group(1))


def test_klaviyo_js_loads_the_script_async_with_the_public_key(request_, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "KLAVIYO_JS_URL": "https://cdn.test/klaviyo.js"}
    html = render("{% klaviyo_js %}", request_)

    assert '<script async src="https://cdn.test/klaviyo.js?company_id=AbC123"></script>' in html
    assert '<script defer src="/static/django_klaviyo/storefront.js"></script>' in html
    assert settings.KLAVIYO["PRIVATE_API_KEY"] not in html
    config = embedded(html, "klaviyo-storefront-config")
    assert config["identify"] == {}
    assert config["eventsUrl"] == "/klaviyo/storefront/events/"
    assert config["csrfToken"]


def test_the_real_klaviyo_js_is_the_default(request_):
    html = render("{% klaviyo_js %}", request_)
    assert 'src="https://static.klaviyo.com/onsite/js/klaviyo.js?company_id=AbC123"' in html


def test_a_private_key_in_public_api_key_is_never_rendered_and_fails_the_checks(request_, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "PUBLIC_API_KEY": "pk_live_0123456789abcdef0123"}
    html = render("{% klaviyo_js %}", request_)

    assert "pk_live" not in html
    assert "klaviyo.js is not loaded" in html
    assert "django_klaviyo.E037" in [m.id for m in run_checks()]


def test_no_public_key_renders_a_comment_saying_why(request_, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "PUBLIC_API_KEY": None}
    html = render("{% klaviyo_js %}", request_)
    assert "<script" not in html
    assert "PUBLIC_API_KEY is not set" in html


@pytest.mark.django_db
def test_a_logged_in_user_is_identified_by_email_and_external_id(request_, django_user_model):
    request_.user = django_user_model.objects.create_user("ada", email="ada@example.com")
    config = embedded(render("{% klaviyo_js %}", request_), "klaviyo-storefront-config")
    assert config["identify"] == {"email": "ada@example.com", "external_id": str(request_.user.pk)}


@pytest.mark.django_db
def test_identify_can_be_turned_off(request_, django_user_model, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "IDENTIFY_USERS": False}
    request_.user = django_user_model.objects.create_user("ada", email="ada@example.com")
    config = embedded(render("{% klaviyo_js %}", request_), "klaviyo-storefront-config")
    assert config["identify"] == {}


def test_django_csp_nonce_is_put_on_both_scripts(request_):
    request_.csp_nonce = "n0nce-abc"
    html = render("{% klaviyo_js %}", request_)
    assert html.count('nonce="n0nce-abc"') == 2


def test_django_6_lazy_nonce_is_used_even_before_it_is_generated(request_):
    class LazyNonce(SimpleLazyObject):
        # Like Django 6's: falsy until something asks for its value.
        def __bool__(self):
            return self._wrapped is not empty

    request_._csp_nonce = LazyNonce(lambda: "lazy-n0nce")
    assert not request_._csp_nonce
    html = render("{% klaviyo_js %}", request_)
    assert html.count('nonce="lazy-n0nce"') == 2


def test_without_a_nonce_no_nonce_attribute(request_):
    assert "nonce" not in render("{% klaviyo_js %}", request_)


def test_the_landing_page_s_kx_is_remembered_for_later_events():
    request = RequestFactory().get("/store/", {"_kx": "kx.From-Email"})
    request.user = AnonymousUser()
    request.session = {}
    render("{% klaviyo_js %}", request)
    assert request.session["klaviyo_kx"] == "kx.From-Email"


def test_viewed_product_embeds_the_event_safely():
    product = {
        "product_id": "P1",
        "name": "</script><script>alert(1)</script>",
        "price": "19.99",
        "compare_at_price": "25",
        "product_url": "https://shop.example.com/p/P1",
        "image_url": "https://shop.example.com/p1.png",
        "categories": ["Tops"],
        "brand": "Acme",
    }
    html = render("{% klaviyo_viewed_product product %}", product=product)

    assert "</script><script>" not in html
    data = embedded(html, "klaviyo-viewed-product")
    assert data["body"] == {"event": "viewed_product", "product": product}
    assert data["properties"]["ProductName"] == product["name"]
    assert data["properties"]["Price"] == 19.99
    assert data["viewedItem"] == {
        "Title": product["name"],
        "ItemId": "P1",
        "Categories": ["Tops"],
        "ImageUrl": "https://shop.example.com/p1.png",
        "Url": "https://shop.example.com/p/P1",
        "Metadata": {"Brand": "Acme", "Price": 19.99, "CompareAtPrice": 25.0},
    }


def test_added_to_cart_embeds_klaviyo_names_for_the_browser_path(request_):
    item = {"product_id": "P1", "name": "Tee", "price": "10", "quantity": 2}
    html = render("{% klaviyo_added_to_cart item items 'EUR' %}", request_, item=item, items=[item])
    data = embedded(html, "klaviyo-added-to-cart")
    assert data["metric"] == "Added to Cart"
    assert data["body"] == {
        "event": "added_to_cart",
        "item": item,
        "items": [item],
        "currency": "EUR",
    }
    assert data["properties"]["AddedItemProductName"] == "Tee"
    assert data["properties"]["Items"][0]["ItemPrice"] == 10.0
    assert data["properties"]["Items"][0]["RowTotal"] == 20.0


def test_started_checkout_embeds_the_checkout(request_):
    items = [{"product_id": "P1", "name": "Tee", "price": "10"}]
    html = render("{% klaviyo_started_checkout items 42 %}", request_, items=items)
    data = embedded(html, "klaviyo-started-checkout")
    assert data["body"] == {"event": "started_checkout", "items": items, "checkout_id": "42"}
    assert data["properties"]["CheckoutId"] == "42"


def test_a_broken_cart_hook_path_fails_the_checks(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "RESTORE_CART": "shop.cart.no_such_hook"}
    messages = [m for m in run_checks() if m.id == "django_klaviyo.E008"]
    assert messages and "RESTORE_CART" in messages[0].msg


def test_an_unknown_browse_events_mode_is_an_error_not_a_silent_fallback(request_, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_EVENTS_VIA": "serverr"}
    with pytest.raises(ImproperlyConfigured, match="BROWSE_EVENTS_VIA"):
        render("{% klaviyo_js %}", request_)


def test_the_browser_path_has_no_endpoint_and_signs_the_cart_link_into_the_event(
    request_, settings
):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "BROWSE_EVENTS_VIA": "browser",
        "CART_TOKEN": lambda request: "tok-ada",
    }
    config = embedded(render("{% klaviyo_js %}", request_), "klaviyo-storefront-config")
    assert config["eventsUrl"] is None and config["csrfToken"] is None
    item = {"product_id": "P1", "name": "Tee", "price": "10"}
    html = render("{% klaviyo_added_to_cart item %}", request_, item=item)
    link = embedded(html, "klaviyo-added-to-cart")["properties"]["CheckoutURL"]
    assert link.startswith("http://testserver/klaviyo/storefront/cart/")


# --- browser mode speaks like the server (issue 20, case 7) ------------------------------


@pytest.fixture
def browser_mode(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_EVENTS_VIA": "browser"}


def test_browser_mode_sends_the_cart_value(request_, browser_mode):
    item = {"product_id": "P1", "name": "Tee", "price": "10", "quantity": 2}
    mug = {"product_id": "M1", "name": "Mug", "price": "4.50"}
    html = render("{% klaviyo_added_to_cart item items %}", request_, item=item, items=[item, mug])
    assert embedded(html, "klaviyo-added-to-cart")["properties"]["$value"] == 24.5
    html = render("{% klaviyo_started_checkout items 42 %}", request_, items=[item, mug])
    assert embedded(html, "klaviyo-started-checkout")["properties"]["$value"] == 24.5


def test_browser_mode_honours_metric_names(request_, browser_mode, settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "METRIC_NAMES": {
            "viewed_product": "Product Viewed",
            "added_to_cart": "Cart Add",
            "started_checkout": "Checkout Started",
        },
    }
    item = {"product_id": "P1", "name": "Tee", "price": "10"}
    metrics = [
        embedded(render(source, request_, item=item, items=[item]), element_id)["metric"]
        for source, element_id in (
            ("{% klaviyo_viewed_product item %}", "klaviyo-viewed-product"),
            ("{% klaviyo_added_to_cart item %}", "klaviyo-added-to-cart"),
            ("{% klaviyo_started_checkout items 42 %}", "klaviyo-started-checkout"),
        )
    ]
    assert metrics == ["Product Viewed", "Cart Add", "Checkout Started"]


def test_browser_mode_started_checkout_has_the_server_s_unique_id_rule(request_, browser_mode):
    items = [{"product_id": "P1", "name": "Tee", "price": "10"}]

    def event_id(basket=items):
        html = render("{% klaviyo_started_checkout items 42 %}", request_, items=basket)
        return embedded(html, "klaviyo-started-checkout")["properties"]["$event_id"]

    first = event_id()
    checkout_id, unix = first.rsplit("-", 1)
    assert checkout_id == "42" and unix.isdigit()  # cart id + Unix time, as the server's

    # A reload in the same visit with the same cart: the same id, so Klaviyo keeps one.
    assert event_id() == first

    # A return after STARTED_CHECKOUT_REPEAT_AFTER (30 minutes) counts again.
    request_.session["klaviyo_checkout_start"]["at"] -= 1801
    later = event_id()
    assert later != f"42-{int(unix) - 1801}"
    assert later == f"42-{request_.session['klaviyo_checkout_start']['at']}"
    # So does a changed cart, at once.
    request_.session["klaviyo_checkout_start"]["at"] -= 1  # a second ago, well within
    before = request_.session["klaviyo_checkout_start"]["at"]
    changed = event_id([*items, {"product_id": "M1", "name": "Mug", "price": "4"}])
    assert changed == f"42-{request_.session['klaviyo_checkout_start']['at']}"
    assert changed != f"42-{before}"
