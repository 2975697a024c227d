"""Phone numbers on order events (``ORDER_FIELDS["phone"]``): cleaned to E.164 by the
rulebook, so SMS-only customers are identified; a phone that is not E.164 is left out,
the event kept on the order's other identifiers, and the row says so."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction

from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from tests.projects.directshop.models import Order, OrderItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def phoneshop(directshop):
    fields = {**directshop.KLAVIYO["ORDER_FIELDS"], "phone": "phone"}
    directshop.KLAVIYO = {**directshop.KLAVIYO, "ORDER_FIELDS": fields}
    return directshop


def checkout(*, email: str = "", phone: str = "") -> Order:
    with transaction.atomic():
        order = Order.objects.create(
            status="PROCESSING", email=email, phone=phone, order_total=Decimal("25.00")
        )
        OrderItem.objects.create(order=order, product_name="Lamp", sku="L1", price=25)
    return order


def test_an_sms_only_customer_is_identified_by_the_phone_in_e164(phoneshop, klaviyo_sandbox):
    checkout(phone="+1 (415) 555-0100")
    (row,) = OutboxEvent.objects.all()
    assert row.status == "pending" and row.payload["profile"] == {"phone_number": "+14155550100"}
    flush_outbox()
    (placed,) = klaviyo_sandbox.state.events(metric="Placed Order")
    assert placed["profile"] == {"phone_number": "+14155550100"}


def test_a_bad_phone_is_left_out_and_the_row_says_so(phoneshop):
    checkout(email="guest@example.com", phone="0415 555")
    (row,) = OutboxEvent.objects.all()
    assert row.status == "pending" and row.payload["profile"] == {"email": "guest@example.com"}
    assert row.outcome_note.startswith("phone_number left out:")
    assert "'0415 555' is not in E.164 format" in row.outcome_note
    assert row.payload["value"] == 25.0 and len(row.payload["properties"]["Items"]) == 1


def test_a_bad_phone_that_is_the_only_identifier_is_a_dead_row_naming_it(phoneshop):
    checkout(phone="0415 555")
    (row,) = OutboxEvent.objects.all()
    assert (row.status, row.last_error_code) == ("dead", "invalid_on_save")
    assert "phone_number" in row.last_error_detail


def test_the_default_reads_the_billing_address_phone(directshop):
    from django_klaviyo.orders import mappers

    order = Order(email="guest@example.com")
    order.billing_address = {"phone": "+33 1 23 45 67 89"}
    assert mappers.order_profile(order)["phone_number"] == "+33 1 23 45 67 89"
