"""The example shop's sold-out product page in headless Chromium: the back-in-stock form
(``{% load klaviyo %}{% klaviyo_back_in_stock_form product %}``) posts through its own
script and the subscription reaches the sandbox."""

from __future__ import annotations

from decimal import Decimal

import pytest
from selenium.webdriver.common.by import By
from shop.models import Product

from django_klaviyo.models import OutboxEvent
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.klaviyo_fixtures import flush_now
from tests.storefront.test_storefront_browser import element, shop, wait_for  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.urls("tests.projects.storefront_urls"),
    pytest.mark.django_db(transaction=True),
]


def test_a_shopper_subscribes_on_a_sold_out_product_page(browser, shop, klaviyo_sandbox):  # noqa: F811
    Product.objects.create(
        sku="STK-SET",
        name="Sticker set",
        price=Decimal("4.00"),
        url=f"{shop.url}/store/p/STK-SET/",
        categories=[],
        inventory=0,
    )
    browser.get(f"{shop.url}/store/p/STK-SET/")

    element(browser, By.CSS_SELECTOR, "form.klaviyo-back-in-stock input[type=email]").send_keys(
        "ada@example.com"
    )
    element(browser, By.CSS_SELECTOR, "form.klaviyo-back-in-stock button", clickable=True).click()

    answer = element(browser, By.CSS_SELECTOR, "form.klaviyo-back-in-stock output")
    wait_for(browser, lambda: answer.text, "the form never showed an answer")
    assert answer.text == "We'll let you know when it's back."
    row = OutboxEvent.objects.get(kind=OutboxEvent.Kind.BACK_IN_STOCK)
    assert row.payload["variant"] == "STK-SET"
    flush_now()
    (subscription,) = catalog_store(klaviyo_sandbox.state).back_in_stock_subscriptions()
    assert subscription["profile"] == {"email": "ada@example.com"}
    assert subscription["variant_id"] == "$custom:::$default:::STK-SET"
