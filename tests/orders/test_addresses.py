"""Addresses reach Klaviyo in the guide's structure (``Address1``, ``City``, ...) from each
form stores keep them in: a dict, an address object, or one free-text field."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import transaction

from django_klaviyo.flush import flush_outbox
from django_klaviyo.orders.addresses import address
from tests.projects.directshop.models import Order, OrderItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def textshop(directshop):
    fields = {**directshop.KLAVIYO["ORDER_FIELDS"], "billing_address": "address"}
    directshop.KLAVIYO = {**directshop.KLAVIYO, "ORDER_FIELDS": fields}
    return directshop


def test_a_free_text_address_is_sent_as_address_lines(textshop, klaviyo_sandbox):
    with transaction.atomic():
        order = Order.objects.create(
            status="PROCESSING",
            email="guest@example.com",
            order_total=Decimal("25.00"),
            address="Ada Lovelace\r\n12 St James's Square,\n\nLondon SW1Y 4JH\nUnited Kingdom",
        )
        OrderItem.objects.create(order=order, product_name="Lamp", sku="L1", price=25)
    flush_outbox()
    (placed,) = klaviyo_sandbox.state.events(metric="Placed Order")
    assert placed["properties"]["BillingAddress"] == {
        "Address1": "Ada Lovelace",
        "Address2": "12 St James's Square, London SW1Y 4JH, United Kingdom",
    }


def test_a_one_line_text_address_is_address1():
    assert address("12 Main St, Springfield") == {"Address1": "12 Main St, Springfield"}
    assert address(" \n ") is None


def test_a_dict_with_snake_case_or_oscar_keys():
    assert address({"address1": "12 Main St", "city": "Springfield", "zip": "12345"}) == {
        "Address1": "12 Main St",
        "City": "Springfield",
        "Zip": "12345",
    }
    assert address({"line1": "12 Main St", "line4": "Springfield", "postcode": "12345"}) == {
        "Address1": "12 Main St",
        "City": "Springfield",
        "Zip": "12345",
    }


def test_an_address_object():
    found = address(SimpleNamespace(line1="12 Main St", city="Springfield", country_code="US"))
    assert found == {"Address1": "12 Main St", "City": "Springfield", "CountryCode": "US"}
