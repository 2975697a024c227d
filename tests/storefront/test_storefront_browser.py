"""The example storefront in headless Chromium, against the Klaviyo sandbox.

klaviyo.js is never fetched from the internet: ``KLAVIYO_JS_URL`` points at a local
stand-in (tests/projects/klaviyo_js_stub.js) that records what the page asks of it. The browser
fixture (Chromium + chromedriver, failing with what to install) is in conftest.py.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.test import Client
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from shop.models import Cart, Order, Product

from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.storefront.cartlinks import unsign_cart_token

pytestmark = [
    pytest.mark.browser,
    pytest.mark.urls("tests.projects.storefront_urls"),
    pytest.mark.django_db(transaction=True),
]
WAIT = 20  # seconds any one condition may take on a loaded machine


@pytest.fixture
def shop(live_server, klaviyo_sandbox, settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "KLAVIYO_JS_URL": f"{live_server.url}/stub/klaviyo.js",
        "ORDER_FIELDS": {"anonymous_id": "klaviyo_anonymous_id"},
        "CART_TOKEN": "shop.cart.cart_token",
        "RESTORE_CART": "shop.cart.restore_cart",
    }
    Product.objects.create(
        sku="TEE-BLK",
        name="Black T-shirt",
        price=Decimal("19.99"),
        url=f"{live_server.url}/store/p/TEE-BLK/",
        image_url="https://shop.example.com/img/TEE-BLK.png",
        categories=["Apparel", "Tops"],
        brand="Example Co",
        inventory=5,
    )
    return live_server


def wait_for(browser, condition, message):
    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(
        lambda _driver: condition(), message=message
    )


def element(browser, by, value, *, clickable=False):
    """The element once the page has it (and accepts clicks, if asked): a loaded machine
    answers a click late, so nothing is just looked up."""
    condition = ec.element_to_be_clickable if clickable else ec.presence_of_element_located
    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(
        condition((by, value)), message=f"{value!r} did not appear within {WAIT} s"
    )


def stub_calls(browser, method):
    calls = browser.execute_script("return (window.__klaviyoStub || {calls: []}).calls;")
    return [call["args"] for call in calls if call["method"] == method]


def outbox_row(metric):
    return OutboxEvent.objects.filter(metric=metric).order_by("created_at").last()


def wait_for_recorded(browser, metric):
    """The event's row, and the session its answer made: the row is committed before the
    answer (with the new session's cookie) reaches the browser, and a request sent in
    between would start another session, another anonymous visitor."""
    wait_for(browser, lambda: outbox_row(metric), f"no {metric} was recorded")
    wait_for(browser, lambda: browser.get_cookie("sessionid"), "the visit has no session")


def test_klaviyo_js_is_loaded_with_the_public_key_only(browser, shop):
    browser.get(f"{shop.url}/store/p/TEE-BLK/")
    wait_for(browser, lambda: stub_calls(browser, "trackViewedItem"), "klaviyo.js never ran")

    script = element(browser, By.CSS_SELECTOR, "script[src*='/stub/klaviyo.js']")
    assert script.get_attribute("src") == f"{shop.url}/stub/klaviyo.js?company_id=AbC123"
    assert script.get_attribute("async") == "true"
    assert browser.execute_script("return window.__klaviyoStub.companyId;") == "AbC123"
    html = browser.page_source
    assert django_settings.KLAVIYO["PRIVATE_API_KEY"] not in html
    assert "pk_" not in html
    # The recently-viewed block gets the product in klaviyo.js's trackViewedItem shape.
    assert stub_calls(browser, "trackViewedItem") == [
        [
            {
                "Title": "Black T-shirt",
                "ItemId": "TEE-BLK",
                "Categories": ["Apparel", "Tops"],
                "ImageUrl": "https://shop.example.com/img/TEE-BLK.png",
                "Url": f"{shop.url}/store/p/TEE-BLK/",
                "Metadata": {"Brand": "Example Co", "Price": 19.99},
            }
        ]
    ]
    # An anonymous visitor is not identified by the page.
    assert stub_calls(browser, "identify") == []


def test_a_logged_in_user_is_identified(browser, shop, django_user_model):
    user = django_user_model.objects.create_user("ada", email="ada@example.com", password="pw")
    client = Client()
    client.force_login(user)
    browser.get(f"{shop.url}/store/")
    browser.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value})

    browser.get(f"{shop.url}/store/p/TEE-BLK/")
    wait_for(browser, lambda: stub_calls(browser, "identify"), "the user was never identified")

    assert stub_calls(browser, "identify") == [
        [{"email": "ada@example.com", "external_id": str(user.pk)}]
    ]
    # The server-side Viewed Product carries the same identity.
    wait_for(browser, lambda: outbox_row("Viewed Product"), "no Viewed Product was recorded")
    profile = outbox_row("Viewed Product").payload["profile"]
    assert profile["email"] == "ada@example.com"
    assert profile["external_id"] == str(user.pk)


def test_anonymous_browsing_and_the_later_order_land_on_one_profile(browser, shop, klaviyo_sandbox):
    browser.get(f"{shop.url}/store/p/TEE-BLK/")
    wait_for_recorded(browser, "Viewed Product")
    element(browser, By.ID, "add-to-cart", clickable=True).click()
    wait_for(browser, lambda: outbox_row("Added to Cart"), "no Added to Cart was recorded")
    element(browser, By.ID, "checkout", clickable=True).click()
    wait_for(browser, lambda: outbox_row("Started Checkout"), "no Started Checkout")
    email = element(browser, By.ID, "email")
    email.send_keys("grace@example.com")
    email.send_keys(Keys.TAB)  # leaving the field identifies the guest (klaviyo_identify)
    # The live server shares one SQLite connection between its request threads: the order
    # is placed once the identify request is done, not while it runs.
    wait_for(
        browser,
        lambda: "email" in outbox_row("Started Checkout").payload["profile"],
        "the guest's email never reached the open Started Checkout",
    )
    element(browser, By.ID, "place-order", clickable=True).click()
    number = element(browser, By.ID, "order-number").text
    order = Order.objects.get(number=number)

    viewed = outbox_row("Viewed Product").payload["profile"]
    assert set(viewed) == {"anonymous_id"}  # an anonymous visitor: no email yet
    assert order.klaviyo_anonymous_id == viewed["anonymous_id"]

    flush_outbox()

    events = {e["metric"]: e for e in klaviyo_sandbox.state.events()}
    assert {"Viewed Product", "Added to Cart", "Started Checkout", "Placed Order"} <= set(events)
    profile_ids = {
        events[m]["profile_id"]
        for m in ("Viewed Product", "Added to Cart", "Started Checkout", "Placed Order")
    }
    assert len(profile_ids) == 1, "browse events and the order are on different profiles"
    profile = klaviyo_sandbox.state.profile(profile_ids.pop())
    assert profile["email"] == "grace@example.com"
    assert profile["anonymous_id"] == viewed["anonymous_id"]

    added = events["Added to Cart"]["properties"]
    assert added["AddedItemProductName"] == "Black T-shirt"
    assert added["AddedItemPrice"] == 19.99
    assert added["Items"][0]["ItemPrice"] == 19.99
    assert added["Items"][0]["ProductURL"] == f"{shop.url}/store/p/TEE-BLK/"
    assert urlsplit(added["CheckoutURL"]).path.startswith("/klaviyo/storefront/cart/")
    # Both link to the shopper's cart (signed at different seconds, so not equal strings).
    carts = {
        unsign_cart_token(events[m]["properties"]["CheckoutURL"].rstrip("/").rsplit("/", 1)[1])
        for m in ("Added to Cart", "Started Checkout")
    }
    assert carts == {Cart.objects.get().token}


def test_a_cart_link_restores_the_cart_and_a_tampered_one_does_not(browser, shop):
    browser.get(f"{shop.url}/store/p/TEE-BLK/")
    element(browser, By.ID, "add-to-cart", clickable=True).click()
    wait_for(browser, lambda: outbox_row("Added to Cart"), "no Added to Cart was recorded")
    link = outbox_row("Added to Cart").payload["properties"]["CheckoutURL"]
    assert link.startswith(f"{shop.url}/klaviyo/storefront/cart/")

    # The shopper opens the email on another device: no session, no cart.
    browser.delete_all_cookies()
    browser.get(f"{shop.url}/store/cart/")
    assert element(browser, By.ID, "cart-empty")

    signed = link.rstrip("/").rsplit("/", 1)[1]
    tampered = signed[:-1] + ("A" if signed[-1] != "A" else "B")
    browser.get(link.replace(signed, tampered))
    error = element(browser, By.ID, "klaviyo-cart-link-error").text
    assert "This cart link is not valid" in error
    browser.get(f"{shop.url}/store/cart/")
    assert element(browser, By.ID, "cart-empty")

    browser.get(link)
    element(browser, By.CSS_SELECTOR, "tr.cart-line")
    lines = browser.find_elements(By.CSS_SELECTOR, "tr.cart-line")
    assert [line.get_attribute("data-sku") for line in lines] == ["TEE-BLK"]
    # A copy of the linked cart, never the original: whoever else holds the link cannot
    # change what this shopper now has (issue 19, case 10).
    original, copy = Cart.objects.order_by("pk")
    assert copy.items == original.items and copy.token != original.token


def test_the_browser_path_hands_the_events_to_klaviyo_js(browser, shop, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_EVENTS_VIA": "browser"}
    browser.get(f"{shop.url}/store/p/TEE-BLK/")
    wait_for(browser, lambda: stub_calls(browser, "track"), "klaviyo.track was never called")

    ((metric, properties),) = stub_calls(browser, "track")
    assert metric == "Viewed Product"
    assert properties["ProductName"] == "Black T-shirt"
    assert properties["Price"] == 19.99
    assert not OutboxEvent.objects.filter(metric="Viewed Product").exists()


def test_a_guest_who_types_an_email_and_leaves_gets_the_checkout_on_that_email(
    browser, shop, klaviyo_sandbox
):
    # Issue 20, case 6: the abandoned checkout of a guest must reach their email.
    browser.get(f"{shop.url}/store/p/TEE-BLK/")
    wait_for(browser, lambda: outbox_row("Viewed Product"), "no Viewed Product was recorded")
    element(browser, By.ID, "add-to-cart", clickable=True).click()
    wait_for(browser, lambda: outbox_row("Added to Cart"), "no Added to Cart was recorded")
    element(browser, By.ID, "checkout", clickable=True).click()
    wait_for(browser, lambda: outbox_row("Started Checkout"), "no Started Checkout")
    anonymous_id = outbox_row("Started Checkout").payload["profile"]["anonymous_id"]

    email = element(browser, By.ID, "email", clickable=True)
    email.send_keys("grace@example.com")
    email.send_keys(Keys.TAB)
    browser.get(f"{shop.url}/store/")  # and leaves without ordering

    def on_email():
        return [
            row
            for row in OutboxEvent.objects.filter(metric="Started Checkout")
            if row.payload["profile"].get("email") == "grace@example.com"
        ]

    wait_for(browser, on_email, "no Started Checkout on the typed email")
    assert not Order.objects.exists()
    (linked,) = on_email()
    assert linked.payload["profile"]["anonymous_id"] == anonymous_id

    flush_outbox()

    checkouts = klaviyo_sandbox.state.events("Started Checkout")
    profiles = [klaviyo_sandbox.state.profile(event["profile_id"]) for event in checkouts]
    assert "grace@example.com" in [profile.get("email") for profile in profiles]
    # The anonymous browsing is on that profile too: one profile for the whole visit.
    viewed = klaviyo_sandbox.state.events("Viewed Product")
    assert klaviyo_sandbox.state.profile(viewed[0]["profile_id"])["email"] == "grace@example.com"


def test_a_category_visit_and_a_search_reach_the_sandbox_on_the_visitor_s_profile(
    browser, shop, klaviyo_sandbox
):
    browser.get(f"{shop.url}/store/")
    element(browser, By.LINK_TEXT, "Apparel", clickable=True).click()
    wait_for_recorded(browser, "Viewed Category")
    assert element(browser, By.ID, "category-name").text == "Apparel"

    search = element(browser, By.ID, "search", clickable=True)
    search.send_keys("  T-SHIRT <b>")
    element(browser, By.ID, "search-submit", clickable=True).click()
    wait_for(browser, lambda: outbox_row("Searched Site"), "no Searched Site was recorded")
    # The term is the visitor's: shown as text, never as markup.
    assert element(browser, By.ID, "search-term").text == "T-SHIRT <b>"
    assert not browser.find_elements(By.CSS_SELECTOR, "#search-summary b")

    viewed = outbox_row("Viewed Category").payload
    searched = outbox_row("Searched Site").payload
    assert viewed["profile"] == searched["profile"]
    assert set(viewed["profile"]) == {"anonymous_id"}

    flush_outbox()

    events = {e["metric"]: e for e in klaviyo_sandbox.state.events()}
    assert events["Viewed Category"]["properties"] == {
        "Viewed Category": "apparel",
        "CategoryID": "apparel",
        "CategoryName": "Apparel",
        "URL": f"{shop.url}/store/c/apparel/",
    }
    assert events["Searched Site"]["properties"] == {
        "Search Term": "T-SHIRT <b>",
        "Search Results Count": 0,
    }
    assert events["Viewed Category"]["profile_id"] == events["Searched Site"]["profile_id"]


def test_the_browser_path_tracks_a_category_and_a_search_with_klaviyo_js(browser, shop, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_EVENTS_VIA": "browser"}
    browser.get(f"{shop.url}/store/c/tops/")
    wait_for(browser, lambda: stub_calls(browser, "track"), "klaviyo.track was never called")
    ((metric, properties),) = stub_calls(browser, "track")
    assert (metric, properties["CategoryName"]) == ("Viewed Category", "Tops")
    assert "$event_id" in properties
    browser.get(f"{shop.url}/store/search/?q=black")
    wait_for(browser, lambda: stub_calls(browser, "track"), "klaviyo.track was never called")

    ((metric, properties),) = stub_calls(browser, "track")
    assert metric == "Searched Site"
    assert properties["Search Term"] == "black"
    assert properties["Search Results Count"] == 1
    assert properties["$event_id"].rsplit("-", 1)[1].isdigit()
    assert not OutboxEvent.objects.filter(metric__in=["Viewed Category", "Searched Site"]).exists()
